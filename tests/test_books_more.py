"""Order books of Bitfinex (checksum messages), HTX (incremental MBP, snapshot asked for on the
WebSocket) and bitFlyer (diffs on top of another channel's snapshots): the checksum against the
documented examples, the documentation-example captures replayed, a corrupted checksum, the
compiler's checks, and live sessions against a mock (loopback, bounded in time).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gzip
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect

from compiler.pipeline import compile_descriptor
from runtime.booksync import BookOptions, BookSyncs
from runtime.captures import FIXTURE_CAPTURES, REPO
from runtime.checksum import crc32_interleaved_signed_neg_asks, js_number
from runtime.collector import Collector, Instance
from runtime.mock import MockExchange, MockOptions
from runtime.mock.server import _Conn
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.replay import Replayer, replay_lines
from runtime.run import capture_symbols
from runtime.sinks import MemorySink
from runtime.spec import ExchangeSpec, Record
from runtime.subscriptions import plan_connections
from runtime.transport import make_transport
from tests.test_books import FAST, LiveBookMock, _levels, _run_live, _verify


def _lines(exchange: str) -> list[bytes]:
    return (FIXTURE_CAPTURES / exchange / "raw.ndjson").read_bytes().splitlines()


def _replay(exchange: str, lines: list[bytes]) -> tuple[list[Record], Any]:
    records, report = replay_lines(load_spec(exchange), lines, books=BookOptions())
    return [r for _, r in records], report


def _final(report: Any, channel: str) -> dict[str, Record]:
    return {b["symbol"]: b for b in report.final_books if b["channel"] == channel}


# -- Bitfinex -------------------------------------------------------------------------------------


def test_bitfinex_checksum_matches_the_documented_examples() -> None:
    # docs.bitfinex.com/docs/ws-websocket-checksum: the top 25 bids and asks interleaved,
    # [bid0.price, bid0.amount, ask0.price, ask0.amount, ...] (an ask's amount negative), joined
    # with ':', signed CRC32. Bitfinex's own client (bfx-api-node-models, OrderBook tests): bids
    # 6000:1, 5900:2 and asks 6100:3, 6200:4 give CRC.str('6000:1:6100:-3:5900:2:6200:-4'),
    # and a price of 1.7e-8 is written '0.000000017'. Expected values: signed zlib CRC32.
    bids, asks = [("6000", "1"), ("5900", "2")], [("6100", "3"), ("6200", "4")]
    assert crc32_interleaved_signed_neg_asks(bids, asks, 25) == 1756193398
    low = [("6000", "1"), ("0.000000017", "2")]
    assert crc32_interleaved_signed_neg_asks(low, asks, 25) == -931816132
    # the longer side's remaining levels follow; only the top `depth` count
    assert crc32_interleaved_signed_neg_asks(bids[:1], asks, 25) == _signed(
        b"6000:1:6100:-3:6200:-4"
    )
    deep = bids + [(str(5000 - i), "1") for i in range(30)]
    assert crc32_interleaved_signed_neg_asks(deep, asks, 2) == 1756193398
    # Bitfinex sends JSON numbers and checksums them as JavaScript writes them
    assert crc32_interleaved_signed_neg_asks([("6000.0", "1.0")], [], 25) == _signed(b"6000:1")
    assert [js_number(x) for x in ("7255.0", "0.0000001", "0.00000015", "1E+21", "0.5")] == [
        "7255",
        "1e-7",
        "1.5e-7",
        "1e+21",
        "0.5",
    ]
    assert js_number("0.00000001", exponent=False) == "0.00000001"


def _signed(text: bytes) -> int:
    import zlib

    crc = zlib.crc32(text)
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def test_bitfinex_fixture_checksums_validate_against_the_book() -> None:
    records, report = _replay("bitfinex", _lines("bitfinex"))
    assert report.books.checksum_ok == 5 and report.books.checksum_failures == 0
    assert not [r for r in records if "gap_start" in r]
    # a checksum message is a delta without levels that carries the checksum
    cs = [r for r in records if r["channel"] == "book" and r["checksum"] is not None]
    assert len(cs) == 5 and all(r["bids"] == [] == r["asks"] for r in cs)
    book = _final(report, "book")["BTC-USD"]
    assert book["synced"]
    assert book["bids"] == [
        ["7254.7", "3.3"],
        ["7254.65", "0.25"],
        ["7254.6", "2.0"],
        ["7254.5", "0.8"],
    ]
    assert book["asks"] == [["7254.9", "1.7"], ["7255.0", "2.0"]]


def _corrupt_checksum(lines: list[bytes], nth: int) -> tuple[list[bytes], int]:
    """The capture with the ``nth`` checksum message's value off by one; and its line."""
    out, seen = list(lines), 0
    for index, raw in enumerate(lines):
        entry = orjson.loads(raw)
        if '"cs"' not in entry.get("data", ""):
            continue
        seen += 1
        if seen == nth:
            msg = orjson.loads(entry["data"])
            msg[2] += 1
            entry["data"] = orjson.dumps(msg).decode()
            out[index] = orjson.dumps(entry)
            return out, index + 1
    raise AssertionError("too few checksum messages")


