"""Prometheus metrics, read from the runtime's plain counters at scrape time.

:class:`RuntimeMetrics` is a custom ``prometheus_client`` collector: nothing is incremented on
the hot path for metrics' sake; each scrape walks the instances, their sessions' ``stats``, the
pipeline's stats, the observed sink, the sink's ``health()`` and the clock probes, and builds
the metric families afresh. Names and labels: docs/operations.md.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector as PromCollector
from prometheus_client.samples import Sample

from runtime.ops.observe import Histogram, ObservedSink
from runtime.spec import API_VERSION

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from runtime.collector import Collector
    from runtime.ops.health import Monitor
    from runtime.ops.skew import ClockProbe
    from runtime.rest import RestStats

__all__ = ["STATES", "RuntimeMetrics", "make_registry"]

STATES = ("starting", "subscribing", "streaming", "reconnecting", "failed", "stopped")
"""Connection and instance states (runtime/session.py)."""

CONN = ["exchange", "instance", "connection"]
INST = ["exchange", "instance"]
CHAN = ["exchange", "instance", "channel"]

# SessionStats counters other issues add (order-book sync); exported when present.
OPTIONAL_SESSION_COUNTERS = {
    "book_gaps": ("mdgen_book_sequence_gaps_total", "Order-book sequence gaps detected."),
    "book_resyncs": ("mdgen_book_resyncs_total", "Order-book resynchronisations."),
    "checksum_failures": (
        "mdgen_book_checksum_failures_total",
        "Order-book checksum mismatches.",
    ),
    "checksum_ok": ("mdgen_book_checksums_ok_total", "Order-book checksums that matched."),
    "keepalive_calls": (
        "mdgen_bootstrap_keepalives_total",
        "Bootstrap keep-alive calls that succeeded (e.g. listen-key renewals).",
    ),
    "keepalive_failures": (
        "mdgen_bootstrap_keepalive_failures_total",
        "Bootstrap keep-alive calls that failed (the connection was renewed).",
    ),
}

# sink.health() keys exported as metrics: key -> (name, help, counter?)
SINK_HEALTH_METRICS = {
    "spool_records": ("mdgen_spool_records", "Records in the durable spool.", False),
    "spool_bytes": ("mdgen_spool_bytes", "Bytes in the durable spool.", False),
    "spool_segments": ("mdgen_spool_segments", "Segment files in the durable spool.", False),
    "replay_backlog": (
        "mdgen_replay_backlog_records",
        "Spooled records waiting to be replayed into the sink.",
        False,
    ),
    "on_full_drops": (
        "mdgen_spool_dropped_records_total",
        "Records dropped because the spool was full (on_full = drop).",
        True,
    ),
    "dedup_drops": (
        "mdgen_dedup_dropped_records_total",
        "Duplicate records the sink dropped.",
        True,
    ),
}


def _package_version() -> str:
    try:
        return version("mdgen")
    except PackageNotFoundError:
        return "unknown"


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    """Buckets, ``_count`` and ``_sum``; the sum is kept with negative buckets too (Prometheus'
    text format allows it; prometheus_client's helper leaves it out for OpenMetrics' sake)."""
    buckets = hist.cumulative()
    family.add_metric(labels, buckets, None)
    named = dict(zip(family._labelnames, labels, strict=True))
    family.samples.append(Sample(family.name + "_count", named, buckets[-1][1]))
    family.samples.append(Sample(family.name + "_sum", named, hist.sum))


class RuntimeMetrics(PromCollector):
    """Builds every ``mdgen_*`` family from the live objects at each scrape."""

    def __init__(
        self,
        collector: Collector,
        sink: ObservedSink,
        monitor: Monitor,
        probes: Sequence[ClockProbe] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = collector
        self.sink = sink
        self.monitor = monitor
        self.probes = list(probes)
        self.clock = clock
        self.version = _package_version()

    def collect(self) -> Iterable[Metric]:
        yield from self._info()
        yield from self._connections()
        yield from self._instances()
        yield from self._channels()
        yield from self._pipeline()
        yield from self._rest()
        yield from self._clock()
        yield from self._symbols()

    def _symbols(self) -> Iterable[Metric]:
        """Symbol overrides loaded at startup (instrument lists, symbol map files)."""
        reports = self.collector.symbol_reports
        if not reports:
            return
        overrides = GaugeMetricFamily(
            "mdgen_symbol_overrides",
            "Raw -> canonical symbol overrides loaded at startup, by source.",
            labels=["exchange", "source"],
        )
        calls = CounterMetricFamily(
            "mdgen_instrument_list_requests",
            "Instrument-list calls made at startup, by outcome.",
            labels=["exchange", "outcome"],
        )
        skipped = CounterMetricFamily(
            "mdgen_instrument_list_items_skipped",
            "Instrument-list items that could not be read (their symbols use the rules).",
            labels=["exchange"],
        )
        for exchange, report in sorted(reports.items()):
            overrides.add_metric([exchange, "instruments"], report.instruments)
            overrides.add_metric([exchange, "file"], report.file_entries)
            calls.add_metric([exchange, "ok"], report.requests - report.requests_failed)
            calls.add_metric([exchange, "failed"], report.requests_failed)
            skipped.add_metric([exchange], report.items_skipped)
        yield from (overrides, calls, skipped)

    def _info(self) -> Iterable[Metric]:
        info = InfoMetricFamily("mdgen_build", "mdgen version and runtime API version.")
        info.add_metric([], {"version": self.version, "api_version": str(API_VERSION)})
        yield info
        healthy, _ = self.monitor.evaluate(self.clock(), self.sink.health())
        yield GaugeMetricFamily(
            "mdgen_healthy",
            "1 when /healthz answers 200 (docs/operations.md defines healthy), else 0.",
            value=1.0 if healthy else 0.0,
        )

    def _connections(self) -> Iterable[Metric]:
        def counter(name: str, doc: str, extra: Sequence[str] = ()) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=[*CONN, *extra])

        messages = counter("mdgen_messages_received_total", "WebSocket frames received.")
        size = counter("mdgen_received_bytes_total", "Bytes of WebSocket frames received.")
        records = counter("mdgen_records_parsed_total", "Records parsed from data frames.")
        unrecognized = counter("mdgen_frames_unrecognized_total", "Frames no rule matches.")
        malformed = counter(
            "mdgen_frames_malformed_total",
            "Frames that failed to decode, route or parse (see mdgen_dead_letters_total).",
        )
        control = counter(
            "mdgen_control_frames_total", "Non-data frames by kind (ack, ping, ...).", ["kind"]
        )
        connects = counter("mdgen_connects_total", "Successful WebSocket connects.")
        connect_failures = counter(
            "mdgen_connect_failures_total", "Failed connect (or bootstrap) attempts."
        )
        reconnects = counter(
            "mdgen_reconnects_total", "Connections lost, by cause (closed, idle, ...).", ["reason"]
        )
        sub_failures = counter(
            "mdgen_subscribe_failures_total", "Subscribe attempts whose ACK timed out."
        )
        ack = SummaryMetricFamily(
            "mdgen_ack_latency_seconds", "Subscribe-to-ACK latency.", labels=CONN
        )
        pings = counter("mdgen_server_pings_answered_total", "Server pings answered.")
        client_pings = counter("mdgen_client_pings_sent_total", "Client pings sent.")
        gaps = counter("mdgen_gaps_total", "Gaps (data lost between a drop and the next frame).")
        gap_seconds = counter("mdgen_gap_duration_seconds_total", "Total duration of the gaps.")
        msg_age = GaugeMetricFamily(
            "mdgen_last_message_age_seconds", "Seconds since the last frame.", labels=CONN
        )
        data_age = GaugeMetricFamily(
            "mdgen_last_data_age_seconds",
            "Seconds since the connection last delivered data records (health rule 2).",
            labels=CONN,
        )
        state = GaugeMetricFamily(
            "mdgen_connection_state",
            "1 for the connection's current state.",
            labels=[*CONN, "state"],
        )
        optional: dict[str, CounterMetricFamily] = {}
        now = self.clock()
        for inst in self.collector.instances:
            for s in inst.sessions:
                st = s.stats
                lab = [inst.spec.id, inst.name, s.plan.name]
                messages.add_metric(lab, st.messages)
                size.add_metric(lab, st.bytes)
                records.add_metric(lab, st.records)
                unrecognized.add_metric(lab, st.unrecognized)
                malformed.add_metric(lab, st.malformed)
                for kind, n in sorted(st.frames.items()):
                    control.add_metric([*lab, kind], n)
                connects.add_metric(lab, st.connects)
                connect_failures.add_metric(lab, st.connect_failures)
                for reason, n in sorted(st.reconnects.items()):
                    reconnects.add_metric([*lab, reason], n)
                sub_failures.add_metric(lab, st.subscribe_failures)
                ack.add_metric(lab, st.acks, st.ack_latency_sum)
                pings.add_metric(lab, st.pings_answered)
                client_pings.add_metric(lab, st.client_pings)
                gaps.add_metric(lab, st.gaps)
                gap_seconds.add_metric(lab, st.gap_seconds)
                if st.last_message:
                    msg_age.add_metric(lab, max(0.0, now - st.last_message))
                data_age.add_metric(lab, self.monitor.data_age(inst, s, now))
                for name in STATES:
                    state.add_metric([*lab, name], 1.0 if s.state == name else 0.0)
                for attr, (metric, doc) in OPTIONAL_SESSION_COUNTERS.items():
                    value = getattr(st, attr, None)
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        family = optional.get(metric)
                        if family is None:
                            family = optional[metric] = counter(metric, doc)
                        family.add_metric(lab, value)
        yield from (messages, size, records, unrecognized, malformed, control, connects)
        yield from (connect_failures, reconnects, sub_failures, ack, pings, client_pings)
        yield from (gaps, gap_seconds, msg_age, data_age, state, *optional.values())

    def _instances(self) -> Iterable[Metric]:
        state = GaugeMetricFamily(
            "mdgen_instance_state",
            "1 for the instance's state (its least healthy connection's).",
            labels=[*INST, "state"],
        )
        conns = GaugeMetricFamily(
            "mdgen_instance_connections", "Connections of the instance.", labels=INST
        )
        symbols = GaugeMetricFamily(
            "mdgen_instance_symbols", "Symbols the instance collects.", labels=INST
        )
        crashes = GaugeMetricFamily(
            "mdgen_instance_crashed", "1 when the instance crashed (see logs).", labels=INST
        )
        for inst in self.collector.instances:
            lab = [inst.spec.id, inst.name]
            current = inst.state
            for name in STATES:
                state.add_metric([*lab, name], 1.0 if current == name else 0.0)
            conns.add_metric(lab, len(inst.sessions))
            symbols.add_metric(lab, len(inst.symbols))
            crashes.add_metric(lab, 1.0 if inst.crashed else 0.0)
        yield from (state, conns, symbols, crashes)

    def _channels(self) -> Iterable[Metric]:
        obs = self.sink.observer
        emitted = CounterMetricFamily(
            "mdgen_channel_records_total",
            "Envelopes handed to the sink by channel and kind (gap, dead_letter included); "
            "estimated from a sample of each batch, exact for batches of up to 64.",
            labels=[*CHAN, "kind"],
        )
        for kind_key, n in sorted(obs.records.items()):
            emitted.add_metric(list(kind_key), n)
        yield emitted
        age = GaugeMetricFamily(
            "mdgen_last_record_age_seconds",
            "Seconds since ts_recv of the newest record of the channel handed to the sink.",
            labels=CHAN,
        )
        now_ns = time.time_ns()
        for (exchange, instance, channel), ts in sorted(obs.last_recv_ns.items()):
            if not channel.startswith("_"):
                age.add_metric([exchange, instance, channel], max(0.0, (now_ns - ts) / 1e9))
        yield age
        lag = HistogramMetricFamily(
            "mdgen_receive_lag_seconds",
            "Receive time minus exchange time of sampled records (negative: exchange ahead).",
            labels=CHAN,
        )
        sampled = CounterMetricFamily(
            "mdgen_timestamp_samples_total",
            "Records sampled for time quality.",
            labels=CHAN,
        )
        with_ts = CounterMetricFamily(
            "mdgen_timestamp_samples_with_exchange_time_total",
            "Sampled records that carried an exchange timestamp.",
            labels=CHAN,
        )
        ratio = GaugeMetricFamily(
            "mdgen_exchange_timestamp_ratio",
            "Share of sampled records with an exchange timestamp, since the start.",
            labels=CHAN,
        )
        for chan, tq in sorted(obs.time_quality.items()):
            lab = list(chan)
            _histogram(lag, lab, tq.lag)
            sampled.add_metric(lab, tq.sampled)
            with_ts.add_metric(lab, tq.with_exchange_time)
            if tq.exchange_time_ratio is not None:
                ratio.add_metric(lab, tq.exchange_time_ratio)
        yield from (lag, sampled, with_ts, ratio)
        dead = CounterMetricFamily(
            "mdgen_dead_letters_total",
            "Dead-letter records, by reason (unrecognized, undecodable, parse_error, ...).",
            labels=[*INST, "reason"],
        )
        for (exchange, instance, reason), n in sorted(obs.dead_letters.items()):
            dead.add_metric([exchange, instance, reason], n)
        yield dead

    def _pipeline(self) -> Iterable[Metric]:
        pipeline = self.collector.pipeline
        st = pipeline.stats
        yield CounterMetricFamily(
            "mdgen_pipeline_records_in_total", "Envelopes added to the pipeline.", st.records_in
        )
        yield GaugeMetricFamily(
            "mdgen_pipeline_queue_batches", "Batches waiting for the sink.", pipeline.queue.qsize()
        )
        yield GaugeMetricFamily(
            "mdgen_pipeline_queue_capacity_batches",
            "Size of the sink queue (queue_batches).",
            pipeline.queue.maxsize,
        )
        yield GaugeMetricFamily(
            "mdgen_pipeline_buffered_records",
            "Envelopes in the pipeline not yet written (partial batch, queue, in flight).",
            st.records_in - st.records_out,
        )
        yield CounterMetricFamily(
            "mdgen_backpressure_events_total",
            "Times a connection waited for queue space.",
            st.backpressure_events,
        )
        yield CounterMetricFamily(
            "mdgen_backpressure_seconds_total",
            "Time connections spent waiting for queue space.",
            st.backpressure_seconds,
        )
        health = self.sink.health()
        sink_name = type(self.sink.inner).__name__
        lab = ["sink"]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=lab)
            family.add_metric([sink_name], value)
            return family

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=lab)
            family.add_metric([sink_name], value)
            return family

        yield counter("mdgen_sink_batches_total", "Batches written by the sink.", st.batches_out)
        yield counter("mdgen_sink_records_total", "Records written by the sink.", st.records_out)
        yield counter(
            "mdgen_sink_write_errors_total", "Sink writes that raised.", self.sink.write_errors
        )
        latency = HistogramMetricFamily(
            "mdgen_sink_write_seconds", "Time per sink write (one batch).", labels=lab
        )
        _histogram(latency, [sink_name], self.sink.write_seconds)
        yield latency
        yield gauge(
            "mdgen_sink_up", "1 when the sink is healthy (health rule 3).", float(health["healthy"])
        )
        state = GaugeMetricFamily(
            "mdgen_sink_state", "1 for the state the sink reports.", labels=[*lab, "state"]
        )
        state.add_metric([sink_name, str(health["state"])], 1.0)
        yield state
        for key, (name, doc, is_counter) in SINK_HEALTH_METRICS.items():
            value = health.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                yield (counter if is_counter else gauge)(name, doc, float(value))

    def _rest(self) -> Iterable[Metric]:
        clients: dict[tuple[str, str], list[RestStats]] = {}
        seen: set[int] = set()
        for inst in self.collector.instances:
            for s in inst.sessions:
                if s.rest is not None and id(s.rest) not in seen:
                    seen.add(id(s.rest))
                    clients.setdefault((inst.spec.id, "bootstrap"), []).append(s.rest.stats)
        for probe in self.probes:
            clients.setdefault((probe.exchange, "clock"), []).append(probe.stats)
        lab = ["exchange", "client"]
        requests = CounterMetricFamily(
            "mdgen_rest_requests_total",
            "REST replies by status code (or transport error name).",
            labels=[*lab, "status"],
        )
        retries = CounterMetricFamily("mdgen_rest_retries_total", "REST retries.", labels=lab)
        waits = CounterMetricFamily(
            "mdgen_rest_rate_limit_wait_seconds_total",
            "Time REST calls waited for rate-limit weight.",
            labels=lab,
        )
        failovers = CounterMetricFamily(
            "mdgen_rest_failovers_total", "Moves to the next REST base URL.", labels=lab
        )
        giveups = CounterMetricFamily(
            "mdgen_rest_giveups_total", "REST calls that failed for good.", labels=lab
        )
        for key, group in sorted(clients.items()):
            status: Counter[str] = Counter()
            for st in group:
                status.update(dict(st.requests))  # a copy first: the loop thread may add keys
            for code, n in sorted(status.items()):
                requests.add_metric([*key, code], n)
            retries.add_metric(list(key), sum(st.retries for st in group))
            waits.add_metric(list(key), sum(st.rate_limit_wait for st in group))
            failovers.add_metric(list(key), sum(st.failovers for st in group))
            giveups.add_metric(list(key), sum(st.giveups for st in group))
        yield from (requests, retries, waits, failovers, giveups)

    def _clock(self) -> Iterable[Metric]:
        lab = ["exchange"]
        skew = GaugeMetricFamily(
            "mdgen_clock_skew_seconds",
            "Exchange server time minus local time (best recent probe).",
            labels=lab,
        )
        uncertainty = GaugeMetricFamily(
            "mdgen_clock_skew_uncertainty_seconds",
            "Half the probe's round trip plus half the server time's resolution.",
            labels=lab,
        )
        probes = CounterMetricFamily("mdgen_clock_probes_total", "Server-time probes.", labels=lab)
        failures = CounterMetricFamily(
            "mdgen_clock_probe_failures_total", "Server-time probes that failed.", labels=lab
        )
        for probe in self.probes:
            best = probe.estimate
            if best is not None:
                skew.add_metric([probe.exchange], best.skew)
                uncertainty.add_metric([probe.exchange], best.uncertainty)
            probes.add_metric([probe.exchange], probe.probes)
            failures.add_metric([probe.exchange], probe.failures)
        yield from (skew, uncertainty, probes, failures)


def make_registry(metrics: RuntimeMetrics, *, process: bool = True) -> CollectorRegistry:
    """A registry of its own (not the global one) with ``metrics`` and the process metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
