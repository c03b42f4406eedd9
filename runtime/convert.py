"""Hot-path conversion helpers called by generated parser modules.

Every function raises :class:`ConversionError` (a ``ValueError``) with a clear message on bad
input.  Decimal values are carried as exact strings; timestamps are int nanoseconds since the
Unix epoch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

__all__ = [
    "ConversionError",
    "dec",
    "dec_abs",
    "dec_add",
    "get",
    "is_negative",
    "levels",
    "lookup",
    "path",
    "ts_iso",
    "ts_ms",
    "ts_ns",
    "ts_s",
    "ts_us",
    "ymd",
]


class ConversionError(ValueError):
    """A market-data value could not be converted."""


_DEC_FULLMATCH: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?").fullmatch
_NUM_FULLMATCH: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?").fullmatch
_ISO_PREFIX_FULLMATCH: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
).fullmatch
_ISO_TAIL_FULLMATCH: Final = re.compile(
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))?"
).fullmatch

_MAX_NUM_LEN: Final = 64  # longer numeric timestamp strings are rejected (DoS guard)
_EPOCH_ORDINAL: Final = 719163  # date(1970, 1, 1).toordinal()
# _FRAC_SCALE[n]: nanoseconds per unit of an n-digit second fraction.
_FRAC_SCALE: Final[tuple[int, ...]] = (0, *(10 ** (9 - n) for n in range(1, 10)))
_POW10: Final[tuple[int, ...]] = tuple(10**n for n in range(_MAX_NUM_LEN + 1))
_ISO_CACHE_MAX: Final = 4096
_iso_cache: dict[str, int] = {}


def _show(x: object) -> str:
    """Return a short repr of ``x`` for error messages."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


# --------------------------------------------------------------------------- decimals


def dec(x: object) -> str:
    """Return ``x`` as an exact decimal string (plain strings unchanged, floats never in e-form)."""
    if type(x) is str:
        head, dot, tail = x.partition(".")
        if head.isdigit() and (tail.isdigit() or not dot) and x.isascii():
            return x
        if _DEC_FULLMATCH(x) is not None:
            return x
        raise ConversionError(f"not a decimal literal: {_show(x)}")
    if type(x) is int:
        return str(x)
    if type(x) is float:
        return _float_dec(x)
    if isinstance(x, str):
        return dec(str(x))
    if isinstance(x, int) and not isinstance(x, bool):
        return str(int(x))
    if isinstance(x, float):
        return _float_dec(float(x))
    raise ConversionError(
        f"expected a decimal str, int or float, got {type(x).__name__}: {_show(x)}"
    )


def _float_dec(x: float) -> str:
    """Shortest round-trip decimal for a finite float, in positional notation."""
    r = repr(x)
    if "e" in r:
        return format(Decimal(r), "f")
    if r == "nan" or r == "inf" or r == "-inf":
        raise ConversionError(f"non-finite float: {r}")
    return r


def dec_abs(x: object) -> str:
    """Return :func:`dec` of ``x`` without a leading minus sign."""
    s = dec(x)
    return s[1:] if s[0] == "-" else s


def dec_add(x: object, y: object) -> str:
    """The exact sum of two decimals as a plain decimal string (e.g. free + locked)."""
    total = Decimal(dec(x)) + Decimal(dec(y))
    return format(total, "f")


def is_negative(x: object) -> bool:
    """Return True if ``x`` is strictly below zero (e.g. Bitfinex amount < 0 means sell)."""
    if type(x) is int:
        return x < 0
    if type(x) is float:
        if x - x != 0.0:  # nan or inf
            raise ConversionError(f"non-finite float: {x!r}")
        return x < 0
    s = dec(x)
    if s[0] != "-":
        return False
    mantissa = s.partition("e")[0].partition("E")[0]
    return mantissa.strip("-0.") != ""


# --------------------------------------------------------------------------- timestamps


def ts_s(x: object) -> int:
    """Seconds (int, float or numeric str like ``"1618678142.557535"``) -> int ns, exact."""
    if type(x) is int:
        return x * 1_000_000_000
    if type(x) is str and x.isdigit() and x.isascii() and len(x) <= _MAX_NUM_LEN:
        return int(x) * 1_000_000_000
    return _ts(x, 9, "ts_s")


