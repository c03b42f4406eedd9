"""The mock exchange: replays a capture over an exchange's own WebSocket protocol, plus REST.

Everything exchange-specific comes from the spec: ``spec.mock`` recognises subscribes and client
pings and builds ACKs, rejects, pongs and server pings; ``spec.route`` and the routes' parsers
classify captured frames; ``spec.channels[c].topic``/``.key`` map requested topics to
(channel, symbol_raw).

Behaviour (per connection):

- On connect: the capture's greeting (info frames its first connection got before anything
  else, e.g. a system status) is sent. Nothing else is streamed before a subscribe.
- A client message for which ``spec.mock.subscribe`` is true is a subscribe. Each requested
  (topic, key) is matched against the topics of every channel and every raw symbol of the
  capture (canonical-JSON equality; keyed channels also need ``key == channel.key()``). Unknown
  topics are ACKed too but stream nothing. Replies: ``ack(msg, topic)`` per topic or
  ``ack(msg, None)`` per message (``reject`` with ``reject_subscribe``; rejected topics are not
  subscribed). When ACKs bind values per topic (``ack.bind_key``), a topic the capture has is
  answered with its captured ACK instead, so the client binds the ids the captured data uses.
  A malformed subscribe (``topics``/``key`` rules fail) is rejected.
- After the first accepted subscribe the capture's frames stream in capture order: data frames
  whose (channel, symbol_raw) — any of them, for frames with several records — is subscribed,
  unroutable frames (no route, routing/parse failure, no records) and heartbeat/info frames
  (of the capture's first connection only, so a multi-connection capture does not repeat
  them). Data frames of pairs not subscribed yet are held back: a later subscribe (clients
  that pace their subscribes) first gets the held frames of its pairs, in capture order, then
  joins the running stream, so every subscribed pair gets all of its frames, each frame once
  a pass. Captured ACKs, errors, pings, pongs and reconnect notices are never replayed.
  Without ``loop`` nothing but held frames follows the end of the capture.
- Requests (``spec.mock.request``): captured frames with a non-null ``reply_key(frame)`` are
  not streamed; they answer client messages matching ``request.match`` whose ``key(msg)``
  equals their reply key (canonical JSON): the latest such reply captured before the frames
  this connection's stream has passed, else the first one, as captured or rebuilt by
  ``reply(msg, frame)`` (e.g. with the request's id). A request with no captured reply gets
  ``reject(msg)`` when the spec has one, else nothing. Requests are answered before a
  subscribe too; they are counted in ``stats.requests_answered``/``requests_unknown``.
- Login (``spec.mock.login``, endpoints ``spec.login`` covers): a client message matching
  ``login.match`` is checked by recomputing its signature over ``login.timestamp(msg)`` with
  the secret from the env var ``[signing].secret_env`` names (key and passphrase env vars must
  be set too); the reply is ``login.accept(msg)`` or ``login.reject(msg)``. On such endpoints
  a subscribe before a good login is answered with ``reject``.
- REST requests to a descriptor endpoint marked ``api_key`` or ``signed`` need the API key
  (env var ``[signing].key_env``) in the ``key_header`` header, else 401 (signatures of REST
  calls are not checked).
- Channels without a topic (user data streams): their captured frames stream without a
  subscribe, at once on a connection to their endpoint, or after a good login where the
  endpoint needs one.
- URL-mode specs (``spec.subscribe.mode == "url"``): string topics found in the request
  path/query are subscribed on connect; when none is recognised, everything is streamed.
- Keepalive: with ``spec.mock.ping`` the mock sends ``ping(n)`` every ping interval; any client
  message that is neither a login, a subscribe, a request nor a client ping counts as the
  answer while a ping is outstanding. Without an answer within ``pong_timeout`` the connection
  is closed (1008). ``client_ping`` messages are answered with ``pong(msg)``. Protocol-level
  pings are handled by ``websockets``. Other client messages (e.g. unsubscribes) are ignored.
- Outgoing payloads: ``str`` verbatim as text, ``bytes`` as binary, anything else as JSON text;
  on endpoints declaring gzip/deflate every frame is binary and compressed (captured binary
  frames are sent as their original bytes). The endpoint is chosen by matching the request path
  to the endpoint URLs' paths (default: the first endpoint).
- REST (own port): a request gets the reply captured for its method and path (``method`` of
  the capture entry, default GET; HEAD is served from GET) with the best matching query (the
  body's JSON or form parameters count as query parameters, see
  :class:`~runtime.mock.rest.RestIndex`). WebSocket URLs in a reply (``ws://``/``wss://`` +
  host, e.g. in a bootstrap reply) point at this mock. A captured path without a reply for
  the method: 405 JSON; any other path: 404 JSON with the path (logged once per method and
  path).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import math
import os
import re
import zlib
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from runtime.frames import Compression, FrameError, decode
from runtime.mock.capture import (
    Capture,
    Frame,
    Pair,
    TopicIndex,
    WsReply,
    load_capture,
    norm,
)
from runtime.mock.rest import HttpServer, Reply, RestIndex
from runtime.replay import PARSE_ERRORS
from runtime.signing import Signer, SigningError, key_header_of, login_signer
from runtime.spec import ExchangeSpec, MockLoginSpec, MockRequestSpec, MockSpec

log = logging.getLogger(__name__)

YIELD_EVERY = 16
"""At speed 0, yield to the event loop every this many frames so other tasks keep running."""
SILENCE_AFTER = 10
"""``silence_ms`` pauses a connection once, after this many data frames."""
CLOSE_TIMEOUT = 1.0
"""Seconds the mock waits for a client to answer its close frame (stop, disconnects)."""
"""``silence_ms`` pauses a connection once, after this many data frames."""


@dataclass
class MockOptions:
    """Replay speed and the faults the mock injects (all per connection unless noted)."""

    speed: float = 0.0
    """0 = as fast as possible; 1.0 = real time by ``recv_ts``; 10 = ten times faster."""
    loop: bool = False
    """Replay the capture again when it ends."""
    gap_every: int = 0
    """Drop every Nth data frame (a sequence gap); counted in ``stats.frames_dropped``."""
    disconnect_every: int = 0
    """Close the connection (code 1001) after N data frames were sent on it."""
    silence_ms: int = 0
    """Pause sending (data and heartbeats) this long, once, after the first 10 data frames."""
    binary_rate: float = 0.0
    """Share (0..1) of text frames sent as binary frames (same UTF-8 bytes), deterministic."""
    reject_subscribe: bool = False
    """Answer every subscribe with ``spec.mock.reject``; nothing is streamed."""
    refuse_connections: int = 0
    """Refuse the first K WebSocket connection attempts of the server with HTTP 503."""
    ping_interval: float | None = None
    """Override ``spec.mock.ping_interval`` (seconds between the mock's own pings)."""


@dataclass
class MockStats:
    """What the mock did, for tests and the CLI."""

    connections_accepted: int = 0
    connections_refused: int = 0
    subscribes: int = 0
    acks_sent: int = 0
    rejects_sent: int = 0
    data_frames_sent: int = 0
    frames_dropped: int = 0
    disconnects: int = 0
    """Connections the mock closed itself (``disconnect_every`` and pong timeouts)."""
    pong_timeouts: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    client_pings: int = 0
    logins_accepted: int = 0
    logins_rejected: int = 0
    requests_answered: int = 0
    """Requests (``spec.mock.request``) answered with a captured reply."""
    requests_unknown: int = 0
    """Requests whose key has no captured reply (answered with ``request.reject`` if any)."""
    paths: list[str] = field(default_factory=list)
    """Request path (with query) of every WebSocket connection attempt, refused ones too."""
    rest_requests: list[str] = field(default_factory=list)
    """Request target of every REST request."""
    rest_refused: int = 0
    """REST requests refused for a missing or wrong API key header."""
    errors: list[str] = field(default_factory=list)
    """Unexpected exceptions in connection tasks (a bug in the mock or in a spec rule)."""


class _Conn:
    """State of one client connection."""

    def __init__(self, ws: ServerConnection, compression: Compression) -> None:
        self.ws = ws
        self.compression = compression
        self.subscribed: set[Pair] = set()
        self.active = False
        """An accepted subscribe happened: unroutable and heartbeat/info frames flow."""
        self.everything = False
        self.changed = asyncio.Event()
        self.streamer: asyncio.Task[None] | None = None
        self.held: list[int] = []
        """Indexes of this pass's data frames skipped because no pair of theirs was subscribed."""
        self.released: set[Pair] = set()
        """Subscribed pairs whose held frames were sent (always a subset of ``subscribed``)."""
        self.position = 0
        """Capture frames the stream has passed in this pass (sent or not): requests are
        answered with the latest reply captured before them."""
        self.paused = 0.0
        """Seconds the stream was silenced (``silence_ms``), added to the replay clock."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.text_frames = 0
        self.data_seen = 0
        self.data_sent = 0
        self.silenced = False
        self.ping_outstanding = False
        self.pong = asyncio.Event()
        self.needs_login = False
        """The endpoint is one the spec's login covers: subscribes wait for a good login."""
        self.logged_in = False
        self.unasked: set[Pair] = set()
        """Pairs of the endpoint's channels without a topic: they stream once the connection
        is set up (at once, or after a good login), without a subscribe."""

    def wants(self, frame: Frame) -> bool:
        if not self.active:
            return False
        if frame.kind != "data" or self.everything:
            return True
        return not frame.pairs.isdisjoint(self.subscribed)


class MockExchange:
    """A local exchange serving one capture: ``async with MockExchange(spec, path) as mock:``."""

    def __init__(
        self, spec: ExchangeSpec, capture: Path | None, options: MockOptions | None = None
    ) -> None:
        if spec.mock is None and spec.subscribe.mode != "url":
            raise ValueError(
                f"exchange '{spec.id}' has no [mock] section in {spec.descriptor}: "
                "the mock cannot recognise its subscribe requests"
            )
        self.spec = spec
        self.options = options if options is not None else MockOptions()
        self.capture: Capture = load_capture(spec, capture)
        self.topics = TopicIndex(spec, self.capture.symbols)
        self.rest = RestIndex(self.capture.rest)
        self._login_signer: Signer | None = None
        self.stats = MockStats()
        self.ws_url = ""
        self.http_url = ""
        self._ws_server: Server | None = None
        self._http = HttpServer(self._rest_reply, check=self._rest_credentials)
        self._refused = 0
        self._missing: set[tuple[str, str]] = set()
        """(method, path) of REST requests already logged as having no captured reply."""
        self._unasked = unasked_pairs(spec, self.capture.frames)
        self._default_compression: Compression = next(iter(spec.endpoints.values())).compression

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0, rest_port: int = 0) -> None:
        """Listen for WebSocket (``port``) and REST (``rest_port``) clients; 0 = a free port."""
        self._ws_server = await serve(
            self._handler,
            host,
            port,
            process_request=self._process_request,
            close_timeout=CLOSE_TIMEOUT,
        )
        ws_port = self._ws_server.sockets[0].getsockname()[1]
        await self._http.start(host, rest_port)
        netloc = f"[{host}]" if ":" in host else host
        self.ws_url = f"ws://{netloc}:{ws_port}/"
        self.http_url = f"http://{netloc}:{self._http.port}"

    async def stop(self) -> None:
        """Close every connection (code 1001) and both listeners; waits for all tasks."""
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        await self._http.stop()

    async def __aenter__(self) -> MockExchange:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- helpers for clients and tests --------------------------------------------------------
    def client_spec(self) -> ExchangeSpec:
        """``self.spec`` with its WebSocket URLs and REST base URLs pointing at this mock.

        Each endpoint URL keeps its path and query (the mock records them), so URL-mode
        subscriptions still work.
        """
        base = self.ws_url.rstrip("/")
        endpoints = {}
        for name, ep in self.spec.endpoints.items():
            urls = []
            for url in ep.urls:
                parts = urlsplit(url)
                local = base + parts.path + (f"?{parts.query}" if parts.query else "")
                if local not in urls:
                    urls.append(local)
            endpoints[name] = dataclasses.replace(ep, urls=tuple(urls))
        rest = self.spec.rest
        if rest is not None:
            rest = dataclasses.replace(rest, base_urls=(self.http_url,))
        return dataclasses.replace(self.spec, endpoints=endpoints, rest=rest)

    def true_frames(self, pairs: Iterable[Pair] | None = None, *, meta: bool = False) -> list[str]:
        """Texts of the captured frames a client subscribed to ``pairs`` (None = everything)
        receives with default options, in order: data frames of those pairs, unroutable frames,
        and heartbeat/info frames when ``meta``."""
        wanted = None if pairs is None else set(pairs)
        out = []
        for f in self.capture.frames:
            if f.kind == "meta" and not meta:
                continue
            if f.kind == "data" and wanted is not None and f.pairs.isdisjoint(wanted):
                continue
            out.append(f.text)
        return out

    def reply_for(self, key: Any, position: int) -> WsReply | None:
        """The captured reply to a request with ``key`` at stream ``position`` (frames passed):
        the latest captured before that position, else the first; None when there is none."""
        try:
            replies = self.capture.replies.get(norm(key), [])
        except orjson.JSONEncodeError:
            return None
        chosen = replies[0] if replies else None
        for captured in replies:
            if captured.position > position:
                break
            chosen = captured
        return chosen

    # -- WebSocket side -------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.stats.paths.append(request.path)
        if self._refused < self.options.refuse_connections:
            self._refused += 1
            self.stats.connections_refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        return None

    def _endpoint_for(self, path: str) -> str | None:
        wanted = urlsplit(path).path.rstrip("/")
        for name, ep in self.spec.endpoints.items():
            if any(urlsplit(u).path.rstrip("/") == wanted for u in ep.urls):
                return name
        return None

    def _compression_for(self, path: str) -> Compression:
        wanted = urlsplit(path).path.rstrip("/")
        for ep in self.spec.endpoints.values():
            if any(urlsplit(u).path.rstrip("/") == wanted for u in ep.urls):
                return ep.compression
        return self._default_compression

    async def _handler(self, ws: ServerConnection) -> None:
        self.stats.connections_accepted += 1
        path = ws.request.path if ws.request is not None else "/"
        conn = _Conn(ws, self._compression_for(path))
        login = self.spec.login
        endpoint = self._endpoint_for(path) or next(iter(self.spec.endpoints))
        conn.needs_login = login is not None and endpoint in login.endpoints
        conn.unasked = self._unasked.get(endpoint, set())
        if conn.unasked and not conn.needs_login:
            self._open_unasked(conn)
        mock = self.spec.mock
        try:
            for frame in self.capture.greeting:
                await self._send_frame(conn, frame)
            if mock is not None and mock.ping is not None:
                self._spawn(conn, self._pinger(conn, mock))
            if self.spec.subscribe.mode == "url":
                self._subscribe_url(conn, path)
            async for message in ws:
                await self._on_message(conn, message)
        except ConnectionClosed:
            return  # the client went away: nothing to report
        except Exception as exc:  # a spec rule or the mock failed: report, close with 1011
            self._error(exc)
            await ws.close(CloseCode.INTERNAL_ERROR, "mock error")
        finally:
            for task in conn.tasks:
                task.cancel()
            await asyncio.gather(*conn.tasks, return_exceptions=True)

    def _spawn(self, conn: _Conn, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(coro))
        conn.tasks.add(task)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except ConnectionClosed:
            return  # the client went away: nothing to report
        except Exception as exc:
            self._error(exc)

    def _error(self, exc: BaseException) -> None:
        self.stats.errors.append(repr(exc))
        log.error("mock %s: %r", self.spec.id, exc, exc_info=exc)

    def _decode_client(self, conn: _Conn, message: str | bytes) -> Any:
        if isinstance(message, bytes) and conn.compression != "none":
            # Clients usually send plain frames even where the server compresses.
            with contextlib.suppress(FrameError):
                return decode(message, conn.compression)
        try:
            return decode(message)
        except FrameError:
            return message

    async def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        """A client message: login, subscribe, request, client ping, or (while a ping is
        outstanding) a pong.

        Any other client message answers the mock's outstanding ping, if any, else is ignored.
        """
        mock = self.spec.mock
        if mock is None:
            return
        msg = self._decode_client(conn, message)
        if mock.login is not None and _true(mock.login.match, msg):
            await self._login(conn, mock.login, msg)
        elif _true(mock.subscribe, msg):
            await self._subscribe(conn, mock, msg)
        elif mock.request is not None and _true(mock.request.match, msg):
            await self._request(conn, mock.request, msg)
        elif mock.client_ping is not None and _true(mock.client_ping, msg):
            self.stats.client_pings += 1
            pong = mock.pong
            if pong is not None:
                for reply in _replies(lambda m, _: pong(m), msg, [None]):
                    await self._send(conn, reply)
        elif conn.ping_outstanding:
            conn.ping_outstanding = False
            self.stats.pongs_received += 1
            conn.pong.set()

    def _login_ok(self, rule: MockLoginSpec, msg: Any) -> bool:
        """Recompute the login signature with the secret from the environment (the env var
        ``[signing].secret_env`` names) and compare; never logs the message or credentials."""
        login, signing = self.spec.login, self.spec.signing
        if login is None or signing is None:
            return False
        if self._login_signer is None:
            try:
                self._login_signer = login_signer(signing, login)
            except SigningError as exc:
                log.warning("mock %s: cannot check logins: %s", self.spec.id, exc)
                return False
        try:
            timestamp = str(rule.timestamp(msg))
            sign = str(rule.sign(msg))
        except PARSE_ERRORS:
            return False
        expected = self._login_signer.login_values(timestamp)["sign"] or ""
        return hmac.compare_digest(expected.encode(), sign.encode())

    async def _login(self, conn: _Conn, rule: MockLoginSpec, msg: Any) -> None:
        ok = self._login_ok(rule, msg)
        conn.logged_in = conn.logged_in or ok
        if ok and conn.unasked:
            self._open_unasked(conn)
        if ok:
            self.stats.logins_accepted += 1
        else:
            self.stats.logins_rejected += 1
        try:
            reply = (rule.accept if ok else rule.reject)(msg)
        except PARSE_ERRORS as exc:
            log.warning("mock %s: cannot build a login reply: %r", self.spec.id, exc)
            return
        await self._send(conn, reply)

    async def _request(self, conn: _Conn, rule: MockRequestSpec, msg: Any) -> None:
        """Answer a request with the captured reply for its key that fits the stream position
        (the latest captured before ``conn.position``, else the first), or ``rule.reject``."""
        try:
            chosen = self.reply_for(rule.key(msg), conn.position)
        except PARSE_ERRORS:
            chosen = None
        if chosen is None:
            self.stats.requests_unknown += 1
            reject = rule.reject
            if reject is not None:
                for reply in _replies(lambda m, _: reject(m), msg, [None]):
                    await self._send(conn, reply)
            return
        if rule.reply is None:
            await self._send_frame(conn, chosen.frame)
        else:
            try:
                payload = rule.reply(msg, chosen.msg)
            except PARSE_ERRORS as exc:
                log.warning("mock %s: cannot build a reply to %r: %r", self.spec.id, msg, exc)
                return
            await self._send(conn, payload)
        self.stats.requests_answered += 1

    async def _subscribe(self, conn: _Conn, mock: MockSpec, msg: Any) -> None:
        self.stats.subscribes += 1
        if conn.needs_login and not conn.logged_in:  # private channels need a good login first
            denied: list[Any] = [None]
            with contextlib.suppress(*PARSE_ERRORS):
                denied = list(mock.topics(msg)) if mock.ack_per == "topic" else [None]
            for reply in _replies(mock.reject, msg, denied):
                await self._send(conn, reply)
                self.stats.rejects_sent += 1
            return
        topics: list[Any] | None
        try:
            topics = list(mock.topics(msg))
            key = mock.key(msg) if mock.key is not None else None
        except PARSE_ERRORS:
            topics, key = None, None
        per_topic = mock.ack_per == "topic" and topics is not None
        targets: list[Any] = list(topics or ()) if per_topic else [None]
        if topics is None or self.options.reject_subscribe:
            for reply in _replies(mock.reject, msg, targets):
                await self._send(conn, reply)
                self.stats.rejects_sent += 1
            return
        for topic in topics:
            conn.subscribed |= self.topics.lookup(topic, key, mock.key is not None)
        for target in targets:
            captured = self._captured_ack(target, key, mock.key is not None)
            for reply in [captured] if captured else _replies(mock.ack, msg, [target]):
                await self._send(conn, reply)
                self.stats.acks_sent += 1
        conn.active = True
        conn.changed.set()
        if conn.streamer is None:
            conn.streamer = self._spawn(conn, self._stream(conn))

    def _open_unasked(self, conn: _Conn) -> None:
        """Start streaming the frames of channels that need no subscribe (``conn.unasked``)."""
        conn.subscribed |= conn.unasked
        conn.active = True
        conn.changed.set()
        if conn.streamer is None:
            conn.streamer = self._spawn(conn, self._stream(conn))

    def _captured_ack(self, topic: Any, key: Any, has_key: bool) -> str | None:
        """The captured ACK for a topic, when ACKs bind values (a ``chanId``): replaying it
        makes the client bind what the captured data frames use."""
        if topic is None or not self.capture.acks:
            return None
        for channel, raw in sorted(self.topics.lookup(topic, key, has_key)):
            ch = self.spec.channels[channel]
            if ch.ack_key is None:
                continue
            try:
                symbol = self.capture.symbols.get(raw) or raw
                wanted = norm(ch.ack_key(raw, symbol, ch.key() if ch.key is not None else None))
            except (*PARSE_ERRORS, orjson.JSONEncodeError):
                continue
            text = self.capture.acks.get(wanted)
            if text is not None:
                return text
        return None

    def _subscribe_url(self, conn: _Conn, path: str) -> None:
        """URL-mode subscriptions: string topics found in the request path/query; when none is
        found, everything is streamed."""
        pairs: set[Pair] = set()
        for token in re.split(r"[/?&=,]", unquote(path)):
            pairs |= self.topics.strings.get(token, set())
        conn.subscribed = pairs
        conn.everything = not pairs
        conn.active = True
        conn.streamer = self._spawn(conn, self._stream(conn))

    async def _stream(self, conn: _Conn) -> None:
        """Stream the capture to one connection (see the module docstring)."""
        opts = self.options
        frames = self.capture.frames
        loop = asyncio.get_running_loop()
        while True:
            sent = 0
            start = loop.time()
            base = frames[0].ts if frames else 0.0
            conn.held.clear()
            conn.released = set(conn.subscribed)
            conn.paused = 0.0
            for index, frame in enumerate(frames):
                conn.position = index
                if not conn.wants(frame):
                    if frame.kind == "data":
                        conn.held.append(index)
                    continue
                if opts.speed > 0:
                    delay = start + conn.paused + (frame.ts - base) / opts.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif index % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if frame.kind == "data":
                    await self._maybe_silence(conn)
                released = await self._release(conn)
                if released is None:
                    return
                sent += released
                if frame.kind == "meta":
                    await self._send_frame(conn, frame)
                    sent += 1
                    continue
                outcome = await self._send_data(conn, frame)
                if outcome is None:
                    return
                sent += outcome
            conn.position = len(frames)
            if not opts.loop:
                break
            if sent == 0:  # nothing matches: wait for another subscribe instead of spinning
                conn.changed.clear()
                await conn.changed.wait()
            else:
                await asyncio.sleep(0)
        while True:  # the capture has ended: later subscribes still get their held frames
            conn.changed.clear()
            if await self._release(conn) is None:
                return
            await conn.changed.wait()

    async def _maybe_silence(self, conn: _Conn) -> None:
        """``silence_ms``: pause once, before the data frame after the first ten."""
        silence = self.options.silence_ms
        if silence > 0 and not conn.silenced and conn.data_sent >= SILENCE_AFTER:
            conn.silenced = True
            await asyncio.sleep(silence / 1000)
            conn.paused += silence / 1000

    async def _release(self, conn: _Conn) -> int | None:
        """Send the held frames of pairs subscribed since the last call, in capture order.

        Returns the frames sent, or None when the connection was closed (``disconnect_every``).
        """
        if len(conn.subscribed) == len(conn.released):
            return 0
        new = conn.subscribed - conn.released
        conn.released |= new
        frames = self.capture.frames
        due = [i for i in conn.held if not frames[i].pairs.isdisjoint(new)]
        if not due:
            return 0
        conn.held = [i for i in conn.held if frames[i].pairs.isdisjoint(new)]
        sent = 0
        for number, index in enumerate(due, 1):
            outcome = await self._send_data(conn, frames[index])
            if outcome is None:
                return None
            sent += outcome
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return sent

    async def _send_data(self, conn: _Conn, frame: Frame) -> int | None:
        """One data frame through the faults: 1 sent, 0 dropped (``gap_every``), None when
        the connection was then closed (``disconnect_every``)."""
        opts = self.options
        conn.data_seen += 1
        if opts.gap_every > 0 and conn.data_seen % opts.gap_every == 0:
            self.stats.frames_dropped += 1
            return 0
        await self._send_frame(conn, frame)
        conn.data_sent += 1
        self.stats.data_frames_sent += 1
        if opts.disconnect_every > 0 and conn.data_sent >= opts.disconnect_every:
            self.stats.disconnects += 1
            await conn.ws.close(CloseCode.GOING_AWAY, "mock: disconnect_every")
            return None
        return 1

    async def _pinger(self, conn: _Conn, mock: MockSpec) -> None:
        assert mock.ping is not None
        interval = self.options.ping_interval
        if interval is None:
            interval = mock.ping_interval
        number = 0
        while True:
            await asyncio.sleep(interval)
            number += 1
            conn.pong.clear()
            conn.ping_outstanding = True
            await self._send(conn, mock.ping(number))
            self.stats.pings_sent += 1
            if mock.pong_timeout is None:
                continue
            try:
                await asyncio.wait_for(conn.pong.wait(), mock.pong_timeout)
            except TimeoutError:
                self.stats.pong_timeouts += 1
                self.stats.disconnects += 1
                await conn.ws.close(CloseCode.POLICY_VIOLATION, "mock: pong timeout")
                return

    async def _send(self, conn: _Conn, payload: Any) -> None:
        """A generated payload: ``str`` verbatim, ``bytes`` as binary, anything else as JSON."""
        if isinstance(payload, bytes):
            await conn.ws.send(payload)
            return
        text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        await self._send_text(conn, text, None)

    async def _send_frame(self, conn: _Conn, frame: Frame) -> None:
        await self._send_text(conn, frame.text, frame.raw)

    async def _send_text(self, conn: _Conn, text: str, raw: bytes | None) -> None:
        if raw is not None:  # a captured binary frame: its original bytes
            await conn.ws.send(raw)
        elif conn.compression != "none":
            await conn.ws.send(compress(text.encode(), conn.compression))
        else:
            conn.text_frames += 1
            n, rate = conn.text_frames, self.options.binary_rate
            binary = rate > 0 and math.floor(n * rate) > math.floor((n - 1) * rate)
            await conn.ws.send(text.encode() if binary else text)

    # -- REST side ------------------------------------------------------------------------------
    def _rest_credentials(
        self, method: str, target: str, headers: Mapping[str, str]
    ) -> Reply | None:
        """401 for a request to an ``api_key``/``signed`` endpoint of the descriptor whose API
        key header does not carry the key in the env var ``[signing].key_env`` names (the
        signature of ``signed`` calls is not checked); None lets the request through."""
        signing, rest = self.spec.signing, self.spec.rest
        if signing is None or rest is None:
            return None
        path = urlsplit(target).path or "/"
        if not any(
            (ep.api_key or ep.signed) and ep.method.upper() == method and ep.path == path
            for ep in rest.endpoints.values()
        ):
            return None
        header = key_header_of(signing).lower()
        expected = os.environ.get(signing.key_env, "")
        given = headers.get(header, "")
        if expected and hmac.compare_digest(given.encode(), expected.encode()):
            return None
        self.stats.rest_refused += 1
        return 401, orjson.dumps({"error": "invalid API key", "header": header, "path": path})

    def _rest_reply(self, method: str, target: str) -> Reply:
        """The captured reply for ``method`` at ``target`` (body parameters already in its
        query), else 405 (the path has replies for other methods) or 404 JSON."""
        self.stats.rest_requests.append(target)
        reply = self.rest.find(method, target)
        if reply is not None:
            return reply.status, self._local_ws_urls(reply.body)
        path = urlsplit(target).path or "/"
        allowed = self.rest.methods(path)
        if (method, path) not in self._missing:
            self._missing.add((method, path))
            log.warning(
                "mock %s: no captured REST reply for %s %s (%s)",
                self.spec.id,
                method,
                path,
                f"405; captured: {', '.join(allowed)}" if allowed else "404",
            )
        if allowed:
            error = {"error": "method not allowed", "method": method, "path": path}
            return 405, orjson.dumps({**error, "allowed": allowed})
        return 404, orjson.dumps({"error": "not found", "method": method, "path": path})

    def _local_ws_urls(self, body: bytes) -> bytes:
        """``body`` with the scheme and host of every WebSocket URL replaced by this mock's."""
        if not self.ws_url:
            return body
        local = self.ws_url.rstrip("/").encode()
        return _WS_URL.sub(local, body)


