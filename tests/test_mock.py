"""The mock exchange against the generated modules' own protocol rules and real captures."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from runtime.frames import Compression, decode
from runtime.mock import MockExchange, MockOptions, run_mock
from runtime.mock.capture import Pair
from runtime.registry import load_spec
from runtime.spec import Context, ExchangeSpec, Record
from tests.crosscheck import require_captures

EXCHANGES = ["binance", "coinbase", "kraken", "okx"]
Frame = str | bytes


# -- helpers ---------------------------------------------------------------------------------------
def connect(url: str) -> ws_connect:
    """A client that reads frames off the socket even while the test is not consuming them, so
    its close handshake never waits behind a full receive queue."""
    return ws_connect(url, max_size=None, max_queue=None)


def capture(exchange: str) -> Path:
    return require_captures(exchange) / "raw.ndjson"


def run(
    exchange: str,
    body: Callable[[ExchangeSpec, MockExchange], Awaitable[None]],
    options: MockOptions | None = None,
    *,
    spec: ExchangeSpec | None = None,
    path: Path | None | bool = True,
) -> MockExchange:
    """Start a mock of ``exchange``, run ``body`` against it (bounded), stop it."""
    spec = spec or load_spec(exchange)
    cap = capture(exchange) if path is True else (path or None)
    mock = MockExchange(spec, cap, options or MockOptions())

    async def main() -> None:
        async with mock:
            await asyncio.wait_for(body(spec, mock), 20)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"tasks left running after stop(): {leftover}"

    asyncio.run(main())
    assert not mock.stats.errors, mock.stats.errors
    return mock


def topic(spec: ExchangeSpec, mock: MockExchange, pair: Pair) -> Any:
    channel, raw = pair
    make = spec.channels[channel].topic
    assert make is not None, f"channel {channel!r} has no topic"
    return make(raw, mock.capture.symbols[raw] or raw)


def subscribe_messages(spec: ExchangeSpec, mock: MockExchange, pairs: list[Pair]) -> list[Any]:
    """The subscribe messages a generated client sends for ``pairs`` (grouped and chunked)."""
    sub = spec.subscribe
    assert sub.message is not None
    groups: dict[bytes, tuple[Any, list[Pair]]] = {}
    for pair in pairs:
        channel = spec.channels[pair[0]]
        key = channel.key() if channel.key is not None else None
        if sub.group == "key":
            group = orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
        else:
            group, key = (pair[1].encode() if sub.group == "symbol" else b""), None
        groups.setdefault(group, (key, []))[1].append(pair)
    out: list[Any] = []
    for key, members in groups.values():
        for start in range(0, len(members), sub.chunk):
            chunk = members[start : start + sub.chunk]
            topics = [topic(spec, mock, p) for p in chunk]
            out.append(sub.message(topics, key, len(out) + 1, [raw for _, raw in chunk]))
    return out


async def send(ws: ClientConnection, payload: Any) -> None:
    await ws.send(payload if isinstance(payload, str) else orjson.dumps(payload).decode())


async def drain(
    ws: ClientConnection, count: int | None = None, idle: float = 0.3, limit: float = 10.0
) -> list[Frame]:
    """Frames until ``count`` arrived, nothing came for ``idle`` s, or ``limit`` s passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    out: list[Frame] = []
    while count is None or len(out) < count:
        timeout = min(idle, deadline - loop.time())
        if timeout <= 0:
            break
        try:
            out.append(await asyncio.wait_for(ws.recv(), timeout))
        except TimeoutError:
            break
    return out


def classify(
    spec: ExchangeSpec, frame: Frame, compression: Compression = "none"
) -> tuple[str, Any]:
    msg = decode(frame, compression)
    code = spec.route(msg, Context())
    return (spec.routes[code].kind if code >= 0 else "unrecognized"), msg


def records(spec: ExchangeSpec, msg: Any) -> list[Record]:
    route = spec.routes[spec.route(msg, Context())]
    assert route.kind == "data" and route.parse is not None
    return route.parse(msg, 0, Context())


def ack_ok(spec: ExchangeSpec, msg: Any) -> bool:
    return spec.ack is None or spec.ack.ok is None or spec.ack.ok(msg)


def expected_acks(spec: ExchangeSpec, messages: list[Any]) -> int:
    assert spec.mock is not None
    if spec.mock.ack_per == "message":
        return len(messages)
    return sum(len(spec.mock.topics(m)) for m in messages)


