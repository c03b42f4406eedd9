"""Locate problems in TOML documents: TOML paths and pydantic errors -> :class:`Diagnostic`.

Shared by the descriptor compiler (:mod:`compiler.pipeline`) and the collector configuration
(:mod:`runtime.config`). A *problem* names a TOML path (plus, optionally, a span inside the string
at that path); :class:`Locator` turns it into a ``file:line:col`` diagnostic with the source line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import pydantic
from pydantic_core import ErrorDetails

from compiler.diagnostics import Diagnostic, format_path
from compiler.tomlpos import Pos, TomlIndex, TomlPath

__all__ = [
    "LocatedProblem",
    "Locator",
    "Problem",
    "SchemaCodes",
    "SchemaHook",
    "schema_problems",
    "toml_error",
]


class LocatedProblem(Protocol):
    """Anything located by TOML path (e.g. :class:`Problem`)."""

    @property
    def path(self) -> TomlPath: ...

    @property
    def code(self) -> str: ...

    @property
    def message(self) -> str: ...

    @property
    def start(self) -> int | None: ...

    @property
    def end(self) -> int | None: ...

    @property
    def severity(self) -> str: ...

    @property
    def at_key(self) -> bool: ...


@dataclass(frozen=True)
class Problem:
    """A problem located by TOML path, optionally at offsets inside the string there.

    ``start``/``end`` are offsets into the decoded string value at ``path``; ``at_key`` points at
    the key instead of the value.
    """

    path: TomlPath
    code: str
    message: str
    start: int | None = None
    end: int | None = None
    severity: str = "error"
    at_key: bool = False


class Locator:
    """Turns TOML paths (and offsets inside string values) into diagnostics for one file."""

    def __init__(self, display: str, text: str) -> None:
        self.display = display
        self.lines = text.splitlines()
        self.index = TomlIndex(text)

    def diagnostic(self, problem: LocatedProblem) -> Diagnostic:
        pos: Pos | None = None
        width = 1
        if problem.start is not None:
            pos = self.index.string_char(problem.path, problem.start)
            end = problem.end if problem.end is not None else problem.start + 1
            end_pos = self.index.string_char(problem.path, max(end - 1, problem.start))
            if pos is not None and end_pos is not None and end_pos.line == pos.line:
                width = end_pos.col - pos.col + 1
        if pos is None and problem.at_key:
            pos = self.index.key(problem.path)
        if pos is None:
            pos = self.index.value(problem.path) or self.index.nearest(problem.path)
        source = self.lines[pos.line - 1] if 0 < pos.line <= len(self.lines) else ""
        return Diagnostic(
            code=problem.code,
            message=problem.message,
            file=self.display,
            line=pos.line,
            col=pos.col,
            toml_path=format_path(problem.path),
            source_line=source,
            width=width,
            severity="warning" if problem.severity == "warning" else "error",
        )


class SchemaCodes(NamedTuple):
    """The codes :func:`schema_problems` gives to the three generic kinds of schema error."""

    unknown_key: str
    missing_key: str
    invalid_value: str


SchemaHook = Callable[[TomlPath, ErrorDetails], Sequence[LocatedProblem] | None]
"""Custom mapping of one pydantic error (with its TOML path) to problems (an empty sequence drops
the error); None falls back to the default mapping."""


def schema_problems(
    exc: pydantic.ValidationError, codes: SchemaCodes, hook: SchemaHook | None = None
) -> list[LocatedProblem]:
    """One problem per pydantic error, located by the error's ``loc`` read as a TOML path.

    ``hook`` sees every error first; when it returns None the default applies: unknown keys
    (pointing at the key), missing keys, and anything else with pydantic's message.
    """
    problems: list[LocatedProblem] = []
    for err in exc.errors():
        raw_loc = err["loc"]
        at_key = bool(raw_loc) and raw_loc[-1] == "[key]"  # a bad table key, not a bad value
        loc: TomlPath = tuple(p for p in raw_loc if isinstance(p, str | int) and p != "[key]")
        custom = hook(loc, err) if hook is not None else None
        if custom is not None:
            problems.extend(custom)
            continue
        kind = err["type"]
        if kind == "extra_forbidden":
            problems.append(
                Problem(loc, codes.unknown_key, f"unknown key '{loc[-1]}'", at_key=True)
            )
        elif kind == "missing":
            problems.append(Problem(loc, codes.missing_key, f"missing required key '{loc[-1]}'"))
        else:
            problems.append(Problem(loc, codes.invalid_value, err["msg"], at_key=at_key))
    return problems


_AT_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def toml_error(display: str, text: str, exc: tomllib.TOMLDecodeError, code: str) -> Diagnostic:
    """A diagnostic for a document ``tomllib`` rejected, at the position it reports.

    Python 3.14 gives ``lineno``/``colno``; older versions only say "(at line L, column C)" at
    the end of the message, which is read instead (and dropped from the message).
    """
    message = str(getattr(exc, "msg", "") or exc)
    lines = text.splitlines()
    line: int = getattr(exc, "lineno", 0) or 0
    col: int = getattr(exc, "colno", 0) or 0
    found = _AT_POSITION.search(message)
    if found:
        message = message[: found.start()]
        if not line:
            line, col = int(found.group(1)), int(found.group(2))
    elif _AT_END.search(message):
        message = _AT_END.sub("", message)
        if not line:
            line = max(1, len(lines))
            col = len(lines[-1]) + 1 if lines else 1
    line, col = max(1, line), max(1, col)
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    return Diagnostic(code, f"invalid TOML: {message}", display, line, col, "", source)
