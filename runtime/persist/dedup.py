"""An optional dedup window: drop envelopes whose identity was seen recently.

Keys are the identities of :mod:`runtime.persist.keys`, by priority the exchange's message id,
then its sequence number (``seq``, with a digest of the record), then a digest of the content.
The window is bounded by time (``window`` seconds since a key was first seen) and by
``max_keys`` (the oldest keys go first). Drops are counted per (exchange, channel).
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

from runtime.envelope import Envelope


class DedupWindow:
    """Remembers identities for ``window`` seconds, at most ``max_keys`` of them."""

    def __init__(
        self,
        window: float,
        max_keys: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window <= 0 or max_keys < 1:
            raise ValueError("window must be > 0 and max_keys >= 1")
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.drops: Counter[tuple[str, str]] = Counter()
        self.evicted = 0
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def filter(
        self, batch: Sequence[Envelope], ids: Sequence[str]
    ) -> tuple[list[Envelope], list[str]]:
        """The envelopes (and their ids) not seen within the window; the others are counted."""
        now = self.clock()
        self._expire(now)
        seen = self._seen
        kept: list[Envelope] = []
        kept_ids: list[str] = []
        for env, ident in zip(batch, ids, strict=True):
            if ident in seen:
                self.drops[(str(env.get("exchange")), str(env.get("channel")))] += 1
                continue
            seen[ident] = now
            kept.append(env)
            kept_ids.append(ident)
        while len(seen) > self.max_keys:
            seen.popitem(last=False)
            self.evicted += 1
        return kept, kept_ids

    def _expire(self, now: float) -> None:
        seen = self._seen
        limit = now - self.window
        while seen:
            key, first = next(iter(seen.items()))
            if first > limit:
                break
            del seen[key]
            self.evicted += 1

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())