def busiest(mock: MockExchange) -> Pair:
    counts: dict[Pair, int] = {}
    for f in mock.capture.frames:
        for p in f.pairs:
            counts[p] = counts.get(p, 0) + 1
    return max(sorted(counts), key=lambda p: counts[p])


# -- protocol against each exchange's capture ---------------------------------------------------
@pytest.mark.parametrize("exchange", EXCHANGES)
def test_subscribe_everything_acks_and_streams_the_capture(exchange: str) -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        pairs = sorted(mock.capture.pairs())
        messages = subscribe_messages(spec, mock, pairs)
        expected = mock.true_frames(pairs, meta=True)
        n_acks = expected_acks(spec, messages)
        async with connect(mock.ws_url) as ws:
            before = await drain(ws, idle=0.2)  # nothing but the greeting before a subscribe
            assert [classify(spec, f)[0] for f in before] == ["info"] * len(mock.capture.greeting)
            for m in messages:
                await send(ws, m)
            got = await drain(ws, count=n_acks + len(expected), idle=3)
            assert await drain(ws, idle=0.2) == []
        kinds = [classify(spec, f) for f in got]
        acks = [msg for kind, msg in kinds if kind == "ack"]
        assert len(acks) == n_acks and all(ack_ok(spec, a) for a in acks)
        streamed = [f for f, (kind, _) in zip(got, kinds, strict=True) if kind != "ack"]
        assert streamed == expected
        wanted = set(pairs)
        n_data = 0
        for kind, msg in kinds:
            assert kind in ("ack", "data", "heartbeat", "info"), msg
            if kind == "data":
                n_data += 1
                recs = records(spec, msg)
                assert recs and {(r["channel"], r["symbol_raw"]) for r in recs} <= wanted
        assert n_data == mock.stats.data_frames_sent == len(mock.true_frames(pairs)) > 0
        assert mock.stats.acks_sent == n_acks and mock.stats.subscribes == len(messages)

    run(exchange, body)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_one_symbol_only_yields_that_symbol(exchange: str) -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        pair = busiest(mock)
        (message,) = subscribe_messages(spec, mock, [pair])
        async with connect(mock.ws_url) as ws:
            await send(ws, message)
            got = await drain(ws, idle=0.5)
        data = [f for f in got if classify(spec, f)[0] == "data"]
        assert data == mock.true_frames([pair]) and len(data) > 1
        for frame in data:
            recs = records(spec, decode(frame))
            assert {(r["channel"], r["symbol_raw"]) for r in recs} == {pair}

    run(exchange, body)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_reject_subscribe_answers_with_errors_and_streams_nothing(exchange: str) -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        messages = subscribe_messages(spec, mock, sorted(mock.capture.pairs()))
        async with connect(mock.ws_url) as ws:
            for m in messages:
                await send(ws, m)
            got = await drain(ws, idle=0.3)
        replies = [classify(spec, f) for f in got][len(mock.capture.greeting) :]
        assert len(replies) == expected_acks(spec, messages) == mock.stats.rejects_sent
        for kind, msg in replies:
            assert kind == "error" or (kind == "ack" and not ack_ok(spec, msg)), msg
        assert mock.stats.acks_sent == mock.stats.data_frames_sent == 0

    run(exchange, body, MockOptions(reject_subscribe=True))


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_client_ping_is_answered_with_a_pong(exchange: str) -> None:
    spec = load_spec(exchange)
    if spec.keepalive.client_ping is None or spec.mock is None or spec.mock.client_ping is None:
        pytest.skip(f"{exchange} clients do not send application-level pings")

    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        assert spec.keepalive.client_ping is not None
        async with connect(mock.ws_url) as ws:
            await drain(ws, idle=0.1)  # greeting
            await send(ws, spec.keepalive.client_ping(7))
            (answer,) = await drain(ws, count=1, idle=2)
        assert classify(spec, answer)[0] == "pong"
        if exchange == "okx":
            assert answer == "pong"
        assert mock.stats.client_pings == 1

    run(exchange, body, path=False)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_rest_serves_the_captured_replies(exchange: str) -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        urls: dict[str, bytes] = {}
        for reply in mock.capture.rest:
            query = "&".join(f"{k}={v}" for k, v in reply.query)
            urls.setdefault(reply.path + (f"?{query}" if query else ""), reply.body)
        async with httpx.AsyncClient(base_url=mock.http_url) as client:
            for target, body in urls.items():
                resp = await client.get(target)
                assert resp.status_code == 200 and resp.content == body, target
                assert resp.headers["content-type"] == "application/json"
            missing = await client.get("/no/such/path")
            assert missing.status_code == 404 and missing.json()["path"] == "/no/such/path"
            assert (await client.post(next(iter(urls)))).status_code == 405
        assert len(mock.stats.rest_requests) == len(urls) + 2

    run(exchange, body)