def _resubscription(lines: list[bytes], ts: float) -> list[bytes]:
    """What subscribing the book again delivers: a new chanId, the snapshot, its checksum (the
    true book at the end of the capture)."""
    _, report = _replay("bitfinex", lines)
    book = _final(report, "book")["BTC-USD"]
    rows = [[float(p), 1, float(s)] for p, s in book["bids"]]
    rows += [[float(p), 1, -float(s)] for p, s in book["asks"]]
    bids = [(p, s) for p, s in book["bids"]]
    asks = [(p, s) for p, s in book["asks"]]
    checksum = crc32_interleaved_signed_neg_asks(bids, asks, 25)
    ack = {"event": "subscribed", "channel": "book", "chanId": 99, "symbol": "tBTCUSD"}
    ack |= {"prec": "P0", "freq": "F0", "len": "25", "pair": "BTCUSD"}
    frames = [ack, [99, rows], [99, "cs", checksum]]
    return [
        orjson.dumps({"recv_ts": ts + n / 100, "kind": "ws", "conn": "ws.2", "data": f})
        for n, f in enumerate(orjson.dumps(x).decode() for x in frames)
    ]


def test_bitfinex_wrong_checksum_is_a_gap_until_a_fresh_snapshot() -> None:
    lines = _lines("bitfinex")
    bad, line = _corrupt_checksum(lines, 3)
    spec = load_spec("bitfinex")
    replayer = Replayer(spec, books=BookOptions())
    assert replayer.books is not None
    emitted: list[Record] = []
    for number, raw in enumerate(bad, 1):
        out = replayer.capture_line(number, orjson.loads(raw))
        if number == line:
            assert replayer.books.stats.checksum_failures == 1
            assert [r.source for r in replayer.books.requests] == []  # replay: cleared
            sync = replayer.books.get("book", "BTC-USD")
            assert sync is not None and not sync.synced
        if number > line:
            assert not [r for r in out if r["channel"] == "book"], "nothing while out of sync"
        emitted += out
    # the resubscription (what the session does: reconnect) brings the true book back
    ts = orjson.loads(lines[-1])["recv_ts"] + 1
    for number, raw in enumerate(_resubscription(lines, ts), len(bad) + 1):
        emitted += replayer.capture_line(number, orjson.loads(raw))
    [gap] = [r for r in emitted if "gap_start" in r]
    assert gap["reason"] == "book_checksum_mismatch" and gap["channel"] == "book"
    [snapshot] = [r for r in emitted if r["channel"] == "book" and r.get("type") == "snapshot"][1:]
    assert gap["gap_end"] == snapshot["ts_recv"] and gap["gap_start"] < gap["gap_end"]
    assert replayer.books.stats.resyncs == 1 and replayer.books.stats.checksum_ok == 2 + 1


