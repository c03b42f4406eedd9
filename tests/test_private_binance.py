"""Binance private channels against the mock exchange.

Spot: the WebSocket API's signed ``userDataStream.subscribe.signature`` (a descriptor-declared
login with a hex signature over ``apiKey=..&timestamp=..``), which the mock verifies.
USDⓈ-M futures: a listen key from ``POST /fapi/v1/listenKey`` (API key header, no signature)
before each connect, ``PUT`` keep-alive while connected, a new key after a failed keep-alive or
a ``listenKeyExpired`` event. Credentials never appear in logs or errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from runtime.collector import Collector, Instance
from runtime.envelope import Envelope
from runtime.mock import MockExchange
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.replay import replay_lines
from runtime.session import Backoff
from runtime.signing import login_signer
from runtime.sinks import MemorySink
from runtime.spec import Context, ExchangeSpec
from runtime.transport import make_transport

HERE = Path(__file__).parent / "fixtures" / "private"
SPOT_CAPTURE = HERE / "binance_private.ndjson"
FUTURES_CAPTURE = HERE / "binance_futures_private.ndjson"
FAST = Backoff(initial=0.01, cap=0.05, stable_after=60)
CHANNELS = ["orders", "fills", "balances"]

# The key and secret of Binance's signing examples (developers.binance.com, "SIGNED Endpoint
# security"); test values only.
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
WRONG_SECRET = "0" * 64
LISTEN_KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BINANCE_API_KEY", KEY)
    monkeypatch.setenv("BINANCE_API_SECRET", SECRET)
    monkeypatch.setenv("BINANCE_TEST_WRONG_SECRET", WRONG_SECRET)


def _records(envs: list[Envelope]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e["record"].items() if k != "ts_recv"}
        for e in envs
        if e["kind"] not in ("gap", "dead_letter")
    ]


def _replayed(exchange: str, capture: Path) -> list[dict[str, Any]]:
    """What ``mdgen replay`` makes of the capture (the reference for live runs)."""
    records, report = replay_lines(load_spec(exchange), capture.read_bytes().splitlines())
    out = [{k: v for k, v in rec.items() if k != "ts_recv"} for _, rec in records]
    assert report.clean
    return out


async def _collect(
    client: ExchangeSpec,
    *,
    want: int,
    timeout: float,
    rest_transport: httpx.AsyncBaseTransport | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> tuple[MemorySink, Instance]:
    sink = MemorySink()
    pipeline = Pipeline(sink, batch_size=100, flush_interval=0.05, queue_batches=8)
    inst = Instance("test", client, ["BTC-USDT"], CHANNELS)
    collector = Collector(
        [inst], make_transport("websockets"), pipeline, backoff=FAST, rest_transport=rest_transport
    )

    async def watch() -> None:
        while True:
            enough = len(_records(sink.envelopes)) >= want
            if enough and (stop_when is None or stop_when()):
                break
            await asyncio.sleep(0.02)
        collector.request_stop()

    watcher = asyncio.create_task(watch()) if want else None
    await collector.run(duration=timeout)
    if watcher is not None:
        watcher.cancel()
    return sink, inst


# -- spot: signed WebSocket API subscription -------------------------------------------------


def test_spot_signature_is_hex_hmac_of_sorted_parameters(creds: None) -> None:
    spec = load_spec("binance")
    assert spec.signing is not None and spec.login is not None
    values = login_signer(spec.signing, spec.login).login_values("1747385641636")
    payload = f"apiKey={KEY}&timestamp=1747385641636".encode()
    expected = hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()
    assert values["sign"] == expected
    assert spec.login.message(7, KEY, None, "1747385641636", expected) == {
        "id": "7",
        "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": KEY, "timestamp": 1747385641636, "signature": expected},
    }


def test_login_signing_matches_binances_published_websocket_example(creds: None) -> None:
    """The WebSocket API's documented HMAC example (order.place, developers.binance.com
    "SIGNED request security"), through the same login-signing path with its payload."""
    spec = load_spec("binance")
    assert spec.signing is not None and spec.login is not None
    documented = (
        "apiKey={key}&newOrderRespType=ACK&price=52000.00&quantity=0.01000000&recvWindow=100"
        "&side=SELL&symbol=BTCUSDT&timeInForce=GTC&timestamp={ts}&type=LIMIT"
    )
    login = dataclasses.replace(
        spec.login, sign_payload=lambda key, _, ts: documented.format(key=key, ts=ts)
    )
    values = login_signer(spec.signing, login).login_values("1645423376532")
    assert values["sign"] == "cc15477742bd704c29492d96c7ead9414dfd8e0ec4a00f947bb5bb454ddbd08a"


def test_spot_signed_subscription_streams_account_events(creds: None) -> None:
    spec = load_spec("binance")

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, SPOT_CAPTURE) as mock:
            sink, inst = await _collect(mock.client_spec(), want=5, timeout=5.0)
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    (session,) = inst.sessions
    assert session.error is None
    assert mock.stats.logins_accepted == 1 and mock.stats.logins_rejected == 0
    assert mock.stats.subscribes == 0  # the signed subscription is all it takes
    assert _records(sink.envelopes) == _replayed("binance", SPOT_CAPTURE)
    kinds = [(r["channel"], r.get("status") or r.get("currency")) for r in _records(sink.envelopes)]
    assert kinds == [
        ("orders", "NEW"),
        ("orders", "FILLED"),
        ("fills", None),
        ("balances", "ETH"),
        ("balances", "BTC"),
    ]
    btc = _records(sink.envelopes)[-1]
    assert (btc["total"], btc["available"]) == ("1.00000000", "0.89735590")  # free + locked
    assert session.stats.unrecognized == 0 and session.stats.malformed == 0
    assert session.stats.frames["info"] == 1  # balanceUpdate


def test_spot_wrong_secret_is_rejected_and_never_shown(
    creds: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = load_spec("binance")

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, SPOT_CAPTURE) as mock:
            client = mock.client_spec()
            assert client.signing is not None
            signing = dataclasses.replace(client.signing, secret_env="BINANCE_TEST_WRONG_SECRET")
            sink, inst = await _collect(
                dataclasses.replace(client, signing=signing), want=0, timeout=5.0
            )
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    (session,) = inst.sessions
    assert session.state == "failed"
    assert session.error == "login rejected: -1022: Signature for this request is not valid."
    assert mock.stats.logins_rejected == 1 and mock.stats.logins_accepted == 0
    assert not _records(sink.envelopes)
    for secret in (SECRET, WRONG_SECRET, KEY):
        assert secret not in caplog.text
        assert secret not in (session.error or "")


# -- futures: listen key via REST, keep-alive -------------------------------------------------


class ListenKeyServer:
    """An httpx transport standing in for fapi.binance.com's listen-key endpoints."""

    def __init__(self, *, put_status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.put_status = put_status
        self.keys = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/fapi/v1/listenKey":
            return httpx.Response(404, json={"code": -1, "msg": "no such path"})
        if request.method == "POST":
            self.keys += 1
            return httpx.Response(200, json={"listenKey": f"{LISTEN_KEY}{self.keys}"})
        if request.method == "PUT":
            if self.put_status != 200:
                body = {"code": -1125, "msg": "This listenKey does not exist."}
                return httpx.Response(self.put_status, json=body)
            return httpx.Response(200, json={"listenKey": f"{LISTEN_KEY}{self.keys}"})
        return httpx.Response(405, json={"code": -1, "msg": "method"})

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]


