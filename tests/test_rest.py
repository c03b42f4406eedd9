"""RestClient over httpx.MockTransport (no network), and the rate limiters, on a fake clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import traceback
import types
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from typing import Any, TypeVar

import httpx
import pytest

import generated.binance
from runtime.ratelimit import RateLimiter, WeightLimiter
from runtime.rest import RestClient, RestError, parse_retry_after
from runtime.signing import Signer, SigningParams
from runtime.spec import BootstrapSpec, RestEndpointSpec, RestSpec, SigningSpec
from tests.conftest import FEATURES, compile_fixture, load_module

T = TypeVar("T")
Handler = Callable[[httpx.Request], httpx.Response]

KEY, SECRET, PASSPHRASE = "key-1234567890abcdef", "secret-0987654321fedcba", "pass-phrase-42"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class FakeTime:
    """A clock that only moves when something sleeps on it; records the sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def two_hosts(**endpoints: RestEndpointSpec) -> RestSpec:
    eps = endpoints or {"ping": RestEndpointSpec("ping", "GET", "/ping", 1)}
    return RestSpec(base_urls=("https://a.test", "https://b.test"), endpoints=eps)


def client(spec: RestSpec, handler: Handler, ft: FakeTime, **kwargs: Any) -> RestClient:
    kwargs.setdefault("rng", lambda: 1.0)
    return RestClient(
        spec,
        transport=httpx.MockTransport(handler),
        sleep=ft.sleep,
        clock=ft,
        wall_clock=ft,
        **kwargs,
    )


def scripted(*replies: httpx.Response | type[httpx.TransportError]) -> tuple[Handler, list[str]]:
    """A handler answering with ``replies`` in turn (an exception class is raised); URLs seen."""
    seen: list[str] = []
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, httpx.Response):
            return reply
        raise reply("boom", request=request)

    return handler, seen


OK = httpx.Response(200, json={"ok": True})


# -- URL building, replies ----------------------------------------------------------------------


def test_url_from_generated_params_and_explicit_override() -> None:
    ft = FakeTime()
    spec = generated.binance.SPEC.rest
    assert spec is not None
    handler, seen = scripted(httpx.Response(200, json={"lastUpdateId": 1, "bids": [], "asks": []}))
    rc = client(spec, handler, ft)
    reply = run(rc.call("depth", raw="BTCUSDT", symbol="BTC-USDT", params={"limit": 5}))
    assert seen == ["https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5"]
    assert reply.status == 200 and reply.attempts == 1
    assert reply.body == {"lastUpdateId": 1, "bids": [], "asks": []}
    assert reply.url == seen[0]
    assert rc.stats.requests == {"200": 1}
    assert rc.stats.retries == 0 and ft.sleeps == []


def test_text_body_and_param_values() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(200, text="pong"))
    rc = client(two_hosts(), handler, ft)
    reply = run(rc.call("ping", params={"flag": True, "none": None, "n": 1.5, "s": "a b"}))
    assert reply.body == "pong"
    assert seen == ["https://a.test/ping?flag=true&n=1.5&s=a%20b"]


def test_json_body_for_post() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        assert request.url.query == b""
        assert request.headers["Content-Type"] == "application/json"
        return OK

    spec = two_hosts(new=RestEndpointSpec("new", "POST", "/new", 1))
    rc = client(spec, handler, FakeTime(), post_params="json")
    run(rc.call("new", params={"a": "1", "b": 2}))
    assert bodies == [b'{"a":"1","b":"2"}']


def test_unknown_endpoint_and_missing_signer() -> None:
    spec = two_hosts(acct=RestEndpointSpec("acct", "GET", "/acct", 1, signed=True))
    rc = client(spec, scripted(OK)[0], FakeTime())
    with pytest.raises(KeyError, match="known: acct"):
        run(rc.call("nope"))
    with pytest.raises(ValueError, match="no signer"):
        run(rc.call("acct"))


# -- retries ------------------------------------------------------------------------------------


def test_429_honours_retry_after_seconds() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "3"}), OK)
    rc = client(two_hosts(), handler, ft)
    reply = run(rc.call("ping"))
    assert reply.status == 200 and reply.attempts == 2
    assert ft.sleeps == [3.0]
    assert reply.elapsed == 3.0
    # Rate limits are per IP: no failover on 429.
    assert seen == ["https://a.test/ping", "https://a.test/ping"]
    assert rc.stats.requests == {"429": 1, "200": 1}
    assert rc.stats.retries == 1 and rc.stats.failovers == 0


