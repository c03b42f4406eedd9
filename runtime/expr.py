"""Small helpers that generated expressions call, beside those in ``runtime.convert``."""

from __future__ import annotations

import time
from typing import Any

import orjson

from runtime.convert import is_negative


def flatten(lists: Any) -> list[Any]:
    """One list of the items of a list of lists (``[[1, 2], [3]]`` -> ``[1, 2, 3]``)."""
    if not isinstance(lists, list) or not all(isinstance(xs, list) for xs in lists):
        raise TypeError(f"flatten() needs a list of lists, got {type(lists).__name__}")
    return [x for xs in lists for x in xs]


def has(obj: Any, key: Any) -> bool:
    """True when ``obj`` is an object holding ``key`` (or a list long enough for index ``key``)."""
    if isinstance(obj, dict):
        return key in obj
    if isinstance(obj, list) and isinstance(key, int):
        return -len(obj) <= key < len(obj)
    return False


def coalesce(value: Any, default: Any) -> Any:
    """``value ?? default``."""
    return default if value is None else value


def side_from_sign(amount: Any) -> str:
    """Trade side from a signed amount: negative is a sell, otherwise a buy."""
    return "sell" if is_negative(amount) else "buy"


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (for outgoing messages that carry a time)."""
    return time.time_ns() // 1_000_000


def json_text(value: Any) -> str:
    """Compact JSON text of ``value``."""
    return orjson.dumps(value).decode()


def starts_with(text: Any, prefix: str) -> bool:
    """True when ``text`` is a string starting with ``prefix`` (false for null and non-strings)."""
    return isinstance(text, str) and text.startswith(prefix)


def ends_with(text: Any, suffix: str) -> bool:
    """True when ``text`` is a string ending with ``suffix`` (false for null and non-strings)."""
    return isinstance(text, str) and text.endswith(suffix)