def ts_ms(x: object) -> int:
    """Milliseconds (int, float or numeric str like ``"1652459199958"``) -> int ns, exact."""
    if type(x) is int:
        return x * 1_000_000
    if type(x) is str and x.isdigit() and x.isascii() and len(x) <= _MAX_NUM_LEN:
        return int(x) * 1_000_000
    return _ts(x, 6, "ts_ms")


def ts_us(x: object) -> int:
    """Microseconds (int, float or numeric str) -> int ns, exact."""
    if type(x) is int:
        return x * 1_000
    if type(x) is str and x.isdigit() and x.isascii() and len(x) <= _MAX_NUM_LEN:
        return int(x) * 1_000
    return _ts(x, 3, "ts_us")


def ts_ns(x: object) -> int:
    """Nanoseconds (int, float or numeric str) -> int ns, exact."""
    if type(x) is int:
        return x
    if type(x) is str and x.isdigit() and x.isascii() and len(x) <= _MAX_NUM_LEN:
        return int(x)
    return _ts(x, 0, "ts_ns")


def _ts(x: object, exp10: int, name: str) -> int:
    """Convert ``x`` units of ``10**exp10`` ns to int ns.

    Strings are parsed exactly (digits below 1 ns are truncated toward zero).  Integral floats
    are exact; other floats go through their shortest repr, i.e. the decimal the JSON sender most
    likely wrote, rather than ``round(x * factor)``, which is off by up to ~128 ns at epoch-ns
    magnitudes because float64 has a 53-bit mantissa.
    """
    if type(x) is str:
        head, _, tail = x.partition(".")
        if head.isdigit() and tail.isdigit() and x.isascii() and len(x) <= _MAX_NUM_LEN:
            return int(head + tail[:exp10].ljust(exp10, "0"))
        return _str_ts(x, exp10, name)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ConversionError(f"{name}: non-finite timestamp {x!r}")
        if x.is_integer():
            return int(x) * _POW10[exp10]
        return _str_ts(repr(float(x)), exp10, name)
    if isinstance(x, int) and not isinstance(x, bool):
        return int(x) * _POW10[exp10]
    if isinstance(x, str):
        return _ts(str(x), exp10, name)
    raise ConversionError(
        f"{name}: expected an int, float or numeric str timestamp, got "
        f"{type(x).__name__}: {_show(x)}"
    )


def _str_ts(s: str, exp10: int, name: str) -> int:
    """Exact parse of a numeric string (optional sign, fraction and exponent) to int ns."""
    m = _NUM_FULLMATCH(s) if len(s) <= _MAX_NUM_LEN else None
    if m is None:
        raise ConversionError(f"{name}: not a numeric timestamp: {_show(s)}")
    sign, int_part, frac, exp_s = m.groups()
    frac = frac or ""
    shift = exp10 - len(frac) + (int(exp_s) if exp_s else 0)
    if shift > _MAX_NUM_LEN:
        raise ConversionError(f"{name}: timestamp out of range: {_show(s)}")
    digits = int_part + frac
    if shift >= 0:
        value = int(digits) * _POW10[shift]
    else:
        kept = digits[:shift]  # truncate sub-nanosecond digits toward zero
        value = int(kept) if kept else 0
    return -value if sign else value


def ymd(ns: object) -> str:
    """Int ns since the epoch -> its UTC date as ``YYYYMMDD`` (expiry dates of symbols)."""
    if type(ns) is not int:
        raise ConversionError(f"ymd: expected int ns, got {type(ns).__name__}: {_show(ns)}")
    try:
        return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).strftime("%Y%m%d")
    except (OverflowError, OSError, ValueError) as exc:
        raise ConversionError(f"ymd: timestamp out of range: {ns}: {exc}") from None


def ts_iso(x: object) -> int:
    """ISO 8601 / RFC 3339 datetime str -> int ns, exact.

    Accepts ``YYYY-MM-DD[T ]HH:MM:SS``, an optional fraction of 1-9 digits and an optional ``Z``
    or ``+HH:MM`` / ``+HHMM`` offset (no zone means UTC).  The epoch ns of the first 19
    characters are cached, so a repeated second costs one dict lookup.
    """
    if type(x) is not str:
        raise ConversionError(f"ts_iso: expected a str, got {type(x).__name__}: {_show(x)}")
    base = _iso_cache.get(x[:19])
    if base is None:
        base = _iso_prefix(x)  # validated: len(x) >= 19 and x[18] is a digit
    if x[-1] == "Z":
        if x[19] == ".":  # fast path: ".fffZ"
            frac = x[20:-1]
            if frac.isdigit() and x.isascii() and len(frac) < 10:
                return base + int(frac) * _FRAC_SCALE[len(frac)]
        elif len(x) == 20:
            return base
    return _iso_tail(x, base)


