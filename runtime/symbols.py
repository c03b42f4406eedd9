"""Mapping between exchange raw symbols and canonical ``BASE-QUOTE[-EXTRA...]`` symbols."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from runtime.patterns import compile_template

__all__ = ["SymbolError", "SymbolMapper", "SymbolRules"]

_CANON_SEP: Final = "-"
_CACHE_MAX: Final = 65536
_PART_FULLMATCH: Final = re.compile(r"[^\s\-]+").fullmatch


class SymbolError(ValueError):
    """A symbol could not be converted."""


@dataclass(frozen=True)
class SymbolRules:
    """How one exchange spells its symbols."""

    separator: str = "-"
    """Between base and quote in raw symbols: "" (BTCUSDT), "/" (XBT/USD), "_" (BTC_USDT)."""
    case: Literal["upper", "lower", "keep"] = "upper"
    """Case of raw symbols built from canonical ones."""
    quotes: tuple[str, ...] = ()
    """Known quote assets (raw codes) used to split concatenated raw symbols; longest wins."""
    aliases: Mapping[str, str] = field(default_factory=dict)
    """Exchange asset code -> canonical asset (XBT -> BTC); the first code wins for raw()."""
    suffixes: Mapping[str, str] = field(default_factory=dict)
    """Raw derivative suffix -> canonical suffix (SWAP -> PERP)."""
    overrides: Mapping[str, str] = field(default_factory=dict)
    """Raw symbol -> canonical symbol, checked before any rule."""
    patterns: tuple[tuple[str, str], ...] = ()
    """(raw template, canonical template) pairs with ``{name}`` placeholders
    (``runtime.patterns``), tried in order after ``overrides`` and before the separator rules;
    placeholder values go through ``aliases``. Raw symbols built from a pattern keep the
    template's literal text as written (``case`` is not applied)."""


