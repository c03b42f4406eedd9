"""Operations of ``mdgen run``: /healthz, /metrics, time quality, logs, the live view.

Runs against the in-process mock exchange on loopback; every run is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import pty
import random
import select
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

import runtime.run
from runtime.collector import Collector
from runtime.envelope import Envelope, gap, wrap
from runtime.mock import MockOptions, load_capture
from runtime.ops import Ops, OpsSettings, configure_logging, parse_server_time, redact
from runtime.ops.logs import JsonFormatter, Redactor, RepeatFilter, TextFormatter
from runtime.ops.observe import BatchObserver, ObservedSink, sink_health
from runtime.ops.skew import ClockProbe
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.run import InstanceSummary, PlannedInstance, RunSettings, execute
from runtime.session import Backoff, SessionStats
from runtime.sinks import MemorySink
from runtime.spec import RestEndpointSpec, RestSpec
from runtime.transport import make_transport
from tests.crosscheck import require_captures

MDGEN = Path(sys.executable).parent / "mdgen"
FAST = Backoff(initial=0.05, cap=0.2, stable_after=60)


# -- helpers -------------------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """Every sample of a /metrics page, by (sample name, labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


class FakeMongoSink(MemorySink):
    """A sink implementing the health protocol, whose database can be 'stopped' by a test."""

    def __init__(self) -> None:
        super().__init__()
        self.state = "OK"
        self.spooled = 0

    async def write(self, batch: list[Envelope]) -> None:
        if self.state == "OK":
            await super().write(batch)
        else:
            self.spooled += len(batch)

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "spool_records": self.spooled,
            "spool_bytes": self.spooled * 200,
            "spool_segments": 1 if self.spooled else 0,
            "replay_backlog": self.spooled,
            "on_full_drops": 0,
            "dedup_drops": 3,
        }


class Run:
    """A running ``execute`` (in-process) with its Ops and an HTTP client to its server."""

    def __init__(self, ops: Ops, client: httpx.AsyncClient) -> None:
        self.ops = ops
        self.client = client
        self.summaries: list[InstanceSummary] = []

    async def metrics(self) -> Samples:
        reply = await self.client.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        return parse_metrics(reply.text)

    async def health(self) -> tuple[int, dict[str, Any]]:
        reply = await self.client.get("/healthz")
        return reply.status_code, reply.json()

    async def until(
        self, check: Callable[[Samples], bool], timeout: float = 20.0, what: str = ""
    ) -> Samples:
        deadline = time.monotonic() + timeout
        while True:
            samples = await self.metrics()
            if check(samples):
                return samples
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(
    monkeypatch: pytest.MonkeyPatch,
    exchange: str,
    options: MockOptions,
    *,
    sink: MemorySink | None = None,
    stale_after: float = 60.0,
) -> AsyncIterator[Run]:
    """``execute`` one mock instance with the HTTP server on a free loopback port."""
    captures = require_captures(exchange).parent
    holder: list[Ops] = []
    ready = asyncio.Event()

    class Recording(Ops):
        async def start(self) -> None:
            await super().start()
            holder.append(self)
            ready.set()

    monkeypatch.setattr(runtime.run, "Ops", Recording)
    spec = load_spec(exchange)
    symbols = sorted(set(load_capture(spec, captures / exchange / "raw.ndjson").symbols.values()))
    plans = [PlannedInstance(exchange, spec, symbols, list(spec.channels))]
    settings = RunSettings(
        batch_size=30,  # at most SAMPLE_PER_BATCH: the per-channel figures are exact
        flush_interval=0.05,
        backoff=FAST,
        duration=60,
        mock=True,
        mock_options=options,
        captures=captures,
        ops=OpsSettings(http_enabled=True, http_port=0, stale_after=stale_after, tick=0.1),
    )
    task = asyncio.create_task(execute(plans, settings, sink or MemorySink()))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what went wrong
    assert holder, "the ops server did not start"
    ops = holder[0]
    assert ops.server is not None
    async with httpx.AsyncClient(base_url=ops.server.url, timeout=5) as client:
        run = Run(ops, client)
        try:
            yield run
        finally:
            ops.collector.request_stop()
            run.summaries = await asyncio.wait_for(task, 30)
    with pytest.raises(httpx.ConnectError):  # the server stopped with the run
        async with httpx.AsyncClient(base_url=ops.server.url, timeout=2) as after:
            await after.get("/healthz")


