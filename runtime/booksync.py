"""Order-book sync: a sans-I/O state machine per (channel, symbol), driven by ``BookSyncSpec``.

:class:`BookSyncs` takes the parsed book records of a connection (or a replay) and returns the
records that are known good — snapshots, and deltas that passed the sequence rule and the
checksum — plus events: :class:`BookGap` (the book was out of sync from ``start_ns`` to
``end_ns``) and :class:`SnapshotRequest` (fetch a fresh snapshot, or resubscribe). It does no
I/O; :class:`LiveBooks` is the driver a live session uses (REST fetches, gap envelopes, counters).

Per symbol (``docs/order-books.md`` has the guarantees and each venue's rule):

- **waiting**: no book. With ``snapshot = "rest"`` or ``"ws_request"`` deltas are buffered (at
  most ``BookOptions.max_buffer``) and the first one asks for a snapshot (a REST call, or the
  channel's ``request`` message sent on the connection, whose reply is a snapshot record of the
  channel); with ``"first_message"`` deltas are discarded until a snapshot record arrives; with
  ``"channel"`` likewise, the snapshots being the records of ``snapshot_channel`` (fed to this
  channel's book too, and emitted again under this channel's name); with ``"every_message"``
  every record is a whole book.
- **snapshot** (seq ``L``): the book is replaced; a checksum on it is verified. Buffered deltas
  with ``seq <= L`` are stale and dropped; the first remaining one must connect to ``L``
  (``seq_first <= L + 1`` / ``prev_seq <= L`` / ``seq > L``), else the snapshot is too old and
  another is requested. Then the buffer is applied like live deltas.
- **synced**: each delta must follow the previous one (``sequence``): ``straddle`` /
  ``contiguous``: ``seq_first == last + 1`` (``seq`` when there is no ``seq_first``);
  ``prev_seq``: ``prev_seq == last``; ``monotonic``: ``seq > last``; ``none``: no check. It is
  applied, the book truncated to ``depth``, and a non-null ``checksum`` verified. A failure
  drops the book, opens a gap (closed by the next good snapshot) and requests a resync; the
  record that failed is not emitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

from runtime.book import Book, BookError
from runtime.checksum import ChecksumFn, checksum_rule
from runtime.envelope import Envelope, gap, wrap
from runtime.spec import BookSyncSpec, Context, ExchangeSpec, Record

if TYPE_CHECKING:
    from runtime.rest import RestClient

log = logging.getLogger("mdgen.books")

PARSE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""As ``runtime.replay.PARSE_ERRORS`` (replay imports this module)."""


@dataclass(frozen=True)
class BookOptions:
    """How books are kept; the defaults suit collection."""

    max_buffer: int = 10_000
    """Deltas kept per symbol while waiting for a REST snapshot (the oldest go first)."""
    top_interval: float | None = None
    """Seconds between periodic top-N snapshot records (``<channel>_top``); None: none."""
    top_depth: int = 20
    """Levels per side of the periodic top-N records."""
    resync_on_crossed: bool = False
    """Treat a crossed book (best bid >= best ask) after a delta as a gap; otherwise count it."""


@dataclass(frozen=True)
class BookGap:
    """The book of ``channel``/``symbol`` was unknown from ``start_ns`` to ``end_ns``."""

    channel: str
    symbol: str
    start_ns: int
    end_ns: int
    reason: str


@dataclass(frozen=True)
class SnapshotRequest:
    """A fresh snapshot is needed: from REST (``rest``), by a request message on the connection
    (``ws_request``) or by subscribing again (``first_message``)."""

    channel: str
    symbol: str
    symbol_raw: str
    source: Literal["first_message", "rest", "ws_request"]
    endpoint: str | None
    retry: bool
    """The previous snapshot was too old or failed its checksum (fetch after a pause)."""