def test_bitfinex_wrong_checksum_live_resubscribes(tmp_path: Path) -> None:
    spec = load_spec("bitfinex")
    bad, _ = _corrupt_checksum(_lines("bitfinex"), 2)

    async def main(path: Path) -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, path) as mock:
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=20, flush_interval=0.02, queue_batches=8)
            inst = Instance("t", mock.client_spec(), ["BTC-USD"], ["book"])
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            async def watch() -> None:
                while not inst.sessions or inst.sessions[0].stats.book_resyncs < 1:
                    await asyncio.sleep(0.02)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=10)
            watcher.cancel()
            return sink, inst

    path = tmp_path / "raw.ndjson"
    path.write_bytes(b"\n".join(bad) + b"\n")
    sink, inst = asyncio.run(main(path))
    stats = inst.sessions[0].stats
    # every connection replays the capture: snapshot, good checksum, bad checksum -> resubscribe
    assert stats.checksum_failures >= 1 and stats.reconnects["book_resync"] >= 1
    assert stats.book_resyncs >= 1 and stats.checksum_ok >= 2
    gaps = [e["record"] for e in sink.envelopes if e["kind"] == "gap"]
    assert "book_checksum_mismatch" in {g["reason"] for g in gaps}


# -- HTX: incremental MBP, snapshot asked for on the WebSocket ------------------------------------


def test_htx_mbp_fixture_syncs_from_the_requested_snapshot() -> None:
    records, report = _replay("htx", _lines("htx"))
    assert report.clean and not [r for r in records if "gap_start" in r]
    stats = report.books
    assert (stats.snapshots, stats.deltas, stats.stale, stats.sequence_gaps) == (2, 5, 1, 0)
    btc = [r for r in records if r["symbol"] == "BTC-USDT"]
    # the deltas cached before the reply are applied after it, in order
    assert [(r["type"], r["seq"]) for r in btc] == [
        ("snapshot", 100020142010),
        ("delta", 100020142011),
        ("delta", 100020142012),
        ("delta", 100020142013),
        ("delta", 100020142014),
    ]
    final = _final(report, "book_mbp")
    assert final["BTC-USDT"]["synced"] and final["ETH-USDT"]["synced"]
    assert _levels(final["BTC-USDT"]["bids"]) == _levels(
        [["618.37", "69"], ["500", "2"], ["223.18", "47.997"]]
    )
    assert _levels(final["BTC-USDT"]["asks"]) == _levels(
        [["618.5", "0.5"], ["618.52", "1.2"], ["620.1", "0.25"]]
    )
    assert final["ETH-USDT"]["asks"] == [["19.6", "7.25"], ["19.7", "0.0001"]]


def test_htx_mbp_request_message_and_a_sequence_gap() -> None:
    spec = load_spec("htx")
    rule = spec.channels["book_mbp"].sync
    assert (
        rule is not None
        and rule.request is not None
        and spec.channels["book_mbp"].endpoint == "feed"
    )
    assert rule.request("btcusdt", "BTC-USDT", 7) == {"req": "market.btcusdt.mbp.150", "id": "7"}
    assert spec.endpoints["feed"].urls[0] == "wss://api.huobi.pro/feed"
    lost = 100020142013
    lines = [  # one delta lost
        ln
        for ln in _lines("htx")
        if orjson.loads(orjson.loads(ln)["data"]).get("tick", {}).get("seqNum") != lost
    ]
    syncs = BookSyncs(spec)
    replayer = Replayer(spec)
    for number, raw in enumerate(lines, 1):
        for rec in replayer.capture_line(number, orjson.loads(raw)):
            if rec["channel"] == "book_mbp":
                syncs.feed("book_mbp", [rec])
    # the first delta asked for a snapshot; the delta after the lost one opened a gap and asked
    # again at once (it is kept for the reply)
    btc = [r for r in syncs.requests if r.symbol == "BTC-USDT"]
    assert [(r.source, r.retry) for r in btc] == [("ws_request", False), ("ws_request", False)]
    sync = syncs.get("book_mbp", "BTC-USDT")
    assert sync is not None and not sync.synced and len(sync.buffer) == 1
    assert syncs.stats.sequence_gaps == 1


