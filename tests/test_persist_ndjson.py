"""The embedded default sink: ``data/<exchange>/<channel>/<YYYY-MM-DD>/<symbol>.ndjson.gz``, one
gzip member per flushed batch, readable with gzip + json (and pandas where it is installed)."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from runtime.envelope import Envelope
from runtime.persist.build import build_sink, sink_summary
from runtime.sinks import NdjsonGzSink

DAY_NS = 86_400 * 10**9
T0 = 20_418 * DAY_NS + 3_600 * 10**9  # 2025-11-26 01:00 UTC


def env(n: int, *, channel: str = "trades", symbol: str = "BTC-USDT", day: int = 0) -> Envelope:
    ts = T0 + day * DAY_NS + n
    record: dict[str, Any] = {
        "exchange": "okx",
        "channel": channel,
        "symbol": symbol,
        "symbol_raw": symbol,
        "ts_exchange": ts,
        "ts_recv": ts,
        "seq": None,
        "price": 100.0 + n,
        "size": 0.5,
        "side": "sell",
        "trade_id": str(n),
    }
    return {
        "v": 1,
        "exchange": "okx",
        "instance": "okx",
        "channel": channel,
        "symbol": symbol,
        "kind": "trades",
        "ts_exchange": ts,
        "ts_recv": ts,
        "seq": None,
        "message_id": str(n),
        "record": record,
    }


def gzip_members(data: bytes) -> list[bytes]:
    """The decompressed members of a multi-member gzip file (complete members only)."""
    out = []
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            member = d.decompress(data)
        except zlib.error:
            break
        if not d.eof:  # torn: the rest of this member is missing
            break
        out.append(member)
        data = d.unused_data
    return out


def write(sink: NdjsonGzSink, batches: list[list[Envelope]]) -> None:
    async def go() -> None:
        await sink.open()
        for batch in batches:
            await sink.write(batch)
        await sink.close()

    asyncio.run(go())


def test_layout_and_one_member_per_batch(tmp_path: Path) -> None:
    sink = NdjsonGzSink(tmp_path / "data")
    batches = [
        [env(0), env(1), env(2, symbol="ETH-USDT")],
        [env(3), env(4, day=1)],
        [env(5), env(6, channel="agg_trades")],
    ]
    write(sink, batches)
    files = sorted(str(p.relative_to(tmp_path / "data")) for p in sink.files_written)
    assert files == [
        "okx/agg_trades/2025-11-26/BTC-USDT.ndjson.gz",
        "okx/trades/2025-11-26/BTC-USDT.ndjson.gz",
        "okx/trades/2025-11-26/ETH-USDT.ndjson.gz",
        "okx/trades/2025-11-27/BTC-USDT.ndjson.gz",
    ]
    main = tmp_path / "data/okx/trades/2025-11-26/BTC-USDT.ndjson.gz"
    assert len(gzip_members(main.read_bytes())) == 3  # one gzip member per flushed batch
    with gzip.open(main, "rt") as handle:
        rows = [json.loads(line) for line in handle]
    assert [r["record"]["trade_id"] for r in rows] == ["0", "1", "3", "5"]
    assert rows[0]["v"] == 1 and rows[0]["kind"] == "trades"


def test_a_torn_last_batch_leaves_the_earlier_ones_readable(tmp_path: Path) -> None:
    sink = NdjsonGzSink(tmp_path)
    write(sink, [[env(i)] for i in range(4)])
    path = next(iter(sink.files_written))
    data = path.read_bytes()
    torn = data[:-20]  # a crash in the middle of appending the last member
    members = gzip_members(torn)
    assert [json.loads(m)["record"]["trade_id"] for m in members] == ["0", "1", "2"]


def test_pandas_reads_it(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed (optional)")
    sink = NdjsonGzSink(tmp_path)
    write(sink, [[env(i) for i in range(10)], [env(i) for i in range(10, 15)]])
    frame = pd.read_json(next(iter(sink.files_written)), lines=True)
    assert len(frame) == 15 and list(frame["exchange"].unique()) == ["okx"]
    prices = pd.json_normalize(frame["record"].tolist())["price"]
    assert prices.tolist() == [100.0 + i for i in range(15)]


def test_build_sink_defaults_to_ndjson(tmp_path: Path) -> None:
    sink = build_sink(None, tmp_path / "data")
    assert isinstance(sink, NdjsonGzSink) and sink.root == tmp_path / "data"
    assert sink_summary(sink) == f"records are under {tmp_path / 'data'}/"
