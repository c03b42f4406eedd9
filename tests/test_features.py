"""One-feature descriptors: generated code pinned as .py snapshots, and the code run."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from runtime import Context
from runtime.frames import decode
from tests.conftest import FEATURES, compile_fixture, load_module

FIXTURES = sorted(FEATURES.glob("*.toml"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_generated_code_is_pinned(path: Path, py_snapshot: SnapshotAssertion) -> None:
    assert compile_fixture(path) == py_snapshot


def _module(name: str):  # type: ignore[no-untyped-def]
    return load_module(name, compile_fixture(FEATURES / f"{name}.toml"))


def _parse(mod, msg):  # type: ignore[no-untyped-def]
    ctx = Context()
    route = mod.ROUTES[mod.route(msg, ctx)]
    assert route.kind == "data"
    return route.parse(msg, 1, ctx)


def test_minimal_trade_record_has_the_normalized_shape() -> None:
    mod = _module("minimal")
    msg = {
        "topic": "trades",
        "s": "BTC-USDT",
        "T": 1700000000123,
        "p": "1.50",
        "q": "2",
        "side": "buy",
    }
    assert _parse(mod, msg) == [
        {
            "exchange": "minimal",
            "channel": "trades",
            "symbol": "BTC-USDT",
            "symbol_raw": "BTC-USDT",
            "ts_exchange": 1700000000123000000,
            "ts_recv": 1,
            "seq": None,
            "price": "1.50",
            "size": "2",
            "side": "buy",
            "trade_id": None,
        }
    ]
    assert mod.route({"topic": "other"}, Context()) == -1
    assert mod.route("pong", Context()) == -1


def test_fanout_filters_items_and_keeps_order() -> None:
    mod = _module("fanout")
    msg = {
        "arg": {"channel": "trades", "instId": "BTC-USD-SWAP"},
        "data": [
            {"px": "1", "sz": "2", "side": "buy", "ts": "1", "tradeId": "a"},
            {"px": "1", "sz": "0", "side": "buy", "ts": "2"},
            {"px": "3", "sz": "4", "side": "sell", "ts": "3"},
        ],
    }
    records = _parse(mod, msg)
    assert [(r["price"], r["size"], r["side"], r["trade_id"]) for r in records] == [
        ("1", "2", "buy", "a"),
        ("3", "4", "sell", None),
    ]
    assert {r["symbol"] for r in records} == {"BTC-USD-PERP"}
    assert mod.SPEC.subscribe.message(["x"], None, 7, ["BTC-USDT"]) == {
        "op": "subscribe",
        "args": ["x"],
    }


def test_positional_arrays_lookup_and_aliases() -> None:
    mod = _module("positional")
    msg = [993, [["354.11", "0.89", "1618678142.557535", "s", "l", ""]], "trade", "XBT/USD"]
    (record,) = _parse(mod, msg)
    assert record["symbol"] == "BTC-USD"
    assert record["ts_exchange"] == 1618678142557535000
    assert record["side"] == "sell"
    bad = [993, [["1", "1", "1", "x", "l", ""]], "trade", "XBT/USD"]
    with pytest.raises(ValueError, match="x"):
        _parse(mod, bad)
    assert mod.SPEC.channels["trades"].key() == {"name": "trade"}


def test_url_mode_builds_the_stream_url() -> None:
    mod = _module("url_mode")
    spec = mod.SPEC
    topics = [spec.channels["ticker"].topic("BTCUSDT", "BTC-USDT"), "ethbtc@bookTicker"]
    assert spec.subscribe.url("wss://x:9443", topics) == (
        "wss://x:9443/stream?streams=btcusdt@bookTicker/ethbtc@bookTicker"
    )
    assert spec.endpoints["public"].urls == (
        "wss://example.invalid:9443",
        "wss://backup.example.invalid",
    )


def test_keepalive_gzip_frames_and_ping_echo() -> None:
    mod = _module("keepalive")
    ping = decode(gzip.compress(b'{"ping": 1492420473027}'), "gzip")
    code = mod.route(ping, Context())
    assert mod.ROUTES[code].kind == "ping"
    assert mod.SPEC.keepalive.server_ping_reply(ping) == {"pong": 1492420473027}
    assert mod.SPEC.keepalive.client_ping(3)["op"] == "ping"
    assert mod.SPEC.ack.reason({"status": "error", "err-msg": "bad topic"}) == "bad topic"
    assert mod.SPEC.ack.reason({"status": "error"}) == "error"


def test_ack_binding_feeds_later_routing() -> None:
    mod = _module("ack_bind")
    spec = mod.SPEC
    ctx = Context()
    ack = {"event": "subscribed", "channel": "trades", "chanId": 17, "symbol": "tBTCUSD"}
    assert spec.routes[spec.route(ack, ctx)].kind == "ack"
    ctx.bound[spec.ack.bind_key(ack)] = spec.ack.bind_value(ack)
    trade = [17, "te", [401597393, 1574694475039, -0.005, 7244.9]]
    route = spec.routes[spec.route(trade, ctx)]
    (record,) = route.parse(trade, 5, ctx)
    assert (record["symbol"], record["side"], record["size"]) == ("BTC-USD", "sell", "0.005")
    assert spec.route([99, "te", []], ctx) == -1  # channel 99 was never acknowledged
    reconnect = {"event": "info", "code": 20051}
    assert spec.routes[spec.route(reconnect, ctx)].kind == "reconnect"
    assert spec.routes[spec.route([17, "hb"], ctx)].kind == "heartbeat"


def test_rest_bootstrap_url_and_signing_declaration() -> None:
    mod = _module("rest_bootstrap")
    spec = mod.SPEC
    reply = {
        "code": "200000",
        "data": {
            "token": "T0K",
            "instanceServers": [{"endpoint": "wss://ws-api.example", "pingInterval": 18000}],
        },
    }
    assert spec.bootstrap.url(reply, "wss://unused") == "wss://ws-api.example?token=T0K"
    assert spec.bootstrap.ping_interval(reply) == 18
    assert spec.signing.secret_env == "REST_BOOTSTRAP_API_SECRET"
    assert spec.rest.endpoints["account"].signed


def test_book_rest_snapshot_and_sync_rules() -> None:
    mod = _module("book_sync")
    spec = mod.SPEC
    depth = spec.rest.endpoints["depth"]
    assert depth.params("BTCUSDT", "BTC-USDT") == {"symbol": "BTCUSDT", "limit": 1000}
    body = {"lastUpdateId": 5, "bids": [["1.0", "2.0"]], "asks": [["3", "4"], ["5", "6"]]}
    (snap,) = depth.parse(body, {"symbol": "BTCUSDT"}, 9, Context())
    assert (snap["type"], snap["seq"], snap["asks"]) == ("snapshot", 5, [["3", "4"], ["5", "6"]])
    sync = spec.channels["book"].sync
    assert (sync.snapshot, sync.sequence, sync.checksum) == ("rest", "straddle", "kraken_crc32")


def test_on_connect_also_channels_symbol_patterns_and_path_placeholders() -> None:
    mod = _module("connect_also")
    spec = mod.SPEC
    assert spec.aliases == ("connect_also_old",)
    assert [build(4)["id" if n == 0 else "flags"] for n, build in enumerate(spec.on_connect)] == [
        4,
        131072,
    ]
    msg = {
        "method": "subscription",
        "params": {
            "channel": "ticker.BTC-PERPETUAL.100ms",
            "data": {
                "instrument_name": "BTC-PERPETUAL",
                "best_bid_price": 1.5,
                "best_ask_price": 2,
                "mark_price": 1.75,
                "current_funding": 0.0001,
            },
        },
    }
    records = _parse(mod, msg)
    assert [(r["channel"], r["symbol"]) for r in records] == [
        ("ticker", "BTC-USD-PERP"),
        ("mark_price", "BTC-USD-PERP"),
        ("funding", "BTC-USD-PERP"),
    ]
    del msg["params"]["data"]["current_funding"]  # an option: no funding record
    assert [r["channel"] for r in _parse(mod, msg)] == ["ticker", "mark_price"]
    assert spec.channels["mark_price"].source == "ticker"
    assert spec.channels["mark_price"].topic is spec.channels["ticker"].topic
    assert spec.symbols.canonical("ETH-24SEP21-8000-P") == "ETH-USD-24SEP21-8000-P"
    assert spec.symbols.raw("ETH-USD-24SEP21-8000-P") == "ETH-24SEP21-8000-P"
    assert spec.symbols.canonical("ETH-24SEP21-8000-X") == "ETH-24SEP21-8000-X"  # [CP] only
    book = spec.rest.endpoints["book"]
    assert book.path == "/api/v2/order_book/{pair}"
    assert book.params("BTC-USD", "BTC-USD") == {"pair": "btcusd"}


def test_user_stream_bootstrap_keepalive_login_payload_and_topicless_channels() -> None:
    mod = _module("user_stream")
    spec = mod.SPEC
    boot = spec.bootstrap
    assert boot.covers("keyed") and not boot.covers("public") and not boot.covers("signed")
    assert boot.url({"listenKey": "K1"}, "ws://h/private") == "ws://h/private?listenKey=K1"
    assert (boot.keepalive_endpoint, boot.keepalive_interval) == ("extend_key", 1800)
    assert boot.keepalive_params({"listenKey": "K1"}) == {"listenKey": "K1"}
    assert spec.rest.endpoints["listen_key"].api_key
    assert not spec.rest.endpoints["listen_key"].signed
    assert spec.signing.key_header == "X-EXAMPLE-APIKEY"
    assert spec.login.sign_encoding == "hex" and spec.login.sign_path == ""
    assert spec.login.sign_payload("k", None, "17") == "apiKey=k&timestamp=17"
    assert spec.channels["orders"].topic is None and spec.channels["balances"].topic is None
    assert spec.channels["trades"].topic("BTCUSDT", "BTC-USDT") == "btcusdt@trade"
    msg = {"event": {"e": "balance", "B": [{"a": "BTC", "f": "0.5", "l": "0.25"}]}}
    (rec,) = mod.parse_balances(msg, 1, Context())
    assert (rec["total"], rec["available"]) == ("0.75", "0.5")


def test_each_endpoint_routes_only_the_rules_that_can_match_there() -> None:
    mod = _module("user_stream")
    spec = mod.SPEC
    assert set(spec.endpoint_routes) == {"public", "keyed", "signed"}
    order = {"e": "order", "s": "BTCUSDT", "i": 1, "S": "BUY", "X": "NEW"}
    trade = {"e": "trade", "s": "BTCUSDT", "p": "1", "q": "2"}
    login_reply = {"status": 200, "id": "1"}
    ctx = Context()
    assert spec.routes[spec.route(order, ctx)].channel == "orders"
    assert spec.routes[spec.endpoint_routes["keyed"](order, ctx)].channel == "orders"
    assert spec.endpoint_routes["public"](order, ctx) == -1  # not a public channel
    assert spec.endpoint_routes["public"](trade, ctx) == spec.route(trade, ctx)
    assert spec.routes[spec.endpoint_routes["signed"](login_reply, ctx)].kind == "login"
    assert spec.endpoint_routes["keyed"](login_reply, ctx) == -1  # no login there