def _mbp_capture(path: Path, *, symbols: tuple[str, ...], deltas: int, seed: int) -> None:
    """A synthetic HTX capture: per symbol a snapshot reply (the start of the truth), then
    random deltas chained by seqNum/prevSeqNum (gaps of 1 to 3 between seqNums)."""
    rng = random.Random(seed)
    books: dict[str, dict[str, dict[int, str]]] = {}
    seqs: dict[str, int] = {}
    frames: list[Any] = []
    for n, raw in enumerate(symbols):
        books[raw] = {
            "bids": {p: f"{rng.randint(1, 90)}.5" for p in range(900, 1000, 5)},
            "asks": {p: f"{rng.randint(1, 90)}.25" for p in range(1005, 1105, 5)},
        }
        seqs[raw] = 1000 * (n + 1)
        data = {k: [[str(p), s] for p, s in sorted(v.items())] for k, v in books[raw].items()}
        frames.append({"id": str(n), "rep": f"market.{raw}.mbp.150", "status": "ok"})
        frames[-1]["data"] = {"seqNum": seqs[raw], **data}
    for i in range(deltas):
        raw = symbols[i % len(symbols)]
        tick: dict[str, Any] = {"prevSeqNum": seqs[raw]}
        seqs[raw] += rng.randint(1, 3)
        tick["seqNum"] = seqs[raw]
        for side, low in (("bids", 900), ("asks", 1005)):
            price = low + 5 * rng.randint(0, 19)
            size = "0" if rng.random() < 0.3 else f"{rng.randint(1, 50)}.75"
            tick[side] = [[str(price), size]]
        frames.append({"ch": f"market.{raw}.mbp.150", "ts": 1795000000000 + i, "tick": tick})
    _gzip_capture(path, frames)


def _gzip_capture(path: Path, frames: list[Any]) -> None:
    """Write ``frames`` as an HTX capture: gzip binary frames on one connection."""
    lines = []
    for n, frame in enumerate(frames):
        text = orjson.dumps(frame).decode()
        data = base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()
        entry = {"recv_ts": 1795000000 + n / 1000, "kind": "ws", "conn": "ws.1", "data": text}
        lines.append(orjson.dumps(entry | {"encoding": "gzip", "data_b64": data}))
    path.write_bytes(b"\n".join(lines) + b"\n")


class RequestBookMock(LiveBookMock):
    """A live market that answers snapshot requests (``{"req": topic, "id": ...}``) with the
    true book now, as HTX does on the same connection (unlike the stock mock's
    ``[mock.request]``, which answers with captured replies: here they only set the truth)."""

    def __init__(self, spec: ExchangeSpec, *args: Any, **kwargs: Any) -> None:
        assert spec.mock is not None
        spec = dataclasses.replace(spec, mock=dataclasses.replace(spec.mock, request=None))
        super().__init__(spec, *args, **kwargs)
        self.requests: list[tuple[str, int]] = []

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        msg = self._decode_client(conn, message)
        if not (isinstance(msg, dict) and "req" in msg):
            await super()._on_message(conn, message)
            return
        raw = msg["req"].split(".")[1]
        truth = self.truth_at(raw, self.pos)
        self.requests.append((raw, self.pos))
        assert truth is not None
        bids, asks = truth.levels()
        data = {"seqNum": truth.seq, "bids": bids, "asks": asks}
        await self._send(conn, {"id": msg["id"], "rep": msg["req"], "status": "ok", "data": data})