@dataclass
class BookStats:
    """Counters over every book of a :class:`BookSyncs`."""

    snapshots: int = 0
    deltas: int = 0
    """Deltas applied (and emitted)."""
    gaps: int = 0
    """Gaps opened (sequence break, checksum failure, crossed book, malformed level)."""
    resyncs: int = 0
    """Books back in sync after a gap."""
    snapshot_requests: int = 0
    snapshot_retries: int = 0
    """Snapshots that were too old for the buffered deltas (or failed their checksum)."""
    checksum_ok: int = 0
    checksum_failures: int = 0
    sequence_gaps: int = 0
    stale: int = 0
    """Deltas dropped because the snapshot already contains them."""
    unchecked: int = 0
    """Deltas whose sequence could not be checked (a sequence field was null)."""
    discarded: int = 0
    """Deltas dropped while out of sync."""
    overflow: int = 0
    crossed: int = 0
    malformed: int = 0


_WAITING = 0
_SYNCED = 1


def _int(value: Any) -> int | None:
    if value is None or type(value) is int:
        return value
    return int(value)


class BookSync:
    """The state machine of one (channel, symbol); see the module docstring."""

    __slots__ = (
        "owner",
        "channel",
        "symbol",
        "symbol_raw",
        "book",
        "state",
        "last_seq",
        "first_pending",
        "buffer",
        "requested",
        "gap_start",
        "gap_reason",
        "last_good_ns",
        "last_top_ns",
    )

    def __init__(self, owner: BookSyncs, channel: str, symbol: str, symbol_raw: str) -> None:
        self.owner = owner
        self.channel = channel
        self.symbol = symbol
        self.symbol_raw = symbol_raw
        self.book = Book(owner.rules[channel].depth)
        self.state = _WAITING
        self.last_seq: int | None = None
        self.first_pending = False
        """The next delta is the first after a snapshot: stale ones are dropped, it must connect."""
        self.buffer: deque[Record] = deque()
        self.requested = False
        self.gap_start: int | None = None
        self.gap_reason = ""
        self.last_good_ns: int | None = None
        self.last_top_ns = 0

    @property
    def synced(self) -> bool:
        return self.state == _SYNCED

    # -- entry points -----------------------------------------------------------------------
    def on_record(self, rec: Record) -> list[Record]:
        """A record from the stream (snapshot or delta); returns the records to emit."""
        rule = self.owner.rules[self.channel]
        if rec["type"] == "snapshot" or rule.snapshot == "every_message":
            if (
                rule.snapshot == "every_message"
                and rule.sequence != "none"
                and self.state == _SYNCED
                and self._stale(rec, self.last_seq)
            ):
                self.owner.stats.stale += 1  # an older whole book after a newer one
                return []
            return self.on_snapshot(rec)
        if self.state == _SYNCED:
            return self._delta(rec, rule)
        stats = self.owner.stats
        if rule.snapshot in ("rest", "ws_request"):
            buffer = self.buffer
            if len(buffer) >= self.owner.options.max_buffer:
                buffer.popleft()
                stats.overflow += 1
            buffer.append(rec)
            if not self.requested:
                self._request(rule, retry=False)
        else:
            stats.discarded += 1
        return []

    def on_snapshot(self, rec: Record) -> list[Record]:
        """A full book (a snapshot record, or a REST reply); returns the records to emit."""
        owner, stats = self.owner, self.owner.stats
        rule = owner.rules[self.channel]
        self.requested = False
        stats.snapshots += 1
        try:
            self.book.load(rec["bids"], rec["asks"])
            seq = _int(rec["seq"])
        except (BookError, *PARSE_ERRORS) as exc:
            stats.malformed += 1
            log.warning("%s %s: malformed snapshot: %r", self.channel, self.symbol, exc)
            self._fail("book_malformed", rec, rule, keep=False)
            return []
        if not self._checksum(rec, rule):
            stats.snapshot_retries += 1
            self._fail("book_checksum_mismatch", rec, rule, keep=False)
            return []
        buffered: list[Record] = []
        if self.buffer:
            buffered = [d for d in self.buffer if not self._stale(d, seq)]
            stats.stale += len(self.buffer) - len(buffered)
            self.buffer.clear()
            if buffered and not self._connects(buffered[0], seq, rule):
                # the snapshot is older than the buffered deltas: ask for a newer one
                self.book.clear()
                self.buffer.extend(buffered)
                stats.snapshot_retries += 1
                self._request(rule, retry=True)
                return []
        self.state = _SYNCED
        self.last_seq = seq
        self.first_pending = seq is not None
        out = [rec]
        self._good(rec, out)
        for delta in buffered:
            out.extend(self.on_record(delta))
        return out

    def reset(self) -> None:
        """The connection was lost: wait for a fresh snapshot (an open gap stays open)."""
        self.state = _WAITING
        self.book.clear()
        self.buffer.clear()
        self.requested = False
        self.first_pending = False
        self.last_seq = None

    # -- internals ---------------------------------------------------------------------------
    def _delta(self, rec: Record, rule: BookSyncSpec) -> list[Record]:
        stats = self.owner.stats
        sequence = rule.sequence
        if sequence != "none":
            try:
                seq = _int(rec["seq"])
                last = self.last_seq
                if self.first_pending:
                    if self._stale(rec, last):
                        stats.stale += 1
                        return []
                    ok = self._connects(rec, last, rule)
                elif seq is None or last is None:
                    ok = True
                    stats.unchecked += 1
                elif sequence == "prev_seq":
                    prev = _int(rec["prev_seq"])
                    ok = prev is None or prev == last
                elif sequence == "monotonic":
                    ok = seq > last
                else:  # contiguous, straddle
                    first = _int(rec["seq_first"])
                    ok = (seq if first is None else first) == last + 1
            except PARSE_ERRORS as exc:
                stats.malformed += 1
                log.warning("%s %s: bad sequence fields: %r", self.channel, self.symbol, exc)
                self._fail("book_malformed", rec, rule, keep=False)
                return []
            if not ok:
                stats.sequence_gaps += 1
                log.info(
                    "%s %s: sequence gap after %s: seq_first=%s prev_seq=%s seq=%s",
                    self.channel,
                    self.symbol,
                    self.last_seq,
                    rec.get("seq_first"),
                    rec.get("prev_seq"),
                    rec.get("seq"),
                )
                self._fail("book_sequence_gap", rec, rule, keep=True)
                return []
            if seq is not None:
                self.last_seq = seq
            self.first_pending = False
        try:
            self.book.apply(rec["bids"], rec["asks"])
        except (BookError, *PARSE_ERRORS) as exc:
            stats.malformed += 1
            log.warning("%s %s: malformed delta: %r", self.channel, self.symbol, exc)
            self._fail("book_malformed", rec, rule, keep=False)
            return []
        if not self._checksum(rec, rule):
            self._fail("book_checksum_mismatch", rec, rule, keep=False)
            return []
        if self.book.crossed():
            stats.crossed += 1
            if self.owner.options.resync_on_crossed:
                self._fail("book_crossed", rec, rule, keep=False)
                return []
        stats.deltas += 1
        out = [rec]
        self._good(rec, out)
        return out

    def _good(self, rec: Record, out: list[Record]) -> None:
        """Bookkeeping after a record that is known good: close a gap, periodic top-N."""
        ts = rec["ts_recv"]
        self.last_good_ns = ts
        owner = self.owner
        if self.gap_start is not None:
            owner.gaps.append(
                BookGap(self.channel, self.symbol, self.gap_start, ts, self.gap_reason)
            )
            owner.stats.resyncs += 1
            self.gap_start = None
        interval = owner.top_interval_ns
        if interval and ts - self.last_top_ns >= interval:
            self.last_top_ns = ts
            out.append(self._top_record(rec))

    def _top_record(self, rec: Record) -> Record:
        depth = self.owner.options.top_depth
        top = self.book.snapshot(depth)
        return {
            "exchange": rec["exchange"],
            "channel": self.channel + "_top",
            "symbol": self.symbol,
            "symbol_raw": self.symbol_raw,
            "ts_exchange": rec["ts_exchange"],
            "ts_recv": rec["ts_recv"],
            "seq": self.last_seq,
            "type": "snapshot",
            "bids": top["bids"],
            "asks": top["asks"],
            "seq_first": None,
            "prev_seq": None,
            "checksum": None,
            "depth": depth,
        }

    def _checksum(self, rec: Record, rule: BookSyncSpec) -> bool:
        check = self.owner.checksums.get(self.channel)
        if check is None:
            return True
        expected = rec.get("checksum")
        if expected is None:
            return True
        fn, depth = check
        book = self.book
        got = fn(book.bids.top(depth), book.asks.top(depth), depth)
        stats = self.owner.stats
        if got == _int(expected):
            stats.checksum_ok += 1
            return True
        stats.checksum_failures += 1
        log.info(
            "%s %s: checksum mismatch: exchange %s, book %s",
            self.channel,
            self.symbol,
            expected,
            got,
        )
        return False

    @staticmethod
    def _stale(rec: Record, snapshot_seq: int | None) -> bool:
        """A delta the snapshot already contains."""
        if snapshot_seq is None:
            return False
        seq = _int(rec["seq"])
        return seq is not None and seq <= snapshot_seq

    @staticmethod
    def _connects(rec: Record, snapshot_seq: int | None, rule: BookSyncSpec) -> bool:
        """Does the first (non-stale) delta after a snapshot continue it?"""
        if snapshot_seq is None or rule.sequence == "none":
            return True
        seq = _int(rec["seq"])
        if seq is None:
            return True
        if rule.sequence == "prev_seq":
            prev = _int(rec["prev_seq"])
            return prev is None or prev <= snapshot_seq
        if rule.sequence == "monotonic":
            return seq > snapshot_seq
        first = _int(rec["seq_first"])
        return (seq if first is None else first) <= snapshot_seq + 1 <= seq

    def _fail(self, reason: str, rec: Record, rule: BookSyncSpec, *, keep: bool) -> None:
        """Drop the book, open a gap (if it was ever in sync) and request a resync.

        ``keep``: the failing delta is kept for the next REST snapshot (a sequence gap: the
        delta itself is fine, what came before it is missing).
        """
        stats = self.owner.stats
        if self.gap_start is None and self.last_good_ns is not None:
            self.gap_start = self.last_good_ns
            self.gap_reason = reason
            stats.gaps += 1
        self.state = _WAITING
        self.first_pending = False
        self.book.clear()
        self.buffer.clear()
        if keep and rule.snapshot in ("rest", "ws_request") and rec["type"] != "snapshot":
            self.buffer.append(rec)
        if not self.requested:  # a snapshot that failed: the next one after a pause
            self._request(rule, retry=rec["type"] == "snapshot")

    def _request(self, rule: BookSyncSpec, *, retry: bool) -> None:
        if rule.snapshot == "every_message":
            return  # the next record is a whole book
        self.requested = True
        self.owner.stats.snapshot_requests += 1
        source: Literal["first_message", "rest", "ws_request"] = "first_message"
        if rule.snapshot in ("rest", "ws_request"):
            source = rule.snapshot
        # "channel": the snapshot channel is resubscribed with the rest (its snapshots can be
        # far apart)
        self.owner.requests.append(
            SnapshotRequest(
                self.channel, self.symbol, self.symbol_raw, source, rule.rest_endpoint, retry
            )
        )


