"""The contract between generated modules and the runtime: what a generated module exports."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runtime.symbols import SymbolMapper

API_VERSION = 1
"""Bumped whenever this contract changes incompatibly; generated modules check it at import."""

Record = dict[str, Any]
"""One normalized record (see docs/descriptor-reference.md)."""

RouteKind = Literal[
    "data", "ack", "error", "ping", "pong", "heartbeat", "info", "reconnect", "login"
]


class ApiVersionError(ImportError):
    """A generated module was compiled for another runtime API version."""


def require_api(version: int, module: str) -> None:
    """Called at import by every generated module; fails when the runtime does not match."""
    if version != API_VERSION:
        raise ApiVersionError(
            f"generated module {module!r} targets runtime API {version}, this runtime provides "
            f"{API_VERSION}; run `mdgen compile descriptors/`"
        )


class Bindings(dict[Any, Any]):
    """Values bound from ACKs; ``get`` is typed ``Any`` so generated code may index its result
    (``bound($[0]).symbol``) and stay type-clean."""

    def get(self, key: Any, default: Any = None, /) -> Any:
        return super().get(key, default)


@dataclass
class Context:
    """Per-connection state visible to generated code (values bound from ACKs)."""

    bound: Bindings = field(default_factory=Bindings)


Parser = Callable[[Any, int, Context], list[Record]]
RestParser = Callable[[Any, Mapping[str, str], int, Context], list[Record]]
Expr1 = Callable[[Any], Any]


@dataclass(frozen=True)
class Route:
    """What a routed message is; ``parse`` is set for data routes."""

    kind: RouteKind
    channel: str | None = None
    parse: Parser | None = None


@dataclass(frozen=True)
class WsEndpointSpec:
    urls: tuple[str, ...]
    compression: Literal["none", "gzip", "deflate"] = "none"
    max_streams: int | None = None
    max_outbound_per_second: float | None = None
    idle_timeout: float = 30.0
    max_lifetime: float | None = None


@dataclass(frozen=True)
class SubscribeSpec:
    mode: Literal["message", "url"]
    group: Literal["all", "key", "symbol"]
    chunk: int
    interval: float
    message: Callable[[list[Any], Any, int, list[str]], Any] | None = None
    url: Callable[[str, list[Any]], str] | None = None


@dataclass(frozen=True)
class AckSpec:
    per: Literal["message", "topic"]
    timeout: float
    id: Expr1 | None = None
    key: Expr1 | None = None
    ok: Callable[[Any], bool] | None = None
    reason: Expr1 | None = None
    bind_key: Expr1 | None = None
    bind_value: Expr1 | None = None


@dataclass(frozen=True)
class ErrorSpec:
    reason: Expr1 | None = None
    id: Expr1 | None = None


@dataclass(frozen=True)
class KeepaliveSpec:
    client_ping_interval: float | None = None
    client_ping: Callable[[int], Any] | None = None
    server_ping_reply: Expr1 | None = None
    protocol_ping_interval: float | None = None


@dataclass(frozen=True)
class BookSyncSpec:
    """Order-book sync rules of one channel (``docs/order-books.md``)."""

    snapshot: Literal["first_message", "rest", "ws_request", "every_message", "channel"]
    rest_endpoint: str | None
    sequence: Literal["none", "contiguous", "straddle", "prev_seq", "monotonic"]
    checksum: Literal["none", "okx_crc32", "kraken_crc32", "bitfinex_crc32"]
    checksum_depth: int | None = None
    depth: int | None = None
    request: Callable[[str, str, int], Any] | None = None
    """``ws_request``: the snapshot request ``request(raw, symbol, req_id)`` sent on the
    connection; the reply is a snapshot record of this channel."""
    snapshot_channel: str | None = None
    """``channel``: the channel whose records are this channel's snapshots."""


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    kind: str
    endpoint: str
    topic: Callable[[str, str], Any] | None
    """None: nothing to subscribe; messages arrive once the connection is set up."""
    key: Callable[[], Any] | None = None
    ack_key: Callable[[str, str, Any], Any] | None = None
    sync: BookSyncSpec | None = None
    source: str | None = None
    """Set for an ``also`` channel: the channel whose subscription and messages it shares."""
    for_symbols: Callable[[str, str], bool] | None = None
    """``(raw, symbol) -> bool``: the symbols the channel exists for (None: every one)."""


@dataclass(frozen=True)
class RestEndpointSpec:
    name: str
    method: str
    path: str
    weight: int
    signed: bool = False
    api_key: bool = False
    """Send the API key header, unsigned."""
    params: Callable[[str, str], dict[str, Any]] | None = None
    channel: str | None = None
    parse: RestParser | None = None