def test_htx_mbp_live_gaps_are_resynced_by_requests(tmp_path: Path) -> None:
    capture = tmp_path / "raw.ndjson"
    _mbp_capture(capture, symbols=("btcusdt", "ethusdt"), deltas=400, seed=7)
    spec = load_spec("htx")

    async def main() -> tuple[MemorySink, Instance, RequestBookMock]:
        mock = RequestBookMock(
            spec, capture, gap_every=29, channel="book_mbp", hide_snapshots=True, pace=0.001
        )
        async with mock:
            sink, inst = await _run_live(mock, timeout=30)
        return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    [session] = inst.sessions
    stats = session.stats
    assert mock.finished and len(mock.dropped) >= 10
    assert stats.reconnects == {}, "a request resyncs without reconnecting"
    gaps = [e["record"] for e in sink.envelopes if e["kind"] == "gap"]
    assert {g["reason"] for g in gaps} == {"book_sequence_gap"}
    assert stats.book_gaps == len(gaps) == stats.book_resyncs >= 5
    # one request per symbol to start, one per gap (a too-old reply would add one)
    assert len(mock.requests) >= 2 + len(gaps)
    emitted: dict[str, list[Record]] = {}
    for env in sink.envelopes:
        if env["kind"] == "book":
            emitted.setdefault(env["record"]["symbol_raw"], []).append(env["record"])
    assert set(emitted) == {"btcusdt", "ethusdt"}
    for raw, records in emitted.items():
        assert records[0]["type"] == "snapshot"
        assert _verify(mock, raw, records, by_seq=True, window=None) == 0


def _mbp_records(spec: ExchangeSpec, texts: list[str]) -> list[Record]:
    replayer = Replayer(spec)
    entries = ({"recv_ts": 1795000000 + n, "kind": "ws", "data": t} for n, t in enumerate(texts))
    return [r for n, e in enumerate(entries, 1) for r in replayer.capture_line(n, e)]


def test_htx_mbp_fixture_replies_fit_every_stream_position() -> None:
    """Wherever the stock mock's stream is when a fresh client asks for a snapshot (after its
    first delta of the symbol), the captured reply it picks connects to the deltas the client
    buffered and those still to come (prev_seq): the book syncs with no gap, as in replay."""
    spec = load_spec("htx")
    mock = MockExchange(spec, FIXTURE_CAPTURES / "htx" / "raw.ndjson")
    frames = mock.capture.frames
    assert sorted(mock.capture.replies) == [
        b'"market.btcusdt.mbp.150"',
        b'"market.ethusdt.mbp.150"',
    ]
    assert not [f for f in frames if '"rep"' in f.text], "replies are not streamed"
    _, report = _replay("htx", _lines("htx"))
    final = _final(report, "book_mbp")
    for raw, symbol in (("btcusdt", "BTC-USDT"), ("ethusdt", "ETH-USDT")):
        first = min(i for i, f in enumerate(frames) if ("book_mbp", raw) in f.pairs)
        for position in range(first + 1, len(frames) + 1):
            reply = mock.reply_for(f"market.{raw}.mbp.150", position)
            assert reply is not None
            texts = [f.text for f in frames[:position]] + [reply.frame.text]
            texts += [f.text for f in frames[position:]]
            syncs = BookSyncs(spec)
            for rec in _mbp_records(spec, texts):
                if rec["symbol"] == symbol:
                    syncs.feed("book_mbp", [rec])
            sync = syncs.get("book_mbp", symbol)
            assert sync is not None and sync.synced, (raw, position)
            assert not syncs.gaps and syncs.stats.sequence_gaps == 0, (raw, position)
            book = sync.book.snapshot()
            assert _levels(book["bids"]) == _levels(final[symbol]["bids"]), (raw, position)
            assert _levels(book["asks"]) == _levels(final[symbol]["asks"]), (raw, position)


def _reply(frame: str | bytes) -> Any:
    return orjson.loads(gzip.decompress(frame if isinstance(frame, bytes) else frame.encode()))