_WS_URL = re.compile(rb'wss?:(?:\\?/){2}[^/\\"\s?#]+')
"""A WebSocket URL's scheme and host (JSON's ``\\/`` escapes allowed)."""


def unasked_pairs(spec: ExchangeSpec, frames: Iterable[Frame]) -> dict[str, set[Pair]]:
    """Per endpoint, the captured (channel, symbol_raw) pairs of channels without a topic."""
    out: dict[str, set[Pair]] = {}
    for frame in frames:
        for pair in frame.pairs:
            channel = spec.channels.get(pair[0])
            if channel is not None and channel.topic is None:
                out.setdefault(channel.endpoint, set()).add(pair)
    return out


def compress(data: bytes, compression: Compression) -> bytes:
    """Compress one frame as the endpoint declares: gzip, or raw deflate."""
    if compression == "none":
        return data
    obj = zlib.compressobj(wbits=31 if compression == "gzip" else -15)
    return obj.compress(data) + obj.flush()


def _true(rule: Any, msg: Any) -> bool:
    try:
        return bool(rule(msg))
    except PARSE_ERRORS:
        return False


def _replies(build: Any, msg: Any, targets: list[Any]) -> list[Any]:
    """ACKs/rejects for ``targets`` (topics, or [None] per message); rules that fail on a
    malformed request produce no reply."""
    out = []
    for target in targets:
        try:
            out.append(build(msg, target))
        except PARSE_ERRORS as exc:
            log.warning("mock: cannot build a reply to %r: %r", msg, exc)
    return out


async def run_mock(exchange: str, capture: Path | None, port: int, options: MockOptions) -> None:
    """Serve ``exchange``'s mock until cancelled; REST listens on ``port + 1`` (free port when
    ``port`` is 0). Prints the URLs."""
    from runtime.registry import load_spec

    spec = load_spec(exchange)
    mock = MockExchange(spec, capture, options)
    await mock.start(port=port, rest_port=port + 1 if port else 0)
    cap = mock.capture
    print(f"mock {spec.name}: ws {mock.ws_url}  rest {mock.http_url}", flush=True)
    print(
        f"  capture: {len(cap.frames)} frames ({len(cap.pairs())} channel/symbol pairs), "
        f"{len(cap.rest)} REST replies at {', '.join(mock.rest.paths()) or '-'}"
        + (f", {cap.counts['reply']} WS request replies" if cap.replies else ""),
        flush=True,
    )
    try:
        await asyncio.Event().wait()
    finally:
        await mock.stop()
