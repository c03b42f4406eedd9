"""The MongoDB sink with its fallback chain: MongoDB -> durable spool -> ``on_full``.

``write`` returns once the batch is stored: inserted into MongoDB (duplicates count as stored,
refused documents are in the reject store), or durable in the spool while MongoDB is
unavailable. When the spool is full, ``on_full`` decides: ``block`` makes ``write`` wait
(back-pressure to the connections), ``drop_oldest``/``drop_newest`` drop data and count it.
The replay worker drains the spool when MongoDB is back; live batches go straight to MongoDB
meanwhile. States (:class:`SinkState`): OK, MongoUnavailable (writing to the spool), Degraded
(the spool is full, failing or dropping).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from runtime.envelope import Envelope
from runtime.persist.dedup import DedupWindow
from runtime.persist.keys import identities
from runtime.persist.mongo import MongoStore, MongoUnavailable, RejectStore, WriteOutcome
from runtime.persist.replay import MongoLink, ReplayWorker
from runtime.persist.spool import AppendResult, Spool, SpoolFull, SpoolLocked

log = logging.getLogger("mdgen.persist")

MAX_RECORD_BYTES = 4 << 20
"""A batch whose encoding is larger is split into several spool records."""


class SinkError(Exception):
    """The sink cannot start (the spool is locked by another process or unusable)."""


class SinkState(enum.StrEnum):
    OK = "OK"
    MONGO_UNAVAILABLE = "MongoUnavailable"
    DEGRADED = "Degraded"


@dataclass(frozen=True)
class SinkHealth:
    """For /healthz and /metrics (the keys of runtime.ops' HealthReporting protocol)."""

    state: SinkState
    reason: str | None
    backlog_records: int
    """Records in the spool, waiting to be replayed."""
    backlog_bytes: int
    spool_segments: int = 0
    on_full_drops: int = 0
    """Records dropped by on_full (newest and oldest)."""
    dedup_drops: int = 0
    inserted: int = 0
    """Records inserted or found already stored (live and replayed)."""
    spooled: int = 0
    rejected: int = 0
    """Documents MongoDB refused for good (in the reject store)."""
    mongo_outages: int = 0
    blocked_seconds: float = 0.0
    fsync_failures: int = 0
    segments_sealed: int = 0
    corrupt_records: int = 0


@dataclass
class FallbackStats:
    """Counters of the live path (the replay worker and the spool keep their own)."""

    batches: int = 0
    records: int = 0
    """Records handed to ``write`` (after the dedup window)."""
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    spooled: int = 0
    """Records made durable in the spool by ``write``."""
    dropped: int = 0
    """Records ``write`` dropped (on_full = drop_newest, or drop_oldest with nothing to drop)."""
    blocked_events: int = 0
    blocked_seconds: float = 0.0
    retries: int = 0
    error_codes: Counter[int] = field(default_factory=Counter)


def encode_batch(
    batch: Sequence[Envelope], ids: Sequence[str], limit: int = MAX_RECORD_BYTES
) -> Iterator[tuple[bytes, int]]:
    """Spool payloads ``[ids, envelopes]`` of at most ``limit`` bytes (unless one envelope is)."""
    data = orjson.dumps([list(ids), list(batch)])
    if len(data) <= limit or len(batch) == 1:
        yield data, len(batch)
        return
    mid = len(batch) // 2
    yield from encode_batch(batch[:mid], ids[:mid], limit)
    yield from encode_batch(batch[mid:], ids[mid:], limit)


class FallbackSink:
    """A :class:`runtime.sinks.Sink`: MongoDB, else the spool, else ``on_full``."""

    def __init__(
        self,
        store: MongoStore,
        spool: Spool,
        *,
        rejects: RejectStore | None = None,
        dedup: DedupWindow | None = None,
        replay_rate: float = 20_000.0,
        probe_initial: float = 0.5,
        probe_max: float = 10.0,
        close_drain_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.spool = spool
        self.rejects = rejects or RejectStore(spool.directory / "rejected.ndjson")
        self.dedup = dedup
        self.link = MongoLink()
        self.replay = ReplayWorker(
            spool,
            store,
            self.link,
            self.rejects,
            rate=replay_rate,
            probe_initial=probe_initial,
            probe_max=probe_max,
            on_progress=self._progress,
        )
        self.close_drain_timeout = close_drain_timeout
        self.stats = FallbackStats()
        self._degraded: str | None = None
        self._dropped_oldest_seen = 0
        self._blocked_since: float | None = None
        self._progressed = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"FallbackSink({self.store!r}, spool={str(self.spool.directory)!r})"

    # -- Sink ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Recover the spool, probe MongoDB (create the layout), start the replay worker."""
        try:
            await asyncio.to_thread(self.spool.open)
        except SpoolLocked as exc:
            raise SinkError(f"{exc}: give each process its own spool_dir") from None
        except OSError as exc:
            raise SinkError(f"cannot open the spool {self.spool.directory}: {exc}") from None
        if self.spool.stats.recovered_items:
            log.info("spool: %d record(s) to replay", self.spool.stats.recovered_items)
        await self.replay.probe()
        self.replay.start()
        if self.spool.fsync_policy == "interval":
            self._syncer = asyncio.create_task(self._sync_loop(), name="spool-fsync")

    async def write(self, batch: list[Envelope]) -> None:
        """Return once ``batch`` is in MongoDB or durable in the spool (or dropped per on_full)."""
        envelopes, ids = await asyncio.to_thread(self._prepare, batch)
        if not envelopes:
            return
        self.stats.batches += 1
        self.stats.records += len(envelopes)
        while True:
            if self.link.up:
                try:
                    outcome = await asyncio.to_thread(self._insert, envelopes, ids)
                except MongoUnavailable as exc:
                    self.link.mark_down(str(exc))
                except OSError as exc:  # reject store unwritable: keep the batch in the spool
                    log.error("cannot write rejected documents (%s); batch spooled", exc)
                else:
                    self._count(outcome)
                    self._unblock()
                    self._degraded = None
                    return
            try:
                result = await asyncio.to_thread(self._spool, envelopes, ids)
            except SpoolFull as exc:
                await self._blocked(str(exc))
                continue
            self._spooled(result)
            return

    async def close(self) -> None:
        """Drain what MongoDB takes within ``close_drain_timeout``; keep the rest spooled."""
        await self.replay.stop(self.close_drain_timeout)
        if self._syncer is not None:
            self._syncer.cancel()
            await asyncio.gather(self._syncer, return_exceptions=True)
        await asyncio.to_thread(self.spool.close)
        await asyncio.to_thread(self.store.close)
        log.info("MongoDB sink closed: %s", self.summary())

    # -- state -----------------------------------------------------------------------------

    def health(self) -> SinkHealth:
        reason: str | None
        if self._degraded is not None:
            state, reason = SinkState.DEGRADED, self._degraded
        elif not self.link.up:
            state, reason = SinkState.MONGO_UNAVAILABLE, self.link.reason
        else:
            state, reason = SinkState.OK, None
        s, r, sp = self.stats, self.replay.stats, self.spool.stats
        return SinkHealth(
            state,
            reason,
            self.spool.backlog_items,
            self.spool.backlog_bytes,
            spool_segments=self.spool.segment_count,
            on_full_drops=s.dropped + sp.dropped_oldest_items,
            dedup_drops=self.dedup.dropped if self.dedup is not None else 0,
            inserted=s.inserted + s.duplicates + r.inserted + r.duplicates,
            spooled=s.spooled,
            rejected=s.rejected + r.rejected,
            mongo_outages=self.link.outages,
            blocked_seconds=s.blocked_seconds,
            fsync_failures=sp.fsync_failures,
            segments_sealed=sp.segments_sealed,
            corrupt_records=sp.corrupt_records,
        )

    def summary(self) -> str:
        s, r, sp = self.stats, self.replay.stats, self.spool.stats
        return (
            f"{s.records} records: {s.inserted} inserted, {s.duplicates} duplicates, "
            f"{s.spooled} spooled, {r.inserted + r.duplicates} replayed "
            f"({r.duplicates} already stored), {s.rejected + r.rejected} rejected, "
            f"{s.dropped + sp.dropped_oldest_items} dropped; "
            f"{self.link.outages} outage(s); backlog {self.spool.backlog_items} records"
        )

    # -- internals (worker threads) --------------------------------------------------------

    def _prepare(self, batch: list[Envelope]) -> tuple[list[Envelope], list[str]]:
        ids = identities(batch)
        if self.dedup is None:
            return batch, ids
        return self.dedup.filter(batch, ids)

    def _insert(self, envelopes: list[Envelope], ids: list[str]) -> WriteOutcome:
        outcome = self.store.insert_envelopes(envelopes, ids)
        self.rejects.add(outcome.rejected)
        return outcome

    def _spool(self, envelopes: list[Envelope], ids: list[str]) -> AppendResult:
        limit = min(MAX_RECORD_BYTES, self.spool.segment_bytes // 2)
        return self.spool.append(list(encode_batch(envelopes, ids, limit)))

    # -- internals (event loop) ------------------------------------------------------------

    def _count(self, outcome: WriteOutcome) -> None:
        self.stats.inserted += outcome.inserted
        self.stats.duplicates += outcome.duplicates
        self.stats.rejected += len(outcome.rejected)
        self.stats.retries += outcome.retries
        self.stats.error_codes.update(outcome.error_codes)

    def _spooled(self, result: AppendResult) -> None:
        self.stats.spooled += result.stored
        self.stats.dropped += result.dropped
        self._unblock()
        dropped_oldest = self.spool.stats.dropped_oldest_items
        if result.dropped or dropped_oldest > self._dropped_oldest_seen:
            self._degraded = self.spool.last_drop or "spool full: records dropped"
        self._dropped_oldest_seen = dropped_oldest
        self.replay.wake()

    async def _blocked(self, reason: str) -> None:
        """on_full = block: wait until the spool has room or MongoDB is back."""
        if self._blocked_since is None:
            self._blocked_since = time.monotonic()
            self.stats.blocked_events += 1
            log.warning("spool cannot take the batch (%s): waiting (on_full = block)", reason)
        self._degraded = reason
        self._progressed.clear()
        self.link.changed.clear()
        waiters = [
            asyncio.create_task(self._progressed.wait()),
            asyncio.create_task(self.link.changed.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    def _unblock(self) -> None:
        if self._blocked_since is not None:
            self.stats.blocked_seconds += time.monotonic() - self._blocked_since
            self._blocked_since = None

    def _progress(self) -> None:
        """The replay worker stored a spool record: there is room again."""
        self._degraded = None
        self._progressed.set()

    async def _sync_loop(self) -> None:
        interval = self.spool.fsync_interval
        while True:
            await asyncio.sleep(interval / 2)
            await asyncio.to_thread(self.spool.sync_if_due)