@dataclass(frozen=True)
class RestSpec:
    base_urls: tuple[str, ...]
    rate_limit_weight: int | None = None
    rate_limit_seconds: float | None = None
    time_endpoint: str | None = None
    endpoints: Mapping[str, RestEndpointSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class BootstrapSpec:
    """A REST call before each connect to ``endpoints`` (empty: all); ``url(reply, base)``
    gives the URL. ``keepalive_endpoint`` is called every ``keepalive_interval`` seconds with
    ``keepalive_params(reply)`` while the connection lives."""

    endpoint: str
    url: Callable[[Any, str], str]
    ping_interval: Callable[[Any], Any] | None = None
    endpoints: tuple[str, ...] = ()
    keepalive_endpoint: str | None = None
    keepalive_interval: float | None = None
    keepalive_params: Callable[[Any], Any] | None = None

    def covers(self, endpoint: str) -> bool:
        """Does a connection to WebSocket ``endpoint`` bootstrap?"""
        return not self.endpoints or endpoint in self.endpoints


@dataclass(frozen=True)
class LoginSpec:
    """A signed login sent after connecting to ``endpoints``, before subscribing.

    ``message(req_id, api_key, passphrase, timestamp, sign)`` builds it; ``sign`` is
    HMAC-SHA256(secret, payload) in ``sign_encoding``, the payload being
    ``sign_payload(api_key, passphrase, timestamp)`` or else
    ``timestamp + sign_method + sign_path``. Replies are routed as ``login``; ``ok``/``reason``
    judge them (no ``ok``: every login reply accepts).
    """

    endpoints: tuple[str, ...]
    message: Callable[[int, str, str | None, str, str], Any]
    sign_path: str = ""
    sign_payload: Callable[[str, str | None, str], Any] | None = None
    sign_encoding: Literal["base64", "hex"] = "base64"
    sign_method: str = "GET"
    timestamp_format: Literal["s", "ms", "iso_ms"] = "s"
    ok: Callable[[Any], bool] | None = None
    reason: Expr1 | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class SigningSpec:
    scheme: Literal["hmac_sha256_hex", "hmac_sha256_base64"]
    key_env: str
    secret_env: str
    passphrase_env: str | None = None
    key_header: str | None = None
    """HTTP header carrying the API key (None: the signer's default)."""


@dataclass(frozen=True)
class MockSpec:
    """How the mock exchange recognises subscribe requests and answers them."""

    subscribe: Callable[[Any], bool]
    topics: Callable[[Any], list[Any]]
    ack_per: Literal["message", "topic"]
    ack: Callable[[Any, Any], Any]
    reject: Callable[[Any, Any], Any]
    key: Expr1 | None = None
    ping: Callable[[int], Any] | None = None
    ping_interval: float = 20.0
    pong_timeout: float | None = None
    client_ping: Callable[[Any], bool] | None = None
    pong: Expr1 | None = None
    login: MockLoginSpec | None = None
    request: MockRequestSpec | None = None


@dataclass(frozen=True)
class MockRequestSpec:
    """How the mock answers WebSocket requests (see ``[mock.request]``): a client message
    matching ``match`` gets the captured frame whose ``reply_key(frame)`` equals ``key(msg)``
    (``reply(msg, frame)`` when set); captured frames with a non-null ``reply_key`` are not
    streamed. An unknown key gets ``reject(msg)`` when set, else nothing."""

    match: Callable[[Any], bool]
    key: Expr1
    reply_key: Expr1
    reply: Callable[[Any, Any], Any] | None = None
    reject: Expr1 | None = None


@dataclass(frozen=True)
class MockLoginSpec:
    """How the mock checks a client login (see ``[mock.login]``)."""

    match: Callable[[Any], bool]
    timestamp: Expr1
    sign: Expr1
    accept: Expr1
    reject: Expr1


@dataclass(frozen=True)
class InstrumentsSpec:
    """The venue's instrument list (``[symbols.instruments]``): one call of REST endpoint
    ``endpoint`` per entry of ``requests``; ``each(m)`` lists the items of a reply, and
    ``raw(m, it)``/``canonical(m, it)`` give one override per item that ``where`` keeps."""

    endpoint: str
    requests: tuple[Mapping[str, Any], ...]
    each: Expr1
    raw: Callable[[Any, Any], Any]
    canonical: Callable[[Any, Any], Any]
    where: Callable[[Any, Any], bool] | None = None


@dataclass(frozen=True)
class ExchangeSpec:
    """Everything the runtime needs to collect from one exchange."""

    id: str
    name: str
    descriptor: str
    symbols: SymbolMapper
    route: Callable[[Any, Context], int]
    routes: tuple[Route, ...]
    endpoints: Mapping[str, WsEndpointSpec]
    subscribe: SubscribeSpec
    channels: Mapping[str, ChannelSpec]
    ack: AckSpec | None = None
    error: ErrorSpec | None = None
    keepalive: KeepaliveSpec = KeepaliveSpec()
    bootstrap: BootstrapSpec | None = None
    rest: RestSpec | None = None
    signing: SigningSpec | None = None
    symbol_map_file: str | None = None
    instruments: InstrumentsSpec | None = None
    """Loaded by ``mdgen run`` at startup into ``symbols`` overrides (runtime.instruments)."""
    mock: MockSpec | None = None
    aliases: tuple[str, ...] = ()
    """Former ids of the exchange (capture folders may use them)."""
    on_connect: tuple[Callable[[int], Any], ...] = ()
    """Messages sent right after each connect, before subscribing; each gets a fresh req_id."""
    login: LoginSpec | None = None
    """A signed login on private endpoints, sent after ``on_connect`` and before subscribing."""
    endpoint_routes: Mapping[str, Callable[[Any, Context], int]] = field(default_factory=dict)
    """``route`` narrowed to the rules that can match on one endpoint's connections (login
    rules of other endpoints and channels of other endpoints left out); same ROUTES indices."""
