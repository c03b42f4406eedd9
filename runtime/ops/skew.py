"""Clock skew against an exchange's server time (the descriptor's ``rest.time_endpoint``).

The reply is parsed generically by :func:`parse_server_time`: the JSON is searched for a value
under a time-like key (``serverTime``, ``epoch``, ``iso``, ``unixtime``, ``ts``, ...) that reads
as an instant between 2001 and 2100 — epoch seconds, milliseconds, microseconds or nanoseconds
(numbers or numeric strings), ISO 8601 or RFC 1123 text. The finest-resolution candidate wins.

Each probe is one unretried call timed around with the wall clock; like NTP, the skew is
``server_time - (t_sent + t_received) / 2`` with an uncertainty of half the round trip plus half
the server's resolution. The estimate is the probe with the smallest uncertainty among the last
:data:`KEEP` probes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from runtime.rest import RestClient, RestError, RestStats
from runtime.spec import RestSpec

__all__ = ["KEEP", "ClockProbe", "ServerTime", "SkewSample", "parse_server_time"]

log = logging.getLogger("mdgen.ops.clock")

KEEP = 8
"""Probes the estimate is chosen from."""
SKEW_WARNING = 1.0
"""Seconds of skew (beyond the uncertainty) that are logged as a warning."""

_TIME_KEY = re.compile(
    r"(?i)^(server_?time|servertime|server_?ts|time|timestamp|ts|epoch|iso|unixtime|now"
    r"|current_?time|.*_?time(stamp)?|.*_ts|rfc1123|date)$"
)
_LOW, _HIGH = 978_307_200.0, 4_102_444_800.0  # 2001-01-01 .. 2100-01-01, epoch seconds
_UNITS = ((1e17, 1e-9), (1e14, 1e-6), (1e11, 1e-3), (1e8, 1.0))
_NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")


@dataclass(frozen=True)
class ServerTime:
    """An instant read from a reply: epoch seconds and the resolution it was given in."""

    epoch: float
    resolution: float
    key: str


def _from_number(value: float, *, fraction_digits: int | None) -> tuple[float, float] | None:
    for threshold, unit in _UNITS:
        if abs(value) >= threshold:
            seconds = value * unit
            if not _LOW <= seconds <= _HIGH:
                return None
            resolution = unit
            if unit == 1.0 and fraction_digits:
                resolution = 10.0**-fraction_digits
            return seconds, resolution
    return None


def _from_text(text: str) -> tuple[float, float] | None:
    text = text.strip()
    if _NUMERIC.match(text):
        digits = len(text.split(".")[1]) if "." in text else 0
        return _from_number(float(text), fraction_digits=digits)
    moment: datetime | None = None
    resolution = 1.0
    try:
        moment = datetime.fromisoformat(text)
        fraction = re.search(r"[T ]\d\d:\d\d:\d\d\.(\d+)", text)
        if fraction:
            resolution = 10.0 ** -len(fraction.group(1))
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    return (seconds, resolution) if _LOW <= seconds <= _HIGH else None


def _candidates(node: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 4:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict | list):
                yield from _candidates(value, depth + 1)
            elif isinstance(key, str) and _TIME_KEY.match(key):
                yield key, value
    elif isinstance(node, list):
        for item in node[:4]:
            yield from _candidates(item, depth + 1)


def parse_server_time(body: Any) -> ServerTime | None:
    """The server time in a time endpoint's reply (see the module doc), or None."""
    best: ServerTime | None = None
    if isinstance(body, int | float | str) and not isinstance(body, bool):
        pairs: list[tuple[str, Any]] = [("", body)]
    else:
        pairs = list(_candidates(body))
    for key, value in pairs:
        found: tuple[float, float] | None = None
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            found = _from_number(float(value), fraction_digits=0)
        elif isinstance(value, float):
            digits = len(repr(value).split(".")[1].rstrip("0")) if "." in repr(value) else 0
            found = _from_number(value, fraction_digits=min(digits, 6))
        elif isinstance(value, str):
            found = _from_text(value)
        if found is not None and (best is None or found[1] < best.resolution):
            best = ServerTime(found[0], found[1], key)
    return best


@dataclass(frozen=True)
class SkewSample:
    """One probe: server minus local time (seconds) and its uncertainty."""

    skew: float
    uncertainty: float
    taken: float  # time.monotonic()


class ClockProbe:
    """Probes one exchange's time endpoint every ``interval`` seconds."""

    def __init__(
        self,
        exchange: str,
        rest: RestSpec,
        *,
        interval: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if rest.time_endpoint is None:
            raise ValueError(f"{exchange}: the descriptor names no rest.time_endpoint")
        self.exchange = exchange
        self.endpoint = rest.time_endpoint
        self.interval = interval
        self.client = RestClient(rest, transport=transport, max_retries=0, timeout=5.0)
        self.wall_clock = wall_clock
        self.samples: deque[SkewSample] = deque(maxlen=KEEP)
        self.probes = 0
        self.failures = 0
        self.last_error: str | None = None

    @property
    def stats(self) -> RestStats:
        return self.client.stats

    @property
    def estimate(self) -> SkewSample | None:
        """The recent probe with the smallest uncertainty, or None before the first success."""
        return min(self.samples, key=lambda s: s.uncertainty, default=None)

    async def probe(self) -> SkewSample | None:
        """One probe; failures are counted and remembered, never raised."""
        self.probes += 1
        sent = self.wall_clock()
        try:
            reply = await self.client.call(self.endpoint)
        except (RestError, httpx.HTTPError, OSError) as exc:
            self._failed(str(exc))
            return None
        received = self.wall_clock()
        server = parse_server_time(reply.body)
        if server is None:
            self._failed(f"no server time found in the reply of {self.endpoint!r}")
            return None
        rtt = max(0.0, received - sent)
        sample = SkewSample(
            skew=server.epoch - (sent + received) / 2,
            uncertainty=rtt / 2 + server.resolution / 2,
            taken=time.monotonic(),
        )
        first = not self.samples
        self.samples.append(sample)
        self.last_error = None
        best = self.estimate
        assert best is not None
        if abs(best.skew) - best.uncertainty > SKEW_WARNING:
            log.warning(
                "%s: the exchange's clock is %+.3fs (±%.3fs) from ours",
                self.exchange,
                best.skew,
                best.uncertainty,
                extra={"event": "clock_skew", "skew": best.skew, "uncertainty": best.uncertainty},
            )
        elif first:
            log.info(
                "%s: clock skew %+.3fs (±%.3fs)",
                self.exchange,
                best.skew,
                best.uncertainty,
                extra={"event": "clock_skew", "skew": best.skew, "uncertainty": best.uncertainty},
            )
        return sample

    def _failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        log.warning("%s: clock probe failed: %s", self.exchange, error)
        return None

    async def run(self) -> None:
        """Probe now, then every ``interval`` seconds, until cancelled."""
        try:
            while True:
                await self.probe()
                await asyncio.sleep(self.interval)
        finally:
            await self.client.aclose()