def _iso_prefix(x: str) -> int:
    """Validate ``x[:19]`` and return (and cache) its epoch ns."""
    key = x[:19]
    m = _ISO_PREFIX_FULLMATCH(key)
    if m is None:
        raise ConversionError(f"ts_iso: not an ISO 8601 datetime: {_show(x)}")
    y, mo, d, h, mi, s = map(int, m.groups())
    try:
        day = datetime(y, mo, d, h, mi, s).toordinal()
    except ValueError as exc:
        raise ConversionError(f"ts_iso: invalid datetime {_show(x)}: {exc}") from exc
    base = ((day - _EPOCH_ORDINAL) * 86400 + h * 3600 + mi * 60 + s) * 1_000_000_000
    if len(_iso_cache) >= _ISO_CACHE_MAX:
        _iso_cache.clear()
    _iso_cache[key] = base
    return base


def _iso_tail(x: str, base: int) -> int:
    """Slow path of :func:`ts_iso`: parse fraction and zone offset after the seconds."""
    m = _ISO_TAIL_FULLMATCH(x, 19)
    if m is None:
        raise ConversionError(f"ts_iso: bad fraction or zone in {_show(x)}")
    frac, sign, oh, om = m.groups()
    ns = base
    if frac:
        ns += int(frac) * _FRAC_SCALE[len(frac)]
    if sign:
        hours, minutes = int(oh), int(om)
        if hours > 23 or minutes > 59:
            raise ConversionError(f"ts_iso: bad zone offset in {_show(x)}")
        offset = (hours * 3600 + minutes * 60) * 1_000_000_000
        ns += -offset if sign == "+" else offset
    return ns


# --------------------------------------------------------------------------- navigation


def lookup(value: Any, table: Mapping[Any, Any]) -> Any:
    """Return ``table[value]``; the error names the value and the allowed keys."""
    try:
        return table[value]
    except (KeyError, TypeError):
        allowed = ", ".join(map(repr, table))
        raise ConversionError(f"unexpected value {_show(value)}; allowed: {allowed}") from None


def path(obj: Any, *keys: str | int) -> Any:
    """Walk dict keys and list indices; return None as soon as something is missing."""
    for key in keys:
        t = type(obj)
        if t is dict:
            obj = obj.get(key)
            if obj is None:
                return None
        elif t is list and type(key) is int:
            try:
                obj = obj[key]
            except IndexError:
                return None
        else:
            obj = get(obj, key)
            if obj is None:
                return None
    return obj


def get(obj: Any, key: str | int, default: Any = None) -> Any:
    """One step of :func:`path`: ``obj[key]`` or ``default`` if missing or of the wrong type."""
    if type(obj) is dict:
        return obj.get(key, default)
    if isinstance(obj, Mapping):
        try:
            return obj.get(key, default)
        except TypeError:  # unhashable key
            return default
    if isinstance(obj, list | tuple) and type(key) is int and -len(obj) <= key < len(obj):
        return obj[key]
    return default


def levels(rows: Any, depth: int | None = None) -> list[list[str]]:
    """``[[price, size, *extra], ...]`` -> ``[[dec(price), dec(size)], ...]``, first ``depth``."""
    if not isinstance(rows, list | tuple):
        raise ConversionError(f"levels: expected a list of rows, got {type(rows).__name__}")
    if depth is not None:
        if type(depth) is not int or depth < 0:
            raise ConversionError(f"levels: depth must be a non-negative int, got {depth!r}")
        rows = rows[:depth]
    out: list[list[str]] = []
    append = out.append
    for row in rows:
        if (type(row) is list or isinstance(row, list | tuple)) and len(row) >= 2:
            append([dec(row[0]), dec(row[1])])
        else:
            raise ConversionError(f"levels: expected [price, size, ...], got {_show(row)}")
    return out
