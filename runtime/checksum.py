"""Order-book checksums as venues define them, over the levels' original strings.

A descriptor names the rule (``sync.checksum``); :data:`CHECKSUMS` maps the name to a function
``f(bids, asks, depth) -> int`` taking each side best first. Both rules were checked against the
venues' documented examples (tests/test_books.py) and every checksummed message of the captures.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import lru_cache

from runtime.book import Level

ChecksumFn = Callable[[Sequence[Level], Sequence[Level], int], int]

_SIGN = 1 << 31
_WRAP = 1 << 32


def crc32_interleaved_signed(bids: Sequence[Level], asks: Sequence[Level], depth: int) -> int:
    """Signed CRC32 of ``bid1p:bid1s:ask1p:ask1s:bid2p:...`` over the top ``depth`` levels.

    When one side is shorter, the other side's remaining levels follow on their own. The result
    is the CRC32 as a signed 32-bit integer. (The ``okx_crc32`` rule.)
    """
    b = [f"{p}:{s}" for p, s in bids[:depth]]
    a = [f"{p}:{s}" for p, s in asks[:depth]]
    n = min(len(b), len(a))
    parts = [x for pair in zip(b[:n], a[:n], strict=True) for x in pair]
    parts += b[n:] or a[n:]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - _WRAP if crc >= _SIGN else crc


@lru_cache(maxsize=1 << 16)
def _digits(level: Level) -> str:
    """A level as the rule writes it (cached: the top levels rarely change between updates)."""
    price, size = level
    return price.replace(".", "").lstrip("0") + size.replace(".", "").lstrip("0")


def crc32_digits_unsigned(bids: Sequence[Level], asks: Sequence[Level], depth: int) -> int:
    """Unsigned CRC32 of the top ``depth`` asks (best first) then bids, each level its price then
    its size with the '.' removed and leading zeros stripped. (The ``kraken_crc32`` rule.)"""
    text = "".join([_digits(level) for level in asks[:depth]])
    text += "".join([_digits(level) for level in bids[:depth]])
    return zlib.crc32(text.encode())


CHECKSUMS: dict[str, tuple[ChecksumFn, int]] = {
    "okx_crc32": (crc32_interleaved_signed, 25),
    "kraken_crc32": (crc32_digits_unsigned, 10),
}
"""Rule name (``BookSyncSpec.checksum``) -> (function, default depth per side)."""


def checksum_rule(name: str, depth: int | None = None) -> tuple[ChecksumFn, int] | None:
    """The function and depth of a rule (``None`` for ``"none"``); ``depth`` overrides the
    rule's default."""
    if name == "none":
        return None
    try:
        fn, default = CHECKSUMS[name]
    except KeyError:
        known = ", ".join(sorted(CHECKSUMS))
        raise ValueError(f"unknown checksum rule {name!r} (known: {known})") from None
    return fn, depth if depth is not None else default
