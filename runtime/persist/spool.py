"""Durable spool: append-only segment files of length-prefixed, checksummed records.

Layout of ``DIR``: ``LOCK`` (held with ``flock`` while a process uses the spool), ``CURSOR``
(where the reader stands: ``<segment> <offset>``), and segments ``<16-digit index>.seg``
(``.sealed`` once an I/O error made the spool stop appending to one). A record is::

    magic  4 bytes  FF 4D 44 53 ("\\xffMDS"; 0xFF never occurs in UTF-8 JSON payloads)
    length 4 bytes  little-endian payload length
    count  4 bytes  little-endian number of items (envelopes) the payload holds
    crc    4 bytes  zlib.crc32 of length, count and payload
    payload

Guarantees:

* ``append`` returns once the records are written and, with ``fsync = "batch"``, fsynced: a
  machine crash loses nothing acknowledged. With ``fsync = "interval"``, the file is fsynced at
  most ``fsync_interval`` seconds after a write: a process crash (kill -9) loses nothing, a
  machine crash may lose the last ``fsync_interval`` seconds.
* At start-up every segment is scanned: a torn tail is truncated to the last valid record, a
  corrupt record (bad checksum, bad header) is skipped and counted, and reading resumes at the
  next valid record.
* A segment whose write or fsync failed is sealed: nothing is appended to it again, the batch
  is written again to a fresh segment. Its records that pass the checksum are still replayed
  (a copy written twice is stored once downstream, thanks to deterministic ids).
* The total size is capped at ``max_bytes``; ``on_full`` decides what happens then (and on
  ENOSPC): ``block`` raises :class:`SpoolFull` (the caller waits and retries), ``drop_oldest``
  deletes the oldest segments, ``drop_newest`` drops the incoming batch; every drop is counted.

All methods are thread-safe (one lock); they block on disk I/O, so async callers run them in a
worker thread.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger("mdgen.spool")

OnFull = Literal["block", "drop_oldest", "drop_newest"]
FsyncPolicy = Literal["batch", "interval"]

MAGIC = b"\xffMDS"
_HEAD = struct.Struct("<4sIII")
_LENCOUNT = struct.Struct("<II")
HEADER_SIZE = _HEAD.size
_SUFFIXES = (".seg", ".sealed")
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _crc(length: int, count: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_LENCOUNT.pack(length, count)))


def encode_record(payload: bytes, count: int) -> bytes:
    """One spool record: header (magic, length, count, CRC32) and payload."""
    return _HEAD.pack(MAGIC, len(payload), count, _crc(len(payload), count, payload)) + payload


@dataclass(frozen=True)
class ScannedRecord:
    offset: int
    size: int
    count: int


@dataclass
class ScanResult:
    """What :func:`scan` found in a segment's bytes."""

    records: list[ScannedRecord] = field(default_factory=list)
    corrupt: int = 0
    """Corrupt regions skipped between valid records."""
    valid_end: int = 0
    """End of the last valid record: the bytes after it are a torn tail."""


def _valid_at(data: bytes, pos: int) -> ScannedRecord | None:
    if len(data) - pos < HEADER_SIZE:
        return None
    magic, length, count, crc = _HEAD.unpack_from(data, pos)
    end = pos + HEADER_SIZE + length
    if magic != MAGIC or end > len(data):
        return None
    if _crc(length, count, data[pos + HEADER_SIZE : end]) != crc:
        return None
    return ScannedRecord(pos, HEADER_SIZE + length, count)


def scan(data: bytes) -> ScanResult:
    """Every valid record of a segment; corrupt regions are skipped (resync on the magic)."""
    result = ScanResult()
    pos = 0
    skipping = False
    while pos < len(data):
        found = _valid_at(data, pos)
        if found is not None:
            if skipping:
                result.corrupt += 1
                skipping = False
            result.records.append(found)
            pos += found.size
            result.valid_end = pos
            continue
        skipping = True
        nxt = data.find(MAGIC, pos + 1)
        if nxt < 0:
            break
        pos = nxt
    return result


class SpoolFull(Exception):
    """The spool cannot take the batch now (size cap, disk full, I/O error); nothing written."""


class SpoolLocked(Exception):
    """Another process uses this spool directory."""