def _futures_client(mock: MockExchange, keepalive: float) -> ExchangeSpec:
    client = mock.client_spec()
    assert client.bootstrap is not None
    boot = dataclasses.replace(client.bootstrap, keepalive_interval=keepalive)
    return dataclasses.replace(client, bootstrap=boot)


def test_futures_listen_key_bootstraps_the_user_stream(creds: None) -> None:
    spec = load_spec("binance_futures")
    server = ListenKeyServer()

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, FUTURES_CAPTURE) as mock:
            sink, inst = await _collect(
                _futures_client(mock, keepalive=0.1),
                want=5,
                timeout=5.0,
                rest_transport=httpx.MockTransport(server),
                stop_when=lambda: server.methods().count("PUT") >= 2,
            )
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    (session,) = inst.sessions
    assert session.error is None
    assert _records(sink.envelopes) == _replayed("binance_futures", FUTURES_CAPTURE)
    # one key, then keep-alives; only the API key header, no signature and no timestamp
    methods = server.methods()
    assert methods[0] == "POST" and methods.count("POST") == 1 and methods.count("PUT") >= 2
    for request in server.requests:
        assert request.headers["X-MBX-APIKEY"] == KEY
        assert request.url.query == b""
    assert session.stats.keepalive_calls >= 2 and session.stats.keepalive_failures == 0
    assert mock.stats.paths == [f"/private/ws?listenKey={LISTEN_KEY}1"]
    assert mock.stats.subscribes == 0
    assert session.stats.frames["info"] == 1  # ACCOUNT_CONFIG_UPDATE


def test_futures_failed_keepalive_renews_the_listen_key(
    creds: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = load_spec("binance_futures")
    server = ListenKeyServer(put_status=400)

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, FUTURES_CAPTURE) as mock:
            sink, inst = await _collect(
                _futures_client(mock, keepalive=0.1),
                want=5,
                timeout=5.0,
                rest_transport=httpx.MockTransport(server),
                stop_when=lambda: len(mock.stats.paths) >= 2,
            )
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main())
    (session,) = inst.sessions
    assert session.stats.keepalive_failures >= 1
    assert session.stats.reconnects["keepalive_failed"] >= 1
    # a fresh key for the next connection
    assert mock.stats.paths[:2] == [
        f"/private/ws?listenKey={LISTEN_KEY}1",
        f"/private/ws?listenKey={LISTEN_KEY}2",
    ]
    gaps = [e["record"] for e in sink.envelopes if e["kind"] == "gap"]
    assert gaps and {g["reason"] for g in gaps} == {"keepalive_failed"}
    assert "-1125" in caplog.text
    assert KEY not in caplog.text and SECRET not in caplog.text


