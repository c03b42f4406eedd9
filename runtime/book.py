"""An L2 order book per symbol: exact decimal price levels, fast delta apply, top-N views.

Levels are keyed by :class:`~decimal.Decimal` (so ``"0.10"`` and ``"0.1"`` are one level and the
ordering is exact) but keep the exchange's original ``price`` and ``size`` strings, which are what
records and checksums use. A size that is zero deletes its level.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation

Level = tuple[str, str]
"""``(price, size)`` exactly as the exchange sent them."""

Rows = Iterable[Sequence[str]]
"""``[[price, size], ...]`` as records carry them (extra columns are ignored)."""


class BookError(ValueError):
    """A level the book cannot take: not a decimal, or a negative size."""


def _key(price: str) -> Decimal:
    try:
        return Decimal(price)
    except (InvalidOperation, TypeError, ValueError):
        raise BookError(f"price is not a decimal: {price!r}") from None


def is_zero(size: str) -> bool:
    """True when ``size`` is zero ("0", "0.00000000", "0E-8"); negative sizes are an error."""
    rest = size.strip("0.")
    if not rest:
        return True
    if rest[0] not in "eE-+":
        return False
    try:
        value = Decimal(size)
    except (InvalidOperation, TypeError, ValueError):
        raise BookError(f"size is not a decimal: {size!r}") from None
    if value < 0:
        raise BookError(f"negative size: {size!r}")
    return value == 0


class Side:
    """One side of a book: a dict of levels plus their keys in ascending price order."""

    __slots__ = ("levels", "keys", "descending")

    def __init__(self, descending: bool) -> None:
        self.levels: dict[Decimal, Level] = {}
        self.keys: list[Decimal] = []
        self.descending = descending
        """Bids: the best level has the highest price (the end of ``keys``)."""

    def __len__(self) -> int:
        return len(self.keys)

    def clear(self) -> None:
        self.levels.clear()
        self.keys.clear()

    def load(self, rows: Rows) -> None:
        """Replace every level (zero sizes are skipped; a repeated price keeps the last row)."""
        levels: dict[Decimal, Level] = {}
        for row in rows:
            price, size = row[0], row[1]
            key = _key(price)
            if is_zero(size):
                levels.pop(key, None)
            else:
                levels[key] = (price, size)
        self.levels = levels
        self.keys = sorted(levels)

    def apply(self, rows: Rows) -> None:
        """Set or delete levels, in order (the hot path: :func:`is_zero` inlined)."""
        levels, keys, pop = self.levels, self.keys, self.levels.pop
        try:
            for row in rows:
                price, size = row[0], row[1]
                key = Decimal(price)
                rest = size.strip("0.")
                if not rest or (rest[0] in "eE-+" and is_zero(size)):
                    if pop(key, None) is not None:
                        del keys[bisect_left(keys, key)]
                elif key in levels:
                    levels[key] = (price, size)
                else:
                    levels[key] = (price, size)
                    insort(keys, key)
        except BookError:
            raise
        except (InvalidOperation, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise BookError(f"not a [price, size] level of decimals: {exc!r}") from None

    def truncate(self, depth: int) -> int:
        """Keep the best ``depth`` levels; returns how many were removed."""
        extra = len(self.keys) - depth
        if extra <= 0:
            return 0
        keys, levels = self.keys, self.levels
        if self.descending:
            gone = keys[:extra]
            del keys[:extra]
        else:
            gone = keys[depth:]
            del keys[depth:]
        for key in gone:
            del levels[key]
        return extra

    def best_key(self) -> Decimal | None:
        if not self.keys:
            return None
        return self.keys[-1] if self.descending else self.keys[0]

    def best(self) -> Level | None:
        key = self.best_key()
        return None if key is None else self.levels[key]

    def top(self, n: int | None = None) -> list[Level]:
        """The best ``n`` levels (all when None), best first."""
        keys, levels = self.keys, self.levels
        if self.descending:
            chosen = keys[::-1] if n is None else keys[: -n - 1 : -1] if n > 0 else []
        else:
            chosen = keys if n is None else keys[:n]
        return [levels[k] for k in chosen]


class Book:
    """Bids and asks of one symbol; ``depth`` (optional) is the number of levels kept per side."""

    __slots__ = ("bids", "asks", "depth")

    def __init__(self, depth: int | None = None) -> None:
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.bids = Side(descending=True)
        self.asks = Side(descending=False)
        self.depth = depth

    def __repr__(self) -> str:
        return (
            f"Book(bids={len(self.bids)}, asks={len(self.asks)}, best_bid={self.best_bid()}, "
            f"best_ask={self.best_ask()})"
        )

    @property
    def empty(self) -> bool:
        return not self.bids.keys and not self.asks.keys

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def load(self, bids: Rows, asks: Rows) -> None:
        """Replace the whole book (a snapshot), then truncate to ``depth``."""
        self.bids.load(bids)
        self.asks.load(asks)
        self._truncate()

    def apply(self, bids: Rows, asks: Rows) -> None:
        """Apply one delta (size zero deletes), then truncate to ``depth``.

        Raises :class:`BookError` on a malformed level; levels before it are applied.
        """
        if bids:
            self.bids.apply(bids)
        if asks:
            self.asks.apply(asks)
        if self.depth is not None:
            self._truncate()

    def _truncate(self) -> None:
        depth = self.depth
        if depth is not None:
            self.bids.truncate(depth)
            self.asks.truncate(depth)

    def best_bid(self) -> Level | None:
        return self.bids.best()

    def best_ask(self) -> Level | None:
        return self.asks.best()

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a book that cannot be right)."""
        bids, asks = self.bids.keys, self.asks.keys
        return bool(bids and asks and bids[-1] >= asks[0])

    def top(self, n: int | None = None) -> tuple[list[Level], list[Level]]:
        """``(bids, asks)``, each best first, at most ``n`` levels a side (all when None)."""
        return self.bids.top(n), self.asks.top(n)

    def snapshot(self, n: int | None = None) -> dict[str, list[list[str]]]:
        """``{"bids": [[price, size], ...], "asks": [...]}``, best first, as records carry them."""
        bids, asks = self.top(n)
        return {"bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}
