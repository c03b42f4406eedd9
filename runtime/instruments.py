"""Symbol overrides at run time: the venue's instrument list (REST) and symbol map files.

``mdgen run`` calls :func:`prepare_symbols` once per exchange at startup. The overrides of an
exchange's ``SymbolMapper`` become, in increasing precedence:

1. the ``[symbols]`` rules (always there; what is left when everything else fails);
2. the instrument list of ``[symbols.instruments]``, fetched through :class:`RestClient`
   (rate limit, retries, base-URL failover). A failed call, a reply without the expected shape
   or an item the expressions cannot read is logged and counted, never fatal;
3. symbol map files: the descriptor's ``symbol_map_file``, then the instances' own.

All instances of one exchange in a process share one mapper (the generated module's
``SYMBOLS``), hence one set of overrides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from runtime.config import symbol_problem
from runtime.rest import RestClient, RestError
from runtime.spec import ExchangeSpec, InstrumentsSpec, RestSpec
from runtime.symbolmap import load_symbol_map
from runtime.symbols import SymbolError, SymbolMapper

__all__ = [
    "REPO_ROOT",
    "SymbolReport",
    "captured_instruments",
    "descriptor_map_file",
    "fetch_instruments",
    "normalize_symbols",
    "prepare_symbols",
    "read_symbol_maps",
]

log = logging.getLogger("mdgen.symbols")

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Descriptor paths in generated modules are relative to this folder."""

_ITEM_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)
_SHOWN_SKIPS = 3


@dataclass
class SymbolReport:
    """What :func:`prepare_symbols` did for one exchange (counts for the log and summary)."""

    exchange: str
    instruments: int = 0
    """Overrides taken from the instrument list."""
    requests: int = 0
    """Instrument-list calls made."""
    requests_failed: int = 0
    """Calls that failed, or whose reply had no item list; their instruments use the rules."""
    items_skipped: int = 0
    """Items ``where``/``raw``/``canonical`` could not read, or that gave no canonical symbol."""
    files: list[str] = field(default_factory=list)
    file_entries: int = 0

    @property
    def fell_back(self) -> bool:
        """An instrument list was asked for and not one call of it succeeded."""
        return self.requests > 0 and self.requests_failed == self.requests

    def summary(self) -> str:
        parts = []
        if self.requests:
            parts.append(
                f"{self.instruments} from the instrument list ({self.requests_failed} of "
                f"{self.requests} calls failed, {self.items_skipped} items skipped)"
            )
        if self.files:
            parts.append(f"{self.file_entries} from {', '.join(self.files)}")
        return f"{self.exchange}: symbol overrides: " + ("; ".join(parts) or "none")


def descriptor_map_file(spec: ExchangeSpec) -> Path | None:
    """The descriptor's ``symbol_map_file``, relative to the descriptor's folder."""
    if spec.symbol_map_file is None:
        return None
    descriptor = Path(spec.descriptor)
    if not descriptor.is_absolute():
        descriptor = REPO_ROOT / descriptor
    return descriptor.parent / spec.symbol_map_file


def read_symbol_maps(files: Sequence[Path]) -> list[tuple[Path, dict[str, str]]]:
    """Each existing file with its entries, in order (missing files are skipped: W001/W400
    already warned). Raises :class:`runtime.symbolmap.SymbolMapError` for a bad file."""
    return [(path, load_symbol_map(path)) for path in files if path.is_file()]


async def fetch_instruments(
    inst: InstrumentsSpec, client: RestClient, report: SymbolReport
) -> dict[str, str]:
    """Raw -> canonical pairs of every call of the instrument list; failures are counted in
    ``report`` and logged, never raised."""
    pairs: dict[str, str] = {}
    for params in inst.requests:
        report.requests += 1
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"
        try:
            reply = await client.call(inst.endpoint, params=params)
            items = inst.each(reply.body)
        except (RestError, httpx.HTTPError, *_ITEM_ERRORS) as exc:
            report.requests_failed += 1
            log.warning(
                "%s: instrument list %s (%s) failed: %s; those symbols follow the [symbols] "
                "rules",
                report.exchange,
                inst.endpoint,
                shown,
                _reason(exc),
            )
            continue
        for item in items:
            pair = _pair(inst, reply.body, item, report)
            if pair is not None:
                pairs.setdefault(*pair)
    report.instruments = len(pairs)
    return pairs