# -- query matching, faults, keepalive -----------------------------------------------------------
def test_rest_picks_the_best_matching_query() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        captured = {dict(r.query).get("symbol"): r.body for r in mock.capture.rest}
        async with httpx.AsyncClient(base_url=mock.http_url) as client:
            # another limit than captured: the symbol still decides
            resp = await client.get("/api/v3/depth", params={"symbol": "BLZETH", "limit": 5})
            assert resp.content == captured["BLZETH"]
            resp = await client.get("/api/v3/depth", params={"symbol": "LRCBTC"})
            assert resp.content == captured["LRCBTC"]
            assert (await client.get("/api/v3/exchangeInfo")).content == captured[None]

    run("binance", body)


def test_refuse_connections_refuses_exactly_k_attempts() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        for _ in range(2):
            with pytest.raises(InvalidStatus) as info:
                async with connect(mock.ws_url):
                    pass
            assert info.value.response.status_code == 503
        async with connect(mock.ws_url + "stream?x=1") as ws:
            await send(ws, subscribe_messages(spec, mock, [busiest(mock)])[0])
            assert classify(spec, (await drain(ws, count=1, idle=2))[0])[0] == "ack"
        assert mock.stats.connections_refused == 2 and mock.stats.connections_accepted == 1
        assert mock.stats.paths == ["/", "/", "/stream?x=1"]

    run("binance", body, MockOptions(refuse_connections=2))


def test_disconnect_every_closes_each_connection_after_n_data_frames() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        message = subscribe_messages(spec, mock, sorted(mock.capture.pairs()))[0]
        for _ in range(2):
            async with connect(mock.ws_url) as ws:
                await send(ws, message)
                got: list[Frame] = []
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        got.append(await asyncio.wait_for(ws.recv(), 2))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
            assert sum(classify(spec, f)[0] == "data" for f in got) == 5
        assert mock.stats.disconnects == 2 and mock.stats.data_frames_sent == 10

    run("okx", body, MockOptions(disconnect_every=5))


def test_gap_every_drops_every_nth_data_frame() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        pairs = sorted(mock.capture.pairs())
        expected = mock.true_frames(pairs)
        async with connect(mock.ws_url) as ws:
            for m in subscribe_messages(spec, mock, pairs):
                await send(ws, m)
            got = await drain(ws, idle=0.5)
        data = [f for f in got if classify(spec, f)[0] == "data"]
        assert data == [f for i, f in enumerate(expected, 1) if i % 4]
        assert mock.stats.frames_dropped == len(expected) // 4 > 0

    run("binance", body, MockOptions(gap_every=4))


@pytest.mark.parametrize("rate", [1.0, 0.5])
def test_binary_rate_sends_text_frames_as_binary(rate: float) -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        async with connect(mock.ws_url) as ws:
            for m in subscribe_messages(spec, mock, sorted(mock.capture.pairs())):
                await send(ws, m)
            got = await drain(ws, idle=0.5)
        binary = sum(isinstance(f, bytes) for f in got)
        assert abs(binary - rate * len(got)) <= 1 and len(got) > 100
        assert all(classify(spec, f)[0] in ("ack", "data") for f in got)

    run("okx", body, MockOptions(binary_rate=rate))


def test_compressed_endpoint_sends_compressed_binary_frames() -> None:
    spec = load_spec("binance")
    endpoints = {n: dataclasses.replace(e, compression="gzip") for n, e in spec.endpoints.items()}
    spec = dataclasses.replace(spec, endpoints=endpoints)

    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, [busiest(mock)])[0])
            got = await drain(ws, idle=0.5)
        assert got and all(isinstance(f, bytes) for f in got)
        kinds = [classify(spec, f, "gzip")[0] for f in got]
        assert kinds[0] == "ack" and set(kinds[1:]) == {"data"}

    run("binance", body, spec=spec)


