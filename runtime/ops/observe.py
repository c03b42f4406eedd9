"""What the sink side sees: records per channel, freshness, time quality, sink latency and state.

:class:`ObservedSink` wraps the pipeline's sink. It looks at each batch once, on the consumer
side (never per message in a session), and only at a sample of about
:data:`SAMPLE_PER_BATCH` envelopes of it (see :class:`BatchObserver`). Write latency and
failures are timed per batch.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from runtime.envelope import Envelope
from runtime.sinks import Sink

__all__ = [
    "LAG_BUCKETS",
    "SAMPLE_PER_BATCH",
    "WRITE_BUCKETS",
    "BatchObserver",
    "Histogram",
    "HealthReporting",
    "ObservedSink",
    "TimeQuality",
    "sink_health",
]

SAMPLE_PER_BATCH = 32
"""About this many envelopes per batch are sampled (all of them in smaller batches)."""

LAG_BUCKETS: tuple[float, ...] = (
    -1.0,
    -0.1,
    -0.01,
    0.0,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
"""Upper bounds (seconds) of the receive-lag histogram; negative: the exchange clock is ahead."""

WRITE_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the sink write-latency histogram."""

_NO_EXCHANGE_TIME = frozenset({"gap", "dead_letter"})

ChannelKey = tuple[str, str, str]
"""(exchange, instance, channel)"""
KindKey = tuple[str, str, str, str]
"""(exchange, instance, channel, kind)"""


@runtime_checkable
class HealthReporting(Protocol):
    """The optional protocol a sink implements to report its health.

    ``health()`` returns a mapping with at least ``state`` (e.g. ``"OK"``, ``"Degraded"``,
    ``"MongoUnavailable"``). Optional keys, all read at scrape time (docs/operations.md):
    ``healthy`` (bool; overrides the state rule), ``error`` (text), ``spool_records``,
    ``spool_bytes``, ``spool_segments``, ``replay_backlog`` (records waiting to be replayed),
    ``on_full_drops``, ``dedup_drops``. Other keys appear in /healthz as they are.
    """

    def health(self) -> Mapping[str, Any]: ...


HEALTHY_SINK_STATES = frozenset({"ok"})
"""Sink states that count as healthy when the sink does not say ``healthy`` itself."""


ALIASES = {
    "reason": "error",
    "backlog_records": "spool_records",
    "backlog_bytes": "spool_bytes",
    "backlog_segments": "spool_segments",
    "dropped": "on_full_drops",
    "duplicates": "dedup_drops",
}
"""Other names accepted for the keys of a health report (the first name given wins)."""


def _as_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return dict(vars(value))


def sink_health(sink: object) -> dict[str, Any]:
    """The sink's own health report (``{"state": "OK"}`` for sinks without ``health()``),
    plus ``healthy`` decided by the rule of docs/operations.md.

    ``health()`` may return a mapping, a dataclass or any object with attributes; the names of
    :data:`ALIASES` are accepted for the documented keys (``reason`` for ``error``, ...).
    """
    report: dict[str, Any]
    if isinstance(sink, HealthReporting):
        try:
            report = _as_dict(sink.health())
        except Exception as exc:  # a broken health() must not break /healthz or /metrics
            report = {"state": "HealthCheckFailed", "error": repr(exc)}
    else:
        report = {"state": "OK"}
    for alias, key in ALIASES.items():
        if alias in report:
            report.setdefault(key, report.pop(alias))
    if "replay_backlog" not in report and "spool_records" in report:
        report["replay_backlog"] = report["spool_records"]
    state = str(report.get("state", "OK"))
    report["state"] = state
    healthy = report.get("healthy")
    if not isinstance(healthy, bool):
        report["healthy"] = state.lower() in HEALTHY_SINK_STATES
    return report


