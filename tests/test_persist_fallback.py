"""The MongoDB fallback sink for real: kill -9 loops, database flapping through a fault proxy,
disk full per on_full policy, and ``mdgen run`` with the database stopped mid-run.

Figures are printed (``pytest -s`` shows them). MongoDB is nx-27017 (a wire-protocol server)
started by the tests on 127.0.0.1; kill tests start their own so they can kill it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pymongo
import pytest

from runtime.envelope import Envelope
from runtime.persist.fallback import FallbackSink, SinkState
from runtime.persist.mongo import MongoStore
from runtime.persist.replay import decode
from runtime.persist.spool import OnFull, Spool, SpoolRecord
from runtime.persist.testing import NxServer, TcpProxy, free_port, nx_binary

T0 = 1_764_000_000_000_000_000
MDGEN = Path(sys.executable).parent / "mdgen"

needs_nx = pytest.mark.skipif(nx_binary() is None, reason="pip install nx-27017 to run this")

Client = pymongo.MongoClient[dict[str, Any]]


def trade(n: int) -> Envelope:
    """A trade envelope whose record carries ``n`` (the test's own serial number)."""
    ts = T0 + n * 1000
    return {
        "v": 1,
        "exchange": "okx",
        "instance": "okx",
        "channel": "trades",
        "symbol": "BTC-USDT",
        "kind": "trades",
        "ts_exchange": ts,
        "ts_recv": ts + 7,
        "seq": None,
        "message_id": str(n),
        "record": {"n": n, "price": 100.5, "size": 0.25, "side": "buy", "trade_id": str(n)},
    }


def counts_by_n(client: Client, database: str) -> dict[int, int]:
    """How many documents hold each serial number ``record.n``."""
    rows = client[database].trades.aggregate([{"$group": {"_id": "$record.n", "c": {"$sum": 1}}}])
    return {int(r["_id"]): int(r["c"]) for r in rows}


@pytest.fixture
def nx(tmp_path: Path) -> Iterator[NxServer]:
    """A MongoDB (nx-27017) of this test's own, which the test may kill and restart."""
    if nx_binary() is None:
        pytest.skip("nx-27017 is not installed: pip install nx-27017")
    server = NxServer(tmp_path / "nx")
    server.directory.mkdir()
    server.start()
    yield server
    server.kill()


def make_sink(uri: str, spool_dir: Path, database: str, **kw: Any) -> FallbackSink:
    spool_options = {
        k: kw.pop(k) for k in ("on_full", "max_bytes", "segment_bytes", "fsync") if k in kw
    }
    spool_options.setdefault("max_bytes", 64 << 20)
    spool_options.setdefault("segment_bytes", 1 << 20)
    options: dict[str, Any] = {"probe_initial": 0.1, "probe_max": 1.0, "close_drain_timeout": 20}
    options.update(kw)
    return FallbackSink(
        MongoStore(uri, database, backoff=0.05), Spool(spool_dir, **spool_options), **options
    )


# -- 1. kill -9 loops -----------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from runtime.persist.fallback import FallbackSink
    from runtime.persist.mongo import MongoStore
    from runtime.persist.spool import Spool

    T0 = int(sys.argv[4])

    def trade(n):
        ts = T0 + n * 1000
        return {"v": 1, "exchange": "okx", "instance": "okx", "channel": "trades",
                "symbol": "BTC-USDT", "kind": "trades", "ts_exchange": ts, "ts_recv": ts + 7,
                "seq": None, "message_id": str(n),
                "record": {"n": n, "price": 100.5, "size": 0.25, "side": "buy",
                           "trade_id": str(n)}}

    async def main(uri, spool_dir, start):
        sink = FallbackSink(MongoStore(uri, "killed"), Spool(Path(spool_dir), max_bytes=1 << 28),
                            probe_initial=30, probe_max=30)
        await sink.open()
        st = sink.spool.stats
        print(f"recovered {st.recovered_items} {st.torn_tails} {st.corrupt_records}", flush=True)
        n = start
        while True:
            await sink.write([trade(n + i) for i in range(20)])
            n += 20
            print(f"acked {n}", flush=True)   # every n below this is acknowledged
            await asyncio.sleep(0.005)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """)


@needs_nx
def test_kill_minus_9_loops_lose_nothing_acknowledged(tmp_path: Path) -> None:
    rounds = int(os.environ.get("MDGEN_KILL_ROUNDS", "25"))
    rng = random.Random(4)
    spool_dir = tmp_path / "spool"
    down = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200"
    acked: set[int] = set()
    torn = corrupt = 0
    started = time.monotonic()
    for r in range(rounds):
        start = r * 1_000_000
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, down, str(spool_dir), str(start), str(T0)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert child.stdout is not None
        watchdog = threading.Timer(30, child.kill)  # a hung child fails the test, not CI
        watchdog.start()
        first = child.stdout.readline().split()
        assert first[0] == "recovered", first
        torn += int(first[2])
        corrupt += int(first[3])
        line = child.stdout.readline()  # the first ack: the child is writing now
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait()
        watchdog.cancel()
        upto = start
        for text in [line, *rest.splitlines()]:
            if text.startswith("acked "):
                upto = int(text.split()[1])
        acked.update(range(start, upto))
    spent = time.monotonic() - started
    # The database comes back: one more start drains the spool.
    server = NxServer(tmp_path / "nx")
    server.directory.mkdir()
    server.start()
    try:

        async def drain() -> FallbackSink:
            sink = make_sink(server.uri, spool_dir, "killed")
            await sink.open()
            await sink.close()
            return sink

        sink = asyncio.run(drain())
        client: Client = pymongo.MongoClient(server.uri)
        counts = counts_by_n(client, "killed")
        client.close()
    finally:
        server.kill()
    missing = acked - counts.keys()
    twice = [n for n, c in counts.items() if c > 1]
    print(
        f"\n[kill -9] {rounds} kills in {spent:.1f} s: {len(acked)} records acknowledged, "
        f"{len(counts)} stored ({len(counts) - len(acked & counts.keys())} written but not yet "
        f"acknowledged when killed), {len(missing)} lost, {len(twice)} duplicated; torn tails "
        f"truncated {torn}, corrupt records {corrupt}; spool left {sink.spool.backlog_items}"
    )
    assert not missing and not twice
    assert sink.spool.backlog_items == 0
    assert sorted(p.name for p in spool_dir.iterdir()) == ["CURSOR", "LOCK"]


# -- 4. flapping ---------------------------------------------------------------------------------


@needs_nx
def test_flapping_database_nothing_lost_nothing_duplicated(nx: NxServer, tmp_path: Path) -> None:
    proxy = TcpProxy(nx.port).start()
    uri = proxy.uri("serverSelectionTimeoutMS=500&connectTimeoutMS=500&socketTimeoutMS=1000")
    database = f"flap_{uuid.uuid4().hex[:8]}"
    sink = make_sink(uri, tmp_path / "spool", database, probe_max=0.8)
    replayed_order: list[int] = []
    real_store = sink.replay._store

    def recording_store(record: SpoolRecord) -> Any:
        _, envelopes = decode(record.payload)
        replayed_order.append(int(envelopes[0]["record"]["n"]))  # type: ignore[index]
        return real_store(record)

    sink.replay._store = recording_store  # type: ignore[method-assign]
    states: list[str] = []
    timeline: list[str] = []
    t0 = time.monotonic()
    acked: list[int] = []
    figures: dict[str, Any] = {}

    async def writer(stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            await sink.write([trade(n + i) for i in range(50)])
            acked.extend(range(n, n + 50))
            n += 50
            await asyncio.sleep(0.02)

    async def watch(stop: asyncio.Event) -> None:
        while not stop.is_set():
            state = sink.health().state.value
            if not states or states[-1] != state:
                states.append(state)
                timeline.append(f"{state}@{time.monotonic() - t0:.1f}s")
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        await sink.open()
        stop = asyncio.Event()
        tasks = [asyncio.create_task(writer(stop)), asyncio.create_task(watch(stop))]
        await asyncio.sleep(1.0)
        proxy.set_mode("reset")  # connections reset, new ones refused
        await asyncio.sleep(1.5)
        proxy.set_mode("pass")
        await asyncio.sleep(1.0)
        probes, accepted, cpu, wall = (
            sink.link.probes,
            proxy.accepted,
            time.process_time(),
            time.monotonic(),
        )
        proxy.set_mode("blackhole")  # packets vanish: timeouts, not errors
        await asyncio.sleep(3.0)
        figures["blackhole_probes"] = sink.link.probes - probes
        figures["blackhole_connections"] = proxy.accepted - accepted
        figures["blackhole_cpu"] = (time.process_time() - cpu) / (time.monotonic() - wall)
        proxy.set_mode("latency", 0.05)
        await asyncio.sleep(1.0)
        proxy.set_mode("pass")
        await asyncio.sleep(0.5)
        nx.kill()  # the server dies in the middle of an insert_many
        await asyncio.sleep(1.0)
        nx.start()
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*tasks)
        deadline = time.monotonic() + 30
        while sink.spool.backlog_items and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await sink.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    client: Client = pymongo.MongoClient(nx.uri)
    counts = counts_by_n(client, database)
    client.close()
    missing = set(acked) - counts.keys()
    twice = [n for n, c in counts.items() if c > 1]
    stats, rstats = sink.stats, sink.replay.stats
    print(
        f"\n[flapping] {len(acked)} records acknowledged, {len(counts)} stored, {len(missing)} "
        f"lost, {len(twice)} duplicated; states {' -> '.join(timeline)}; outages "
        f"{sink.link.outages}; spooled {stats.spooled}, replayed {rstats.records} batches "
        f"({rstats.inserted} inserted, {rstats.duplicates} already stored); live duplicates "
        f"{stats.duplicates}; blackhole 3 s: {figures['blackhole_probes']} probes, "
        f"{figures['blackhole_connections']} connections, CPU {figures['blackhole_cpu']:.0%}"
    )
    assert not missing and not twice and len(counts) == len(acked)
    assert sink.spool.backlog_items == 0 and stats.spooled > 0
    assert "OK" in states and "MongoUnavailable" in states and states[-1] == "OK"
    assert replayed_order == sorted(replayed_order), "spool not replayed oldest-first"
    assert figures["blackhole_probes"] <= 8 and figures["blackhole_connections"] <= 40


# -- 3. disk full: health and counts through the sink ---------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a 1 MiB tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@needs_nx
@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_disk_full_sink_is_degraded_and_counts_drops(
    tmpfs: Path, tmp_path: Path, policy: OnFull
) -> None:
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300"
    database = f"full_{policy}"
    sink = make_sink(
        uri, tmpfs / "spool", database, on_full=policy, segment_bytes=128 << 10, probe_max=0.3
    )
    written = 0
    blocked_state = None

    async def scenario() -> None:
        nonlocal written, blocked_state
        await sink.open()
        for b in range(60):  # 60 x 100 trades, about 2.4 MB: more than the 1 MiB disk
            task = asyncio.create_task(sink.write([trade(b * 100 + i) for i in range(100)]))
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:  # on_full = block: write waits for room
                blocked_state = sink.health()
                server = NxServer(tmp_path / "nx", port=port)
                server.directory.mkdir()
                server.start()  # space returns in another form: MongoDB is back
                try:
                    await task
                    written += 100
                    await sink.close()
                    client: Client = pymongo.MongoClient(server.uri)
                    figures["stored"] = len(counts_by_n(client, database))
                    client.close()
                finally:
                    server.kill()
                return
            written += 100
        figures["health"] = sink.health()
        await sink.close()

    figures: dict[str, Any] = {}
    asyncio.run(scenario())
    sp, st_ = sink.spool.stats, sink.stats
    if policy == "block":
        assert blocked_state is not None and blocked_state.state == SinkState.DEGRADED
        assert st_.blocked_events == 1 and figures["stored"] == written
        print(
            f"\n[disk full block] blocked after {written - 100} records ({blocked_state.reason});"
            f" resumed when MongoDB came back: {figures['stored']} stored, none dropped"
        )
        return
    health = figures["health"]
    assert health.state == SinkState.DEGRADED
    missing = written - sink.spool.backlog_items
    assert missing == st_.dropped + sp.dropped_oldest_items > 0
    print(
        f"\n[disk full {policy}] {written} records written, {sink.spool.backlog_items} in the "
        f"spool, {st_.dropped} dropped newest, {sp.dropped_oldest_items} dropped oldest "
        f"(= missing {missing}); health {health.state.value}: {health.reason}"
    )


# -- mdgen run with the database stopped mid-run ---------------------------------------------------


def _capture_trades(exchange: str) -> list[bytes]:
    from runtime.registry import load_spec
    from runtime.replay import Replayer
    from tests.crosscheck import require_captures

    capture = require_captures(exchange) / "raw.ndjson"
    replayer = Replayer(load_spec(exchange))
    out: list[dict[str, Any]] = []
    for n, line in enumerate(capture.open("rb"), 1):
        entry = orjson.loads(line)
        if entry["kind"] == "ws":
            out.extend(r for r in replayer.capture_line(n, entry) if r["channel"] == "trades")
    return sorted(_comparable(r) for r in out)


def _comparable(record: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in record.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS
    )


@needs_nx
def test_mdgen_run_with_the_database_stopped_mid_run(nx: NxServer, tmp_path: Path) -> None:
    expected_trades = _capture_trades("okx")
    config = tmp_path / "collector.toml"
    config.write_text(textwrap.dedent(f"""
            [pipeline]
            batch_size = 100000
            flush_interval = 3.0

            [sink]
            kind = "mongodb"
            uri_env = "MDGEN_PERSIST_TEST_URI"
            database = "runokx"
            spool_dir = "{tmp_path / 'spool'}"
            """))
    env = {
        **os.environ,
        "MDGEN_PERSIST_TEST_URI": f"mongodb://127.0.0.1:{nx.port}/?serverSelectionTimeoutMS=500",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [str(MDGEN), "run", "okx", "--mock", "--duration", "10", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "MongoDB reachable" in line:
            break
    nx.kill()  # the first batch is flushed 3 s after start: it meets a stopped database
    for line in proc.stderr:  # keep the database down until the sink has noticed (bounded:
        lines.append(line)  # the run ends after --duration and stderr closes)
        if "MongoDB unavailable" in line:
            break
    time.sleep(1.0)
    nx.start()
    lines.extend(proc.stderr)
    assert proc.wait(60) == 0, "".join(lines)[-3000:]
    assert "Traceback" not in "".join(lines)
    summary = next(line for line in lines if "MongoDB database 'runokx'" in line)
    handed = int(summary.split(": ")[1].split(" records")[0])
    spooled = int(summary.split(" spooled")[0].rsplit(" ", 1)[1])
    client: Client = pymongo.MongoClient(nx.uri)
    db = client["runokx"]
    total = sum(db[name].count_documents({}) for name in db.list_collection_names())
    trades = sorted(_comparable(d["record"]) for d in db.trades.find({}, {"_id": 0, "record": 1}))
    client.close()
    print(f"\n[mdgen run] {summary.strip()}; {total} documents in MongoDB")
    assert trades == expected_trades  # every trade of the capture, exactly once
    assert total == handed and spooled > 0
    assert not list((tmp_path / "spool").glob("*.seg"))


def test_the_uri_is_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    uri = f"mongodb://mdgen:s3cr3t-pw@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=200"

    async def scenario() -> FallbackSink:
        sink = make_sink(uri, tmp_path / "spool", "secret")
        await sink.open()
        await sink.write([trade(1)])
        await sink.close()
        return sink

    with caplog.at_level("DEBUG"):
        sink = asyncio.run(scenario())
    shown = [caplog.text, repr(sink), repr(sink.store), sink.summary(), str(sink.health())]
    assert sink.spool.backlog_items == 1 and "MongoUnavailable" in str(sink.health())
    assert not any("s3cr3t" in text for text in shown)