class BookSyncs:
    """Every book of one exchange connection (or replay), keyed by (channel, symbol).

    After :meth:`feed` / :meth:`snapshot`, read and clear :attr:`gaps` and :attr:`requests`.
    """

    def __init__(
        self,
        spec: ExchangeSpec,
        options: BookOptions | None = None,
        *,
        subscribed: frozenset[str] | None = None,
    ) -> None:
        """``subscribed``: the channels collected (None: all), so that a snapshot channel
        starts only the books of channels that are collected too."""
        self.exchange = spec.id
        self.options = options or BookOptions()
        self.rules: dict[str, BookSyncSpec] = {}
        self.sources: dict[str, list[str]] = {}
        """Snapshot channel -> the channels (``snapshot = "channel"``) its records start."""
        self._collected = subscribed
        """A snapshot channel outside it only feeds books: its own records are not emitted."""
        for name, ch in spec.channels.items():
            if ch.sync is not None:
                self.rules[name] = ch.sync
                source = ch.sync.snapshot_channel
                if source is not None and (subscribed is None or name in subscribed):
                    self.sources.setdefault(source, []).append(name)
        self.channels = frozenset(self.rules) | frozenset(self.sources)
        self.checksums: dict[str, tuple[ChecksumFn, int]] = {}
        for name, rule in self.rules.items():
            check = checksum_rule(rule.checksum, rule.checksum_depth)
            if check is not None:
                self.checksums[name] = check
        interval = self.options.top_interval
        self.top_interval_ns = int(interval * 1e9) if interval else 0
        self.stats = BookStats()
        self.gaps: list[BookGap] = []
        self.requests: list[SnapshotRequest] = []
        self._syncs: dict[tuple[str, str], BookSync] = {}

    def _sync(self, channel: str, rec: Record) -> BookSync:
        key = (channel, rec["symbol"])
        sync = self._syncs.get(key)
        if sync is None:
            raw = rec.get("symbol_raw")
            sync = BookSync(self, channel, key[1], str(raw if raw is not None else key[1]))
            self._syncs[key] = sync
        return sync

    def feed(self, channel: str, records: list[Record]) -> list[Record]:
        """Stream records of a channel of :attr:`channels`; returns those to emit, in order.

        Records of a snapshot channel also start the books of the channels taking their
        snapshots from it: each is emitted again as a snapshot record of that channel (and as
        a record of its own channel only when that channel is collected too).
        """
        targets = self.sources.get(channel)
        if targets is None:
            if len(records) == 1:
                rec = records[0]
                return self._sync(channel, rec).on_record(rec)
            out: list[Record] = []
            for rec in records:
                out.extend(self._sync(channel, rec).on_record(rec))
            return out
        own = channel in self.rules
        keep = self._collected is None or channel in self._collected
        out = []
        for rec in records:
            if keep:
                out.extend(self._sync(channel, rec).on_record(rec) if own else [rec])
            for target in targets:
                copy = {**rec, "channel": target, "type": "snapshot"}
                out.extend(self._sync(target, copy).on_snapshot(copy))
        return out

    def snapshot(self, channel: str, records: list[Record]) -> list[Record]:
        """Snapshot records from a REST reply; returns those to emit (with applied buffers)."""
        out: list[Record] = []
        for rec in records:
            out.extend(self._sync(channel, rec).on_snapshot(rec))
        return out

    def reset(self) -> None:
        """A new connection: every book waits for a fresh snapshot; open gaps stay open."""
        for sync in self._syncs.values():
            sync.reset()

    def close(self, now_ns: int) -> list[BookGap]:
        """Gaps still open (the book never came back), ending at ``now_ns``; closes them."""
        out = []
        for sync in self._syncs.values():
            if sync.gap_start is not None:
                out.append(
                    BookGap(sync.channel, sync.symbol, sync.gap_start, now_ns, sync.gap_reason)
                )
                sync.gap_start = None
        return out

    def __iter__(self) -> Iterator[BookSync]:
        return iter(self._syncs.values())

    def get(self, channel: str, symbol: str) -> BookSync | None:
        return self._syncs.get((channel, symbol))

    def final_books(self, depth: int | None = None) -> list[Record]:
        """The current book of every (channel, symbol), sorted, best levels first."""
        out = []
        for (channel, symbol), sync in sorted(self._syncs.items()):
            top = sync.book.snapshot(depth)
            out.append(
                {
                    "exchange": self.exchange,
                    "channel": channel,
                    "symbol": symbol,
                    "symbol_raw": sync.symbol_raw,
                    "synced": sync.synced,
                    "seq": sync.last_seq,
                    "ts_recv": sync.last_good_ns,
                    "bids": top["bids"],
                    "asks": top["asks"],
                }
            )
        return out