def test_429_honours_retry_after_http_date() -> None:
    ft = FakeTime(start=1_700_000_000.0)
    when = formatdate(ft.now + 7, usegmt=True)
    handler, _ = scripted(httpx.Response(429, headers={"Retry-After": when}), OK)
    run(client(two_hosts(), handler, ft).call("ping"))
    assert ft.sleeps == [7.0]


def test_418_backs_off_with_jitter() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(418), httpx.Response(418), OK)
    rc = client(two_hosts(), handler, ft, rng=lambda: 0.5, backoff_base=0.5)
    assert run(rc.call("ping")).attempts == 3
    # Full jitter: rng() * min(cap, base * 2^(n-1)).
    assert ft.sleeps == [0.25, 0.5]
    assert {u.split("/")[2] for u in seen} == {"a.test"}


def test_418_retry_after_beyond_max_gives_up_at_once() -> None:
    ft = FakeTime()
    handler, _ = scripted(httpx.Response(418, headers={"Retry-After": "7200"}, text="banned"))
    rc = client(two_hosts(), handler, ft, max_retry_after=300)
    with pytest.raises(RestError, match="7200s") as info:
        run(rc.call("ping"))
    assert info.value.status == 418 and info.value.attempts == 1
    assert info.value.body_excerpt == "banned"
    assert ft.sleeps == []


def test_503_twice_then_success_rotates_base_urls() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(503), httpx.Response(502), OK)
    rc = client(two_hosts(), handler, ft)
    reply = run(rc.call("ping"))
    assert reply.attempts == 3 and reply.url == "https://a.test/ping"
    assert seen == ["https://a.test/ping", "https://b.test/ping", "https://a.test/ping"]
    assert ft.sleeps == [0.5, 1.0]
    assert rc.stats.failovers == 2 and rc.stats.retries == 2
    assert rc.stats.requests == {"503": 1, "502": 1, "200": 1}


def test_connect_error_fails_over_to_second_base_url() -> None:
    ft = FakeTime()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        if request.url.host == "a.test":
            raise httpx.ConnectError("connection refused", request=request)
        return OK

    rc = client(two_hosts(), handler, ft)
    reply = run(rc.call("ping"))
    assert reply.url == "https://b.test/ping" and reply.attempts == 2
    assert rc.stats.failovers == 1
    assert rc.stats.requests == {"ConnectError": 1, "200": 1}
    # The working base URL stays current for later calls.
    run(rc.call("ping"))
    assert seen == ["a.test", "b.test", "b.test"]
    assert rc.base_url == "https://b.test"


def test_gives_up_after_max_retries() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(503, text="  service\n unavailable  "))
    rc = client(two_hosts(), handler, ft, max_retries=3, backoff_cap=0.75)
    with pytest.raises(RestError) as info:
        run(rc.call("ping"))
    err = info.value
    assert len(seen) == 4 and err.attempts == 4
    assert err.status == 503 and err.body_excerpt == "service unavailable"
    assert err.url == "https://b.test/ping"
    assert "failed after 4 attempt(s)" in str(err) and "service unavailable" in str(err)
    assert ft.sleeps == [0.5, 0.75, 0.75]
    assert rc.stats.giveups == 1 and rc.stats.retries == 3


def test_gives_up_on_connection_errors() -> None:
    handler, _ = scripted(httpx.ConnectTimeout)
    rc = client(two_hosts(), handler, FakeTime(), max_retries=1)
    with pytest.raises(RestError) as info:
        run(rc.call("ping"))
    assert info.value.status is None and "ConnectTimeout" in info.value.body_excerpt
    assert rc.stats.requests == {"ConnectTimeout": 2}


def test_client_error_is_not_retried() -> None:
    ft = FakeTime()
    handler, seen = scripted(httpx.Response(400, json={"code": -1100, "msg": "bad"}))
    with pytest.raises(RestError, match="refused") as info:
        run(client(two_hosts(), handler, ft).call("ping"))
    assert info.value.status == 400 and '"code":-1100' in info.value.body_excerpt
    assert len(seen) == 1 and ft.sleeps == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1445412470.0) == expected


# -- weights ------------------------------------------------------------------------------------


def test_endpoint_weight_is_limited() -> None:
    ft = FakeTime()
    spec = RestSpec(
        base_urls=("https://a.test",),
        rate_limit_weight=100,
        rate_limit_seconds=10,
        endpoints={"heavy": RestEndpointSpec("heavy", "GET", "/heavy", 40)},
    )
    rc = client(spec, scripted(OK)[0], ft)
    replies = [run(rc.call("heavy")) for _ in range(3)]
    assert [r.elapsed for r in replies] == [0.0, 0.0, 10.0]
    assert rc.stats.rate_limit_wait == 10.0
    assert ft.sleeps == [10.0]


