"""Descriptor schema v1.4 as pydantic models. Strings typed ``Expr`` hold DSL expressions."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION = "1.4"

Expr = Annotated[str, "dsl"]
"""A DSL expression (see docs/dsl-reference.md); parsed and checked by the compiler."""

Ident = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
EnvVar = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]*$")]
Url = Annotated[str, StringConstraints(pattern=r"^(wss?|https?)://[^\s]+$")]

ChannelKind = Literal[
    "trades",
    "book",
    "ticker",
    "candles",
    "funding",
    "open_interest",
    "mark_price",
    "liquidations",
    "orders",
    "fills",
    "balances",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExchangeInfo(_Model):
    """Who the exchange is."""

    id: Ident
    name: str
    market: Literal["spot", "derivatives", "mixed"] = "spot"
    docs: list[str] = []
    aliases: list[Ident] = []
    """Former ids of the exchange (e.g. a capture folder recorded under an old name)."""


class WsEndpoint(_Model):
    """One WebSocket endpoint: a failover list of URLs tried in order."""

    urls: list[Url] = Field(min_length=1)
    compression: Literal["none", "gzip", "deflate"] = "none"
    max_streams: int | None = Field(default=None, ge=1)
    max_outbound_per_second: float | None = Field(default=None, gt=0)
    idle_timeout: float = Field(default=30.0, gt=0)
    max_lifetime: float | None = Field(default=None, gt=0)


class Subscribe(_Model):
    """How subscriptions are sent: messages built from topics, or streams embedded in the URL."""

    mode: Literal["message", "url"] = "message"
    group: Literal["all", "key", "symbol"] = "all"
    chunk: int = Field(default=0, ge=0)
    message: Expr | None = None
    url: Expr | None = None
    interval: float = Field(default=0.0, ge=0)


class Ack(_Model):
    """Which replies acknowledge a subscription and how they are matched to requests."""

    match: Expr
    per: Literal["message", "topic"] = "message"
    id: Expr | None = None
    key: Expr | None = None
    ok: Expr | None = None
    reason: Expr | None = None
    timeout: float = Field(default=10.0, gt=0)
    bind_key: Expr | None = None
    bind_value: Expr | None = None


class ErrorRule(_Model):
    """Messages the exchange sends to report an error."""

    match: Expr
    reason: Expr | None = None
    id: Expr | None = None


class ClientPing(_Model):
    interval: float = Field(gt=0)
    message: Expr


class ServerPing(_Model):
    match: Expr
    reply: Expr


class Keepalive(_Model):
    """Keepalive in its three forms."""

    client_ping: ClientPing | None = None
    server_ping: ServerPing | None = None
    pong: Expr | None = None
    protocol_ping_interval: float | None = Field(default=None, gt=0)


class Control(_Model):
    """Messages that carry no market data but are expected."""

    heartbeat: Expr | None = None
    info: Expr | None = None
    reconnect: Expr | None = None
    endpoints: list[Ident] = []
    """The WebSocket endpoints whose messages these rules apply to (empty: all of them)."""


class BootstrapKeepalive(_Model):
    """A REST call repeated every ``interval`` seconds while a bootstrapped connection lives
    (e.g. extending a listen key); a failed call ends the connection, which bootstraps anew."""

    endpoint: Ident
    interval: float = Field(gt=0)
    params: Expr | None = None
    """Request parameters built from the bootstrap reply (``$``)."""


class Bootstrap(_Model):
    """A REST call made before connecting; its reply gives the URL to connect to."""

    endpoint: Ident
    url: Expr
    """The URL from the reply (``$``); ``base`` is the endpoint's own URL."""
    ping_interval: Expr | None = None
    endpoints: list[Ident] = []
    """The WebSocket endpoints that bootstrap (empty: all of them)."""
    keepalive: BootstrapKeepalive | None = None


class Login(_Model):
    """A signed login sent after connecting to ``endpoints``, before subscribing; subscribing
    waits for its reply. Credentials come from the env vars named in ``[signing]``."""

    endpoints: list[Ident] = Field(min_length=1)
    message: Expr
    """The login message; variables ``api_key``, ``passphrase``, ``timestamp``, ``sign``,
    ``req_id``. ``sign`` is base64(HMAC-SHA256(secret, timestamp + sign_method + sign_path))."""
    match: Expr
    """Which reply answers the login (an ``[websocket.error]`` reply while waiting fails it)."""
    ok: Expr | None = None
    reason: Expr | None = None
    timeout: float = Field(default=10.0, gt=0)
    sign_method: Literal["GET", "POST"] = "GET"
    sign_path: str | None = Field(default=None, pattern=r"^/")
    sign_payload: Expr | None = None
    """What ``sign`` covers when it is not ``timestamp + sign_method + sign_path``: an
    expression over ``api_key``, ``passphrase`` and ``timestamp``."""
    sign_encoding: Literal["base64", "hex"] = "base64"
    timestamp: Literal["s", "ms", "iso_ms"] = "s"


class WebSocket(_Model):
    endpoints: dict[Ident, WsEndpoint] = Field(min_length=1)
    subscribe: Subscribe
    ack: Ack | None = None
    error: ErrorRule | None = None
    keepalive: Keepalive = Keepalive()
    control: Control = Control()
    bootstrap: Bootstrap | None = None
    login: Login | None = None
    on_connect: list[Expr] = []
    """Messages sent in order right after each connect, before subscribing."""


