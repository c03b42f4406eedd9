"""Health: state tracking, one log line per state change, the /healthz report and its rule.

The :class:`Monitor` polls the running collector every ``tick`` seconds (reading plain
attributes only). It logs every observed state change of a connection, an instance, the sink
and the overall health; it remembers when each connection last delivered data records, and keeps
short windows of counters for rates.

**Healthy** (HTTP 200; 503 otherwise) means all of:

0. the collector is not shutting down (SIGINT/SIGTERM or the end of ``--duration``);
1. at least one instance runs, and no instance is ``failed`` (crashed, or every subscription
   rejected) or ``stopped``;
2. every connection delivered a data record within ``stale_after`` seconds (counted from the
   start of the run until its first record), except connections that carry only channels
   without a topic (user data streams: a quiet account sends nothing, and that is no fault);
3. the sink is healthy: its last write did not raise, and its ``health()`` (when it has one)
   says ``healthy: true``, or, without that key, reports the state ``OK``.

/livez applies rules 0-2 only: restarting the process does not bring a database back.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.ops.logs import redact
from runtime.ops.observe import ObservedSink
from runtime.spec import API_VERSION
from runtime.subscriptions import needs_subscribing

if TYPE_CHECKING:
    from runtime.collector import Collector, Instance
    from runtime.ops.skew import ClockProbe
    from runtime.session import Session

__all__ = ["ConnectionTrack", "Monitor", "Validation"]

log = logging.getLogger("mdgen.ops")

WINDOW = 5.0
"""Seconds over which the live view's rates and lag are computed."""


@dataclass(frozen=True)
class Validation:
    """What was checked before the run started (a run only starts when these passed)."""

    config_source: str | None = None
    config_warnings: tuple[str, ...] = ()


@dataclass
class ConnectionTrack:
    """What the monitor remembers of one connection between polls."""

    state: str
    since: float
    records: int = 0
    last_data: float = 0.0


@dataclass
class _Window:
    """Recent (time, messages, records, lag sum, lag count) points of one instance."""

    points: deque[tuple[float, int, int, float, int]] = field(
        default_factory=lambda: deque(maxlen=64)
    )

    def add(self, point: tuple[float, int, int, float, int], span: float) -> None:
        self.points.append(point)
        while len(self.points) > 2 and point[0] - self.points[1][0] >= span:
            self.points.popleft()

    def rates(self) -> tuple[float, float, float | None]:
        """Messages/s, records/s and the mean receive lag over the window."""
        if len(self.points) < 2:
            return 0.0, 0.0, None
        (t0, m0, r0, s0, c0), (t1, m1, r1, s1, c1) = self.points[0], self.points[-1]
        dt = t1 - t0
        if dt <= 0:
            return 0.0, 0.0, None
        lag = (s1 - s0) / (c1 - c0) if c1 > c0 else None
        return (m1 - m0) / dt, (r1 - r0) / dt, lag