def test_silence_pauses_once_after_ten_data_frames() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        loop = asyncio.get_running_loop()
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, [busiest(mock)])[0])
            await drain(ws, count=11, idle=2)  # ACK + 10 data frames
            start = loop.time()
            await drain(ws, count=1, idle=2)
            waited = loop.time() - start
            rest = await drain(ws, idle=0.3)
        assert waited >= 0.35 and len(rest) > 10

    run("okx", body, MockOptions(silence_ms=400))


def test_speed_replays_at_the_captured_pace() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        loop = asyncio.get_running_loop()
        pairs = sorted(mock.capture.pairs())
        frames = mock.capture.frames
        span = (frames[-1].ts - frames[0].ts) / 100
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, pairs)[0])
            await drain(ws, count=2, idle=2)  # ACK + first frame
            start = loop.time()
            got = await drain(ws, count=len(frames) - 1, idle=2)
            elapsed = loop.time() - start
        assert len(got) == len(frames) - 1
        assert span * 0.9 <= elapsed <= span + 0.5

    run("binance", body, MockOptions(speed=100))


def test_loop_replays_the_capture_again() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        pair = busiest(mock)
        expected = mock.true_frames([pair])
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, [pair])[0])
            got = await drain(ws, count=1 + 2 * len(expected) + 3, idle=2)
        assert got[1:] == expected + expected + expected[:3]

    run("okx", body, MockOptions(loop=True))


def test_later_subscribes_get_the_held_frames_then_join_the_running_stream() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        trades, ticker = ("trades", "BTC-USDT"), ("ticker", "BTC-USDT")
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, [trades])[0])
            first = await drain(ws, count=11, idle=2)  # ACK + 10 trades, then 0.3 s of silence
            await send(ws, subscribe_messages(spec, mock, [ticker])[0])
            later = await drain(ws, idle=0.5)
        assert classify(spec, first[0])[0] == classify(spec, later[0])[0] == "ack"
        # the ticker frames held back so far come first, then the stream resumes at the 11th
        # trade frame, now including the ticker frames
        frames = [f for f in mock.capture.frames if f.pairs & {trades, ticker}]
        trade_frames = [f for f in frames if trades in f.pairs]
        resume = frames.index(trade_frames[10])
        held = [f.text for f in frames[:resume] if trades not in f.pairs]
        assert first[1:] == [f.text for f in trade_frames[:10]]
        assert held and later[1:] == held + [f.text for f in frames[resume:]]
        assert any(ticker in f.pairs for f in frames[resume:])

    run("okx", body, MockOptions(silence_ms=300))


def test_a_subscribe_after_the_capture_ended_gets_its_held_frames() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        trades, ticker = ("trades", "BTC-USDT"), ("ticker", "BTC-USDT")
        async with connect(mock.ws_url) as ws:
            await send(ws, subscribe_messages(spec, mock, [trades])[0])
            first = await drain(ws, idle=0.3)
            await send(ws, subscribe_messages(spec, mock, [ticker])[0])
            later = await drain(ws, idle=0.3)
        assert first[1:] == mock.true_frames([trades])
        assert classify(spec, later[0])[0] == "ack"
        assert later[1:] == mock.true_frames([ticker]) and len(later) > 2
        assert mock.stats.data_frames_sent == len(first) + len(later) - 2

    run("okx", body)


def test_unroutable_frames_reach_subscribers_and_unknown_topics_are_acked(
    tmp_path: Path,
) -> None:
    def line(ts: float, data: Any) -> bytes:
        entry = {"recv_ts": ts, "kind": "ws", "conn": "ws.1", "data": orjson.dumps(data).decode()}
        return orjson.dumps(entry)

    trade = {"instId": "BTC-USDT", "tradeId": "1", "px": "1", "sz": "1", "side": "buy", "ts": "1"}
    frames = [
        {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [trade]},
        {"arg": {"channel": "trades", "instId": "ETH-USDT"}, "data": [trade]},
        {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [{"px": "1"}]},  # malformed
        {"something": "unknown"},
    ]
    path = tmp_path / "raw.ndjson"
    path.write_bytes(b"\n".join(line(1.0 + i, f) for i, f in enumerate(frames)) + b"\n")

    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        assert mock.capture.counts["unroutable"] == 2
        topics = [
            {"channel": "trades", "instId": "BTC-USDT"},
            {"channel": "trades", "instId": "DOGE-USDT"},  # not in the capture
        ]
        async with connect(mock.ws_url) as ws:
            await send(ws, {"op": "subscribe", "args": topics})
            got = await drain(ws, idle=0.3)
        assert [classify(spec, f)[0] for f in got[:2]] == ["ack", "ack"]
        assert [orjson.loads(f) for f in got[2:]] == [frames[0], frames[2], frames[3]]

    run("okx", body, path=path)


