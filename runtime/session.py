"""One WebSocket connection kept alive: connect with failover, subscribe, read, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from runtime.booksync import BookOptions, LiveBooks
from runtime.envelope import Envelope, gap, wrap
from runtime.frames import FrameError, decode
from runtime.pipeline import Pipeline
from runtime.replay import PARSE_ERRORS
from runtime.rest import RestClient, RestError
from runtime.signing import Signer, SigningError, login_signer
from runtime.spec import Context, ExchangeSpec
from runtime.subscriptions import (
    AckResult,
    AckTracker,
    ConnectionPlan,
    SubscribeRejected,
    needs_subscribing,
    subscribe_messages,
    topics_of,
)
from runtime.transport import Connection, Transport, TransportClosed, TransportError

log = logging.getLogger("mdgen.session")

REFUSED_CREDENTIALS = frozenset({401, 403})
"""Statuses of a bootstrap reply that end the session: retrying would not help."""

RETIRE_MARGIN = 60.0
"""Seconds before an endpoint's ``max_lifetime`` at which the session reconnects itself."""

State = Literal["starting", "subscribing", "streaming", "reconnecting", "failed", "stopped"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: sleep uniform(0, min(cap, base * mult**attempt))."""

    initial: float = 0.5
    cap: float = 30.0
    multiplier: float = 2.0
    stable_after: float = 60.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * min(self.cap, self.initial * self.multiplier**attempt)


@dataclass
class SessionStats:
    """What one connection saw; read by health, metrics and the end-of-run summary."""

    messages: int = 0
    bytes: int = 0
    records: int = 0
    unrecognized: int = 0
    malformed: int = 0
    frames: Counter[str] = field(default_factory=Counter)
    connects: int = 0
    connect_failures: int = 0
    reconnects: Counter[str] = field(default_factory=Counter)
    subscribe_failures: int = 0
    ack_latency_sum: float = 0.0
    acks: int = 0
    pings_answered: int = 0
    client_pings: int = 0
    gaps: int = 0
    gap_seconds: float = 0.0
    book_gaps: int = 0
    book_resyncs: int = 0
    checksum_failures: int = 0
    checksum_ok: int = 0
    keepalive_calls: int = 0
    keepalive_failures: int = 0
    last_message: float = 0.0  # time.monotonic() of the last frame


class Session:
    """Runs one :class:`ConnectionPlan` until stopped."""

    def __init__(
        self,
        spec: ExchangeSpec,
        instance: str,
        plan: ConnectionPlan,
        transport: Transport,
        pipeline: Pipeline,
        *,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        rng: Callable[[], float] = random.random,
        rest: RestClient | None = None,
        book_options: BookOptions | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.spec = spec
        self.instance = instance
        self.plan = plan
        self.transport = transport
        self.pipeline = pipeline
        self.backoff = backoff or Backoff()
        self.rest = rest
        self.connect_timeout = connect_timeout
        self.rng = rng
        self.endpoint = spec.endpoints[plan.endpoint]
        self.state: State = "starting"
        self.error: str | None = None
        self.stats = SessionStats()
        self.url: str | None = None
        self._kinds = {name: ch.kind for name, ch in spec.channels.items()}
        self._gap_start_ns: int | None = None
        self._gap_reason = ""
        self._ids = itertools.count(1)
        self._ping_interval: float | None = None  # from a bootstrap reply, else the descriptor
        boot = spec.bootstrap
        self._bootstraps = boot is not None and boot.covers(plan.endpoint)
        self._bootstrap_reply: Any = None
        self._cancel_reason = "idle"
        """Why the reader was cancelled (the idle watchdog or a failed keep-alive)."""
        self._signer = signer
        login = spec.login
        self._needs_login = login is not None and plan.endpoint in login.endpoints
        self._login_reply: asyncio.Future[tuple[bool, str]] | None = None
        self._books = LiveBooks.for_plan(
            spec,
            instance,
            plan.name,
            {sub.channel for sub in plan.subscriptions},
            self.stats,
            self._emit,
            rest=rest,
            options=book_options,
            subscribed=frozenset(sub.channel for sub in plan.subscriptions) - plan.feeds_only,
        )

    @property
    def books(self) -> LiveBooks | None:
        """Order-book sync of this connection's book channels (None when it has none)."""
        return self._books

    # -- life cycle -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, and reconnect with backoff until ``stop`` is set."""
        attempt = 0
        url_index = 0
        while not stop.is_set():
            try:
                url = await self._bootstrap(url_index) if self._bootstraps else self._url(url_index)
            except SigningError as exc:
                self.state = "failed"
                self.error = f"bootstrap: {exc}"
                log.error("%s: %s", self.plan.name, self.error)
                return
            except RestError as exc:
                if exc.status in REFUSED_CREDENTIALS:  # bad credentials do not heal
                    self.state = "failed"
                    self.error = f"bootstrap refused: {exc}"
                    log.error("%s: %s", self.plan.name, self.error)
                    return
                self.stats.connect_failures += 1
                self._mark_gap("bootstrap_failed")
                log.warning("%s: bootstrap failed: %s", self.plan.name, exc)
                self.state = "reconnecting"
                await self._sleep(self.backoff.delay(attempt, self.rng), stop)
                attempt += 1
                continue
            self.url = url
            try:
                conn = await self.transport.connect(
                    url,
                    timeout=self.connect_timeout,
                    ping_interval=self.spec.keepalive.protocol_ping_interval,
                )
            except TransportError as exc:
                self.stats.connect_failures += 1
                self._mark_gap("connect_failed")
                log.warning("%s: %s", self.plan.name, exc)
                url_index += 1
                self.state = "reconnecting"
                await self._sleep(self.backoff.delay(attempt, self.rng), stop)
                attempt += 1
                continue
            self.stats.connects += 1
            started = time.monotonic()
            reason = await self._serve(conn, stop)
            if reason == "stopped":
                break
            if reason == "rejected":
                self.state = "failed"
                log.error("%s: every subscription was rejected: %s", self.plan.name, self.error)
                return
            if reason == "login_failed":
                self.state = "failed"
                log.error("%s: %s", self.plan.name, self.error)
                return
            lived = time.monotonic() - started
            self.stats.reconnects[reason] += 1
            self._mark_gap(reason)
            log.warning("%s: disconnected (%s) after %.1fs", self.plan.name, reason, lived)
            if lived >= self.backoff.stable_after:
                attempt = 0
            else:
                url_index += 1
            self.state = "reconnecting"
            await self._sleep(self.backoff.delay(attempt, self.rng), stop)
            attempt += 1
        self.state = "stopped"

    async def _bootstrap(self, url_index: int) -> str:
        """A REST call before each connection gives the URL (and the ping interval)."""
        boot = self.spec.bootstrap
        assert boot is not None
        assert self.rest is not None, "the collector gives bootstrap exchanges a REST client"
        urls = self.plan.urls
        reply = await self.rest.bootstrap(boot, urls[url_index % len(urls)])
        self._ping_interval = reply.ping_interval
        self._bootstrap_reply = reply.body
        return reply.url

    def _url(self, index: int) -> str:
        urls = self.plan.urls
        base = urls[index % len(urls)]
        if self.spec.subscribe.mode == "url":
            assert self.spec.subscribe.url is not None
            return self.spec.subscribe.url(
                base, topics_of(self.spec, list(self.plan.subscriptions))
            )
        return base

    @staticmethod
    async def _sleep(seconds: float, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)

    def _mark_gap(self, reason: str) -> None:
        if self._gap_start_ns is None:
            self._gap_start_ns = time.time_ns()
            self._gap_reason = reason

    async def _serve(self, conn: Connection, stop: asyncio.Event) -> str:
        """One connection: returns why it ended."""
        ctx = Context()
        tracker = AckTracker(self.spec, time.monotonic)
        self.stats.last_message = time.monotonic()
        reader = asyncio.create_task(self._read(conn, ctx, tracker))
        self._cancel_reason = "idle"
        helpers = [asyncio.create_task(self._watch_idle(conn, reader))]
        if self.spec.keepalive.client_ping is not None:
            helpers.append(asyncio.create_task(self._client_pings(conn)))
        boot = self.spec.bootstrap
        if self._bootstraps and boot is not None and boot.keepalive_endpoint is not None:
            helpers.append(asyncio.create_task(self._bootstrap_keepalive(reader)))
        if self.endpoint.max_lifetime is not None:
            helpers.append(asyncio.create_task(self._retire(reader, self.endpoint.max_lifetime)))
        stopper = asyncio.create_task(stop.wait())
        try:
            if not await self._send_on_connect(conn):
                return "closed"
            if self._needs_login:
                self.state = "subscribing"
                failed = await self._login(conn, reader, stopper)
                if failed is not None:
                    return failed
            if self.spec.subscribe.mode == "message" and needs_subscribing(
                self.spec, self.plan.subscriptions
            ):
                self.state = "subscribing"
                sub = asyncio.create_task(self._subscribe(conn, tracker))
                await asyncio.wait({sub, reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not sub.done():
                    sub.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sub
                    if stopper.done():
                        return "stopped"
                    return self._reader_reason(reader)
                try:
                    sub.result()
                except SubscribeRejected as exc:
                    self.error = str(exc)
                    return "rejected"
                except TimeoutError:
                    self.stats.subscribe_failures += 1
                    return "ack_timeout"
                except TransportClosed:
                    return "closed"
            self.state = "streaming"
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                return "stopped"
            return self._reader_reason(reader)
        finally:
            for task in (reader, stopper, *helpers):
                task.cancel()
            await asyncio.gather(reader, stopper, *helpers, return_exceptions=True)
            with contextlib.suppress(TransportClosed, OSError, TimeoutError):
                await asyncio.wait_for(conn.close(), 3.0)
            if self._books is not None:
                await self._books.disconnected()

    def _reader_reason(self, reader: asyncio.Task[str]) -> str:
        if reader.cancelled():
            return self._cancel_reason
        exc = reader.exception()
        if exc is None:
            return reader.result()
        if isinstance(exc, TransportClosed):
            return "closed"
        raise exc

    # -- subscribing ------------------------------------------------------------------------
    async def _send_on_connect(self, conn: Connection) -> bool:
        """The descriptor's ``on_connect`` messages, in order; False when the peer closed."""
        try:
            for build in self.spec.on_connect:
                await conn.send(_encode(build(next(self._ids))))
        except TransportClosed:
            return False
        return True

    async def _login(
        self, conn: Connection, reader: asyncio.Task[str], stopper: asyncio.Task[Any]
    ) -> str | None:
        """Send the signed login and wait for its reply: None when accepted, else why the
        connection ends (``login_failed`` is final). Credentials never reach logs or errors."""
        login = self.spec.login
        assert login is not None
        if self._signer is None:
            if self.spec.signing is None:
                self.error = "login: the descriptor has no [signing] section"
                return "login_failed"
            try:
                self._signer = login_signer(self.spec.signing, login)
            except SigningError as exc:
                self.error = f"login: {exc}"
                return "login_failed"
        signer = self._signer
        values = signer.login_values()
        reply: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        self._login_reply = reply
        try:
            message = login.message(
                next(self._ids),
                str(values["api_key"]),
                values["passphrase"],
                str(values["timestamp"]),
                str(values["sign"]),
            )
            await conn.send(_encode(message))
            waits: set[asyncio.Future[Any]] = {reply, reader, stopper}
            await asyncio.wait(waits, timeout=login.timeout, return_when=asyncio.FIRST_COMPLETED)
        except TransportClosed:
            return "closed"
        finally:
            self._login_reply = None
        if stopper.done():
            return "stopped"
        if reply.done():
            ok, reason = reply.result()
            if ok:
                log.info("%s: logged in", self.plan.name)
                return None
            self.error = f"login rejected: {signer.redact(reason)}"
            return "login_failed"
        reply.cancel()
        if reader.done():
            return self._reader_reason(reader)
        return "login_timeout"

    def _on_login_reply(self, msg: Any, *, error: bool = False) -> bool:
        """A login reply (or an error reply while a login is pending); False when no login
        is pending."""
        reply = self._login_reply
        if reply is None or reply.done():
            return False
        login = self.spec.login
        assert login is not None
        if error:
            err = self.spec.error
            ok = False
            reason = err.reason(msg) if err is not None and err.reason is not None else None
        else:
            ok = login.ok(msg) if login.ok is not None else True
            reason = login.reason(msg) if not ok and login.reason is not None else None
        reply.set_result((ok, str(reason) if reason is not None else _excerpt(msg)))
        return True

    async def _subscribe(self, conn: Connection, tracker: AckTracker) -> None:
        spec = self.spec
        subs = needs_subscribing(spec, self.plan.subscriptions)
        messages = subscribe_messages(spec, subs, lambda: next(self._ids))
        rate = self.endpoint.max_outbound_per_second
        gap_s = max(spec.subscribe.interval, 1.0 / rate if rate else 0.0)
        waits: list[tuple[Any, asyncio.Future[AckResult]]] = []
        for n, out in enumerate(messages):
            if n and gap_s:
                await asyncio.sleep(gap_s)
            waits.extend(tracker.expect(out))
            await conn.send(_encode(out.payload))
        if spec.ack is None or not waits:
            return
        futures = list(dict.fromkeys(f for _, f in waits))
        async with asyncio.timeout(spec.ack.timeout):
            results = await asyncio.gather(*futures)
        by_future = dict(zip(futures, results, strict=True))
        rejected = []
        for sub, fut in waits:
            result = by_future[fut]
            self.stats.acks += 1
            self.stats.ack_latency_sum += result.latency
            if not result.ok:
                rejected.append(f"{sub.channel}/{sub.symbol}: {result.reason}")
        if rejected:
            self.stats.subscribe_failures += len(rejected)
            log.error("%s: subscriptions rejected: %s", self.plan.name, "; ".join(rejected))
            if len(rejected) == len(waits):
                raise SubscribeRejected("; ".join(rejected))

    # -- keepalive ----------------------------------------------------------------------------
    async def _client_pings(self, conn: Connection) -> None:
        ka = self.spec.keepalive
        interval = self._ping_interval or ka.client_ping_interval
        assert ka.client_ping is not None and interval is not None
        while True:
            await asyncio.sleep(interval)
            await conn.send(_encode(ka.client_ping(next(self._ids))))
            self.stats.client_pings += 1

    async def _bootstrap_keepalive(self, reader: asyncio.Task[str]) -> None:
        """Repeat the bootstrap's keep-alive call; when one fails for good the connection ends
        (``keepalive_failed``) and the next connect bootstraps afresh."""
        boot = self.spec.bootstrap
        assert boot is not None and boot.keepalive_interval is not None and self.rest is not None
        while True:
            await asyncio.sleep(boot.keepalive_interval)
            try:
                await self.rest.keepalive(boot, self._bootstrap_reply)
            except RestError as exc:
                self.stats.keepalive_failures += 1
                log.warning("%s: keep-alive failed, reconnecting: %s", self.plan.name, exc)
                self._cancel_reason = "keepalive_failed"
                reader.cancel()
                return
            self.stats.keepalive_calls += 1

    async def _retire(self, reader: asyncio.Task[str], max_lifetime: float) -> None:
        """End the connection shortly before the exchange would (``max_lifetime``): reason
        ``max_lifetime``, then the usual reconnect with a short delay and a gap record."""
        await asyncio.sleep(max(max_lifetime - min(RETIRE_MARGIN, max_lifetime / 10), 0.0))
        log.info("%s: max_lifetime %.0fs reached; reconnecting", self.plan.name, max_lifetime)
        self._cancel_reason = "max_lifetime"
        reader.cancel()

    async def _watch_idle(self, conn: Connection, reader: asyncio.Task[str]) -> None:
        """A feed silent for ``idle_timeout`` is treated as dead: the reader is stopped."""
        idle = self.endpoint.idle_timeout
        while True:
            await asyncio.sleep(min(idle / 4, 1.0))
            if time.monotonic() - self.stats.last_message > idle:
                log.warning("%s: no message for %.1fs; reconnecting", self.plan.name, idle)
                reader.cancel()
                return

    # -- reading --------------------------------------------------------------------------------
    async def _read(self, conn: Connection, ctx: Context, tracker: AckTracker) -> str:
        spec = self.spec
        route = spec.endpoint_routes.get(self.plan.endpoint, spec.route)
        routes = spec.routes
        compression = self.endpoint.compression
        stats = self.stats
        pipeline = self.pipeline
        kinds = self._kinds
        instance = self.instance
        recv = conn.recv
        books = self._books
        if books is not None:  # snapshot requests go out on this connection, with fresh ids
            books.connected(lambda build: conn.send(_encode(build(next(self._ids)))))
        while True:
            frame = await recv()
            stats.last_message = time.monotonic()
            ts_recv = time.time_ns()
            stats.messages += 1
            stats.bytes += len(frame)
            try:
                msg = decode(frame, compression)
                code = route(msg, ctx)
            except (FrameError, *PARSE_ERRORS) as exc:
                stats.malformed += 1
                await self._dead_letter(frame, f"undecodable or unroutable: {exc!r}", ts_recv)
                continue
            if code < 0:
                stats.unrecognized += 1
                await self._dead_letter(frame, "no rule matches", ts_recv)
                continue
            r = routes[code]
            parse = r.parse
            if parse is not None:
                try:
                    records = parse(msg, ts_recv, ctx)
                except PARSE_ERRORS as exc:
                    stats.malformed += 1
                    await self._dead_letter(frame, f"channel {r.channel}: {exc!r}", ts_recv)
                    continue
                if self._gap_start_ns is not None:
                    await self._emit_gaps(ts_recv)
                if books is not None and r.channel in books.channels:
                    records = await books.process(r.channel, records)
                stats.records += len(records)
                # per record: a route with ``also`` channels gives records of several kinds
                if pipeline.add([wrap(instance, kinds[rec["channel"]], rec) for rec in records]):
                    await pipeline.flush()
                if books is not None and books.reconnect:  # a resync needs a new subscription
                    return "book_resync"
                continue
            stats.frames[r.kind] += 1
            try:
                if r.kind == "ack":
                    self._bind(msg, ctx)
                    tracker.on_ack(msg)
                elif r.kind == "login":
                    self._on_login_reply(msg)
                elif r.kind == "error":
                    if self._on_login_reply(msg, error=True):
                        pass
                    elif not tracker.on_error(msg):
                        log.error("%s: exchange error: %s", self.plan.name, _excerpt(msg))
                elif r.kind == "ping":
                    reply = spec.keepalive.server_ping_reply
                    if reply is not None:
                        await conn.send(_encode(reply(msg)))
                        stats.pings_answered += 1
                elif r.kind == "reconnect":
                    return "exchange_requested_reconnect"
            except PARSE_ERRORS as exc:
                stats.malformed += 1
                await self._dead_letter(frame, f"{r.kind} rule failed: {exc!r}", ts_recv)

    def _bind(self, msg: Any, ctx: Context) -> None:
        ack = self.spec.ack
        if ack is not None and ack.bind_key is not None and ack.bind_value is not None:
            try:
                ctx.bound[ack.bind_key(msg)] = ack.bind_value(msg)
            except PARSE_ERRORS as exc:
                log.error("%s: cannot bind values from ACK: %r", self.plan.name, exc)

    async def _emit_gaps(self, now_ns: int) -> None:
        start = self._gap_start_ns
        assert start is not None
        self._gap_start_ns = None
        self.stats.gaps += 1
        self.stats.gap_seconds += (now_ns - start) / 1e9
        envs: list[Envelope] = [
            gap(
                self.spec.id,
                self.instance,
                sub.channel,
                sub.symbol,
                start_ns=start,
                end_ns=now_ns,
                reason=self._gap_reason,
                connection=self.plan.name,
            )
            for sub in self.plan.subscriptions
            if sub.channel not in self.plan.feeds_only
        ]
        if self.pipeline.add(envs):
            await self.pipeline.flush()

    async def _emit(self, envs: list[Envelope]) -> None:
        if self.pipeline.add(envs):
            await self.pipeline.flush()

    async def _dead_letter(self, frame: bytes | str, reason: str, ts_recv: int) -> None:
        """Keep a frame that was not understood, with why (it is never silently dropped)."""
        text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
        record = {
            "exchange": self.spec.id,
            "channel": "_dead_letters",
            "symbol": "_",
            "symbol_raw": None,
            "ts_exchange": None,
            "ts_recv": ts_recv,
            "seq": None,
            "reason": reason,
            "frame": text,
            "connection": self.plan.name,
        }
        if self.pipeline.add([wrap(self.instance, "dead_letter", record)]):
            await self.pipeline.flush()


def _encode(payload: Any) -> str:
    """Outgoing payloads: strings are sent as they are, anything else as JSON text."""
    return payload if isinstance(payload, str) else orjson.dumps(payload).decode()


def _excerpt(msg: Any) -> str:
    text = msg if isinstance(msg, str) else orjson.dumps(msg).decode()
    return text[:300]