def test_weight_limiter_waits_for_the_oldest_grant() -> None:
    ft = FakeTime()
    lim = WeightLimiter(10, 1.0, clock=ft, sleep=ft.sleep)

    async def go() -> list[float]:
        waits = [await lim.acquire(6)]
        ft.now += 0.25
        waits.append(await lim.acquire(4))
        waits.append(await lim.acquire(5))  # needs the 6 granted at t0 gone: t0 + 1
        return waits

    assert run(go()) == [0.0, 0.0, 0.75]
    assert lim.used == 9


def test_weight_limiter_never_exceeds_capacity_in_any_window() -> None:
    ft = FakeTime()
    lim = WeightLimiter(20, 3.0, clock=ft, sleep=ft.sleep)
    rnd = random.Random(7)
    grants: list[tuple[float, int]] = []

    async def worker(weights: list[int]) -> None:
        for w in weights:
            await lim.acquire(w)
            grants.append((ft.now, w))
            ft.now += rnd.choice([0.0, 0.0, 0.1, 0.7])

    async def go() -> None:
        jobs = [[rnd.randint(1, 20) for _ in range(15)] for _ in range(4)]
        await asyncio.gather(*(worker(j) for j in jobs))

    run(go())
    assert len(grants) == 60
    for t, _ in grants:
        # Same arithmetic as the limiter: a grant leaves the window when s + per <= t.
        assert sum(w for s, w in grants if s <= t < s + 3.0) <= 20


def test_weight_limiter_rejects_impossible_weights() -> None:
    lim = WeightLimiter(10, 1.0)
    with pytest.raises(ValueError, match="exceeds"):
        run(lim.acquire(11))
    assert run(lim.acquire(0)) == 0.0
    with pytest.raises(ValueError):
        WeightLimiter(0, 1.0)


def test_rate_limiter_spaces_messages() -> None:
    ft = FakeTime()
    lim = RateLimiter(5, clock=ft, sleep=ft.sleep)

    async def go() -> list[float]:
        waits = [await lim.acquire() for _ in range(3)]
        ft.now += 10
        waits.append(await lim.acquire())
        return waits

    assert run(go()) == pytest.approx([0.0, 0.2, 0.2, 0.0])


# -- signing ------------------------------------------------------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("T_KEY", KEY)
    monkeypatch.setenv("T_SECRET", SECRET)
    monkeypatch.setenv("REST_BOOTSTRAP_API_KEY", KEY)
    monkeypatch.setenv("REST_BOOTSTRAP_API_SECRET", SECRET)
    monkeypatch.setenv("REST_BOOTSTRAP_API_PASSPHRASE", PASSPHRASE)
    return monkeypatch


def test_signed_hex_request(env: pytest.MonkeyPatch) -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"balances": []})

    signer = Signer(
        SigningSpec("hmac_sha256_hex", "T_KEY", "T_SECRET"),
        SigningParams(key_header="X-MBX-APIKEY"),
        clock=lambda: 1499827319.559,
    )
    spec = two_hosts(acct=RestEndpointSpec("acct", "GET", "/api/v3/account", 20, signed=True))
    rc = client(spec, handler, FakeTime(), signer=signer)
    reply = run(rc.call("acct", params={"omitZeroBalances": True}))

    (req,) = requests
    unsigned = "omitZeroBalances=true&timestamp=1499827319559"
    expected = hmac.new(SECRET.encode(), unsigned.encode(), hashlib.sha256).hexdigest()
    assert req.url.query.decode() == f"{unsigned}&signature={expected}"
    assert req.headers["X-MBX-APIKEY"] == KEY
    assert expected not in reply.url and "signature=<redacted>" in reply.url


def fixture_module() -> types.ModuleType:
    path = FEATURES / "rest_bootstrap.toml"
    return load_module("rest_bootstrap", compile_fixture(path))