class Parse(_Model):
    """How one message becomes records: bindings, optional fan-out, filter, record fields."""

    let: dict[Ident, Expr] = {}
    each: Expr | None = None
    where: Expr | None = None
    fields: dict[Ident, Expr]


class BookSync(_Model):
    """Order-book sync rules (enforced by the runtime's book engine)."""

    snapshot: Literal["first_message", "rest", "ws_request", "every_message", "channel"] = (
        "first_message"
    )
    rest_endpoint: Ident | None = None
    request: Expr | None = None
    """``ws_request``: the request message (variables ``raw``, ``symbol``, ``req_id``)."""
    snapshot_channel: Ident | None = None
    """``channel``: the book channel whose records are this channel's snapshots."""
    sequence: Literal["none", "contiguous", "straddle", "prev_seq", "monotonic"] = "none"
    checksum: Literal["none", "okx_crc32", "kraken_crc32", "bitfinex_crc32"] = "none"
    checksum_depth: int | None = Field(default=None, ge=1)
    depth: int | None = Field(default=None, ge=1)


class AlsoChannel(Parse):
    """A channel without a subscription of its own: it parses its parent channel's messages."""

    kind: ChannelKind


class Channel(Parse):
    """One market-data channel: how to subscribe, how to recognise and parse its messages."""

    kind: ChannelKind
    endpoint: Ident | None = None
    topic: Expr | None = None
    """None: nothing is subscribed; the channel's messages come once the connection is set up
    (a bootstrapped URL or a login)."""
    for_symbols: Expr | None = None
    """Which symbols the channel exists for (``raw``, ``symbol``); others are not subscribed
    (e.g. funding rates for perpetuals only)."""
    key: Expr | None = None
    ack_key: Expr | None = None
    match: Expr
    sync: BookSync | None = None
    also: dict[Ident, AlsoChannel] = {}


class RestEndpoint(_Model):
    method: Literal["GET", "POST", "PUT", "DELETE"] = "GET"
    path: str = Field(pattern=r"^/")
    params: Expr | None = None
    weight: int = Field(default=1, ge=0)
    signed: bool = False
    api_key: bool = False
    """Send the API key header (``[signing] key_header``) without signing the request."""
    channel: Ident | None = None
    parse: Parse | None = None


class RateLimit(_Model):
    weight: int = Field(ge=1)
    per_seconds: float = Field(gt=0)


class Rest(_Model):
    base_urls: list[Url] = Field(min_length=1)
    rate_limit: RateLimit | None = None
    time_endpoint: Ident | None = None
    endpoints: dict[Ident, RestEndpoint] = {}


class Signing(_Model):
    scheme: Literal["hmac_sha256_hex", "hmac_sha256_base64"]
    key_env: EnvVar
    secret_env: EnvVar
    passphrase_env: EnvVar | None = None
    key_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")
    """HTTP header that carries the API key (default ``X-API-KEY``)."""


class SymbolPattern(_Model):
    """A raw symbol template and its canonical template, with ``{name}`` placeholders."""

    raw: str
    canonical: str


class Instruments(_Model):
    """The venue's instrument list from REST: (raw, canonical) pairs become symbol overrides."""

    endpoint: Ident
    requests: list[dict[str, str | int | float | bool]] = Field(default=[{}], min_length=1)
    """One call per table; its values replace the endpoint's own ``params``."""
    each: Expr
    where: Expr | None = None
    raw: Expr
    canonical: Expr


class Symbols(_Model):
    """Exchange symbols ↔ canonical ``BASE-QUOTE`` symbols."""

    separator: str = "-"
    case: Literal["upper", "lower", "keep"] = "upper"
    quotes: list[str] = []
    aliases: dict[str, str] = {}
    suffixes: dict[str, str] = {}
    patterns: list[SymbolPattern] = []
    symbol_map_file: str | None = None
    instruments: Instruments | None = None


class MockLogin(_Model):
    """How the mock checks a login: it recomputes ``sign`` from ``timestamp`` with the secret
    in the env var ``[signing].secret_env`` names, and answers ``accept`` or ``reject``."""

    match: Expr
    timestamp: Expr
    sign: Expr
    accept: Expr
    reject: Expr


class MockRequest(_Model):
    """How the mock answers WebSocket requests (e.g. a snapshot ``req``): with the captured
    reply whose ``reply_key`` equals the request's ``key``, optionally rebuilt by ``reply``."""

    match: Expr
    key: Expr
    reply_key: Expr
    reply: Expr | None = None
    reject: Expr | None = None


class Mock(_Model):
    """How the local mock exchange answers clients (``mdgen mock``, ``mdgen run --mock``)."""

    subscribe: Expr
    topics: Expr
    key: Expr | None = None
    ack_per: Literal["message", "topic"] = "message"
    ack: Expr
    reject: Expr
    ping: Expr | None = None
    ping_interval: float = Field(default=20.0, gt=0)
    pong_timeout: float | None = Field(default=None, gt=0)
    client_ping: Expr | None = None
    pong: Expr | None = None
    login: MockLogin | None = None
    request: MockRequest | None = None


class Descriptor(_Model):
    """One exchange, as described in ``descriptors/<id>.toml``."""

    schema_: Literal["1.4"] = Field(alias="schema")
    exchange: ExchangeInfo
    symbols: Symbols = Symbols()
    websocket: WebSocket
    rest: Rest | None = None
    signing: Signing | None = None
    channels: dict[Ident, Channel] = Field(min_length=1)
    mock: Mock | None = None