class Monitor:
    """Polls the collector; answers /healthz; feeds the live view."""

    def __init__(
        self,
        collector: Collector,
        sink: ObservedSink,
        *,
        stale_after: float = 60.0,
        validation: Validation | None = None,
        probes: Sequence[ClockProbe] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = collector
        self.sink = sink
        self.stale_after = stale_after
        self.validation = validation or Validation()
        self.probes = list(probes)
        self.clock = clock
        self.started = clock()
        self.connections: dict[tuple[str, str], ConnectionTrack] = {}
        self.instance_states: dict[str, str] = {}
        self.windows: dict[str, _Window] = {}
        self.sink_state: str | None = None
        self.healthy: bool | None = None
        self.reasons: list[str] = []

    # -- polling ------------------------------------------------------------------------------
    def poll(self) -> None:
        """Observe states and progress once; log what changed."""
        now = self.clock()
        for inst in self.collector.instances:
            self._poll_instance(inst, now)
        sink = self.sink.health()
        state = str(sink["state"])
        if state != self.sink_state:
            level = logging.INFO if sink["healthy"] else logging.ERROR
            log.log(
                level,
                "sink: %s -> %s",
                self.sink_state or "-",
                state,
                extra={
                    "event": "state_change",
                    "scope": "sink",
                    "from": self.sink_state,
                    "to": state,
                    "error": sink.get("error"),
                },
            )
            self.sink_state = state
        healthy, reasons = self.evaluate(now, sink)
        if healthy != self.healthy:
            quiet = healthy or self.collector.stop.is_set()
            log.log(
                logging.INFO if quiet else logging.WARNING,
                "health: %s%s",
                "healthy" if healthy else "unhealthy",
                f" ({'; '.join(reasons)})" if reasons else "",
                extra={"event": "health_change", "healthy": healthy, "reasons": reasons},
            )
        self.healthy, self.reasons = healthy, reasons

    def _poll_instance(self, inst: Instance, now: float) -> None:
        state = inst.state
        old = self.instance_states.get(inst.name)
        if state != old:
            log.log(
                logging.ERROR if state == "failed" else logging.INFO,
                "instance %s: %s -> %s",
                inst.name,
                old or "-",
                state,
                extra={
                    "event": "state_change",
                    "scope": "instance",
                    "instance": inst.name,
                    "exchange": inst.spec.id,
                    "from": old,
                    "to": state,
                    "error": inst.crashed,
                },
            )
            self.instance_states[inst.name] = state
        messages = records = lag_count = 0
        lag_sum = 0.0
        for session in inst.sessions:
            self._poll_session(inst, session, now)
            messages += session.stats.messages
            records += session.stats.records
        for (_, name, _), tq in self.sink.observer.time_quality.items():
            if name == inst.name:
                lag_sum += tq.lag.sum
                lag_count += tq.lag.count
        window = self.windows.setdefault(inst.name, _Window())
        window.add((now, messages, records, lag_sum, lag_count), WINDOW)

    def _track(self, inst: Instance, session: Session, now: float) -> ConnectionTrack:
        """The connection's track, its data progress brought up to date."""
        key = (inst.name, session.plan.name)
        track = self.connections.get(key)
        stats = session.stats
        if track is None:
            track = ConnectionTrack(state="-", since=now, last_data=self.started)
            self.connections[key] = track
        if stats.records != track.records:
            track.records = stats.records
            track.last_data = max(track.last_data, min(stats.last_message, now))
        return track

    def _poll_session(self, inst: Instance, session: Session, now: float) -> None:
        track = self._track(inst, session, now)
        if session.state != track.state:
            level = logging.ERROR if session.state == "failed" else logging.INFO
            log.log(
                level,
                "connection %s: %s -> %s",
                session.plan.name,
                track.state,
                session.state,
                extra={
                    "event": "state_change",
                    "scope": "connection",
                    "instance": inst.name,
                    "exchange": inst.spec.id,
                    "connection": session.plan.name,
                    "from": track.state,
                    "to": session.state,
                    "url": redact(session.url) if session.url else None,
                    "error": redact(session.error) if session.error else None,
                },
            )
            track.state = session.state
            track.since = now

    # -- the rule ---------------------------------------------------------------------------
    def data_age(self, inst: Instance, session: Session, now: float | None = None) -> float:
        """Seconds since the connection last delivered data records (or since the start).

        Read-only (the HTTP server's thread calls it): progress since the last poll is taken
        from the session's counters without being remembered.
        """
        now = self.clock() if now is None else now
        stats = session.stats
        track = self.connections.get((inst.name, session.plan.name))
        last = track.last_data if track is not None else self.started
        if stats.records != (track.records if track is not None else 0):
            last = max(last, min(stats.last_message, now))
        return now - last

    def evaluate(
        self, now: float, sink: dict[str, Any], *, include_sink: bool = True
    ) -> tuple[bool, list[str]]:
        """Apply the rule of the module doc (without rule 3 when not ``include_sink``);
        returns (healthy, reasons it is not)."""
        reasons: list[str] = []
        if self.collector.stop.is_set():
            return False, ["the collector is shutting down"]
        instances = self.collector.instances
        if not instances:
            reasons.append("no instance is running")
        for inst in list(instances):
            state = inst.state
            if state in ("failed", "stopped"):
                why = f": {inst.crashed}" if inst.crashed else ""
                reasons.append(f"instance {inst.name} is {state}{why}")
            for session in inst.sessions:
                if _event_driven(session):
                    continue
                age = self.data_age(inst, session, now)
                if age > self.stale_after:
                    reasons.append(
                        f"connection {session.plan.name} has delivered no data for {age:.1f}s "
                        f"(stale_after {self.stale_after:g}s)"
                    )
        if include_sink and not sink["healthy"]:
            error = f": {sink['error']}" if sink.get("error") else ""
            reasons.append(f"sink is {sink['state']}{error}")
        return not reasons, [redact(r) for r in reasons]

    # -- /healthz -----------------------------------------------------------------------------
    def report(self, include_sink: bool = True) -> tuple[bool, dict[str, Any]]:
        """(healthy, the /healthz document); evaluated now, not at the last poll. Without
        ``include_sink`` (/livez) the sink's health does not count (rules 0-2 only).

        Called from the HTTP server's thread: it only reads, and copies containers first.
        """
        now = self.clock()
        wall_ns = time.time_ns()
        sink = self.sink.health()
        healthy, reasons = self.evaluate(now, sink, include_sink=include_sink)
        observer = self.sink.observer
        instances: dict[str, Any] = {}
        for inst in list(self.collector.instances):
            connections = []
            for s in list(inst.sessions):
                track = self.connections.get((inst.name, s.plan.name))
                st = s.stats
                connections.append(
                    {
                        "name": s.plan.name,
                        "state": s.state,
                        "state_seconds": _round(now - track.since) if track else None,
                        "url": redact(s.url) if s.url else None,
                        "error": redact(s.error) if s.error else None,
                        "last_message_age_seconds": (
                            _round(now - st.last_message) if st.last_message else None
                        ),
                        "last_data_age_seconds": _round(self.data_age(inst, s, now)),
                        "messages": st.messages,
                        "records": st.records,
                        "reconnects": sum(st.reconnects.values()),
                        "gaps": st.gaps,
                    }
                )
            channels: dict[str, Any] = {}
            for (_, name, channel), ts in list(observer.last_recv_ns.items()):
                if name != inst.name or channel.startswith("_"):
                    continue
                tq = observer.time_quality.get((inst.spec.id, name, channel))
                channels[channel] = {
                    "last_record_age_seconds": _round((wall_ns - ts) / 1e9),
                    "exchange_time_ratio": _round(tq.exchange_time_ratio) if tq else None,
                    "mean_receive_lag_seconds": (
                        _round(tq.lag.sum / tq.lag.count) if tq and tq.lag.count else None
                    ),
                }
            instances[inst.name] = {
                "exchange": inst.spec.id,
                "state": inst.state,
                "error": redact(inst.crashed) if inst.crashed else None,
                "symbols": len(inst.symbols),
                "channels": channels,
                "connections": connections,
            }
        pipeline = self.collector.pipeline
        pstats = pipeline.stats
        clocks = {}
        for probe in self.probes:
            best = probe.estimate
            clocks[probe.exchange] = {
                "skew_seconds": _round(best.skew) if best else None,
                "uncertainty_seconds": _round(best.uncertainty) if best else None,
                "probes": probe.probes,
                "failures": probe.failures,
                "error": redact(probe.last_error) if probe.last_error else None,
            }
        doc: dict[str, Any] = {
            "status": "healthy" if healthy else "unhealthy",
            "healthy": healthy,
            "reasons": reasons,
            "uptime_seconds": _round(now - self.started),
            "stale_after_seconds": self.stale_after,
            "validation": self._validation(),
            "instances": instances,
            "pipeline": {
                "queue_batches": pipeline.queue.qsize(),
                "queue_capacity": pipeline.queue.maxsize,
                "buffered_records": pstats.records_in - pstats.records_out,
                "backpressure_events": pstats.backpressure_events,
                "backpressure_seconds": _round(pstats.backpressure_seconds),
            },
            "persistence": {
                "sink": type(self.sink.inner).__name__,
                **{k: (redact(v) if isinstance(v, str) else v) for k, v in sink.items()},
                "write_errors": self.sink.write_errors,
            },
            "clock": clocks,
        }
        for key in ("spool_records", "spool_bytes", "replay_backlog"):
            doc["persistence"].setdefault(key, None)
        return healthy, doc

    def _validation(self) -> dict[str, Any]:
        descriptors = {}
        for inst in self.collector.instances:
            descriptors[inst.spec.id] = {
                "ok": True,
                "descriptor": Path(inst.spec.descriptor).name,
                "api_version": API_VERSION,
            }
        return {
            "config": {
                "ok": True,
                "source": self.validation.config_source,
                "warnings": list(self.validation.config_warnings),
            },
            "descriptors": descriptors,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _event_driven(session: Session) -> bool:
    """Does the connection carry only channels without a topic (a user data stream)?"""
    return not needs_subscribing(session.spec, session.plan.subscriptions)