def test_mock_answers_requests_with_the_reply_fitting_the_stream_position(tmp_path: Path) -> None:
    """``[mock.request]``: captured replies are not streamed; a request gets the latest one
    captured before the frames streamed so far (else the first), with the request's id; an
    unknown key gets the reject. Both are counted."""
    topic = "market.btcusdt.mbp.150"

    def rep(seq: int) -> dict[str, Any]:
        data = {"seqNum": seq, "bids": [[100, seq]], "asks": [[101, 1]]}
        return {"id": "captured", "rep": topic, "status": "ok", "data": data}

    def delta(seq: int) -> dict[str, Any]:
        tick = {"seqNum": seq, "prevSeqNum": seq - 1, "bids": [[99, 1]], "asks": []}
        return {"ch": topic, "ts": 1795000000000 + seq, "tick": tick}

    capture = tmp_path / "raw.ndjson"
    _gzip_capture(capture, [rep(10), delta(11), delta(12), rep(12), delta(13)])
    spec = load_spec("htx")

    async def main(mock: MockExchange) -> list[Any]:
        async with ws_connect(mock.ws_url + "feed", max_size=None) as ws:
            got = []
            for message in (
                {"req": topic, "id": "r1"},  # before any subscribe: the first reply
                {"req": "market.xrpusdt.mbp.150", "id": "r2"},  # none captured: the reject
            ):
                await ws.send(orjson.dumps(message).decode())
                got.append(_reply(await asyncio.wait_for(ws.recv(), 5)))
            await ws.send(orjson.dumps({"sub": topic, "id": "s1"}).decode())
            streamed = [_reply(await asyncio.wait_for(ws.recv(), 5)) for _ in range(4)]
            assert [m.get("subbed") or m["tick"]["seqNum"] for m in streamed] == [topic, 11, 12, 13]
            await ws.send(orjson.dumps({"req": topic, "id": "r3"}).decode())  # the latest reply
            got.append(_reply(await asyncio.wait_for(ws.recv(), 5)))
            return got

    async def run() -> tuple[MockExchange, list[Any]]:
        async with MockExchange(spec, capture) as mock:
            return mock, await asyncio.wait_for(main(mock), 20)

    mock, (first, unknown, latest) = asyncio.run(run())
    assert (first["id"], first["rep"], first["data"]["seqNum"]) == ("r1", topic, 10)
    assert (unknown["id"], unknown["status"]) == ("r2", "error")
    assert "market.xrpusdt.mbp.150" in unknown["err-msg"]
    assert (latest["id"], latest["data"]["seqNum"]) == ("r3", 12)
    stats = mock.stats
    assert (stats.requests_answered, stats.requests_unknown, stats.subscribes) == (2, 1, 1)
    assert stats.data_frames_sent == 3 and not stats.errors
    assert mock.capture.counts["reply"] == 2 and len(mock.capture.frames) == 3


def test_htx_mbp_live_against_the_stock_mock_equals_the_replay() -> None:
    """The collector asks the stock mock for each snapshot; its records equal the replay's and
    its books end in sync, with no gap."""
    spec = load_spec("htx")
    records, report = _replay("htx", _lines("htx"))
    expected = _final(report, "book_mbp")

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, FIXTURE_CAPTURES / "htx" / "raw.ndjson") as mock:
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=20, flush_interval=0.02, queue_batches=8)
            symbols = capture_symbols(mock, ["book_mbp"])
            inst = Instance("t", mock.client_spec(), symbols, ["book_mbp"])
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            async def watch() -> None:
                while sum(e["kind"] == "book" for e in sink.envelopes) < len(records):
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=10)
            watcher.cancel()
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    assert (mock.stats.requests_answered, mock.stats.requests_unknown) == (2, 0)
    assert not [e for e in sink.envelopes if e["kind"] == "gap"]
    live = [e["record"] for e in sink.envelopes if e["kind"] == "book"]
    assert _comparable(live) == _comparable(records)
    books = inst.sessions[0].books
    assert books is not None and books.syncs.stats.snapshots == 2
    for symbol, book in expected.items():
        mine = books.syncs.get("book_mbp", symbol)
        assert mine is not None and mine.synced
        assert _levels(mine.book.snapshot()["bids"]) == _levels(book["bids"])
        assert _levels(mine.book.snapshot()["asks"]) == _levels(book["asks"])


