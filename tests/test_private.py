"""Private channels: OKX's descriptor-declared signed WebSocket login against the mock,
which checks the signature with the secret from the environment, then orders/fills/balances.
Credentials must never appear in logs or errors."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import pytest

from runtime.collector import Collector, Instance
from runtime.config import default_channels
from runtime.envelope import Envelope
from runtime.mock import MockExchange
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.session import Backoff
from runtime.signing import login_signer
from runtime.sinks import MemorySink
from runtime.spec import ExchangeSpec
from runtime.transport import make_transport

HERE = Path(__file__).parent / "fixtures" / "private"
CAPTURE = HERE / "okx_private.ndjson"
FAST = Backoff(initial=0.01, cap=0.05, stable_after=60)

KEY = "985d5b66-57ce-40fb-b714-afc0b9787083"
SECRET = "22582BD0CFF14C41EDBF1AB98506286D"
PASSPHRASE = "pass-Phrase-123"
WRONG_SECRET = "0123456789ABCDEF0123456789ABCDEF"


@pytest.fixture(scope="module")
def spec() -> ExchangeSpec:
    return load_spec("okx")


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OKX_API_KEY", KEY)
    monkeypatch.setenv("OKX_API_SECRET", SECRET)
    monkeypatch.setenv("OKX_API_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("OKX_TEST_WRONG_SECRET", WRONG_SECRET)


def _records(envs: list[Envelope], channel: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in e["record"].items() if k != "ts_recv"}
        for e in envs
        if e["kind"] not in ("gap", "dead_letter") and e["record"]["channel"] == channel
    ]


async def _run(
    spec: ExchangeSpec, *, secret_env: str | None = None, want: int = 0, timeout: float = 5.0
) -> tuple[MemorySink, Instance, MockExchange]:
    async with MockExchange(spec, CAPTURE) as mock:
        client = mock.client_spec()
        if secret_env is not None:
            assert client.signing is not None
            signing = dataclasses.replace(client.signing, secret_env=secret_env)
            client = dataclasses.replace(client, signing=signing)
        sink = MemorySink()
        pipeline = Pipeline(sink, batch_size=100, flush_interval=0.05, queue_batches=8)
        inst = Instance("test", client, ["BTC-USDT"], ["orders", "balances"])
        collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

        async def watch() -> None:
            while len([e for e in sink.envelopes if e["kind"] != "gap"]) < want:
                await asyncio.sleep(0.02)
            collector.request_stop()

        # want=0: run until every session ends by itself (a failed login) or the timeout
        watcher = asyncio.create_task(watch()) if want else None
        await collector.run(duration=timeout)
        if watcher is not None:
            watcher.cancel()
        return sink, inst, mock


def test_login_signature_matches_the_documented_formula(spec: ExchangeSpec, creds: None) -> None:
    assert spec.signing is not None and spec.login is not None
    values = login_signer(spec.signing, spec.login).login_values("1538054050")
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), b"1538054050GET/users/self/verify", hashlib.sha256).digest()
    ).decode()
    assert values == {
        "api_key": KEY,
        "passphrase": PASSPHRASE,
        "timestamp": "1538054050",
        "sign": expected,
    }
    # computed independently: printf %s "1538054050GET/users/self/verify" |
    #   openssl dgst -sha256 -hmac "$SECRET" -binary | base64
    assert expected == "+LdIr8lkkvhr5hoA3g9TMC0+uQJ849ftAcocA/ouu4M="
    message = spec.login.message(1, KEY, PASSPHRASE, "1538054050", expected)
    assert message == {
        "op": "login",
        "args": [
            {"apiKey": KEY, "passphrase": PASSPHRASE, "timestamp": "1538054050", "sign": expected}
        ],
    }


def test_good_login_streams_orders_fills_and_balances(spec: ExchangeSpec, creds: None) -> None:
    sink, inst, mock = asyncio.run(_run(spec, want=4))
    (session,) = inst.sessions
    assert session.error is None
    assert mock.stats.logins_accepted == 1 and mock.stats.logins_rejected == 0
    common = {"exchange": "okx", "symbol": "BTC-USDT", "symbol_raw": "BTC-USDT"}
    assert _records(sink.envelopes, "orders") == [
        {
            **common,
            "channel": "orders",
            "ts_exchange": 1654084334977000000,
            "seq": None,
            "order_id": "452197707845865472",
            "side": "sell",
            "status": "live",
            "client_order_id": "b15",
            "price": "31527.1",
            "size": "0.001",
            "filled_size": "0",
        },
        {
            **common,
            "channel": "orders",
            "ts_exchange": 1654084353264000000,
            "seq": None,
            "order_id": "452197707845865472",
            "side": "sell",
            "status": "filled",
            "client_order_id": "b15",
            "price": "31527.1",
            "size": "0.001",
            "filled_size": "0.001",
        },
    ]
    assert _records(sink.envelopes, "fills") == [
        {
            **common,
            "channel": "fills",
            "ts_exchange": 1654084353263000000,
            "seq": None,
            "trade_id": "242589207",
            "order_id": "452197707845865472",
            "side": "sell",
            "price": "31527.1",
            "size": "0.001",
            "fee": "0.02522168",
            "fee_currency": "USDT",
        }
    ]
    (balance,) = _records(sink.envelopes, "balances")
    assert balance["currency"] == "USDT"
    assert balance["total"] == "4992.890093622894"
    assert balance["available"] == "4834.317093622894"
    assert balance["ts_exchange"] == 1705449605015000000
    assert session.stats.unrecognized == 0 and session.stats.malformed == 0


def test_wrong_secret_is_rejected_and_never_shown(
    spec: ExchangeSpec, creds: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sink, inst, mock = asyncio.run(_run(spec, secret_env="OKX_TEST_WRONG_SECRET"))
    (session,) = inst.sessions
    assert session.state == "failed"
    assert session.error == "login rejected: 60009: Login failed."
    assert mock.stats.logins_rejected == 1 and mock.stats.logins_accepted == 0
    assert mock.stats.subscribes == 0  # nothing was subscribed after the failed login
    assert not [e for e in sink.envelopes if e["kind"] not in ("gap", "dead_letter")]
    assert "Login failed" in caplog.text
    for secret in (SECRET, WRONG_SECRET, PASSPHRASE, KEY):
        assert secret not in caplog.text
        assert secret not in (session.error or "")


def test_missing_credentials_fail_naming_the_variable_only(
    spec: ExchangeSpec, creds: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OKX_API_SECRET")
    _, inst, mock = asyncio.run(_run(spec))
    (session,) = inst.sessions
    assert session.state == "failed"
    assert session.error == "login: API secret missing: set the environment variable OKX_API_SECRET"
    assert mock.stats.logins_accepted == mock.stats.logins_rejected == 0


def test_subscribe_before_login_is_rejected_by_the_mock(spec: ExchangeSpec, creds: None) -> None:
    no_login = dataclasses.replace(spec, login=None)

    async def main() -> tuple[MemorySink, Instance, MockExchange]:
        async with MockExchange(spec, CAPTURE) as mock:
            client = dataclasses.replace(mock.client_spec(), login=None)
            sink = MemorySink()
            pipeline = Pipeline(sink, batch_size=100, flush_interval=0.05, queue_batches=8)
            inst = Instance("test", client, ["BTC-USDT"], ["orders"])
            collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)
            await collector.run(duration=5.0)
            return sink, inst, mock

    assert no_login.login is None
    sink, inst, mock = asyncio.run(main())
    (session,) = inst.sessions
    assert session.state == "failed"
    assert (session.error or "").startswith("orders/BTC-USDT: ")
    assert mock.stats.logins_accepted == mock.stats.logins_rejected == 0
    assert mock.stats.rejects_sent == 1


def test_private_channels_are_collected_only_when_named(spec: ExchangeSpec) -> None:
    public = [
        "trades",
        "book",
        "ticker",
        "funding",
        "open_interest",
        "mark_price",
        "liquidations",
        "candles",
    ]
    assert default_channels(spec) == public
    assert {"orders", "fills", "balances"} <= set(spec.channels)
    assert spec.channels["fills"].source == "orders"
