"""Records/s into each sink: NDJSON.gz, MongoDB, spool append (fsync per batch), spool drain.

Run: .venv/bin/python benchmarks/bench_sinks.py [--records N] [--mongo-records N] [--batch N]

MongoDB is a local nx-27017 (started here; ``pip install nx-27017``), or the server of
``MDGEN_TEST_MONGO_URI`` when that is set. Every figure is for the same synthetic trade
envelopes (about 330 bytes of JSON each), written in batches as the pipeline hands them over:

* ``ndjson.gz``: :class:`runtime.sinks.NdjsonGzSink`, one gzip member per batch;
* ``mongodb (live)``: :class:`runtime.persist.fallback.FallbackSink` with MongoDB up
  (ids, dedup-free ``insert_many(ordered=False)``);
* ``spool append``: the fallback sink with MongoDB down, so every batch is encoded, written to
  the spool and fsynced before ``write`` returns;
* ``spool drain (read+ack)``: reading and acknowledging those records, no database;
* ``spool replay -> mongodb``: the replay worker draining the spool into MongoDB (unthrottled).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from runtime.envelope import Envelope
from runtime.persist.fallback import FallbackSink
from runtime.persist.mongo import MongoStore
from runtime.persist.spool import Spool
from runtime.persist.testing import ENV_URI, NxServer, free_port, nx_binary
from runtime.sinks import NdjsonGzSink, Sink

T0 = 1_764_000_000_000_000_000


def envelopes(n: int) -> list[Envelope]:
    out = []
    for i in range(n):
        ts = T0 + i * 1_000_000
        record = {
            "exchange": "binance",
            "channel": "trades",
            "symbol": "BTC-USDT" if i % 3 else "ETH-USDT",
            "symbol_raw": "BTCUSDT",
            "ts_exchange": ts,
            "ts_recv": ts + 250_000,
            "seq": None,
            "price": 37000.12 + i % 100,
            "size": 0.0015,
            "side": "buy" if i % 2 else "sell",
            "trade_id": i,
        }
        out.append(
            {
                "v": 1,
                "exchange": "binance",
                "instance": "binance",
                "channel": "trades",
                "symbol": record["symbol"],
                "kind": "trades",
                "ts_exchange": ts,
                "ts_recv": ts + 250_000,
                "seq": None,
                "message_id": i,
                "record": record,
            }
        )
    return out


async def timed_writes(sink: Sink, records: list[Envelope], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(records), batch):
        await sink.write(records[i : i + batch])
    return time.perf_counter() - started


async def until(done: Callable[[], bool], step: float = 0.01) -> None:
    while not done():
        await asyncio.sleep(step)


def report(name: str, count: int, seconds: float) -> None:
    print(f"{name:<28} {count:>9,} records  {seconds:7.2f} s  {count / seconds:>10,.0f} rec/s")


async def bench(args: argparse.Namespace, uri: str | None, work: Path) -> None:
    records = envelopes(args.records)
    ndjson = NdjsonGzSink(work / "data")
    await ndjson.open()
    report("ndjson.gz", len(records), await timed_writes(ndjson, records, args.batch))

    mongo_records = records[: args.mongo_records]
    if uri is not None:
        live = FallbackSink(MongoStore(uri, f"bench_{uuid.uuid4().hex[:6]}"), spool(work / "s1"))
        await live.open()
        seconds = await timed_writes(live, mongo_records, args.batch)
        report("mongodb (live)", len(mongo_records), seconds)
        await live.close()

    down = f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=100"
    spooling = FallbackSink(MongoStore(down, "bench"), spool(work / "s2"), probe_initial=3600)
    await spooling.open()
    report("spool append (fsync/batch)", len(records), await timed_writes(spooling, records, 1000))
    await spooling.close()

    spool_dir = work / "s2"
    drained = spool(spool_dir)
    await asyncio.to_thread(drained.open)
    started = time.perf_counter()

    def drain_all() -> int:
        n = 0
        while (record := drained.peek()) is not None:
            n += record.count
            drained.ack(record)
        return n

    count = await asyncio.to_thread(drain_all)
    report("spool drain (read+ack)", count, time.perf_counter() - started)
    drained.close()

    if uri is not None:
        again = FallbackSink(MongoStore(down, "bench"), spool(work / "s3"), probe_initial=3600)
        await again.open()
        await timed_writes(again, mongo_records, args.batch)
        await again.close()
        replay = FallbackSink(
            MongoStore(uri, f"bench_{uuid.uuid4().hex[:6]}"),
            spool(work / "s3"),
            replay_rate=1e9,
        )
        started = time.perf_counter()
        await replay.open()
        await until(lambda: replay.spool.backlog_items == 0)
        report("spool replay -> mongodb", len(mongo_records), time.perf_counter() - started)
        await replay.close()


def spool(directory: Path) -> Spool:
    return Spool(directory, max_bytes=8 << 30, segment_bytes=16 << 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--mongo-records", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args()
    server: NxServer | None = None
    uri = os.environ.get(ENV_URI)
    if uri is None and nx_binary() is not None:
        server = NxServer()
        server.start()
        uri = server.uri
    if uri is None:
        print("no MongoDB (pip install nx-27017, or set MDGEN_TEST_MONGO_URI): skipping it")
    try:
        with tempfile.TemporaryDirectory() as work:
            asyncio.run(bench(args, uri, Path(work)))
    finally:
        if server is not None:
            server.kill()
    where = "MDGEN_TEST_MONGO_URI" if os.environ.get(ENV_URI) else "nx-27017 (SQLite), 1 core"
    print(f"MongoDB: {where}")


if __name__ == "__main__":
    main()
