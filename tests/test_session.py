"""The runtime against the local mock exchange: end-to-end records, reconnects, failover,
silence, ACK timeouts and rejections, back-pressure. Loopback only, bounded in time."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from runtime.booksync import BookOptions
from runtime.captures import find_capture
from runtime.collector import Collector, Instance
from runtime.envelope import Envelope
from runtime.mock import MockExchange, MockOptions
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.replay import Replayer
from runtime.run import capture_symbols
from runtime.session import Backoff, Session
from runtime.sinks import MemorySink
from runtime.spec import ExchangeSpec
from runtime.subscriptions import plan_connections
from runtime.transport import make_transport
from tests.crosscheck import require_captures

FAST = Backoff(initial=0.01, cap=0.05, stable_after=60)
EXCHANGES = ["binance", "coinbase", "kraken", "okx"]


def _ws_records(spec: ExchangeSpec, capture: Path) -> list[dict[str, Any]]:
    """What `mdgen replay` gives for the capture: books kept in sync, REST snapshots taken from
    the capture (the mock serves the same replies to the live session)."""
    replayer = Replayer(spec, books=BookOptions())
    out = []
    for n, line in enumerate(capture.open("rb"), 1):
        out.extend(replayer.capture_line(n, orjson.loads(line)))
    return out


def _comparable(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(
        orjson.dumps({k: v for k, v in r.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS)
        for r in records
    )


async def _collect(
    mock: MockExchange,
    channels: list[str],
    *,
    until: Callable[[MemorySink], bool],
    timeout: float = 10.0,
    transport: str = "websockets",
    spec: ExchangeSpec | None = None,
    pipeline: Pipeline | None = None,
) -> tuple[MemorySink, Instance]:
    spec = spec or mock.client_spec()
    sink = MemorySink()
    pipeline = pipeline or Pipeline(sink, batch_size=100, flush_interval=0.05, queue_batches=8)
    symbols = capture_symbols(mock, channels) if mock.capture.frames else ["BTC-USDT"]
    inst = Instance("test", spec, symbols, channels)
    collector = Collector([inst], make_transport(transport), pipeline, backoff=FAST)  # type: ignore[arg-type]

    async def watch() -> None:
        while not until(pipeline.sink):  # type: ignore[arg-type]
            await asyncio.sleep(0.02)
        collector.request_stop()

    watcher = asyncio.create_task(watch())
    await collector.run(duration=timeout)
    watcher.cancel()
    return pipeline.sink, inst  # type: ignore[return-value]


def _data(envs: list[Envelope]) -> list[dict[str, Any]]:
    return [e["record"] for e in envs if e["kind"] not in ("gap", "dead_letter")]


@pytest.mark.parametrize("transport", ["websockets", "picows"])
@pytest.mark.parametrize("exchange", EXCHANGES)
def test_run_against_mock_gives_the_replay_records(exchange: str, transport: str) -> None:
    capture = require_captures(exchange) / "raw.ndjson"
    spec = load_spec(exchange)
    expected = _ws_records(spec, capture)

    async def main() -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, capture) as mock:
            channels = sorted({c for c, _ in mock.capture.pairs()})
            return await _collect(
                mock,
                channels,
                until=lambda s: len(_data(s.envelopes)) >= len(expected),
                transport=transport,
            )

    sink, inst = asyncio.run(main())
    assert _comparable(_data(sink.envelopes)) == _comparable(expected)
    assert inst.sessions[0].stats.unrecognized == 0
    assert inst.sessions[0].stats.malformed == 0
    assert {e["instance"] for e in sink.envelopes} == {"test"}


# The venues of issue 7 (exchange breadth); bitfinex replays its documentation-example capture
# (tests/fixtures/captures), htx the capture recorded as "huobi".
BREADTH = ["bitfinex", "bitstamp", "deribit", "gateio", "htx"]


@pytest.mark.parametrize("exchange", BREADTH)
def test_breadth_venues_against_their_mock_give_the_replay_records(exchange: str) -> None:
    spec = load_spec(exchange)
    if exchange != "bitfinex":
        require_captures(exchange)
    capture = find_capture(exchange, aliases=spec.aliases)
    assert capture is not None
    # Books synced from REST snapshots differ from a plain replay (snapshots added, stale
    # updates dropped): for those only check that records flow.
    rest_synced = {
        name for name, ch in spec.channels.items() if ch.sync and ch.sync.snapshot == "rest"
    }
    expected = [r for r in _ws_records(spec, capture) if r["channel"] not in rest_synced]

    def plain(envs: list[Envelope]) -> list[dict[str, Any]]:
        return [r for r in _data(envs) if r["channel"] not in rest_synced]

    async def main() -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, capture) as mock:
            channels = sorted({c for c, _ in mock.capture.pairs()})
            return await _collect(
                mock,
                channels,
                until=lambda s: len(plain(s.envelopes)) >= len(expected)
                and all(any(r["channel"] == c for r in _data(s.envelopes)) for c in rest_synced),
            )

    sink, inst = asyncio.run(main())
    assert _comparable(plain(sink.envelopes)) == _comparable(expected)
    for channel in rest_synced:
        assert any(r["channel"] == channel for r in _data(sink.envelopes)), channel
    for env in sink.envelopes:  # ``also`` channels: each record travels with its own kind
        if env["kind"] not in ("gap", "dead_letter"):
            assert env["kind"] == spec.channels[env["record"]["channel"]].kind
    stats = inst.sessions[0].stats
    assert stats.unrecognized == 0 and stats.malformed == 0
    assert stats.records > 0


def test_reconnects_resubscribes_and_records_the_gap() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, capture, MockOptions(disconnect_every=40)) as mock:
            sink, inst = await _collect(
                mock,
                ["trades", "book", "ticker"],
                until=lambda s: sum(e["kind"] == "gap" for e in s.envelopes) >= 2 * 9,
            )
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    stats = inst.sessions[0].stats
    assert stats.connects >= 3 and stats.reconnects["closed"] >= 2
    assert mock.stats.subscribes >= 3  # resubscribed after each reconnect
    gaps = [e["record"] for e in sink.envelopes if e["kind"] == "gap"]
    assert all(g["gap_end"] > g["gap_start"] and g["reason"] == "closed" for g in gaps)
    # one gap record per subscribed channel and symbol, per disconnect window
    assert len({(g["channel"], g["symbol"]) for g in gaps}) == 9


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(initial=0.5, cap=30, multiplier=2)
    assert [b.delay(n, lambda: 1.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert b.delay(3, lambda: 0.0) == 0.0
    assert b.delay(3, lambda: 0.25) == 1.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_failover_to_the_next_url_when_the_first_refuses() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> tuple[Session, MockExchange]:
        async with MockExchange(spec, capture, MockOptions(refuse_connections=2)) as mock:
            dead = f"ws://127.0.0.1:{_closed_port()}/ws"
            client = mock.client_spec()
            plan = plan_connections(client, "t", ["BTC-USDT"], ["trades"])[0]
            plan = dataclasses.replace(plan, urls=(dead, mock.ws_url))
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=10, flush_interval=0.05, queue_batches=4)
            await pipeline.start()
            session = Session(
                client, "t", plan, make_transport("websockets"), pipeline, backoff=FAST
            )
            stop = asyncio.Event()
            task = asyncio.create_task(session.run(stop))
            for _ in range(200):
                await asyncio.sleep(0.02)
                if session.state == "streaming":
                    break
            stop.set()
            await task
            await pipeline.close()
            return session, mock

    session, mock = asyncio.run(main())
    # dead, refused, dead, refused, dead -> then the mock accepts
    assert session.stats.connect_failures >= 4
    assert mock.stats.connections_refused == 2
    assert session.stats.connects == 1 and session.url is not None
    assert session.url.startswith(mock.ws_url.rstrip("/"))


def test_silence_is_detected_and_recovered() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> Instance:
        async with MockExchange(spec, capture, MockOptions(silence_ms=3000)) as mock:
            client = mock.client_spec()
            ep = client.endpoints["public"]
            client = dataclasses.replace(
                client, endpoints={"public": dataclasses.replace(ep, idle_timeout=0.4)}
            )
            _, inst = await _collect(
                mock,
                ["trades", "book", "ticker"],
                spec=client,
                until=lambda s: any(e["kind"] == "gap" for e in s.envelopes),
            )
            return inst

    stats = asyncio.run(main()).sessions[0].stats
    assert stats.reconnects["idle"] >= 1
    assert stats.gaps >= 1


def test_max_lifetime_reconnects_before_the_exchange_would() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, capture, MockOptions(speed=1.0, loop=True)) as mock:
            client = mock.client_spec()
            ep = client.endpoints["public"]
            client = dataclasses.replace(
                client, endpoints={"public": dataclasses.replace(ep, max_lifetime=0.5)}
            )
            return await _collect(
                mock,
                ["trades"],
                spec=client,
                until=lambda s: sum(e["kind"] == "gap" for e in s.envelopes) >= 1,
            )

    sink, inst = asyncio.run(main())
    stats = inst.sessions[0].stats
    assert stats.reconnects["max_lifetime"] >= 1 and stats.connects >= 2
    gaps = [e["record"] for e in sink.envelopes if e["kind"] == "gap"]
    assert {g["reason"] for g in gaps} == {"max_lifetime"}


def test_ack_timeout_leads_to_a_retry() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> Instance:
        async with MockExchange(spec, capture) as mock:
            client = mock.client_spec()
            assert client.ack is not None
            never = dataclasses.replace(client.ack, timeout=0.3, key=lambda m: "never-matches")
            client = dataclasses.replace(client, ack=never)
            _, inst = await _collect(
                mock, ["trades"], spec=client, timeout=1.5, until=lambda s: False
            )
            return inst

    stats = asyncio.run(main()).sessions[0].stats
    assert stats.reconnects["ack_timeout"] >= 2
    assert stats.subscribe_failures >= 2


@pytest.mark.parametrize("exchange", ["binance", "okx", "kraken", "coinbase"])
def test_rejected_subscriptions_fail_clearly(exchange: str) -> None:
    capture = require_captures(exchange) / "raw.ndjson"
    spec = load_spec(exchange)

    async def main() -> Instance:
        async with MockExchange(spec, capture, MockOptions(reject_subscribe=True)) as mock:
            channels = sorted({c for c, _ in mock.capture.pairs()})[:1]
            _, inst = await _collect(mock, channels, timeout=3, until=lambda s: False)
            return inst

    inst = asyncio.run(main())
    session = inst.sessions[0]
    assert session.state == "failed" and inst.state == "failed"
    assert session.error and session.stats.subscribe_failures >= 1
    assert session.stats.connects == 1  # a rejection is not retried in a loop


def test_back_pressure_bounds_memory_and_is_counted() -> None:
    capture = require_captures("coinbase") / "raw.ndjson"
    spec = load_spec("coinbase")

    class SlowSink(MemorySink):
        async def write(self, batch: list[Envelope]) -> None:
            await asyncio.sleep(0.02)
            await super().write(batch)

    sink = SlowSink()
    pipeline = Pipeline(sink, batch_size=50, flush_interval=0.05, queue_batches=2)
    peak = 0

    async def main() -> None:
        nonlocal peak
        async with MockExchange(spec, capture) as mock:

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, pipeline.queue.qsize())
                    await asyncio.sleep(0.001)

            sampler = asyncio.create_task(sample())
            await _collect(
                mock,
                ["book"],
                pipeline=pipeline,
                timeout=4,
                until=lambda s: len(s.envelopes) >= 2000,
            )
            sampler.cancel()

    asyncio.run(main())
    assert pipeline.stats.backpressure_events > 0
    assert pipeline.stats.backpressure_seconds > 0
    assert peak <= 2
    # nothing accepted was lost: everything handed to the pipeline reached the sink
    assert pipeline.stats.records_out == pipeline.stats.records_in == len(sink.envelopes)


def test_unrecognized_frames_become_dead_letters(tmp_path: Path) -> None:
    capture = require_captures("okx") / "raw.ndjson"
    lines = capture.read_text().splitlines()
    junk = {"recv_ts": 1652459226.0, "kind": "ws", "conn": "ws.1", "data": '{"surprise": 1}'}
    bad = {
        "recv_ts": 1652459226.1,
        "kind": "ws",
        "conn": "ws.1",
        "data": '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"px":"1"}]}',
    }
    first_data = next(i for i, ln in enumerate(lines) if "tradeId" in ln)
    lines[first_data + 1 : first_data + 1] = [
        orjson.dumps(junk).decode(),
        orjson.dumps(bad).decode(),
    ]
    path = tmp_path / "raw.ndjson"
    path.write_text("\n".join(lines) + "\n")
    spec = load_spec("okx")

    async def main() -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, path) as mock:
            return await _collect(
                mock,
                ["trades", "book", "ticker"],
                until=lambda s: sum(e["kind"] == "dead_letter" for e in s.envelopes) >= 2,
            )

    sink, inst = asyncio.run(main())
    dead = [e["record"] for e in sink.envelopes if e["kind"] == "dead_letter"]
    assert {d["reason"].split(":")[0] for d in dead} >= {"no rule matches", "channel trades"}
    assert inst.sessions[0].stats.unrecognized >= 1 and inst.sessions[0].stats.malformed >= 1
    assert len(_data(sink.envelopes)) > 0  # other data kept flowing


def _fixture_spec(name: str) -> ExchangeSpec:
    from tests.conftest import FEATURES, compile_fixture, load_module

    spec = load_module(name, compile_fixture(FEATURES / f"{name}.toml")).SPEC
    assert isinstance(spec, ExchangeSpec)
    return spec


def _gzip_capture(path: Path, frames: list[dict[str, Any]]) -> None:
    """A capture in the shared format whose frames were sent gzip-compressed (as HTX does)."""
    import base64
    import gzip

    with path.open("w") as out:
        for n, frame in enumerate(frames):
            text = orjson.dumps(frame)
            entry = {
                "recv_ts": 1618678070.5 + n / 100,
                "kind": "ws",
                "conn": "ws.1",
                "data": text.decode(),
                "encoding": "gzip",
                "data_b64": base64.b64encode(gzip.compress(text)).decode(),
            }
            out.write(orjson.dumps(entry).decode() + "\n")


def _htx_trades(count: int) -> list[dict[str, Any]]:
    return [
        {
            "ch": "market.btcusdt.trade.detail",
            "ts": 1618678070000 + n,
            "tick": {
                "id": n,
                "ts": 1618678070000 + n,
                "data": [
                    {
                        "id": n,
                        "ts": 1618678070000 + n,
                        "tradeId": 100000 + n,
                        "amount": "0.01",
                        "price": f"61000.{n:02d}",
                        "direction": "buy" if n % 2 else "sell",
                    }
                ],
            },
        }
        for n in range(count)
    ]


def test_gzip_frames_and_server_pings_are_handled_in_time(tmp_path: Path) -> None:
    spec = _fixture_spec("keepalive")
    capture = tmp_path / "raw.ndjson"
    _gzip_capture(capture, _htx_trades(40))

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        # real-time pacing: the 40 trades take 0.4 s; the mock pings every 0.2 s and
        # closes a client that has not answered a ping within 1 s
        async with MockExchange(spec, capture, MockOptions(speed=0.25)) as mock:
            sink, inst = await _collect(
                mock, ["trades"], timeout=8, until=lambda s: len(_data(s.envelopes)) >= 40
            )
            await asyncio.sleep(0)
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    records = _data(sink.envelopes)
    assert [r["price"] for r in records] == [f"61000.{n:02d}" for n in range(40)]
    assert {r["symbol"] for r in records} == {"BTC-USDT"}
    stats = inst.sessions[0].stats
    assert stats.pings_answered >= 3 and mock.stats.pongs_received >= 3
    assert mock.stats.pong_timeouts == 0 and stats.connects == 1


def test_bootstrap_call_gives_the_url_to_connect_to(tmp_path: Path) -> None:
    import httpx

    spec = _fixture_spec("rest_bootstrap")
    capture = tmp_path / "raw.ndjson"
    trade = {
        "type": "message",
        "topic": "/market/match:BTC-USDT",
        "subject": "trade.l3match",
        "data": {
            "symbol": "BTC-USDT",
            "sequence": "1",
            "side": "buy",
            "price": "61000.1",
            "size": "0.5",
            "tradeId": "t1",
            "time": "1618678070000000000",
        },
    }
    capture.write_text(
        orjson.dumps(
            {
                "recv_ts": 1618678070.5,
                "kind": "ws",
                "conn": "ws.1",
                "data": orjson.dumps(trade).decode(),
            }
        ).decode()
        + "\n"
    )
    calls: list[str] = []

    async def main() -> tuple[MemorySink, Instance]:
        async with MockExchange(spec, capture) as mock:

            def bullet(request: httpx.Request) -> httpx.Response:
                calls.append(f"{request.method} {request.url.path}")
                servers = [{"endpoint": mock.ws_url.rstrip("/"), "pingInterval": 18000}]
                return httpx.Response(
                    200, json={"data": {"token": "T", "instanceServers": servers}}
                )

            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=10, flush_interval=0.05, queue_batches=4)
            inst = Instance("boot", spec, ["BTC-USDT"], ["trades"])
            collector = Collector(
                [inst],
                make_transport("websockets"),
                pipeline,
                backoff=FAST,
                rest_transport=httpx.MockTransport(bullet),
            )

            async def watch() -> None:
                while not _data(sink.envelopes):
                    await asyncio.sleep(0.02)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=5)
            watcher.cancel()
            return sink, inst

    sink, inst = asyncio.run(main())
    assert calls and calls[0] == "POST /api/v1/bullet-public"
    (record,) = _data(sink.envelopes)
    assert (record["price"], record["trade_id"], record["seq"]) == ("61000.1", "t1", 1)
    session = inst.sessions[0]
    assert session.url is not None and session.url.endswith("?token=T")
    assert session._ping_interval == 18.0


@pytest.mark.parametrize("transport", ["websockets", "picows"])
def test_subscriptions_are_sharded_over_connections(transport: str) -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")
    expected = _ws_records(spec, capture)

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, capture) as mock:
            client = mock.client_spec()
            ep = client.endpoints["public"]
            client = dataclasses.replace(
                client, endpoints={"public": dataclasses.replace(ep, max_streams=2)}
            )
            sink, inst = await _collect(
                mock,
                ["trades", "book", "ticker"],
                spec=client,
                transport=transport,
                until=lambda s: len(_data(s.envelopes)) >= len(expected),
            )
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    # 3 channels x 3 symbols, at most 2 streams a connection -> 5 connections
    assert len(inst.sessions) == 5
    assert all(len(s.plan.subscriptions) <= 2 for s in inst.sessions)
    assert mock.stats.connections_accepted == 5
    assert _comparable(_data(sink.envelopes)) == _comparable(expected)


def test_streams_embedded_in_the_url() -> None:
    spec = _fixture_spec("url_mode")
    capture = require_captures("binance") / "raw.ndjson"

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, capture) as mock:
            client = mock.client_spec()
            inst = Instance("u", client, ["NKN-USDT", "LRC-BTC"], ["ticker"])
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=10, flush_interval=0.05, queue_batches=4)
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            async def watch() -> None:
                while len(_data(sink.envelopes)) < 10:
                    await asyncio.sleep(0.02)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=5)
            watcher.cancel()
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    url = inst.sessions[0].url
    assert url is not None and url.endswith("/stream?streams=nknusdt@bookTicker/lrcbtc@bookTicker")
    assert {r["symbol"] for r in _data(sink.envelopes)} <= {"NKN-USDT", "LRC-BTC"}
    assert any(p.startswith("/stream?streams=") for p in mock.stats.paths)


def test_one_instance_crashing_does_not_stop_another() -> None:
    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    def explode(m: Any, ts_recv: int, ctx: Any) -> list[dict[str, Any]]:
        raise ZeroDivisionError("a bug, not a bad message")

    async def main() -> tuple[Instance, Instance, MemorySink]:
        async with MockExchange(spec, capture) as mock:
            good_spec = mock.client_spec()
            routes = tuple(
                dataclasses.replace(r, parse=explode) if r.channel == "trades" else r
                for r in good_spec.routes
            )
            bad_spec = dataclasses.replace(good_spec, routes=routes)
            good = Instance("good", good_spec, ["BTC-USDT"], ["ticker"])
            bad = Instance("bad", bad_spec, ["BTC-USDT"], ["trades"])
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=5, flush_interval=0.05, queue_batches=4)
            collector = Collector([bad, good], make_transport("websockets"), pipeline, backoff=FAST)

            async def watch() -> None:
                while bad.state != "failed" or not _data(sink.envelopes):
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.2)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=8)
            watcher.cancel()
            return good, bad, sink

    good, bad, sink = asyncio.run(main())
    assert bad.state == "failed" and bad.crashed and "ZeroDivisionError" in bad.crashed
    assert good.state == "stopped"
    assert {r["channel"] for r in _data(sink.envelopes)} == {"ticker"}


def test_shutdown_timeout_bounds_the_final_flush() -> None:
    class StuckSink(MemorySink):
        async def write(self, batch: list[Envelope]) -> None:
            await asyncio.Event().wait()  # a sink that never comes back

    capture = require_captures("okx") / "raw.ndjson"
    spec = load_spec("okx")

    async def main() -> tuple[Collector, float]:
        async with MockExchange(spec, capture) as mock:
            pipeline = Pipeline(StuckSink(), batch_size=10, flush_interval=0.05, queue_batches=2)
            inst = Instance("t", mock.client_spec(), ["BTC-USDT"], ["book"])
            collector = Collector(
                [inst], make_transport("websockets"), pipeline, backoff=FAST, shutdown_timeout=0.5
            )
            started = asyncio.get_running_loop().time()
            await collector.run(duration=1.0)
            return collector, asyncio.get_running_loop().time() - started

    collector, took = asyncio.run(main())
    assert took < 5.0  # 1 s of collection + 0.5 s of deadline, not forever
    assert collector.unflushed > 0  # and the loss is counted, not hidden