def gap_record(exchange: str, event: BookGap, connection: str) -> Record:
    """A gap event as the normalized gap record (the ``record`` of a gap envelope)."""
    env = gap(
        exchange,
        "",
        event.channel,
        event.symbol,
        start_ns=event.start_ns,
        end_ns=event.end_ns,
        reason=event.reason,
        connection=connection,
    )
    record: Record = env["record"]
    return record


# -- the live driver ---------------------------------------------------------------------------


class BookCounters(Protocol):
    """The session counters the driver keeps current (``runtime.session.SessionStats``)."""

    records: int
    book_gaps: int
    book_resyncs: int
    checksum_failures: int
    checksum_ok: int


Emit = Callable[[list[Envelope]], Awaitable[None]]
SendRequest = Callable[[Callable[[int], Any]], Awaitable[None]]
"""Sends ``build(req_id)`` on the connection, ``req_id`` being a fresh id of the session."""


class LiveBooks:
    """Book sync inside a live session (one per connection plan, kept across reconnects).

    :meth:`process` runs the sync on a frame's records and handles its events: gaps become gap
    envelopes, REST snapshot requests become fetch tasks (through ``rest``, or a client of its
    own made from ``spec.rest`` per connection), ``ws_request`` snapshot requests are sent on
    the connection (again after ``request_timeout`` without a snapshot), and a resync of a
    ``first_message`` or ``channel`` channel sets :attr:`reconnect` — the spec has no
    per-channel unsubscribe, so the session resubscribes by reconnecting. Call
    :meth:`connected` when a connection starts and :meth:`disconnected` when it ends.
    """

    def __init__(
        self,
        spec: ExchangeSpec,
        instance: str,
        connection: str,
        counters: BookCounters,
        emit: Emit,
        *,
        rest: RestClient | None = None,
        options: BookOptions | None = None,
        retry_delay: float = 1.0,
        max_retry_delay: float = 30.0,
        request_timeout: float = 10.0,
        subscribed: frozenset[str] | None = None,
    ) -> None:
        self.spec = spec
        self.instance = instance
        self.connection = connection
        self.counters = counters
        self.emit = emit
        self.syncs = BookSyncs(spec, options, subscribed=subscribed)
        self.channels = self.syncs.channels
        self.kinds = {name: spec.channels[name].kind for name in self.channels}
        self.reconnect = False
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.request_timeout = request_timeout
        self._shared_rest = rest
        self._own_rest: RestClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests: dict[tuple[str, str], asyncio.Task[None]] = {}
        """The running ``ws_request`` task of each (channel, symbol)."""
        self._send: SendRequest | None = None
        self._epoch = 0

    @classmethod
    def for_plan(
        cls,
        spec: ExchangeSpec,
        instance: str,
        connection: str,
        channels: set[str],
        counters: BookCounters,
        emit: Emit,
        **kwargs: Any,
    ) -> LiveBooks | None:
        """A driver when one of ``channels`` has sync rules, else None (no cost at all)."""
        if not any(c in spec.channels and spec.channels[c].sync is not None for c in channels):
            return None
        kwargs.setdefault("subscribed", frozenset(channels))
        return cls(spec, instance, connection, counters, emit, **kwargs)

    # -- life cycle ---------------------------------------------------------------------------
    def connected(self, send: SendRequest | None = None) -> None:
        """A new connection (``send``: how to send a snapshot request on it): every book waits
        for a fresh snapshot."""
        self._epoch += 1
        self.reconnect = False
        self._send = send
        self._cancel()
        self.syncs.reset()
        self.syncs.requests.clear()

    async def disconnected(self) -> None:
        """The connection ended: stop snapshot fetches, close the REST client made here."""
        self._send = None
        self._cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
        client, self._own_rest = self._own_rest, None
        if client is not None:
            await client.aclose()

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._requests.clear()

    # -- records --------------------------------------------------------------------------------
    async def process(self, channel: str, records: list[Record]) -> list[Record]:
        """Records of a book channel in, records to emit out (events handled)."""
        syncs = self.syncs
        out = syncs.feed(channel, records)
        if syncs.gaps or syncs.requests:
            await self._events()
        self._count()
        return out

    def _count(self) -> None:
        stats, counters = self.syncs.stats, self.counters
        counters.checksum_ok = stats.checksum_ok
        counters.checksum_failures = stats.checksum_failures
        counters.book_resyncs = stats.resyncs

    async def _events(self) -> None:
        syncs = self.syncs
        gaps, syncs.gaps = syncs.gaps, []
        requests, syncs.requests = syncs.requests, []
        if gaps:
            self.counters.book_gaps += len(gaps)
            await self.emit(
                [
                    gap(
                        self.spec.id,
                        self.instance,
                        g.channel,
                        g.symbol,
                        start_ns=g.start_ns,
                        end_ns=g.end_ns,
                        reason=g.reason,
                        connection=self.connection,
                    )
                    for g in gaps
                ]
            )
        for req in requests:
            if req.source == "rest":
                self._spawn(self._fetch(req, self._epoch))
            elif req.source == "ws_request":
                key = (req.channel, req.symbol)
                previous = self._requests.get(key)
                if previous is not None:  # one request task per book
                    previous.cancel()
                self._requests[key] = self._spawn(self._ws_request(req, self._epoch))
            else:
                self.reconnect = True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: snapshot fetch failed", self.connection, exc_info=task.exception())

    async def _ws_request(self, req: SnapshotRequest, epoch: int) -> None:
        """Send the channel's snapshot request; again (backing off) while no snapshot came.

        The reply is a record of the channel like any other: the sync takes it as the snapshot
        (its ``requested`` flag drops), and a snapshot too old for the buffer asks anew.
        """
        from runtime.transport import TransportClosed

        sync_rule = self.spec.channels[req.channel].sync
        build = sync_rule.request if sync_rule is not None else None
        if build is None:
            log.error("%s: channel %s has no snapshot request", self.connection, req.channel)
            return
        delay = self.retry_delay if req.retry else 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            delay = min(self.max_retry_delay, max(delay * 2, self.retry_delay))
            send = self._send
            if epoch != self._epoch or send is None:
                return
            try:
                await send(lambda req_id: build(req.symbol_raw, req.symbol, req_id))
            except TransportClosed:
                return  # the session sees the closed connection and reconnects
            await asyncio.sleep(self.request_timeout)
            sync = self.syncs.get(req.channel, req.symbol)
            if epoch != self._epoch or sync is None or not sync.requested:
                return
            log.warning(
                "%s: no snapshot of %s %s %.0fs after the request; asking again",
                self.connection,
                req.channel,
                req.symbol,
                self.request_timeout,
            )

    def _client(self) -> RestClient:
        if self._shared_rest is not None:
            return self._shared_rest
        if self._own_rest is None:
            from runtime.rest import RestClient

            if self.spec.rest is None:
                raise RuntimeError(f"{self.spec.id}: REST snapshots need a [rest] section")
            self._own_rest = RestClient(self.spec.rest)
        return self._own_rest

    async def _fetch(self, req: SnapshotRequest, epoch: int) -> None:
        """Fetch one REST snapshot (retrying with backoff) and feed it to the sync."""
        from runtime.rest import RestError

        assert req.endpoint is not None
        delay = self.retry_delay if req.retry else 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)
            delay = min(self.max_retry_delay, max(delay * 2, self.retry_delay))
            try:
                client = self._client()
                reply = await client.call(req.endpoint, raw=req.symbol_raw, symbol=req.symbol)
            except RestError as exc:
                log.warning("%s: snapshot of %s failed: %s", self.connection, req.symbol, exc)
                continue
            if epoch != self._epoch:
                return
            endpoint = client.endpoint(req.endpoint)
            if endpoint.parse is None:
                log.error("%s: REST endpoint %s has no parse rules", self.connection, req.endpoint)
                return
            query = dict(parse_qsl(urlsplit(reply.url).query)) | dict(reply.query)
            ts_recv = time.time_ns()
            try:
                records = endpoint.parse(reply.body, query, ts_recv, Context())
            except PARSE_ERRORS as exc:
                log.warning("%s: snapshot of %s unreadable: %r", self.connection, req.symbol, exc)
                continue
            if not records:
                log.warning("%s: snapshot of %s has no records", self.connection, req.symbol)
                continue
            out = self.syncs.snapshot(req.channel, records)
            kind = self.kinds[req.channel]
            if out:
                self.counters.records += len(out)
                await self.emit([wrap(self.instance, kind, rec) for rec in out])
            if self.syncs.gaps or self.syncs.requests:
                await self._events()
            self._count()
            return

    # -- views ----------------------------------------------------------------------------------
    def books(self) -> Mapping[tuple[str, str], Book]:
        return {(s.channel, s.symbol): s.book for s in self.syncs}