@dataclass
class SpoolStats:
    """Counters for health and metrics (items are envelopes, records are spool records)."""

    appended_items: int = 0
    appended_records: int = 0
    appended_bytes: int = 0
    acked_items: int = 0
    fsyncs: int = 0
    fsync_failures: int = 0
    write_errors: int = 0
    segments_sealed: int = 0
    segments_deleted: int = 0
    corrupt_records: int = 0
    """Corrupt regions found at start-up or when reading."""
    torn_tails: int = 0
    truncated_bytes: int = 0
    dropped_oldest_items: int = 0
    dropped_newest_items: int = 0
    full_events: int = 0
    """Appends refused by on_full = block (the caller retries)."""
    recovered_items: int = 0
    """Items found in the spool at start-up."""


@dataclass(frozen=True)
class AppendResult:
    """How many items of one append are durable in the spool, and how many were dropped."""

    stored: int
    dropped: int


@dataclass(frozen=True)
class SpoolRecord:
    """One record handed to the reader; :meth:`Spool.ack` it once stored downstream."""

    segment: int
    offset: int
    count: int
    payload: bytes


@dataclass
class _Segment:
    index: int
    path: Path
    entries: list[ScannedRecord]
    size: int
    sealed: bool = False
    fd: int | None = None
    read_pos: int = 0
    """Entries before this position have been acknowledged by the reader."""

    @property
    def unread_items(self) -> int:
        return sum(e.count for e in self.entries[self.read_pos :])


class _DiskError(Exception):
    def __init__(self, cause: OSError, segment: _Segment | None, *, during_fsync: bool) -> None:
        super().__init__(cause.strerror or str(cause))
        self.cause = cause
        self.segment = segment
        self.during_fsync = during_fsync

    @property
    def full(self) -> bool:
        return self.cause.errno in _FULL_ERRNOS