def _comparable(records: list[Record]) -> list[bytes]:
    return sorted(
        orjson.dumps({k: v for k, v in r.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS)
        for r in records
    )


def test_mdgen_run_htx_mock_syncs_book_mbp_on_request(tmp_path: Path) -> None:
    """``mdgen run htx --mock --channels book_mbp`` on the fixture: what replay gives, no gap."""
    captures = tmp_path / "captures"
    (captures / "htx").mkdir(parents=True)
    (captures / "htx" / "raw.ndjson").write_bytes(b"\n".join(_lines("htx")) + b"\n")
    data = tmp_path / "data"
    argv = ["run", "htx", "--mock", "--captures", str(captures), "--channels", "book_mbp"]
    argv += ["--duration", "3", "--data-dir", str(data), "--quiet"]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mdgen"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    envelopes = []
    for path in sorted(data.rglob("*.ndjson.gz")):
        with gzip.open(path) as handle:
            envelopes.extend(orjson.loads(line) for line in handle if line.strip())
    assert not [e for e in envelopes if e["kind"] == "gap"]
    records, _ = _replay("htx", _lines("htx"))
    assert _comparable([e["record"] for e in envelopes if e["kind"] == "book"]) == _comparable(
        records
    )


# -- bitFlyer: diffs on top of the snapshot channel's records -------------------------------------


def test_subscribing_bitflyer_book_subscribes_its_snapshot_channel_on_one_connection() -> None:
    spec = load_spec("bitflyer")
    plans = plan_connections(spec, "i", ["BTC-JPY", "ETH-JPY"], ["book"])
    [plan] = plans
    assert [(s.channel, s.raw) for s in plan.subscriptions] == [
        ("book_snapshot", "BTC_JPY"),
        ("book", "BTC_JPY"),
        ("book_snapshot", "ETH_JPY"),
        ("book", "ETH_JPY"),
    ]
    # asked for too, it is subscribed once; a connection limit never splits the pair
    small = dataclasses.replace(spec.endpoints["public"], max_streams=3)
    spec3 = dataclasses.replace(spec, endpoints={"public": small})
    plans = plan_connections(
        spec3, "i", ["BTC-JPY", "ETH-JPY"], ["book_snapshot", "book", "trades"]
    )
    assert [[(s.channel, s.raw) for s in p.subscriptions] for p in plans] == [
        [("book_snapshot", "BTC_JPY"), ("book", "BTC_JPY")],
        [("book_snapshot", "ETH_JPY"), ("book", "ETH_JPY"), ("trades", "BTC_JPY")],
        [("trades", "ETH_JPY")],
    ]


def test_bitflyer_diffs_apply_on_the_latest_snapshot() -> None:
    records, report = _replay("bitflyer", _lines("bitflyer"))
    assert report.clean and not [r for r in records if "gap_start" in r]
    book = [r for r in records if r["channel"] == "book" and r["symbol"] == "BTC-JPY"]
    # each book_snapshot record is also the book channel's snapshot; the diffs follow it
    assert [r["type"] for r in book] == ["snapshot", "delta", "delta", "snapshot", "delta"]
    snaps = [r for r in records if r["channel"] == "book_snapshot" and r["symbol"] == "BTC-JPY"]
    assert [(r["bids"], r["asks"]) for r in snaps] == [
        (r["bids"], r["asks"]) for r in book if r["type"] == "snapshot"
    ]
    assert book[2]["bids"] == [["29000", "0.7"]]  # the itayose diff at price 0 is no level
    final = _final(report, "book")
    assert final["BTC-JPY"]["synced"] and final["ETH-JPY"]["synced"]
    assert final["BTC-JPY"]["bids"] == [["25000", "3"]]  # 29000 went with the new snapshot
    assert final["BTC-JPY"]["asks"] == [["36600", "0.05"], ["36640", "5.21"], ["36700", "1.2"]]
    # a diff before any snapshot is discarded
    syncs = BookSyncs(load_spec("bitflyer"))
    assert syncs.feed("book", [book[1]]) == [] and syncs.stats.discarded == 1
    # collecting book_snapshot alone writes no book records
    alone = BookSyncs(load_spec("bitflyer"), subscribed=frozenset({"book_snapshot"}))
    assert (
        alone.feed("book_snapshot", snaps[:1]) == snaps[:1] and alone.get("book", "BTC-JPY") is None
    )


def test_bitflyer_book_live_against_the_mock_equals_the_replay() -> None:
    spec = load_spec("bitflyer")
    path = FIXTURE_CAPTURES / "bitflyer" / "raw.ndjson"
    _, report = _replay("bitflyer", _lines("bitflyer"))
    expected = _final(report, "book")

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, path, MockOptions(speed=2.0)) as mock:
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=20, flush_interval=0.02, queue_batches=8)
            symbols = capture_symbols(mock, ["book"])
            inst = Instance("t", mock.client_spec(), symbols, ["book"])
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            def done() -> bool:
                books = inst.sessions[0].books if inst.sessions else None
                return books is not None and all(
                    (b := books.syncs.get("book", s)) is not None
                    and _levels(b.book.snapshot()["asks"]) == _levels(expected[s]["asks"])
                    and _levels(b.book.snapshot()["bids"]) == _levels(expected[s]["bids"])
                    for s in expected
                )

            async def watch() -> None:
                while not done():
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.1)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=10)
            watcher.cancel()
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    books = inst.sessions[0].books
    assert books is not None and all(s.synced for s in books.syncs)
    assert mock.stats.subscribes == 4  # book and book_snapshot, two symbols
    # book_snapshot was subscribed only to feed book: its records are not written, nor gaps
    assert inst.sessions[0].plan.feeds_only == {"book_snapshot"}
    channels = {e["record"]["channel"] for e in sink.envelopes}
    assert channels == {"book"}
    for symbol, book in expected.items():
        mine = books.syncs.get("book", symbol)
        assert mine is not None and mine.synced
        assert _levels(mine.book.snapshot()["bids"]) == _levels(book["bids"])