# -- /metrics and /healthz against the mock ------------------------------------------------------


def test_metrics_count_disconnects_gaps_and_records(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        options = MockOptions(speed=2.0, loop=True, disconnect_every=300)
        async with running(monkeypatch, "coinbase", options) as run:
            first = await run.until(
                lambda s: total(s, "mdgen_messages_received_total") > 0, what="first messages"
            )
            later = await run.until(
                lambda s: total(s, "mdgen_reconnects_total", reason="closed") >= 2
                and total(s, "mdgen_gaps_total") >= 2,
                what="two reconnects and gaps",
            )
            code, doc = await run.health()
        for name in (
            "mdgen_messages_received_total",
            "mdgen_received_bytes_total",
            "mdgen_records_parsed_total",
            "mdgen_connects_total",
            "mdgen_pipeline_records_in_total",
        ):
            assert total(later, name) > total(first, name), name
        assert total(later, "mdgen_gap_duration_seconds_total") > 0
        assert total(later, "mdgen_channel_records_total", kind="gap") > 0
        assert total(later, "mdgen_channel_records_total", channel="trades", kind="trades") > 0
        assert total(later, "mdgen_frames_unrecognized_total") == 0
        assert total(later, "mdgen_ack_latency_seconds_count") > 0
        assert total(later, "mdgen_sink_records_total", sink="FakeMongoSink") == 0
        assert total(later, "mdgen_sink_records_total", sink="MemorySink") > 0
        assert total(later, "mdgen_receive_lag_seconds_count", channel="trades") > 0
        ratio = total(later, "mdgen_exchange_timestamp_ratio", channel="trades")
        assert ratio == 1.0  # every coinbase trade carries its time
        assert total(later, "mdgen_connection_state", state="streaming") in (0.0, 1.0)
        assert total(later, "process_resident_memory_bytes") > 0
        # /healthz while the feed reconnects often but keeps delivering: healthy
        assert code == 200 and doc["healthy"], doc["reasons"]
        conn = doc["instances"]["coinbase"]["connections"][0]
        assert conn["reconnects"] >= 2 and conn["gaps"] >= 2 and conn["url"].startswith("ws://")
        assert doc["instances"]["coinbase"]["channels"]["trades"]["exchange_time_ratio"] == 1.0
        assert doc["validation"]["descriptors"]["coinbase"]["ok"] is True

    asyncio.run(main())


def test_book_gaps_from_dropped_frames_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(SessionStats(), "book_gaps"):
        pytest.skip("order-book sync counters are not in SessionStats yet")

    async def main() -> Samples:
        options = MockOptions(speed=0, loop=True, gap_every=25)
        async with running(monkeypatch, "binance", options) as run:
            return await run.until(
                lambda s: total(s, "mdgen_book_sequence_gaps_total") >= 2
                and total(s, "mdgen_book_resyncs_total") >= 1,
                what="book gaps and resyncs",
            )

    samples = asyncio.run(main())
    assert total(samples, "mdgen_book_checksum_failures_total") == 0  # binance has no checksum


def test_healthz_turns_503_on_silence_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        options = MockOptions(speed=1.0, loop=True, silence_ms=2500)
        codes: list[tuple[int, list[str]]] = []
        async with running(monkeypatch, "coinbase", options, stale_after=1.0) as run:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                code, doc = await run.health()
                codes.append((code, doc["reasons"]))
                seen = [c for c, _ in codes]
                if 503 in seen and seen[-1] == 200 and seen.index(503) > 0:
                    break
                await asyncio.sleep(0.1)
            samples = await run.metrics()
        seen = [c for c, _ in codes]
        assert seen[0] == 200, codes[:3]
        assert 503 in seen and seen[-1] == 200, seen
        reasons = next(r for c, r in codes if c == 503)
        assert any("delivered no data" in r for r in reasons), reasons
        assert total(samples, "mdgen_healthy") == 1.0
        assert total(samples, "mdgen_reconnects_total") == 0  # silence < idle_timeout

    asyncio.run(main())


def test_stopped_database_makes_healthz_503_and_back(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        sink = FakeMongoSink()
        options = MockOptions(speed=1.0, loop=True)
        async with running(monkeypatch, "coinbase", options, sink=sink) as run:
            await run.until(lambda s: total(s, "mdgen_sink_batches_total") > 0, what="a batch")
            code_ok, _ = await run.health()
            sink.state = "MongoUnavailable"
            down = await run.until(
                lambda s: total(s, "mdgen_spool_records") > 0, what="spooled records"
            )
            code_down, doc_down = await run.health()
            live_down = (await run.client.get("/livez")).status_code
            sink.state = "OK"
            code_back, _ = await run.health()
            up = await run.metrics()
        assert (code_ok, code_down, code_back) == (200, 503, 200)
        assert live_down == 200  # a restart would not bring the database back
        assert doc_down["persistence"]["state"] == "MongoUnavailable"
        assert doc_down["persistence"]["spool_records"] > 0
        assert any("sink is MongoUnavailable" in r for r in doc_down["reasons"])
        assert total(down, "mdgen_sink_up") == 0
        assert total(down, "mdgen_sink_state", state="MongoUnavailable") == 1
        assert total(down, "mdgen_healthy") == 0
        assert total(down, "mdgen_spool_bytes") == total(down, "mdgen_spool_records") * 200
        assert total(down, "mdgen_replay_backlog_records") > 0
        assert total(down, "mdgen_dedup_dropped_records_total") == 3
        assert total(up, "mdgen_sink_up") == 1 and total(up, "mdgen_healthy") == 1

    asyncio.run(main())


# -- the HTTP server on its own ------------------------------------------------------------------


@pytest.mark.parametrize("threaded", [True, False])
def test_http_server_paths_methods_keepalive_and_openmetrics(threaded: bool) -> None:
    from prometheus_client import CollectorRegistry

    from runtime.ops.http import OpsHttpServer

    async def main() -> None:
        server = OpsHttpServer(
            CollectorRegistry(), lambda sink: (not sink, {"sink": sink}), threaded=threaded
        )
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                paths = ("/healthz", "/metrics", "/", "/nope", "/livez")
                replies = [await client.get(p) for p in paths]
                head = await client.head("/healthz")
                post = await client.post("/metrics")
                om = await client.get(
                    "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
                )
        finally:
            await server.stop()
        assert [r.status_code for r in replies] == [503, 200, 200, 404, 200]
        assert replies[0].json() == {"sink": True} and replies[4].json() == {"sink": False}
        assert head.status_code == 503 and head.content == b""
        assert post.status_code == 405
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert server.scrapes == 2

    asyncio.run(main())


def test_a_port_in_use_is_logged_and_the_run_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            pipeline = Pipeline(MemorySink(), batch_size=10, flush_interval=0.1, queue_batches=2)
            collector = Collector([], make_transport("websockets"), pipeline)
            ops = Ops(collector, OpsSettings(http_enabled=True, http_port=port))
            await ops.start()
            assert ops.server is None and isinstance(pipeline.sink, ObservedSink)
            await ops.stop()

    asyncio.run(main())
    assert "collecting without them" in caplog.text


# -- time quality --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "epoch", "resolution"),
    [
        ({"serverTime": 1499827319559}, 1499827319.559, 1e-3),  # Binance
        ({"iso": "2015-01-07T23:47:25.201Z", "epoch": 1420674445.201}, 1420674445.201, 1e-3),
        (
            {"error": [], "result": {"unixtime": 1688669448, "rfc1123": "Thu, 06 Jul 23 ..."}},
            1688669448.0,
            1.0,
        ),  # Kraken
        ({"code": "0", "data": [{"ts": "1597026383085"}], "msg": ""}, 1597026383.085, 1e-3),
        ({"data": {"now": 1597026383085123456}}, 1597026383.085123, 1e-9),
        ("2024-05-01T12:00:00.123456+00:00", 1714564800.123456, 1e-6),
    ],
)
def test_server_time_is_parsed_generically(body: Any, epoch: float, resolution: float) -> None:
    found = parse_server_time(body)
    assert found is not None
    assert found.epoch == pytest.approx(epoch, abs=1e-6)
    assert found.resolution == pytest.approx(resolution)


@pytest.mark.parametrize("body", [{"status": "ok"}, {"time": 12}, {"time": True}, [], None])
def test_no_server_time_is_found_where_there_is_none(body: Any) -> None:
    assert parse_server_time(body) is None


def test_clock_probe_estimates_the_skew_and_counts_failures() -> None:
    skew = 2.5
    answers = iter([200, 200, 404, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status != 200:
            return httpx.Response(status, json={"error": "nope"})
        return httpx.Response(200, json={"serverTime": int((time.time() + skew) * 1000)})

    rest = RestSpec(
        base_urls=("http://exchange.test",),
        time_endpoint="time",
        endpoints={"time": RestEndpointSpec("time", "GET", "/api/v3/time", 1)},
    )

    async def main() -> ClockProbe:
        probe = ClockProbe("binance", rest, transport=httpx.MockTransport(handler))
        for _ in range(4):
            await probe.probe()
        await probe.client.aclose()
        return probe

    probe = asyncio.run(main())
    best = probe.estimate
    assert best is not None
    assert abs(best.skew - skew) <= best.uncertainty + 0.01
    assert best.uncertainty < 0.1
    assert (probe.probes, probe.failures, len(probe.samples)) == (4, 1, 3)
    assert probe.stats.requests == {"200": 3, "404": 1}


def _env(channel: str, ts_exchange: int | None, ts_recv: int, kind: str = "trades") -> Envelope:
    record = {
        "exchange": "x",
        "channel": channel,
        "symbol": "BTC-USDT",
        "ts_exchange": ts_exchange,
        "ts_recv": ts_recv,
        "seq": None,
    }
    return wrap("i", kind, record)


def test_observer_samples_without_bias_and_counts_dead_letters_exactly() -> None:
    now = 1_700_000_000_000_000_000
    batch = [_env("trades", now - 20_000_000, now) for _ in range(100)]
    batch += [_env("ticker", None, now + 1, "ticker") for _ in range(100)]
    batch.append(
        gap(
            "x", "i", "trades", "BTC-USDT", start_ns=now, end_ns=now + 5, reason="c", connection="c"
        )
    )
    dead = _env("_dead_letters", None, now, "dead_letter")
    dead["record"]["reason"] = "channel trades: KeyError('p')"
    batch.append(dead)
    observer = BatchObserver(sample=10, rng=random.Random(7))
    rounds = 2000
    for _ in range(rounds):
        observer.observe(batch)
    trades = observer.records[("x", "i", "trades", "trades")]
    ticker = observer.records[("x", "i", "ticker", "ticker")]
    assert trades == pytest.approx(100 * rounds, rel=0.05)
    assert ticker == pytest.approx(100 * rounds, rel=0.05)
    assert sum(observer.records.values()) == pytest.approx(len(batch) * rounds, rel=0.05)
    assert observer.dead_letters == {("x", "i", "parse_error"): rounds}  # exact, not sampled
    assert observer.last_recv_ns[("x", "i", "ticker")] == now + 1
    tq = observer.time_quality[("x", "i", "trades")]
    assert tq.exchange_time_ratio == 1.0
    assert tq.lag.sum / tq.lag.count == pytest.approx(0.02)
    assert observer.time_quality[("x", "i", "ticker")].exchange_time_ratio == 0.0
    assert tq.sampled < 100 * rounds / 10  # a sample, not every record
    small = BatchObserver(sample=64)
    small.observe(batch[:8])  # small batches are counted exactly
    assert small.records == {("x", "i", "trades", "trades"): 8.0}
    hinted = BatchObserver(dead_letter_hint=lambda: 0)
    hinted.observe(batch)  # the sessions saw no bad frame: no scan for dead letters
    assert not hinted.dead_letters


def test_sink_write_failure_is_unhealthy_and_reraised() -> None:
    class Broken(MemorySink):
        async def write(self, batch: list[Envelope]) -> None:
            raise OSError("disk full")

    sink = ObservedSink(Broken())
    assert sink.health() == {"state": "OK", "healthy": True}
    with pytest.raises(OSError):
        asyncio.run(sink.write([_env("trades", 1, 2)]))
    report = sink.health()
    assert report["healthy"] is False and report["state"] == "Failed"
    assert sink.write_errors == 1 and sink.write_seconds.count == 1
    assert sink.envelopes == []  # other attributes are the inner sink's


@pytest.mark.parametrize(
    ("report", "healthy"),
    [
        ({"state": "OK"}, True),
        ({"state": "Degraded"}, False),
        ({"state": "MongoUnavailable"}, False),
        ({"state": "Weird", "healthy": True}, True),
        ({"state": "OK", "healthy": False}, False),
    ],
)
def test_sink_health_rule(report: Mapping[str, Any], healthy: bool) -> None:
    class S:
        def health(self) -> Mapping[str, Any]:
            return report

    assert sink_health(S())["healthy"] is healthy


# -- logs ----------------------------------------------------------------------------------------


def _record(
    msg: str, *args: object, level: int = logging.WARNING, **extra: Any
) -> logging.LogRecord:
    record = logging.LogRecord("mdgen.test", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_repeated_errors_are_rate_limited_with_a_count() -> None:
    now = [0.0]
    limiter = RepeatFilter(burst=3, interval=10.0, clock=lambda: now[0])
    passed = [limiter.filter(_record("%s: disconnected", "conn-a")) for _ in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limiter.filter(_record("%s: disconnected", "conn-b"))  # another connection
    assert limiter.filter(_record("info %s", "conn-a", level=logging.INFO))
    now[0] = 11.0
    again = _record("%s: disconnected", "conn-a")
    assert limiter.filter(again) and getattr(again, "suppressed", None) == 7


def test_secrets_are_never_printed() -> None:
    redactor = Redactor(["s3cr3t-value-123"])
    text = redactor(
        "mongodb://admin:hunter22@db:27017/x token=abcdef123 "
        'X-MBX-APIKEY: s3cr3t-value-123 apiKey="q1w2e3r4" https://h/p?signature=0a1b2c&x=1'
    )
    for secret in ("hunter22", "abcdef123", "s3cr3t-value-123", "q1w2e3r4", "0a1b2c"):
        assert secret not in text
    assert "x=1" in text and "db:27017" in text
    os.environ["MDGEN_TEST_API_SECRET"] = "very-secret-env-value"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        stream = io.StringIO()
        configure_logging("json", "info", stream=stream)
        logging.getLogger("mdgen.test").warning("connect with %s", "very-secret-env-value")
        assert "very-secret-env-value" not in stream.getvalue()
        assert "very-secret-env-value" not in redact("x very-secret-env-value y")
    finally:
        del os.environ["MDGEN_TEST_API_SECRET"]
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def test_json_and_text_formats() -> None:
    record = _record("%s: up", "okx", event="state_change", to="streaming", instance="okx")
    line = orjson.loads(JsonFormatter().format(record))
    assert line["msg"] == "okx: up" and line["level"] == "warning" and line["to"] == "streaming"
    assert line["ts"].endswith("Z") and line["logger"] == "mdgen.test"
    text = TextFormatter().format(record)
    assert "WARNING" in text and "okx: up" in text and "instance=okx" in text
    assert "event=" not in text


# -- mdgen run as a user runs it -----------------------------------------------------------------


def _pty_run(args: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``mdgen`` with stdin/stdout/stderr on a pseudo-terminal (120x40)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    proc = subprocess.Popen(
        [str(MDGEN), *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                out += data
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, out.decode("utf-8", "replace")


def test_terminal_run_shows_the_live_view(tmp_path: Path) -> None:
    require_captures("binance")
    args = ["run", "binance", "--mock", "--duration", "3", "--data-dir", str(tmp_path)]
    code, out = _pty_run(args)
    assert code == 0, out[-2000:]
    for column in ("instance", "state", "msg/s", "rec/s", "lag", "last msg", "reconn", "gaps"):
        assert column in out, column
    assert "streaming" in out and "binance: stopped;" in out
    assert "\x1b[" in out  # redrawn in place
    assert '{"ts"' not in out  # logs on a terminal are text
    quiet_code, quiet = _pty_run([*args, "--quiet"])
    assert quiet_code == 0 and "msg/s" not in quiet and "INFO" in quiet


def test_piped_run_logs_json_lines(tmp_path: Path) -> None:
    require_captures("kraken")
    result = subprocess.run(
        [str(MDGEN), "run", "kraken", "--mock", "--duration", "3", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logs = [line for line in result.stderr.splitlines() if line.startswith("{")]
    rest = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    events = [orjson.loads(line) for line in logs]  # every log line is JSON
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)
    changes = [e for e in events if e.get("event") == "state_change" and e["scope"] == "connection"]
    assert any(e["to"] == "streaming" for e in changes)
    lines = result.stderr.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("kraken: stopped;"))
    assert all(line.startswith("{") for line in lines[:summary])  # only the summary is not JSON
    assert rest[0].startswith("kraken: stopped;")
    assert "msg/s" not in result.stderr