def test_signed_base64_request_from_fixture(env: pytest.MonkeyPatch) -> None:
    spec = fixture_module().SPEC
    assert spec.rest is not None and spec.signing is not None
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json={"code": "200000", "data": []})

    signer = Signer(spec.signing, clock=lambda: 1700000000.123)
    rc = client(spec.rest, handler, FakeTime(), signer=signer)
    reply = run(rc.call("account", params={"currency": "BTC"}))
    assert reply.body == {"code": "200000", "data": []}

    (req,) = requests
    assert str(req.url) == "https://api.example.invalid/api/v1/accounts?currency=BTC"
    pre = b"1700000000123GET/api/v1/accounts?currency=BTC"
    expected = base64.b64encode(hmac.new(SECRET.encode(), pre, hashlib.sha256).digest()).decode()
    assert req.headers["X-API-SIGN"] == expected
    assert req.headers["X-API-KEY"] == KEY
    assert req.headers["X-API-TIMESTAMP"] == "1700000000123"
    assert req.headers["X-API-PASSPHRASE"] == PASSPHRASE


def test_secrets_absent_from_repr_and_errors(env: pytest.MonkeyPatch) -> None:
    spec = fixture_module().SPEC
    assert spec.rest is not None and spec.signing is not None

    def handler(request: httpx.Request) -> httpx.Response:
        # A server that echoes the credentials it got must not get them into our errors.
        echoed = f"invalid key {request.headers['X-API-KEY']} {request.headers['X-API-PASSPHRASE']}"
        return httpx.Response(401, text=echoed)

    signer = Signer(spec.signing)
    rc = client(spec.rest, handler, FakeTime(), signer=signer)
    with pytest.raises(RestError) as info:
        run(rc.call("account"))
    texts = [
        str(info.value),
        repr(info.value),
        "".join(traceback.format_exception(info.value)),
        repr(rc),
        repr(signer),
        repr(vars(signer)),
    ]
    for text in texts:
        for secret in (KEY, SECRET, PASSPHRASE):
            assert secret not in text
    assert "invalid key <redacted> <redacted>" in info.value.body_excerpt


def test_signature_redacted_from_error_url(env: pytest.MonkeyPatch) -> None:
    signer = Signer(SigningSpec("hmac_sha256_hex", "T_KEY", "T_SECRET"))
    spec = two_hosts(acct=RestEndpointSpec("acct", "GET", "/acct", 1, signed=True))
    handler, seen = scripted(httpx.Response(403, text="forbidden"))
    with pytest.raises(RestError) as info:
        run(client(spec, handler, FakeTime(), signer=signer).call("acct"))
    signature = seen[0].split("signature=")[1]
    assert signature not in str(info.value)
    assert info.value.url.endswith("&signature=<redacted>")


# -- bootstrap ----------------------------------------------------------------------------------

BULLET = {
    "code": "200000",
    "data": {
        "token": "2neAiuYvAU61ZDXANAGAsiL4-iAExhsBXZxftpOeh_55i3Ysy2q2LEsEWU64mdzUOPusi34M_wGo",
        "instanceServers": [
            {
                "endpoint": "wss://ws-api-spot.kucoin.com/",
                "encrypt": True,
                "protocol": "websocket",
                "pingInterval": 18000,
                "pingTimeout": 10000,
            }
        ],
    },
}


def test_bootstrap_with_fixture_module() -> None:
    spec = fixture_module().SPEC
    assert spec.rest is not None and spec.bootstrap is not None
    methods: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        methods.append(f"{request.method} {request.url}")
        return httpx.Response(200, json=BULLET)

    reply = run(client(spec.rest, handler, FakeTime()).bootstrap(spec.bootstrap))
    url, ping = reply.url, reply.ping_interval
    token = BULLET["data"]["token"]  # type: ignore[index]
    assert url == f"wss://ws-api-spot.kucoin.com/?token={token}"
    assert ping == 18.0
    assert methods == ["POST https://api.example.invalid/api/v1/bullet-public"]


def test_bootstrap_reply_without_fields() -> None:
    spec = fixture_module().SPEC
    assert spec.rest is not None and spec.bootstrap is not None
    handler, _ = scripted(httpx.Response(200, json={"code": "400100", "msg": "nope"}))
    with pytest.raises(RestError, match="bootstrap reply of 'bullet'") as info:
        run(client(spec.rest, handler, FakeTime()).bootstrap(spec.bootstrap))
    assert "400100" in info.value.body_excerpt


def test_bootstrap_without_ping_interval() -> None:
    boot = BootstrapSpec(endpoint="ping", url=lambda m, base: base + str(m["key"]))
    handler, _ = scripted(httpx.Response(200, json={"key": "abc"}))
    reply = run(client(two_hosts(), handler, FakeTime()).bootstrap(boot, "wss://x.test/ws/"))
    assert (reply.url, reply.ping_interval, reply.body) == (
        "wss://x.test/ws/abc",
        None,
        {"key": "abc"},
    )