def _name(index: int) -> str:
    return f"{index:016d}.seg"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A durable FIFO of byte payloads on disk (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        on_full: OnFull = "block",
        fsync: FsyncPolicy = "batch",
        fsync_interval: float = 1.0,
    ) -> None:
        if max_bytes < 2 * segment_bytes:
            raise ValueError("max_bytes must be at least twice segment_bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.on_full: OnFull = on_full
        self.fsync_policy: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval
        self.stats = SpoolStats()
        self.last_error: str | None = None
        """Why the last append failed or dropped data (None after a clean append)."""
        self.last_drop: str | None = None
        """Why data was last dropped (kept until the next drop)."""
        self._lock = threading.RLock()
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None
        self._next_index = 1
        self._lock_fd: int | None = None
        self._dirty_since: float | None = None
        self._opened = False
        self._cursor_failing = False
        self._items = 0
        """Unacknowledged items (kept up to date: read at scrape time without the lock)."""
        self._bytes = 0

    # -- start-up and shutdown -------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, recover every segment, position the reader."""
        with self._lock:
            if self._opened:
                raise RuntimeError("spool is already open")
            self._segments, self._active, self._dirty_since = [], None, None
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise SpoolLocked(f"spool {self.directory} is used by another process") from None
            self._lock_fd = fd
            cursor = self._read_cursor()
            if cursor is not None:  # segment numbers never go back below the cursor's
                self._next_index = max(self._next_index, cursor[0])
            for path in sorted(self.directory.iterdir()):
                if path.suffix not in _SUFFIXES or not path.stem.isdigit():
                    continue
                index = int(path.stem)
                self._next_index = max(self._next_index, index + 1)
                if cursor is not None and index < cursor[0]:
                    self._unlink(path)
                    continue
                segment = self._recover(path, index)
                if segment is None:
                    continue
                if cursor is not None and index == cursor[0]:
                    segment.read_pos = sum(1 for e in segment.entries if e.offset < cursor[1])
                self._segments.append(segment)
            for segment in list(self._segments):
                if segment.read_pos >= len(segment.entries):
                    self._drop_segment(segment)
            self._items = sum(s.unread_items for s in self._segments)
            self._bytes = sum(s.size for s in self._segments)
            self.stats.recovered_items = self._items
            self._opened = True

    def _recover(self, path: Path, index: int) -> _Segment | None:
        data = path.read_bytes()
        found = scan(data)
        self.stats.corrupt_records += found.corrupt
        if found.valid_end < len(data):
            self.stats.torn_tails += 1
            self.stats.truncated_bytes += len(data) - found.valid_end
            log.warning(
                "spool %s: truncating %d bytes after the last valid record",
                path.name,
                len(data) - found.valid_end,
            )
            try:
                os.truncate(path, found.valid_end)
            except OSError as exc:
                log.error("spool %s: cannot truncate (%s); left as is", path.name, exc)
        if found.corrupt:
            log.warning("spool %s: skipped %d corrupt record(s)", path.name, found.corrupt)
        if not found.records:
            self._unlink(path)
            return None
        sealed = path.suffix == ".sealed"
        return _Segment(index, path, found.records, found.valid_end, sealed=sealed)

    def close(self) -> None:
        """Fsync and close the active segment; release the directory lock."""
        with self._lock:
            self._retire_active()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._opened = False

    def crash(self) -> None:
        """Drop every handle without fsync or cleanup (tests: what kill -9 leaves)."""
        with self._lock:
            for segment in self._segments:
                self._close_fd(segment)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self._active = None
            self._opened = False

    # -- state -----------------------------------------------------------------------------

    @property
    def backlog_items(self) -> int:
        """Items not yet acknowledged by the reader."""
        return self._items

    @property
    def backlog_bytes(self) -> int:
        """Bytes of every segment on disk (the size the cap applies to)."""
        return self._bytes

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def empty(self) -> bool:
        return self.backlog_items == 0

    # -- appending -------------------------------------------------------------------------

    def append(self, payloads: Sequence[tuple[bytes, int]]) -> AppendResult:
        """Append ``(payload, item count)`` records as one batch; durable when this returns.

        Raises :class:`SpoolFull` (nothing written) when the batch does not fit and
        ``on_full = "block"``; drops data per ``on_full`` otherwise.
        """
        records = [(encode_record(p, n), n) for p, n in payloads]
        items = sum(n for _, n in payloads)
        need = sum(len(r) for r, _ in records)
        with self._lock:
            if not self._opened:
                raise RuntimeError("spool is not open")
            if need > self.max_bytes - self.segment_bytes:
                self.stats.dropped_newest_items += items
                self.last_error = self.last_drop = "a batch larger than the spool was dropped"
                log.error("spool: dropped a batch of %d record(s): %s", items, self.last_error)
                return AppendResult(0, items)
            if not self._make_room(need, "size cap reached"):
                return self._refuse(items, "spool size cap reached")
            failures = 0
            while True:
                try:
                    self._write_batch(records)
                except _DiskError as exc:
                    reason = f"{'fsync' if exc.during_fsync else 'write'} failed: {exc}"
                    self.last_error = reason
                    if exc.full:  # disk full: drop_oldest frees a segment and tries again
                        can_drop = self.on_full == "drop_oldest"
                        if not (can_drop and self._drop_oldest_one(reason)):
                            return self._refuse(items, reason)
                        continue
                    failures += 1  # an I/O error: the segment is sealed, try a new one
                    if failures >= 3:
                        return self._refuse(items, reason)
                    continue
                self.stats.appended_items += items
                self.stats.appended_records += len(records)
                self.stats.appended_bytes += need
                self._items += items
                self._bytes += need
                self.last_error = None
                return AppendResult(items, 0)

    def _refuse(self, items: int, reason: str) -> AppendResult:
        """The batch cannot be stored: raise for ``block``, drop it otherwise (counted)."""
        self.last_error = reason
        if self.on_full == "block":
            self.stats.full_events += 1
            raise SpoolFull(reason)
        self.stats.dropped_newest_items += items
        self.last_drop = f"{reason}: newest records dropped"
        log.warning("spool: dropped a batch of %d record(s): %s", items, reason)
        return AppendResult(0, items)

    def _make_room(self, need: int, reason: str) -> bool:
        while self.backlog_bytes + need > self.max_bytes:
            if self.on_full != "drop_oldest" or not self._drop_oldest_one(reason):
                return False
        return True

    def _drop_oldest_one(self, reason: str) -> bool:
        """Delete the oldest segment (closing the active one first); False if there is none."""
        if not self._segments:
            return False
        oldest = self._segments[0]
        if oldest is self._active:
            self._retire_active()
        lost = oldest.unread_items
        self.stats.dropped_oldest_items += lost
        self.last_error = self.last_drop = f"{reason}: oldest records dropped"
        log.warning("spool: dropped the oldest segment (%d record(s) not replayed)", lost)
        self._drop_segment(oldest)
        self._write_cursor()
        return True

    def _write_batch(self, records: list[tuple[bytes, int]]) -> None:
        touched: list[tuple[_Segment, int, int]] = []  # segment, size and entries before
        try:
            for record, count in records:
                segment = self._segment_for(len(record), touched)
                offset = segment.size
                self._write_all(segment, record)
                segment.size += len(record)
                segment.entries.append(ScannedRecord(offset, len(record), count))
            for segment, _, _ in touched:
                if segment is not self._active:  # rotated during this batch
                    self._sync(segment)
                    self._close_fd(segment)
            if self._active is not None and any(s is self._active for s, _, _ in touched):
                self._dirty_since = self._dirty_since or time.monotonic()
                if self.fsync_policy == "batch" or self._sync_due():
                    self._sync(self._active)
        except _DiskError as exc:
            self._roll_back(touched, exc)
            raise

    def _segment_for(self, size: int, touched: list[tuple[_Segment, int, int]]) -> _Segment:
        active = self._active
        if active is not None and active.entries and active.size + size > self.segment_bytes:
            if any(s is active for s, _, _ in touched):
                self._active = None  # fsynced and closed at the end of the batch
            else:
                self._retire_active()
            active = None
        if active is None:
            active = self._new_segment()
        if not any(s is active for s, _, _ in touched):
            touched.append((active, active.size, len(active.entries)))
        return active

    def _new_segment(self) -> _Segment:
        index = self._next_index
        self._next_index += 1
        path = self.directory / _name(index)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            self.stats.write_errors += 1
            raise _DiskError(exc, None, during_fsync=False) from exc
        segment = _Segment(index, path, [], 0, fd=fd)
        self._segments.append(segment)
        self._active = segment
        self._dirty_since = None
        try:
            _fsync_dir(self.directory)
        except OSError as exc:
            log.warning("spool: fsync of the directory failed: %s", exc)
        return segment

    def _write_all(self, segment: _Segment, data: bytes) -> None:
        assert segment.fd is not None
        view = memoryview(data)
        try:
            while view:
                written = os.write(segment.fd, view)
                view = view[written:]
        except OSError as exc:
            self.stats.write_errors += 1
            raise _DiskError(exc, segment, during_fsync=False) from exc

    def _sync_due(self) -> bool:
        return (
            self._dirty_since is not None
            and time.monotonic() - self._dirty_since >= self.fsync_interval
        )

    def _sync(self, segment: _Segment) -> None:
        if segment.fd is None:
            return
        try:
            os.fsync(segment.fd)
        except OSError as exc:
            self.stats.fsync_failures += 1
            raise _DiskError(exc, segment, during_fsync=True) from exc
        self.stats.fsyncs += 1
        if segment is self._active:
            self._dirty_since = None

    def sync_if_due(self) -> None:
        """With ``fsync = "interval"``: fsync the active segment when the interval has passed."""
        with self._lock:
            active = self._active
            if active is None or not self._sync_due():
                return
            try:
                self._sync(active)
            except _DiskError as exc:
                log.error("spool %s: fsync failed (%s)", active.path.name, exc)
                self._seal(active)

    def _roll_back(self, touched: list[tuple[_Segment, int, int]], exc: _DiskError) -> None:
        """Undo a failed batch: forget its records; truncate them away, or seal the segment.

        The segment that failed is sealed, unless the disk was merely full (then truncating
        it back is enough); after a failed fsync its state is unknown, so it is always sealed.
        """
        for segment, size, count in touched:
            del segment.entries[count:]
            segment.size = size
            failed = segment is exc.segment and (exc.during_fsync or not exc.full)
            try:
                os.truncate(segment.path, size)
            except OSError as err:
                log.error("spool %s: cannot truncate (%s)", segment.path.name, err)
                failed = True
            if failed:
                self._seal(segment)
            elif segment is not self._active:
                self._close_fd(segment)

    def _seal(self, segment: _Segment) -> None:
        """Never append to ``segment`` again; its valid records are still read."""
        if segment.sealed:
            return
        segment.sealed = True
        self.stats.segments_sealed += 1
        self._close_fd(segment)
        if segment is self._active:
            self._active = None
        sealed = segment.path.with_suffix(".sealed")
        try:
            os.rename(segment.path, sealed)
            segment.path = sealed
        except OSError as exc:
            log.error("spool %s: cannot rename the sealed segment: %s", segment.path.name, exc)
        log.error("spool %s: sealed after an I/O error", segment.path.name)
        if not segment.entries:
            self._drop_segment(segment)

    def _retire_active(self) -> None:
        """Fsync and close the active segment; the next append starts a new one."""
        active = self._active
        if active is None:
            return
        try:
            self._sync(active)
        except _DiskError as exc:
            log.error("spool %s: fsync failed at rotation (%s)", active.path.name, exc)
            self._seal(active)
        self._close_fd(active)
        self._active = None

    def rotate(self) -> None:
        """Start a new segment at the next append."""
        with self._lock:
            self._retire_active()

    def _close_fd(self, segment: _Segment) -> None:
        if segment.fd is not None:
            fd, segment.fd = segment.fd, None
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("spool %s: close failed: %s", segment.path.name, exc)

    # -- reading ---------------------------------------------------------------------------

    def peek(self) -> SpoolRecord | None:
        """The oldest unacknowledged record, or None when the reader is caught up."""
        while True:
            with self._lock:
                head = self._head()
                if head is None:
                    return None
                segment, entry = head
                path = segment.path
            try:
                with path.open("rb") as handle:
                    handle.seek(entry.offset)
                    data = handle.read(entry.size)
            except FileNotFoundError:
                continue  # dropped (drop_oldest) meanwhile: look again
            except OSError as exc:
                log.error("spool %s: read failed (%s); record skipped", path.name, exc)
                data = b""
            found = _valid_at(data, 0)
            if found is None or found.size != entry.size:
                with self._lock:
                    if self._head() == (segment, entry):
                        log.error("spool %s: corrupt record skipped", path.name)
                        self.stats.corrupt_records += 1
                        self._advance(segment)
                continue
            return SpoolRecord(segment.index, entry.offset, entry.count, data[HEADER_SIZE:])

    def _head(self) -> tuple[_Segment, ScannedRecord] | None:
        for segment in self._segments:
            if segment.read_pos < len(segment.entries):
                return segment, segment.entries[segment.read_pos]
        return None

    def ack(self, record: SpoolRecord) -> None:
        """The reader stored ``record`` downstream: advance, delete a segment read to the end."""
        with self._lock:
            head = self._head()
            if head is None:
                return
            segment, entry = head
            if segment.index != record.segment or entry.offset != record.offset:
                return  # dropped meanwhile (drop_oldest)
            self.stats.acked_items += entry.count
            self._advance(segment)

    def _advance(self, segment: _Segment) -> None:
        self._items -= segment.entries[segment.read_pos].count
        segment.read_pos += 1
        if segment.read_pos >= len(segment.entries):
            if segment is self._active:
                self._retire_active()
            self._drop_segment(segment)
        self._write_cursor()

    def _drop_segment(self, segment: _Segment) -> None:
        self._close_fd(segment)
        if segment is self._active:
            self._active = None
        if segment in self._segments:
            self._segments.remove(segment)
            self._items -= segment.unread_items
            self._bytes -= segment.size
        if self._unlink(segment.path):
            self.stats.segments_deleted += 1

    def _unlink(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("spool: cannot delete %s: %s", path.name, exc)
            return False
        return True

    # -- the cursor ------------------------------------------------------------------------

    def _read_cursor(self) -> tuple[int, int] | None:
        try:
            text = (self.directory / "CURSOR").read_text()
            segment, offset = (int(v) for v in text.split())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("spool: unreadable CURSOR (%s); replaying from the oldest record", exc)
            return None
        return segment, offset

    def _write_cursor(self) -> None:
        head = self._head()
        position = (self._next_index, 0) if head is None else (head[0].index, head[1].offset)
        tmp = self.directory / "CURSOR.tmp"
        try:
            tmp.write_text(f"{position[0]} {position[1]}\n")
            os.replace(tmp, self.directory / "CURSOR")
        except OSError as exc:
            # Not fatal: without a cursor, acknowledged records replay again (stored once).
            if not self._cursor_failing:
                log.warning("spool: cannot write CURSOR: %s", exc)
            self._cursor_failing = True
        else:
            self._cursor_failing = False

    # -- for tests and tools ---------------------------------------------------------------

    def segment_paths(self) -> list[Path]:
        with self._lock:
            return [s.path for s in self._segments]

    def iter_unread(self) -> Iterator[SpoolRecord]:
        """Every unacknowledged record, oldest first, without acknowledging anything."""
        with self._lock:
            pending = [
                (s.index, s.path, e) for s in self._segments for e in s.entries[s.read_pos :]
            ]
        for index, path, entry in pending:
            with path.open("rb") as handle:
                handle.seek(entry.offset)
                data = handle.read(entry.size)
            if _valid_at(data, 0) is not None:
                yield SpoolRecord(index, entry.offset, entry.count, data[HEADER_SIZE:])
