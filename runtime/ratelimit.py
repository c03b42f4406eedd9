"""Client-side rate limiting: request weight for REST, message spacing for WebSocket sends."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class WeightLimiter:
    """At most ``capacity`` weight in any window of ``per_seconds`` seconds.

    A token bucket refilled continuously lets up to twice its capacity through in one window
    (a full bucket, then a full refill), so this limiter keeps the grants of the last window
    instead: a request waits until the weight granted in ``(now - per_seconds, now]`` plus its
    own fits in ``capacity``. That bounds every sliding window, hence every fixed window an
    exchange counts in. Waiters are served first come, first served.
    """

    def __init__(
        self,
        capacity: int,
        per_seconds: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        if per_seconds <= 0:
            raise ValueError(f"per_seconds must be positive, got {per_seconds}")
        self.capacity = capacity
        self.per_seconds = per_seconds
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WeightLimiter(capacity={self.capacity}, per_seconds={self.per_seconds})"

    @property
    def used(self) -> int:
        """Weight granted in the current window."""
        self._expire(self._clock())
        return self._used

    def _expire(self, now: float) -> None:
        # Compared as ``granted_at + per_seconds`` so it matches the wake-up time exactly.
        while self._grants and self._grants[0][0] + self.per_seconds <= now:
            self._used -= self._grants.popleft()[1]

    async def acquire(self, weight: int = 1) -> float:
        """Wait until ``weight`` fits in the window, take it, and return the seconds waited."""
        if weight <= 0:
            return 0.0
        if weight > self.capacity:
            raise ValueError(f"weight {weight} exceeds the limiter capacity {self.capacity}")
        start = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                self._expire(now)
                if self._used + weight <= self.capacity:
                    self._grants.append((now, weight))
                    self._used += weight
                    return max(0.0, now - start)
                # The oldest grants leave the window first: wait until enough of them have.
                excess = self._used + weight - self.capacity
                freed = 0
                wake = now
                for granted_at, granted in self._grants:
                    freed += granted
                    if freed >= excess:
                        wake = granted_at + self.per_seconds
                        break
                await self._sleep(max(wake - now, 0.0))


class RateLimiter:
    """Spaces events at least ``1 / rate_per_second`` apart (outbound WebSocket messages).

    Exchanges cap client messages per second (e.g. 5/s) and some count bursts within a second
    harshly, so sends are spread evenly rather than allowed in bursts.
    """

    def __init__(
        self,
        rate_per_second: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        self.rate_per_second = rate_per_second
        self.interval = 1.0 / rate_per_second
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RateLimiter(rate_per_second={self.rate_per_second})"

    async def acquire(self) -> float:
        """Wait for the next send slot and return the seconds waited."""
        start = self._clock()
        async with self._lock:
            while True:
                now = self._clock()
                if self._next is None or now >= self._next:
                    self._next = now + self.interval
                    return max(0.0, now - start)
                await self._sleep(self._next - now)