class SymbolMapper:
    """Convert raw exchange symbols to canonical ones and back, caching both directions."""

    def __init__(self, rules: SymbolRules) -> None:
        if rules.case not in ("upper", "lower", "keep"):
            raise SymbolError(f"unknown case rule {rules.case!r}")
        self.rules: Final = rules
        self._sep = rules.separator
        self._quotes = sorted(
            dict.fromkeys(q.upper() for q in rules.quotes if q), key=len, reverse=True
        )
        self._alias = {k.upper(): v.upper() for k, v in rules.aliases.items()}
        self._suffix = {k.upper(): v.upper() for k, v in rules.suffixes.items()}
        self._override = {k.upper(): v.upper() for k, v in rules.overrides.items()}
        self._rev_alias: dict[str, str] = {}
        for code, asset in rules.aliases.items():
            self._rev_alias.setdefault(asset.upper(), code)
        self._rev_suffix: dict[str, str] = {}
        for raw_sfx, sfx in rules.suffixes.items():
            self._rev_suffix.setdefault(sfx.upper(), raw_sfx)
        self._rev_override: dict[str, str] = {}
        for raw_sym, canon in rules.overrides.items():
            self._rev_override.setdefault(canon.upper(), raw_sym)
        self._rules_override = dict(self._override)
        self._rules_rev_override = dict(self._rev_override)
        self._patterns = [
            (compile_template(raw_t), compile_template(canon_t))
            for raw_t, canon_t in rules.patterns
        ]
        self._canonical: dict[str, str] = {}
        self._raw: dict[str, str] = {}

    @property
    def overrides(self) -> Mapping[str, str]:
        """Every override in effect: raw (upper case) -> canonical."""
        return dict(self._override)

    def add_overrides(self, overrides: Mapping[str, str]) -> None:
        """Add raw -> canonical overrides on top of those in effect (they win on equal raw
        symbols, and for :meth:`raw` on equal canonical ones, where the first of ``overrides``
        wins); clears the caches."""
        added: set[str] = set()
        for raw_sym, canon in overrides.items():
            raw_up, canon_up = raw_sym.upper(), canon.upper()
            old = self._override.get(raw_up)
            if old is not None and self._rev_override.get(old, "").upper() == raw_up:
                del self._rev_override[old]
            self._override[raw_up] = canon_up
            if canon_up not in added:
                self._rev_override[canon_up] = raw_sym
                added.add(canon_up)
        self._canonical.clear()
        self._raw.clear()

    def reset_overrides(self) -> None:
        """Back to the overrides of the rules alone (drops :meth:`add_overrides`)."""
        self._override = dict(self._rules_override)
        self._rev_override = dict(self._rules_rev_override)
        self._canonical.clear()
        self._raw.clear()

    def canonical(self, raw: str) -> str:
        """Raw exchange symbol (any case) -> canonical symbol; a cache hit is one dict lookup."""
        try:
            return self._canonical[raw]
        except (KeyError, TypeError):
            return self._miss(self._canonical, self._to_canonical, raw)

    def raw(self, canonical: str) -> str:
        """Canonical symbol -> exchange raw symbol, the inverse of :meth:`canonical`."""
        try:
            return self._raw[canonical]
        except (KeyError, TypeError):
            return self._miss(self._raw, self._to_raw, canonical)

    @staticmethod
    def _miss(cache: dict[str, str], convert: Callable[[str], str], symbol: str) -> str:
        """Convert ``symbol`` on a cache miss and cache the result (bounded cache)."""
        try:
            result = convert(symbol)
        except SymbolError as exc:
            raise exc from None  # hide the KeyError of the cache miss
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[symbol] = result
        return result

    def _to_canonical(self, raw: str) -> str:
        if type(raw) is not str:
            raise SymbolError(f"raw symbol must be a str, got {type(raw).__name__}: {raw!r}")
        upper = raw.upper()
        override = self._override.get(upper)
        if override is not None:
            return override
        for raw_t, canon_t in self._patterns:
            values = raw_t.match(raw)
            if values is not None:
                alias = self._alias
                canon = canon_t.fill(
                    {k: alias.get(v.upper(), v.upper()) for k, v in values.items()}
                )
                return canon.upper()
        sep = self._sep
        parts = upper.split(sep) if sep and sep in upper else self._split_concat(raw, upper)
        for part in parts:
            if _PART_FULLMATCH(part) is None:
                raise SymbolError(f"cannot parse raw symbol {raw!r}: bad part {part!r}")
        alias, suffix = self._alias, self._suffix
        out = [alias.get(parts[0], parts[0]), alias.get(parts[1], parts[1])]
        out.extend(suffix.get(p, p) for p in parts[2:])
        return _CANON_SEP.join(out)

    def _split_concat(self, raw: str, upper: str) -> list[str]:
        for quote in self._quotes:
            if upper.endswith(quote) and len(upper) > len(quote):
                return [upper[: -len(quote)], quote]
        if self._sep:
            raise SymbolError(f"cannot split raw symbol {raw!r}: no separator {self._sep!r}")
        raise SymbolError(
            f"cannot split raw symbol {raw!r}: it ends with none of the known quotes "
            f"{tuple(self._quotes)!r}"
        )

    def _to_raw(self, canonical: str) -> str:
        if type(canonical) is not str:
            raise SymbolError(
                f"canonical symbol must be a str, got {type(canonical).__name__}: {canonical!r}"
            )
        upper = canonical.upper()
        override = self._rev_override.get(upper)
        if override is not None:
            return override
        for raw_t, canon_t in self._patterns:
            values = canon_t.match(upper)
            if values is None:
                continue
            raw_values = {k: self._rev_alias.get(v.upper(), v.upper()) for k, v in values.items()}
            if all(raw_t.accepts(k, v) for k, v in raw_values.items()):
                return raw_t.fill(raw_values)
        parts = upper.split(_CANON_SEP)
        if len(parts) < 2 or any(not p or p.isspace() for p in parts):
            raise SymbolError(f"not a canonical BASE-QUOTE[-EXTRA...] symbol: {canonical!r}")
        if len(parts) > 2 and not self._sep:
            raise SymbolError(
                f"cannot build a concatenated raw symbol with extra parts from {canonical!r}"
            )
        rev_alias, rev_suffix = self._rev_alias, self._rev_suffix
        out = [rev_alias.get(parts[0], parts[0]), rev_alias.get(parts[1], parts[1])]
        out.extend(rev_suffix.get(p, p) for p in parts[2:])
        raw = self._sep.join(out)
        case = self.rules.case
        if case == "upper":
            return raw.upper()
        if case == "lower":
            return raw.lower()
        return raw