def captured_instruments(
    spec: ExchangeSpec, replies: Iterable[tuple[str, Any]], report: SymbolReport
) -> dict[str, str]:
    """Raw -> canonical pairs from captured replies ``(url, decoded body)`` of the
    instrument-list endpoint (``mdgen replay``); other replies are ignored."""
    inst = spec.instruments
    if inst is None or spec.rest is None or inst.endpoint not in spec.rest.endpoints:
        return {}
    path = spec.rest.endpoints[inst.endpoint].path
    pairs: dict[str, str] = {}
    for url, body in replies:
        if urlsplit(url).path != path:
            continue
        report.requests += 1
        try:
            items = inst.each(body)
        except _ITEM_ERRORS as exc:
            report.requests_failed += 1
            log.warning("%s: captured instrument list unreadable: %s", spec.id, _reason(exc))
            continue
        for item in items:
            pair = _pair(inst, body, item, report)
            if pair is not None:
                pairs.setdefault(*pair)
    report.instruments = len(pairs)
    return pairs


def _pair(
    inst: InstrumentsSpec, body: Any, item: Any, report: SymbolReport
) -> tuple[str, str] | None:
    """One item's (raw, canonical), or None when ``where`` drops it or it cannot be read."""
    try:
        if inst.where is not None and not inst.where(body, item):
            return None
        raw, canonical = inst.raw(body, item), inst.canonical(body, item)
    except (*_ITEM_ERRORS, SymbolError) as exc:
        _skip(report, f"{type(exc).__name__}: {exc}", item)
        return None
    problem = symbol_problem(canonical) if isinstance(canonical, str) else "not a string"
    if not isinstance(raw, str) or not raw.strip() or problem is not None:
        _skip(report, f"raw {raw!r} -> canonical {canonical!r}: {problem}", item)
        return None
    return raw, canonical


def _skip(report: SymbolReport, reason: str, item: Any) -> None:
    report.items_skipped += 1
    if report.items_skipped <= _SHOWN_SKIPS:
        log.warning("%s: instrument list item skipped (%s): %.200r", report.exchange, reason, item)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RestError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


ClientFactory = Callable[[RestSpec], RestClient]


async def prepare_symbols(
    spec: ExchangeSpec,
    maps: Sequence[tuple[Path, Mapping[str, str]]] = (),
    *,
    rest: RestSpec | None = None,
    client_factory: ClientFactory = RestClient,
    timeout: float = 60.0,
    captured: Iterable[tuple[str, Any]] | None = None,
) -> SymbolReport:
    """Reset ``spec.symbols`` to its rules, then add the instrument list and the ``maps``
    (later ones win). The list is fetched from ``rest`` (default ``spec.rest``) within
    ``timeout`` seconds, or read from ``captured`` REST replies when given."""
    report = SymbolReport(spec.id)
    mapper: SymbolMapper = spec.symbols
    mapper.reset_overrides()
    rest = rest if rest is not None else spec.rest
    pairs: dict[str, str] = {}
    if captured is not None:
        pairs = captured_instruments(spec, captured, report)
    elif spec.instruments is not None and rest is not None:
        client = client_factory(rest)
        try:
            pairs = await asyncio.wait_for(
                fetch_instruments(spec.instruments, client, report), timeout
            )
        except TimeoutError:
            report.requests_failed = max(report.requests, 1)
            report.requests = max(report.requests, 1)
            log.warning(
                "%s: instrument list not loaded within %gs; symbols follow the [symbols] rules",
                spec.id,
                timeout,
            )
        finally:
            await client.aclose()
        if report.fell_back:
            log.warning(
                "%s: no instrument list (%d calls failed); symbols follow the [symbols] rules",
                spec.id,
                report.requests_failed,
            )
    mapper.add_overrides(pairs)
    merged: dict[str, tuple[str, Path]] = {}
    for path, entries in maps:
        report.files.append(str(path))
        for raw, canonical in entries.items():
            before = merged.get(raw.upper())
            if before is not None and before[0] != canonical.upper():
                log.warning(
                    "%s: %s maps %s to %s, %s to %s; the later file wins",
                    spec.id,
                    before[1],
                    raw,
                    before[0],
                    path,
                    canonical,
                )
            merged[raw.upper()] = (canonical.upper(), path)
        mapper.add_overrides(entries)
    report.file_entries = len(merged)
    return report


def normalize_symbols(mapper: SymbolMapper, symbols: Sequence[str]) -> list[str]:
    """Canonical symbols respelled as the overrides spell them (``BTC-USD-24SEP21`` ->
    ``BTC-USD-20210924`` once the instrument list says so); unmappable ones are kept."""
    out: list[str] = []
    for symbol in symbols:
        try:
            again = mapper.canonical(mapper.raw(symbol))
        except SymbolError:
            again = symbol
        if again != symbol:
            log.info("%s is %s with the symbol overrides", symbol, again)
        if again not in out:
            out.append(again)
    return out
