"""Order-book checksums as venues define them, over the levels' original strings.

A descriptor names the rule (``sync.checksum``); :data:`CHECKSUMS` maps the name to a function
``f(bids, asks, depth) -> int`` taking each side best first. Each rule is pinned to its venue's
documented examples (tests/test_books.py); OKX's and Kraken's also to every checksummed message
of the captures.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from decimal import Decimal
from functools import lru_cache

from runtime.book import Level

ChecksumFn = Callable[[Sequence[Level], Sequence[Level], int], int]

_SIGN = 1 << 31
_WRAP = 1 << 32


def _interleaved_signed(b: list[str], a: list[str]) -> int:
    """Signed CRC32 of ``b[0]:a[0]:b[1]:a[1]:...``, the longer side's rest at the end."""
    n = min(len(b), len(a))
    parts = [x for pair in zip(b[:n], a[:n], strict=True) for x in pair]
    parts += b[n:] or a[n:]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - _WRAP if crc >= _SIGN else crc


def crc32_interleaved_signed(bids: Sequence[Level], asks: Sequence[Level], depth: int) -> int:
    """Signed CRC32 of ``bid1p:bid1s:ask1p:ask1s:bid2p:...`` over the top ``depth`` levels.

    When one side is shorter, the other side's remaining levels follow on their own. The result
    is the CRC32 as a signed 32-bit integer. (The ``okx_crc32`` rule.)
    """
    b = [f"{p}:{s}" for p, s in bids[:depth]]
    a = [f"{p}:{s}" for p, s in asks[:depth]]
    return _interleaved_signed(b, a)


def js_number(text: str, *, exponent: bool = True) -> str:
    """A decimal string as JavaScript writes the number (``Number.prototype.toString``):
    no trailing zeros (``"7255.0"`` -> ``"7255"``), exponent form below 1e-6 and from 1e21
    (``"0.0000001"`` -> ``"1e-7"``) unless ``exponent`` is false (then always positional)."""
    value = Decimal(text)
    if not value:
        return "0"
    sign, digits_t, exp = value.normalize().as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digits_t))
    k, n = len(digits), exp + len(digits)  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        out = digits + "0" * (n - k)
    elif 0 < n <= 21:
        out = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0 or not exponent:
        out = "0." + "0" * -n + digits if n <= 0 else digits + "0" * (n - k)
    else:
        e = n - 1
        out = digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e > 0 else "e-")
        out += str(abs(e))
    return "-" + out if sign else out


@lru_cache(maxsize=1 << 16)
def _bitfinex(level: Level, ask: bool) -> str:
    price, size = level
    return js_number(price, exponent=False) + ":" + js_number("-" + size if ask else size)


def crc32_interleaved_signed_neg_asks(
    bids: Sequence[Level], asks: Sequence[Level], depth: int
) -> int:
    """As :func:`crc32_interleaved_signed`, each ask's size negative and every value written
    as JavaScript writes the number (``bid1p:bid1s:ask1p:-ask1s:...``; prices never in
    exponent form): Bitfinex's amounts, where an ask's is below zero, sent as JSON numbers.
    (The ``bitfinex_crc32`` rule.)"""
    b = [_bitfinex(level, False) for level in bids[:depth]]
    a = [_bitfinex(level, True) for level in asks[:depth]]
    return _interleaved_signed(b, a)


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
    "bitfinex_crc32": (crc32_interleaved_signed_neg_asks, 25),
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
