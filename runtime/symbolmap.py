"""Symbol map files: per-venue ``raw = "CANONICAL"`` overrides of the ``[symbols]`` rules.

A symbol map file is TOML whose top-level keys are raw exchange symbols and whose values are
canonical symbols (docs/descriptor-reference.md, "Symbol map files")::

    # raw exchange symbol = canonical symbol
    "BTC-27DEC24" = "BTC-USD-20241227"
    BTCUSDT_241227 = "BTC-USDT-20241227"

:func:`load_symbol_map` reads one; every problem in it is a located diagnostic (E414), never a
traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from compiler.diagnostics import Diagnostic
from compiler.locate import Locator, Problem, toml_error
from runtime.config import symbol_problem

__all__ = ["CODE", "SymbolMapError", "load_symbol_map"]

CODE = "E414"
"""The code of every problem in a symbol map file."""


class SymbolMapError(Exception):
    """A symbol map file cannot be used; ``diagnostics`` holds every problem found in it."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


def load_symbol_map(path: Path, display: str | None = None) -> dict[str, str]:
    """The raw -> canonical entries of the symbol map file at ``path``, in file order.

    ``display`` is the file name diagnostics show (default: ``path``). Raises
    :class:`SymbolMapError` when the file cannot be read, is not TOML, or has a bad entry.
    """
    shown = display if display is not None else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SymbolMapError(
            [Diagnostic(CODE, f"cannot read the symbol map file: {reason}", shown, 1, 1)]
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SymbolMapError([toml_error(shown, text, exc, CODE)]) from None
    locator = Locator(shown, text)
    problems: list[Problem] = []
    entries: dict[str, str] = {}
    seen: dict[str, str] = {}  # upper-case raw -> raw as written
    for raw, canonical in data.items():
        where = (raw,)
        if isinstance(canonical, dict):
            problems.append(
                Problem(
                    where,
                    CODE,
                    f"'{raw}' is a table; a symbol map holds only raw = \"CANONICAL\" entries",
                    at_key=True,
                )
            )
            continue
        if not isinstance(canonical, str):
            problems.append(
                Problem(
                    where,
                    CODE,
                    f"the canonical symbol of '{raw}' must be a string, not "
                    f"{type(canonical).__name__}",
                )
            )
            continue
        if not raw.strip() or raw != raw.strip():
            problems.append(
                Problem(where, CODE, f"raw symbol {raw!r} is empty or has spaces", at_key=True)
            )
            continue
        problem = symbol_problem(canonical)
        if problem is not None:
            problems.append(Problem(where, CODE, problem))
            continue
        first = seen.setdefault(raw.upper(), raw)
        if first != raw:
            problems.append(
                Problem(
                    where,
                    CODE,
                    f"'{raw}' is '{first}' again (raw symbols are compared ignoring case)",
                    at_key=True,
                )
            )
            continue
        entries[raw] = canonical
    if problems:
        raise SymbolMapError([locator.diagnostic(p) for p in problems])
    return entries
