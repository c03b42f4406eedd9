"""The replay worker: drains the spool into MongoDB, oldest first, once MongoDB is back.

While MongoDB is unavailable the worker probes it (``ping``) with exponential backoff and
jitter, so an outage costs a few round trips a minute, not a busy loop. Once it answers, the
worker reads the spool's oldest record, inserts it (duplicates count as stored, refused
documents go to the reject store) and only then acknowledges it; a segment is deleted when
every record in it is acknowledged. A token bucket limits the replay rate so a backlog does not
starve live writes. Stopping waits for the record in flight; after a restart the spool's cursor
says where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from runtime.persist.mongo import MongoStore, MongoUnavailable, RejectStore, WriteOutcome
from runtime.persist.spool import Spool, SpoolRecord

log = logging.getLogger("mdgen.persist")


class MongoLink:
    """Whether MongoDB takes writes, shared by the live path and the replay worker."""

    def __init__(self) -> None:
        self.up = False
        self.reason: str | None = "not connected yet"
        self.outages = 0
        self.probes = 0
        self.changed = asyncio.Event()
        """Set whenever the state changes (waiters clear it)."""

    def mark_down(self, reason: str) -> None:
        if self.up:
            self.outages += 1
            log.warning("MongoDB unavailable (%s): batches go to the spool", reason)
        self.up = False
        self.reason = reason
        self.changed.set()

    def mark_up(self) -> None:
        if not self.up:
            log.info("MongoDB reachable: writing to MongoDB")
        self.up = True
        self.reason = None
        self.changed.set()


class TokenBucket:
    """At most ``rate`` items a second on average, bursts of up to ``rate`` items."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.last = clock()

    def delay(self, items: int) -> float:
        """Take ``items``; the seconds to wait before using them."""
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= items
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class ReplayStats:
    records: int = 0
    """Spool records (batches) acknowledged."""
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    throttled_seconds: float = 0.0
    failures: int = 0


def decode(payload: bytes) -> tuple[list[str], list[dict[str, object]]]:
    """A spool payload written by the fallback sink: ``[ids, envelopes]``."""
    ids, envelopes = orjson.loads(payload)
    return ids, envelopes


class ReplayWorker:
    """Drains ``spool`` into ``store`` whenever ``link`` is up (see the module docstring)."""

    def __init__(
        self,
        spool: Spool,
        store: MongoStore,
        link: MongoLink,
        rejects: RejectStore,
        *,
        rate: float = 20_000.0,
        probe_initial: float = 0.5,
        probe_max: float = 10.0,
        idle: float = 1.0,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self.spool = spool
        self.store = store
        self.link = link
        self.rejects = rejects
        self.bucket = TokenBucket(rate)
        self.probe_initial = probe_initial
        self.probe_max = probe_max
        self.idle = idle
        self.on_progress = on_progress
        self.stats = ReplayStats()
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._draining = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spool-replay")

    def wake(self) -> None:
        """Data was spooled: look at the spool now."""
        self._wakeup.set()

    async def probe(self) -> bool:
        """Ping MongoDB and make sure the layout exists; update the link."""
        self.link.probes += 1
        try:
            await asyncio.to_thread(self._connect)
        except MongoUnavailable as exc:
            self.link.mark_down(str(exc))
            return False
        self.link.mark_up()
        return True

    def _connect(self) -> None:
        self.store.ping()
        self.store.ensure_layout()

    async def stop(self, drain_timeout: float) -> None:
        """Stop; while MongoDB is up, keep draining the backlog for up to ``drain_timeout`` s."""
        task = self._task
        if task is None:
            return
        self._draining = True
        self._wakeup.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), drain_timeout)
        self._stopping = True
        self._wakeup.set()
        await task
        self._task = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        self._wakeup.clear()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._loop()
                return
            except Exception:  # a bug must not stop replaying for good: log, pause, go on
                log.exception("replay worker failed; restarting in %.1f s", self.probe_max)
                self.stats.failures += 1
                await self._sleep(self.probe_max)

    async def _loop(self) -> None:
        delay = self.probe_initial
        while not self._stopping:
            if not self.link.up:
                if self._draining:
                    return  # nothing can be drained now: the spool keeps it for next time
                if not await self.probe():
                    await self._sleep(delay * (0.5 + random.random() / 2))
                    delay = min(delay * 2, self.probe_max)
                    continue
                delay = self.probe_initial
            record = await asyncio.to_thread(self.spool.peek)
            if record is None:
                if self._draining:
                    return
                await self._sleep(self.idle)
                continue
            wait = self.bucket.delay(record.count)
            if wait > 0:
                self.stats.throttled_seconds += wait
                await asyncio.sleep(wait)
            try:
                outcome = await asyncio.to_thread(self._store, record)
            except MongoUnavailable as exc:
                self.stats.failures += 1
                self.link.mark_down(str(exc))
                continue
            except OSError as exc:  # the reject store cannot be written: keep the record
                self.stats.failures += 1
                log.error("replay: cannot write rejected documents (%s); will retry", exc)
                await self._sleep(self.probe_max)
                continue
            self.stats.records += 1
            self.stats.inserted += outcome.inserted
            self.stats.duplicates += outcome.duplicates
            self.stats.rejected += len(outcome.rejected)
            if self.on_progress is not None:
                self.on_progress()

    def _store(self, record: SpoolRecord) -> WriteOutcome:
        """Insert one spool record; acknowledge it once every document is accounted for."""
        ids, envelopes = decode(record.payload)
        outcome = self.store.insert_envelopes(envelopes, ids)
        self.rejects.add(outcome.rejected)
        self.spool.ack(record)
        return outcome