def test_futures_expired_listen_key_is_a_reconnect_notice() -> None:
    """``listenKeyExpired`` routes as ``reconnect``: the session then connects anew, which
    bootstraps a fresh key (the mock never replays reconnect notices; the session's handling
    of them is tested in test_session.py)."""
    expired = {"e": "listenKeyExpired", "E": 1576653824250, "listenKey": LISTEN_KEY}
    line = {
        "recv_ts": 1795000000.3,
        "kind": "ws",
        "conn": "ws.1",
        "data": orjson.dumps(expired).decode(),
    }
    records, report = replay_lines(load_spec("binance_futures"), [orjson.dumps(line)])
    assert list(records) == []
    assert report.frames == {"reconnect": 1} and report.clean


def test_futures_without_credentials_fails_naming_the_variable(
    creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BINANCE_API_KEY")
    spec = load_spec("binance_futures")
    server = ListenKeyServer()

    async def main() -> Instance:
        async with MockExchange(spec, FUTURES_CAPTURE) as mock:
            _, inst = await _collect(
                _futures_client(mock, keepalive=60.0),
                want=0,
                timeout=3.0,
                rest_transport=httpx.MockTransport(server),
            )
            return inst

    inst = asyncio.run(main())
    (session,) = inst.sessions
    assert session.state == "failed"
    assert (
        session.error == "bootstrap: API key missing: set the environment variable BINANCE_API_KEY"
    )
    assert server.requests == []


def test_a_quiet_user_stream_is_not_stale_but_a_quiet_market_feed_is() -> None:
    """Health rule 2 skips connections that carry only channels without a topic."""
    from runtime.ops import ObservedSink
    from runtime.ops.health import Monitor
    from runtime.session import Session
    from runtime.subscriptions import plan_connections

    spec = load_spec("binance")
    pipeline = Pipeline(MemorySink(), batch_size=10, flush_interval=1.0, queue_batches=2)
    inst = Instance("binance", spec, ["BTC-USDT"], ["trades", "orders", "balances"])
    collector = Collector([inst], make_transport("websockets"), pipeline)
    for plan in plan_connections(spec, inst.name, inst.symbols, inst.channels):
        inst.sessions.append(Session(spec, inst.name, plan, collector.transport, pipeline))
    for session in inst.sessions:
        session.state = "streaming"
    now = [1000.0]
    monitor = Monitor(collector, ObservedSink(MemorySink()), stale_after=60, clock=lambda: now[0])
    now[0] += 3600
    healthy, reasons = monitor.evaluate(now[0], {"healthy": True})
    assert not healthy
    assert reasons == [
        "connection binance/public#0 has delivered no data for 3600.0s (stale_after 60s)"
    ]


def test_futures_listen_key_from_the_mock_needs_the_api_key(
    creds: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The mock's REST side serves the captured listen key only with the right key header;
    a refused key (401) ends the session, which does not retry bad credentials."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("BINANCE_TEST_WRONG_KEY", "not-" + KEY)
    spec = load_spec("binance_futures")

    async def main(key_env: str) -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, FUTURES_CAPTURE) as mock:
            client = mock.client_spec()
            assert client.signing is not None
            signing = dataclasses.replace(client.signing, key_env=key_env)
            client = dataclasses.replace(client, signing=signing)
            want = 5 if key_env == "BINANCE_API_KEY" else 0
            sink, inst = await _collect(client, want=want, timeout=5.0)
            return sink, inst, mock

    sink, inst, mock = asyncio.run(main("BINANCE_API_KEY"))
    assert _records(sink.envelopes) == _replayed("binance_futures", FUTURES_CAPTURE)
    assert mock.stats.rest_refused == 0
    assert mock.stats.rest_requests[0] == "/fapi/v1/listenKey"

    sink, inst, mock = asyncio.run(main("BINANCE_TEST_WRONG_KEY"))
    (session,) = inst.sessions
    assert session.state == "failed"
    assert session.error is not None and session.error.startswith("bootstrap refused:")
    assert "status 401" in session.error
    assert mock.stats.rest_refused == 1 and mock.stats.paths == []
    assert not _records(sink.envelopes)
    assert KEY not in caplog.text and SECRET not in caplog.text


def test_user_stream_rules_are_tried_on_user_connections_only() -> None:
    spec = load_spec("binance")
    ctx = Context()
    ended = {"subscriptionId": 0, "event": {"e": "eventStreamTerminated", "E": 1}}
    trade = {"stream": "btcusdt@trade", "data": {"e": "trade", "s": "BTCUSDT"}}
    assert spec.routes[spec.endpoint_routes["user"](ended, ctx)].kind == "reconnect"
    assert spec.endpoint_routes["public"](ended, ctx) == -1  # control.endpoints = ["user"]
    assert spec.routes[spec.endpoint_routes["public"](trade, ctx)].channel == "trades"
    assert spec.endpoint_routes["user"](trade, ctx) == -1
    assert spec.route(ended, ctx) == spec.endpoint_routes["user"](ended, ctx)  # replay: all