# -- the compiler's checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'sequence = "prev_seq", depth = 150',
            'sequence = "prev_seq", depth = 150, snapshot_channel = "book"',
            "'snapshot_channel' goes with snapshot 'channel'",
        ),
        (
            'snapshot = "ws_request", request = \'{"req": "market." + raw + ".mbp.150", '
            '"id": str(req_id)}\'',
            'snapshot = "ws_request"',
            "'request' goes with snapshot 'ws_request'",
        ),
    ],
)
def test_sync_request_and_snapshot_channel_are_checked(old: str, new: str, message: str) -> None:
    path = REPO / "descriptors" / "htx.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    _, module, diagnostics = compile_descriptor("htx.toml", text.replace(old, new), path.parent)
    assert module is None
    assert any(d.code == "E308" and message in d.message for d in diagnostics), diagnostics


def test_snapshot_channel_must_be_a_book_channel_on_the_same_endpoint() -> None:
    path = REPO / "descriptors" / "bitflyer.toml"
    text = path.read_text(encoding="utf-8")
    old = 'snapshot_channel = "book_snapshot"'
    for wrong, code in (("ticker", "E308"), ("nope", "E304"), ("book", "E308")):
        bad = text.replace(old, f'snapshot_channel = "{wrong}"')
        _, module, diagnostics = compile_descriptor("bitflyer.toml", bad, path.parent)
        assert module is None and any(d.code == code for d in diagnostics), (wrong, diagnostics)
