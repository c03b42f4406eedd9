"""Exchange breadth (issue 7): bitstamp, htx, deribit, gateio, bitfinex, and the generic
features they brought: symbol patterns, REST path placeholders, ``on_connect`` messages,
``also`` channels, former exchange ids, captured ACKs replayed by the mock."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from compiler.pipeline import compile_descriptor
from runtime.captures import FIXTURE_CAPTURES, find_capture
from runtime.mock import MockExchange, MockOptions
from runtime.patterns import compile_template
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.replay import Replayer, replay_lines
from runtime.rest import RestClient
from runtime.run import RunSettings, capture_for
from runtime.session import Session
from runtime.sinks import MemorySink
from runtime.spec import Context
from runtime.subscriptions import plan_connections
from runtime.transport import make_transport
from tests.crosscheck import CAPTURES, require_captures
from tests.test_session import _collect

BREADTH = ["bitfinex", "bitstamp", "deribit", "gateio", "htx"]


# -- symbols --------------------------------------------------------------------------------

SYMBOL_CASES = [
    ("deribit", "BTC-PERPETUAL", "BTC-USD-PERP"),
    ("deribit", "ETH_USDC-PERPETUAL", "ETH-USDC-PERP"),
    ("deribit", "BTC-24SEP21", "BTC-USD-24SEP21"),
    ("deribit", "BTC-24SEP21-8000-P", "BTC-USD-24SEP21-8000-P"),
    ("deribit", "SOL_USDC-29JUL22-40-C", "SOL-USDC-29JUL22-40-C"),
    ("deribit", "BTC_USDC", "BTC-USDC"),
    ("bitfinex", "tBTCUSD", "BTC-USD"),
    ("bitfinex", "tBTCUST", "BTC-USDT"),
    ("bitfinex", "tDOGE:USD", "DOGE-USD"),
    ("bitfinex", "tBTCF0:USTF0", "BTC-USDT-PERP"),
    ("bitstamp", "usdteur", "USDT-EUR"),
    ("bitstamp", "btcusd", "BTC-USD"),
    ("htx", "fil3susdt", "FIL3S-USDT"),
    ("htx", "yfihusd", "YFI-HUSD"),
    ("gateio", "QTUM3S_USDT", "QTUM3S-USDT"),
]


@pytest.mark.parametrize(("exchange", "raw", "canonical"), SYMBOL_CASES)
def test_symbols_round_trip(exchange: str, raw: str, canonical: str) -> None:
    symbols = load_spec(exchange).symbols
    assert symbols.canonical(raw) == canonical
    assert symbols.raw(canonical) == raw


def test_templates_match_fill_and_reject_bad_placeholders() -> None:
    t = compile_template("t{base:[A-Z][A-Z][A-Z]}{quote}")
    assert t.names == ("base", "quote")
    assert t.match("tBTCUSD") == {"base": "BTC", "quote": "USD"}
    assert t.match("tBTC-USD") is None
    assert t.fill({"base": "ETH", "quote": "EUR"}) == "tETHEUR"
    for bad in ("{a}{a}", "{1x}", "{a:(x)}", "a}", "{a:[}"):
        with pytest.raises(ValueError):
            compile_template(bad)


# -- compiler checks ------------------------------------------------------------------------

BASE = """schema = "1.4"
[exchange]
id = "x"
name = "X"
{symbols}
[websocket.endpoints.public]
urls = ["wss://example.invalid/ws"]
[websocket.subscribe]
message = '{{"op": "subscribe", "args": topics}}'
{rest}
[channels.trades]
kind = "trades"
topic = 'raw'
match = 'topic == "trades"'
[channels.trades.fields]
symbol = 's'
price = 'dec(p)'
size = 'dec(q)'
{also}
"""


def _codes(symbols: str = "", rest: str = "", also: str = "") -> list[tuple[str, str]]:
    text = BASE.format(symbols=symbols, rest=rest, also=also)
    _, _, diagnostics = compile_descriptor("d/x.toml", text, Path("."))
    return [(d.code, d.message) for d in diagnostics]


def test_compiler_checks_the_new_keys() -> None:
    assert _codes() == []
    (code, message), *_ = _codes(
        symbols='[symbols]\npatterns = [{ raw = "{a}-X", canonical = "{b}-Y" }]'
    )
    assert code == "E308" and "same placeholders" in message
    assert _codes(symbols='[symbols]\npatterns = [{ raw = "{a", canonical = "a" }]')[0][0] == (
        "E103"
    )
    rest = '[rest]\nbase_urls = ["https://example.invalid"]\n[rest.endpoints.b]\npath = "/b/{pair}"'
    (code, message), *_ = _codes(rest=rest)
    assert code == "E308" and "pair" in message
    also = '[channels.trades.also.trades]\nkind = "trades"\n[channels.trades.also.trades.fields]\n'
    also += "symbol = 's'\nprice = 'dec(p)'\nsize = 'dec(q)'"
    assert ("E308", "channel name 'trades' is used twice") in _codes(also=also)


# -- REST path placeholders -----------------------------------------------------------------


def test_rest_path_placeholder_is_filled_and_given_back_as_query() -> None:
    spec = load_spec("bitstamp")
    assert spec.rest is not None
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        body = {"microtimestamp": "1641343695572693", "bids": [["1", "2"]], "asks": []}
        return httpx.Response(200, json=body)

    async def main() -> Any:
        client = RestClient(spec.rest, transport=httpx.MockTransport(handler))
        try:
            return await client.call("order_book", raw="btcusd", symbol="BTC-USD")
        finally:
            await client.aclose()

    reply = asyncio.run(main())
    assert seen[0].path == "/api/v2/order_book/btcusd" and seen[0].query == b""
    assert reply.query == {"pair": "btcusd"}
    endpoint = spec.rest.endpoints["order_book"]
    assert endpoint.parse is not None
    (record,) = endpoint.parse(reply.body, reply.query, 1, None)  # type: ignore[arg-type]
    assert (record["symbol"], record["seq"], record["type"]) == (
        "BTC-USD",
        1641343695572693,
        "snapshot",
    )


def test_replay_matches_rest_lines_by_path_template() -> None:
    replayer = Replayer(load_spec("bitstamp"))
    body = {"microtimestamp": "1641343695572693", "bids": [], "asks": [["3", "4"]]}
    (record,) = replayer.rest(1, "https://www.bitstamp.net/api/v2/order_book/usdteur", body, 5)
    assert record["symbol"] == "USDT-EUR" and record["asks"] == [["3", "4"]]
    assert replayer.rest(2, "https://www.bitstamp.net/api/v2/nothing/usdteur", body, 5) == []
    assert replayer.report.unrecognized == 1


# -- also channels, on_connect, aliases ------------------------------------------------------


def test_also_channels_share_the_parent_subscription() -> None:
    spec = load_spec("deribit")
    (plan,) = plan_connections(
        spec, "i", ["BTC-USD-PERP"], ["mark_price", "ticker", "open_interest", "liquidations"]
    )
    assert [(s.channel, s.raw) for s in plan.subscriptions] == [
        ("ticker", "BTC-PERPETUAL"),
        ("trades", "BTC-PERPETUAL"),
    ]


def test_on_connect_messages_are_sent_first_with_fresh_ids() -> None:
    spec = load_spec("deribit")
    (plan,) = plan_connections(spec, "i", ["BTC-USD-PERP"], ["trades"])
    pipeline = Pipeline(MemorySink(), batch_size=10, flush_interval=0.1, queue_batches=2)
    session = Session(spec, "i", plan, make_transport("websockets"), pipeline)
    sent: list[str] = []

    class Conn:
        async def send(self, text: str) -> None:
            sent.append(text)

    assert asyncio.run(session._send_on_connect(Conn()))  # type: ignore[arg-type]
    (message,) = [orjson.loads(s) for s in sent]
    assert message["method"] == "public/set_heartbeat" and message["id"] == 1
    bitfinex = load_spec("bitfinex")
    assert [b(7) for b in bitfinex.on_connect] == [{"event": "conf", "flags": 131072}]


def test_capture_found_under_a_former_name() -> None:
    require_captures("htx")
    spec = load_spec("htx")
    assert spec.aliases == ("huobi",)
    assert capture_for(RunSettings(captures=CAPTURES), "htx", spec.aliases) == (
        CAPTURES / "huobi" / "raw.ndjson"
    )
    assert find_capture("htx", folders=[CAPTURES]) is None


# -- captures -------------------------------------------------------------------------------


@pytest.mark.parametrize("exchange", BREADTH)
def test_capture_replays_cleanly(exchange: str) -> None:
    spec = load_spec(exchange)
    if exchange != "bitfinex":
        require_captures(exchange)
    path = find_capture(exchange, aliases=spec.aliases)
    assert path is not None
    with path.open("rb") as lines:
        records, report = replay_lines(spec, lines)
        channels = {r["channel"] for _, r in records}
    assert report.unrecognized == 0 and report.malformed == 0, report.samples
    assert {"trades", "book"} <= channels or exchange == "deribit"
    assert report.frames["data"] > 0


def test_bitfinex_fixture_gives_every_channel() -> None:
    spec = load_spec("bitfinex")
    with (FIXTURE_CAPTURES / "bitfinex" / "raw.ndjson").open("rb") as lines:
        records = [r for _, r in replay_lines(spec, lines)[0]]
    by_channel = {r["channel"] for r in records}
    assert by_channel == set(spec.channels)
    trades = [(r["symbol"], r["side"], r["size"]) for r in records if r["channel"] == "trades"]
    assert trades == [
        ("BTC-USD", "buy", "0.005"),
        ("BTC-USD", "sell", "0.033"),
        ("DOGE-USD", "sell", "25000"),
    ]
    deletes = [
        r["asks"] for r in records if r["channel"] == "book" and r["asks"] == [["7254.8", "0"]]
    ]
    assert deletes
    checksums = [r["checksum"] for r in records if r["channel"] == "book" and r["checksum"]]
    assert checksums == [-783371955, 900157070, -1240240318, 1636941717, 702358016]


def test_mock_replays_captured_acks_so_chan_ids_match() -> None:
    spec = load_spec("bitfinex")
    mock = MockExchange(spec, FIXTURE_CAPTURES / "bitfinex" / "raw.ndjson")
    assert len(mock.capture.acks) == 6
    ack = mock._captured_ack({"channel": "trades", "symbol": "tBTCUSD"}, None, False)
    assert ack is not None and orjson.loads(ack)["chanId"] == 17470
    assert mock._captured_ack({"channel": "trades", "symbol": "tXYZUSD"}, None, False) is None


def test_deribit_test_requests_are_answered_in_time() -> None:
    require_captures("deribit")
    spec = load_spec("deribit")
    path = find_capture("deribit")

    async def main() -> MockExchange:
        async with MockExchange(spec, path, MockOptions(ping_interval=0.2, loop=True)) as mock:
            await _collect(mock, ["ticker"], until=lambda s: mock.stats.pings_sent >= 4, timeout=5)
            return mock

    mock = asyncio.run(main())
    assert mock.stats.pings_sent >= 4
    assert mock.stats.pong_timeouts == 0 and mock.stats.pongs_received >= 3


def test_deribit_trades_and_liquidations_from_one_notification() -> None:
    # The capture holds no trade: shape from docs.deribit.com (trades.{instrument}.{interval}).
    spec = load_spec("deribit")
    msg = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {
            "channel": "trades.BTC-PERPETUAL.100ms",
            "data": [
                {"trade_seq": 30289432, "trade_id": "48079254", "timestamp": 1590484156350,
                 "price": 8954, "amount": 20, "direction": "sell", "tick_direction": 0},
                {"trade_seq": 30289433, "trade_id": "48079255", "timestamp": 1590484156350,
                 "price": 8953.5, "amount": 10, "direction": "sell", "liquidation": "M"},
            ],
        },
    }  # fmt: skip
    ctx = Context()
    route = spec.routes[spec.route(msg, ctx)]
    assert route.parse is not None
    records = route.parse(msg, 1, ctx)
    trades = [
        (r["symbol"], r["price"], r["size"], r["side"], r.get("trade_id", r.get("order_id")))
        for r in records
    ]
    assert trades == [
        ("BTC-USD-PERP", "8954", "20", "sell", "48079254"),
        ("BTC-USD-PERP", "8953.5", "10", "sell", "48079255"),
        ("BTC-USD-PERP", "8953.5", "10", "buy", "48079255"),  # the liquidated maker bought
    ]
    assert [r["channel"] for r in records] == ["trades", "trades", "liquidations"]