def test_server_ping_needs_an_answer_within_pong_timeout() -> None:
    spec = load_spec("okx")
    assert spec.mock is not None
    mock_spec = dataclasses.replace(spec.mock, ping=lambda n: {"ping": n}, pong_timeout=0.3)
    spec = dataclasses.replace(spec, mock=mock_spec)

    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        async with connect(mock.ws_url) as ws:  # answers every ping
            for _ in range(3):
                ping = orjson.loads(await asyncio.wait_for(ws.recv(), 2))
                await send(ws, {"pong": ping["ping"]})
            await send(ws, "ping")  # a client ping is not a pong
            assert await asyncio.wait_for(ws.recv(), 2) == "pong"
        assert mock.stats.pongs_received == 3 and mock.stats.pong_timeouts == 0
        async with connect(mock.ws_url) as ws:  # never answers
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 2)) == {"ping": 1}
            with pytest.raises(ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 2)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert mock.stats.pong_timeouts == 1 and mock.stats.disconnects == 1

    run("okx", body, MockOptions(ping_interval=0.1), spec=spec, path=False)


def test_client_spec_points_at_the_mock_and_paths_are_recorded() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        local = mock.client_spec()
        (url,) = local.endpoints["public"].urls
        assert url == mock.ws_url.rstrip("/") + "/ws/v5/public"
        assert local.rest is not None and local.rest.base_urls == (mock.http_url,)
        async with connect(url) as ws:
            await send(ws, subscribe_messages(spec, mock, [busiest(mock)])[0])
            assert classify(spec, (await drain(ws, count=1, idle=2))[0])[0] == "ack"
        assert mock.stats.paths == ["/ws/v5/public"]

    run("okx", body)


def test_stop_closes_streaming_connections_cleanly() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        ws = await connect(mock.ws_url)
        await send(ws, subscribe_messages(spec, mock, sorted(mock.capture.pairs()))[0])
        await drain(ws, count=50, idle=2)
        await mock.stop()
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 2)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
        await ws.close()

    run("okx", body, MockOptions(loop=True))


def test_run_mock_prints_its_urls_and_serves(capsys: pytest.CaptureFixture[str]) -> None:
    path = capture("okx")

    async def main() -> None:
        task = asyncio.create_task(run_mock("okx", path, 0, MockOptions()))
        for _ in range(100):
            await asyncio.sleep(0.02)
            out = capsys.readouterr().out
            if out:
                break
        match = re.search(r"ws (ws://\S+)\s+rest (http://\S+)", out)
        assert match, out
        async with connect(match[1]) as ws:
            await send(
                ws, {"op": "subscribe", "args": [{"channel": "trades", "instId": "BTC-USDT"}]}
            )
            assert len(await drain(ws, idle=0.3)) > 10
        async with httpx.AsyncClient() as client:
            resp = await client.get(match[2] + "/api/v5/public/instruments?instType=SPOT")
            assert resp.status_code == 200
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_malformed_subscribe_is_rejected_and_the_connection_stays_up() -> None:
    async def body(spec: ExchangeSpec, mock: MockExchange) -> None:
        async with connect(mock.ws_url) as ws:
            await send(ws, {"method": "SUBSCRIBE", "id": 3})  # no params
            (reply,) = await drain(ws, count=1, idle=2)
            assert classify(spec, reply) == ("error", orjson.loads(reply))
            assert orjson.loads(reply)["id"] == 3
            await send(ws, subscribe_messages(spec, mock, [busiest(mock)])[0])
            assert classify(spec, (await drain(ws, count=1, idle=2))[0])[0] == "ack"
        assert mock.stats.rejects_sent == 1 and mock.stats.acks_sent == 1

    run("binance", body)


def test_a_spec_without_mock_rules_is_refused() -> None:
    spec = dataclasses.replace(load_spec("okx"), mock=None)
    with pytest.raises(ValueError, match="no \\[mock\\] section"):
        MockExchange(spec, None)
