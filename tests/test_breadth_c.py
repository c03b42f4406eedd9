"""Issue 7, exchange breadth (part C): the derivatives and candle channels of the two venues
that have real captures without them.

OKX: ``funding`` (funding-rate), ``open_interest`` (open-interest), ``mark_price`` (mark-price)
on ``/ws/v5/public`` and ``candles`` (candle1m) on ``/ws/v5/business``. Kraken (WebSocket v1):
``candles`` (ohlc, interval 1). The real captures hold none of these, so each venue has a small
capture built from its documentation's examples (``tests/fixtures/derivatives/``, sources in
its README). The documented examples must normalize to exactly the expected records, a
collector run against the local mock exchange must deliver the same records as the replay,
and the default channel list (which now names channels the real captures lack) must still be
subscribed and ACKed in full against the mock serving a real capture.

OKX ``liquidations`` (liquidation-orders) is subscribed per instrument type
(``{"channel": "liquidation-orders", "instType": "SWAP"}``): one topic several symbols share,
sent once and ACKed once, and each push carries every instrument of that type, two lists deep
(``flatten``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from typer.testing import CliRunner

from compiler.cli import app
from runtime.collector import Collector, Instance
from runtime.config import default_channels
from runtime.mock import MockExchange
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.run import capture_symbols
from runtime.session import Backoff
from runtime.sinks import MemorySink
from runtime.spec import Context
from runtime.subscriptions import needs_subscribing, normalize
from runtime.transport import make_transport
from tests.conftest import ROOT, replay_clean
from tests.crosscheck import require_captures

FIXTURES = ROOT / "tests" / "fixtures" / "derivatives"
VENUES = ["okx", "kraken"]
FAST = Backoff(initial=0.01, cap=0.05, stable_after=60)
MS = 1_000_000
"""Nanoseconds per millisecond."""

# Every record the fixture gives, in order, with the fields pinned from the docs' examples.
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "okx": [
        {
            "channel": "funding",
            "symbol": "BTC-USD-PERP",
            "symbol_raw": "BTC-USD-SWAP",
            "ts_exchange": 1700724675402 * MS,
            "rate": "0.0001875391284828",
            "next_funding_ts": 1700726400000 * MS,  # fundingTime: the settlement it is for
            "predicted_rate": None,  # nextFundingRate "": no forecast
        },
        {
            "channel": "open_interest",
            "symbol": "BTC-USDT-PERP",
            "symbol_raw": "BTC-USDT-SWAP",
            "ts_exchange": 1743041250440 * MS,
            "open_interest": "22161.1301000000309",  # oiCcy, in BTC
        },
        {
            "channel": "mark_price",
            "symbol": "LTC-USD-20190628",
            "symbol_raw": "LTC-USD-190628",
            "ts_exchange": 1597026383085 * MS,
            "mark": "0.1",
            "index": None,
        },
        {
            "channel": "candles",
            "symbol": "BTC-USDT",
            "ts_exchange": None,
            "interval": "1m",
            "start": 1597026383085 * MS,
            "open": "8533.02",
            "high": "8553.74",
            "low": "8527.17",
            "close": "8548.26",
            "volume": "45247",  # spot: vol is the base currency
            "closed": False,
        },
        {
            "channel": "candles",
            "symbol": "BTC-USDT-PERP",
            "start": 1597026383085 * MS,
            "open": "3.731",
            "close": "3.72",
            "volume": "67632347.24399722",  # derivatives: volCcy, not contracts
            "closed": True,
        },
        {
            "channel": "liquidations",
            "symbol": "MINA-USDT-PERP",
            "symbol_raw": "MINA-USDT-SWAP",
            "ts_exchange": 1789678209470 * MS,
            "price": "0.09859",  # bkPx, the bankruptcy price
            "size": "10975",  # contracts
            "side": "buy",  # the liquidation order closes a short
        },
        {"channel": "liquidations", "symbol": "BTC-USDT-PERP", "size": "3", "side": "sell"},
        {"channel": "liquidations", "symbol": "BTC-USDT-PERP", "size": "12", "price": "61230.1"},
    ],
    "kraken": [
        {
            "channel": "candles",
            "symbol": "BTC-USD",
            "symbol_raw": "XBT/USD",
            "ts_exchange": 1542057314748456000,  # last update
            "interval": "1",
            "start": 1542057300 * 10**9,  # end 1542057360 minus one minute
            "open": "3586.70000",
            "high": "3586.70000",
            "low": "3586.60000",
            "close": "3586.60000",
            "volume": "0.03373000",
            "closed": None,
        },
        {
            "channel": "candles",
            "symbol": "BTC-USD",
            "ts_exchange": 1542057321076236000,
            "start": 1542057300 * 10**9,
            "low": "3586.50000",
            "close": "3586.50000",
            "volume": "0.04373000",
        },
    ],
}

NEW_CHANNELS = {
    "okx": {"funding", "open_interest", "mark_price", "candles", "liquidations"},
    "kraken": {"candles"},
}


def _fixture(exchange: str) -> Path:
    return FIXTURES / f"{exchange}.ndjson"


def _replay(exchange: str) -> list[dict[str, Any]]:
    return replay_clean(exchange, _fixture(exchange))


@pytest.mark.parametrize("exchange", VENUES)
def test_replay_strict_exits_0(exchange: str, tmp_path: Path) -> None:
    out = tmp_path / "records.ndjson"
    args = ["replay", exchange, str(_fixture(exchange)), "--strict", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes().count(b"\n") == len(EXPECTED[exchange])


@pytest.mark.parametrize("exchange", VENUES)
def test_documented_examples_give_exactly_the_expected_records(exchange: str) -> None:
    records = _replay(exchange)
    assert [r["channel"] for r in records] == [e["channel"] for e in EXPECTED[exchange]]
    for record, expected in zip(records, EXPECTED[exchange], strict=True):
        assert {k: record[k] for k in expected} == expected
        assert record["exchange"] == exchange
    assert {r["channel"] for r in records} == NEW_CHANNELS[exchange]


# The documented subscribe arguments and the replies that acknowledge them.
OKX_SUBSCRIPTIONS = [
    ("funding", "BTC-USD-PERP", {"channel": "funding-rate", "instId": "BTC-USD-SWAP"}),
    ("open_interest", "LTC-USD-PERP", {"channel": "open-interest", "instId": "LTC-USD-SWAP"}),
    ("mark_price", "LTC-USD-20190628", {"channel": "mark-price", "instId": "LTC-USD-190628"}),
    ("candles", "BTC-USDT", {"channel": "candle1m", "instId": "BTC-USDT"}),
]


@pytest.mark.parametrize(("channel", "symbol", "arg"), OKX_SUBSCRIPTIONS)
def test_okx_topics_and_acks_are_the_documented_ones(
    channel: str, symbol: str, arg: dict[str, str]
) -> None:
    spec = load_spec("okx")
    ch = spec.channels[channel]
    raw = spec.symbols.raw(symbol)
    assert ch.topic is not None and ch.ack_key is not None and spec.ack is not None
    assert ch.topic(raw, symbol) == arg
    ack = {"id": "1512", "event": "subscribe", "arg": arg, "connId": "a4d3ae55"}
    assert spec.routes[spec.route(ack, Context())].kind == "ack"
    assert spec.ack.key is not None
    assert normalize(spec.ack.key(ack)) == normalize(ch.ack_key(raw, symbol, None))


def test_okx_candles_use_the_business_endpoint() -> None:
    spec = load_spec("okx")
    assert spec.channels["candles"].endpoint == "business"
    paths = {urlsplit(u).path for u in spec.endpoints["business"].urls}
    assert paths == {"/ws/v5/business"}
    for name in ("funding", "open_interest", "mark_price"):
        assert spec.channels[name].endpoint == "public"
    # no login on the business endpoint: candles are collected by default
    assert spec.login is not None and "business" not in spec.login.endpoints
    assert NEW_CHANNELS["okx"] <= set(default_channels(spec))


def test_kraken_candles_subscribe_ohlc_interval_1() -> None:
    spec = load_spec("kraken")
    ch = spec.channels["candles"]
    assert ch.key is not None and ch.ack_key is not None and spec.subscribe.message is not None
    key = ch.key()
    assert key == {"name": "ohlc", "interval": 1}
    message = spec.subscribe.message(["XBT/USD"], key, 7, ["XBT/USD"])
    assert message == {"event": "subscribe", "pair": ["XBT/USD"], "subscription": key, "reqid": 7}
    status = {
        "channelID": 42,
        "channelName": "ohlc-1",
        "event": "subscriptionStatus",
        "pair": "XBT/USD",
        "status": "subscribed",
        "subscription": {"interval": 1, "name": "ohlc"},
    }
    assert spec.ack is not None and spec.ack.key is not None
    assert spec.ack.key(status) == ch.ack_key("XBT/USD", "BTC-USD", key)


# -- against the local mock exchange --------------------------------------------------------


def _comparable(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(
        orjson.dumps({k: v for k, v in r.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS)
        for r in records
    )


def _data(sink: MemorySink) -> list[dict[str, Any]]:
    return [e["record"] for e in sink.envelopes if e["kind"] not in ("gap", "dead_letter")]


@pytest.mark.parametrize("exchange", VENUES)
def test_mock_run_delivers_the_replay_records(exchange: str) -> None:
    spec = load_spec(exchange)
    expected = _replay(exchange)

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, _fixture(exchange)) as mock:
            channels = sorted({c for c, _ in mock.capture.pairs()})
            assert set(channels) == NEW_CHANNELS[exchange]
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=50, flush_interval=0.05, queue_batches=8)
            inst = Instance("t", mock.client_spec(), capture_symbols(mock, channels), channels)
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            async def watch() -> None:
                while len(_data(sink)) < len(expected):
                    await asyncio.sleep(0.02)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=8)
            watcher.cancel()
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    assert _comparable(_data(sink)) == _comparable(expected)
    for session in inst.sessions:
        assert session.stats.unrecognized == 0 and session.stats.malformed == 0
        assert session.stats.subscribe_failures == 0
    if exchange == "okx":  # candles on their own connection
        assert {s.plan.endpoint for s in inst.sessions} == {"public", "business"}
    assert not mock.stats.errors


@pytest.mark.parametrize("exchange", VENUES)
def test_default_channels_are_all_acked_against_the_real_capture(exchange: str) -> None:
    """The default channel list names channels the real capture lacks: the mock ACKs their
    subscriptions too (streaming nothing for them), so a run neither fails nor reconnects."""
    capture = require_captures(exchange) / "raw.ndjson"
    spec = load_spec(exchange)
    channels = default_channels(spec)
    assert NEW_CHANNELS[exchange] <= set(channels)

    async def main() -> tuple[Instance, MemorySink]:
        async with MockExchange(spec, capture) as mock:
            client = mock.client_spec()
            symbols = capture_symbols(mock, channels)
            assert symbols
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=100, flush_interval=0.05, queue_batches=8)
            inst = Instance("t", client, symbols, channels)
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

            def acked() -> bool:
                return bool(inst.sessions) and all(
                    s.stats.acks == len(needs_subscribing(client, s.plan.subscriptions))
                    for s in inst.sessions
                )

            async def watch() -> None:
                while not (acked() and _data(sink)):
                    await asyncio.sleep(0.02)
                collector.request_stop()

            watcher = asyncio.create_task(watch())
            await collector.run(duration=8)
            watcher.cancel()
            return inst, sink

    inst, sink = asyncio.run(main())
    subscribed = {sub.channel for s in inst.sessions for sub in s.plan.subscriptions}
    assert subscribed == set(channels)
    for session in inst.sessions:
        stats = session.stats
        assert stats.acks == len(needs_subscribing(session.spec, session.plan.subscriptions))
        assert stats.subscribe_failures == 0 and not stats.reconnects
        assert stats.unrecognized == 0 and stats.malformed == 0
    assert _data(sink), "no record arrived"


def test_for_symbols_leaves_out_channels_a_symbol_does_not_have() -> None:
    """OKX funding exists for swaps only, open interest for swaps, futures and options."""
    from runtime.subscriptions import plan_connections

    spec = load_spec("okx")
    symbols = ["BTC-USDT", "BTC-USD-PERP", "BTC-USD-20220527"]
    (plan,) = plan_connections(spec, "okx", symbols, ["trades", "funding", "open_interest"])
    pairs = [(s.channel, s.raw) for s in plan.subscriptions]
    assert pairs == [
        ("trades", "BTC-USDT"),
        ("trades", "BTC-USD-SWAP"),
        ("trades", "BTC-USD-220527"),
        ("funding", "BTC-USD-SWAP"),
        ("open_interest", "BTC-USD-SWAP"),
        ("open_interest", "BTC-USD-220527"),
    ]
    assert spec.channels["trades"].for_symbols is None


def test_a_topic_several_symbols_share_is_sent_once_and_acked_once() -> None:
    from runtime.subscriptions import AckTracker, plan_connections, subscribe_messages

    spec = load_spec("okx")
    symbols = ["BTC-USDT-PERP", "ETH-USDT-PERP", "BTC-USD-20220527"]
    (plan,) = plan_connections(spec, "okx", symbols, ["liquidations"])
    ids = iter(range(1, 100))
    (out,) = subscribe_messages(spec, list(plan.subscriptions), lambda: next(ids))
    swap = {"channel": "liquidation-orders", "instType": "SWAP"}
    futures = {"channel": "liquidation-orders", "instType": "FUTURES"}
    assert out.payload["args"] == [swap, futures]

    async def main() -> list[bool]:
        tracker = AckTracker(spec, lambda: 0.0)
        waits = tracker.expect(out)
        assert len(waits) == 3 and len({id(f) for _, f in waits}) == 2
        assert tracker.on_ack({"event": "subscribe", "arg": swap, "connId": "x"})
        assert tracker.on_ack({"event": "subscribe", "arg": futures, "connId": "x"})
        return [f.done() and f.result().ok for _, f in waits]

    assert asyncio.run(main()) == [True, True, True]