@dataclass
class Histogram:
    """A fixed-bucket histogram of plain ints (non-cumulative per bucket, +Inf last)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, cumulative count)`` pairs as Prometheus expects them, ending with +Inf."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(total)))
        return out


@dataclass
class TimeQuality:
    """Per channel: sampled receive lag and how many sampled records had an exchange time."""

    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    sampled: int = 0
    with_exchange_time: int = 0

    @property
    def exchange_time_ratio(self) -> float | None:
        return self.with_exchange_time / self.sampled if self.sampled else None


class BatchObserver:
    """Accumulates what passes to the sink; read at scrape time by metrics, health, live view.

    Per batch, a systematic sample with a random start (every ``step``-th envelope,
    ``step = ceil(len / sample)``; the whole batch when it is small) is looked at: each sampled
    envelope stands for ``step`` envelopes in the per-channel record estimates, and gives its
    channel's receive lag, exchange-timestamp presence and newest ``ts_recv``. Every envelope
    has the same chance to be sampled, so the estimates are unbiased; batches of at most
    ``sample`` envelopes (any run at modest rates) are counted exactly.

    Dead letters are counted exactly: ``dead_letter_hint`` (the sessions' unrecognized plus
    malformed counts) tells when a batch must be scanned for them; without it every batch is.
    """

    def __init__(
        self,
        *,
        sample: int = SAMPLE_PER_BATCH,
        rng: random.Random | None = None,
        dead_letter_hint: Callable[[], int] | None = None,
    ) -> None:
        self.sample = sample
        self.rng = rng or random.Random()
        self.dead_letter_hint = dead_letter_hint
        self.records: dict[KindKey, float] = {}
        """Estimated envelopes per (exchange, instance, channel, kind)."""
        self.last_recv_ns: dict[ChannelKey, int] = {}
        self.time_quality: dict[ChannelKey, TimeQuality] = {}
        self.dead_letters: Counter[tuple[str, str, str]] = Counter()  # exchange, instance, reason
        self.batches = 0
        self.envelopes = 0
        self._dead_found = 0
        self._dry_scans = 0

    def observe(self, batch: Sequence[Envelope]) -> None:
        """Sample one batch (called once per batch, on the sink side)."""
        size = len(batch)
        if not size:
            return
        self.batches += 1
        self.envelopes += size
        step = -(-size // self.sample)
        picked = batch if step == 1 else batch[self.rng.randrange(step) :: step]
        records, last, quality = self.records, self.last_recv_ns, self.time_quality
        for env in picked:
            kind = env["kind"]
            key = (env["exchange"], env["instance"], env["channel"])
            kkey = (*key, kind)
            records[kkey] = records.get(kkey, 0.0) + step
            ts_recv = env["ts_recv"]
            if ts_recv > last.get(key, 0):
                last[key] = ts_recv
            if kind in _NO_EXCHANGE_TIME:
                continue
            tq = quality.get(key)
            if tq is None:
                tq = quality[key] = TimeQuality()
            tq.sampled += 1
            ts_exchange = env["ts_exchange"]
            if ts_exchange is not None:
                tq.with_exchange_time += 1
                tq.lag.observe((ts_recv - ts_exchange) / 1e9)
        hint = self.dead_letter_hint
        expected = hint() if hint is not None else None
        if expected is None or expected > self._dead_found:
            self._scan_dead_letters(batch, expected)

    def _scan_dead_letters(self, batch: Sequence[Envelope], expected: int | None) -> None:
        found = 0
        for env in batch:
            if env["kind"] == "dead_letter":
                reason = _dead_letter_reason(str(env["record"].get("reason", "")))
                self.dead_letters[(env["exchange"], env["instance"], reason)] += 1
                found += 1
        self._dead_found += found
        self._dry_scans = 0 if found else self._dry_scans + 1
        if expected is not None and self._dry_scans >= 3:  # the hint counts more: catch up
            self._dead_found = expected
            self._dry_scans = 0


def _dead_letter_reason(reason: str) -> str:
    """The class of a dead letter's reason text (as runtime/session.py writes them)."""
    if reason.startswith("no rule matches"):
        return "unrecognized"
    if reason.startswith("undecodable or unroutable"):
        return "undecodable"
    if reason.startswith("channel "):
        return "parse_error"
    if " rule failed" in reason:
        return "rule_error"
    return "other"


class ObservedSink:
    """Wraps a sink: observes each batch, times each write, remembers the last failure.

    Everything else (``health()``, attributes such as ``files_written``) is the inner sink's.
    """

    def __init__(self, inner: Sink, observer: BatchObserver | None = None) -> None:
        self.inner = inner
        self.observer = observer if observer is not None else BatchObserver()
        self.write_seconds = Histogram(WRITE_BUCKETS)
        self.write_errors = 0
        self.last_error: str | None = None
        self.failing = False

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, batch: list[Envelope]) -> None:
        self.observer.observe(batch)
        started = time.perf_counter()
        try:
            await self.inner.write(batch)
        except Exception as exc:
            self.write_errors += 1
            self.failing = True
            self.last_error = repr(exc)
            raise
        finally:
            self.write_seconds.observe(time.perf_counter() - started)
        self.failing = False

    async def close(self) -> None:
        await self.inner.close()

    def health(self) -> dict[str, Any]:
        """The inner sink's health; ``Failed`` (unhealthy) while its last write raised."""
        report = sink_health(self.inner)
        if self.failing:
            report.update(state="Failed", healthy=False, error=self.last_error)
        return report

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
