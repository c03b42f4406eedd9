"""The durable spool: records, rotation, recovery of torn and corrupt segments, size cap and
on_full, disk full (tmpfs), fsync failures, and a model-based property test."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from runtime.persist import spool as spool_module
from runtime.persist.spool import (
    HEADER_SIZE,
    OnFull,
    Spool,
    SpoolFull,
    SpoolLocked,
    encode_record,
    scan,
)


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery and policy tests do not need the disk to be durable (much faster)."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def make(directory: Path, **kw: object) -> Spool:
    options: dict[str, object] = {"max_bytes": 1 << 20, "segment_bytes": 4096}
    options.update(kw)
    spool = Spool(directory, **options)  # type: ignore[arg-type]
    spool.open()
    return spool


def unread(spool: Spool) -> list[bytes]:
    return [r.payload for r in spool.iter_unread()]


def drain(spool: Spool, limit: int | None = None) -> list[bytes]:
    out: list[bytes] = []
    while limit is None or len(out) < limit:
        record = spool.peek()
        if record is None:
            break
        out.append(record.payload)
        spool.ack(record)
    return out


def payload(i: int, size: int = 40) -> bytes:
    return (f'{{"n":{i},"pad":"' + "x" * size + '"}').encode()


def test_append_read_ack_rotate_and_delete(tmp_path: Path) -> None:
    spool = make(tmp_path)
    for i in range(200):
        assert spool.append([(payload(i), 3)]).stored == 3
    assert spool.segment_count > 2  # rotated by size
    assert spool.backlog_items == 600
    assert drain(spool, 50) == [payload(i) for i in range(50)]
    assert drain(spool) == [payload(i) for i in range(50, 200)]
    assert spool.backlog_items == 0 and spool.backlog_bytes == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["CURSOR", "LOCK"]
    spool.close()


def test_cursor_resumes_after_a_crash(tmp_path: Path) -> None:
    spool = make(tmp_path)
    for i in range(100):
        spool.append([(payload(i), 1)])
    drain(spool, 37)
    spool.crash()
    again = make(tmp_path)
    assert again.stats.recovered_items == 63
    assert drain(again) == [payload(i) for i in range(37, 100)]


def test_a_second_process_cannot_open_the_same_spool(tmp_path: Path) -> None:
    make(tmp_path)
    with pytest.raises(SpoolLocked):
        make(tmp_path)


def _segment_with(tmp_path: Path, n: int) -> tuple[bytes, list[bytes]]:
    payloads = [payload(i, size=i * 7 % 30) for i in range(n)]
    return b"".join(encode_record(p, 1) for p in payloads), payloads


def test_torn_segment_at_every_offset(no_fsync: None, tmp_path: Path) -> None:
    data, payloads = _segment_with(tmp_path, 8)
    ends = []
    pos = 0
    for p in payloads:
        pos += HEADER_SIZE + len(p)
        ends.append(pos)
    for cut in range(len(data) + 1):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "0000000000000001.seg").write_bytes(data[:cut])
        spool = make(d, fsync="interval")
        kept = sum(1 for e in ends if e <= cut)
        assert unread(spool) == payloads[:kept], cut
        assert spool.stats.torn_tails == (0 if cut in (0, *ends) else 1), cut
        assert spool.stats.corrupt_records == 0
        spool.append([(b"after", 1)])
        assert unread(spool) == payloads[:kept] + [b"after"], cut
        spool.close()
        reopened = make(d, fsync="interval")
        assert unread(reopened) == payloads[:kept] + [b"after"], cut
        reopened.close()
        shutil.rmtree(d)
    print(f"\n[torn] {len(data) + 1} truncation offsets: valid prefix kept at every one")


def test_a_flipped_byte_anywhere_loses_only_its_record(no_fsync: None, tmp_path: Path) -> None:
    data, payloads = _segment_with(tmp_path, 6)
    starts = [0]
    for p in payloads[:-1]:
        starts.append(starts[-1] + HEADER_SIZE + len(p))
    for at in range(len(data)):
        record = max(i for i, s in enumerate(starts) if s <= at)
        flipped = bytearray(data)
        flipped[at] ^= 0x5A
        d = tmp_path / f"flip{at}"
        d.mkdir()
        (d / "0000000000000001.seg").write_bytes(bytes(flipped))
        spool = make(d, fsync="interval")
        assert unread(spool) == payloads[:record] + payloads[record + 1 :], at
        assert spool.stats.corrupt_records + spool.stats.torn_tails == 1, at
        spool.append([(b"after", 1)])
        assert unread(spool)[-1] == b"after"
        spool.close()
        shutil.rmtree(d)
    print(f"\n[flip] {len(data)} single-byte flips: each lost exactly its own record")


def test_scan_never_raises_on_garbage() -> None:
    import random

    rng = random.Random(7)
    good = encode_record(b'{"a":1}', 1)
    for _ in range(500):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(80)))
        found = scan(blob + good + blob)
        assert any(r.size == len(good) for r in found.records)


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_size_cap_per_on_full_policy(no_fsync: None, tmp_path: Path, policy: OnFull) -> None:
    spool = make(tmp_path, max_bytes=64 << 10, segment_bytes=8 << 10, on_full=policy)
    appended = stored = dropped = refused = 0
    for i in range(2000):
        appended += 10
        try:
            result = spool.append([(payload(i, 200), 10)])
        except SpoolFull:
            refused += 10
            continue
        stored += result.stored
        dropped += result.dropped
    assert spool.backlog_bytes <= 64 << 10
    left = spool.backlog_items
    if policy == "block":
        assert refused and spool.stats.full_events == refused // 10 and left == stored
    elif policy == "drop_newest":
        assert dropped == spool.stats.dropped_newest_items > 0 and left == stored
    else:
        assert spool.stats.dropped_oldest_items > 0 and dropped == 0
        assert left == stored - spool.stats.dropped_oldest_items
        # what is left is the newest data, in order
        got = drain(spool)
        assert got == [payload(i, 200) for i in range(2000 - len(got), 2000)]
    print(
        f"\n[cap {policy}] appended {appended}, stored {stored}, refused {refused}, "
        f"dropped newest {spool.stats.dropped_newest_items}, "
        f"dropped oldest {spool.stats.dropped_oldest_items}, backlog {left}"
    )


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (ENOSPC at exactly the limit); skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full test needs root to mount a 1 MiB tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("policy", ["block", "drop_oldest", "drop_newest"])
def test_disk_full_on_tmpfs(tmpfs: Path, policy: OnFull) -> None:
    # The cap (64 MiB) is far above the disk (1 MiB): only ENOSPC stops the writes.
    spool = make(tmpfs / "spool", max_bytes=64 << 20, segment_bytes=128 << 10, on_full=policy)
    sent: list[int] = []
    refused = 0
    for i in range(400):
        try:
            result = spool.append([(payload(i, 4000), 1)])
        except SpoolFull:
            refused += 1
            continue
        if result.stored:
            sent.append(i)
    st_ = spool.stats
    assert refused or st_.dropped_newest_items or st_.dropped_oldest_items, "disk never filled"
    got = [int(p.split(b",")[0][5:]) for p in unread(spool)]
    missing = 400 - len(got)
    if policy == "block":
        assert got == sent and refused == st_.full_events == missing
    elif policy == "drop_newest":
        assert got == sent and st_.dropped_newest_items == missing
    else:
        assert got == sent[-len(got) :] and st_.dropped_oldest_items + st_.dropped_newest_items == (
            missing
        )
    # Space returns (the backlog is replayed): writing resumes.
    drain(spool)
    assert spool.append([(payload(999, 4000), 1)]).stored == 1
    assert unread(spool) == [payload(999, 4000)]
    print(
        f"\n[disk full {policy}] 400 batches of 4 KB into 1 MiB: {len(got)} kept, "
        f"{refused} refused (block), {st_.dropped_newest_items} dropped newest, "
        f"{st_.dropped_oldest_items} dropped oldest, write errors {st_.write_errors}; resumed"
    )


def test_enospc_mid_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make(tmp_path, on_full="drop_newest")
    spool.append([(payload(1), 1)])
    real_write = os.write
    calls = {"n": 0}

    def short_then_full(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:10])  # a torn half record...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(os, "write", short_then_full)
    assert spool.append([(payload(2), 1)]).dropped == 1
    monkeypatch.setattr(os, "write", real_write)
    assert spool.append([(payload(3), 1)]).stored == 1
    spool.crash()
    again = make(tmp_path)
    assert unread(again) == [payload(1), payload(3)]
    assert again.stats.torn_tails == 0 and again.stats.corrupt_records == 0


def test_failed_fsync_seals_the_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = make(tmp_path)
    spool.append([(payload(1), 1)])
    real_fsync = os.fsync
    failures = {"left": 1}

    def flaky_fsync(fd: int) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    assert spool.append([(payload(2), 1)]).stored == 1  # written again to a new segment
    spool.append([(payload(3), 1)])
    assert spool.stats.fsync_failures == 1 and spool.stats.segments_sealed == 1
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".seg", ".sealed"))
    assert names[0].endswith(".sealed") and len(names) == 2
    assert unread(spool) == [payload(1), payload(2), payload(3)]
    spool.close()
    again = make(tmp_path)
    assert unread(again) == [payload(1), payload(2), payload(3)]


# -- model-based: the spool behaves like a queue -----------------------------------------------

PAYLOADS = st.binary(min_size=0, max_size=300)


class SpoolMachine(RuleBasedStateMachine):
    """Random append / rotate / drain / crash / reopen always equals an in-memory queue."""

    def __init__(self) -> None:
        super().__init__()
        self.model: list[bytes] = []
        self.dir: Path | None = None
        self.spool: Spool | None = None

    @initialize(base=st.just(None), segment=st.sampled_from([256, 1024, 4096]), fsync=st.booleans())
    def setup(self, base: None, segment: int, fsync: bool) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="spool-sm-"))
        # Process crashes only: fsync changes nothing here (durability is tested above).
        self.real_fsync = os.fsync
        setattr(os, "fsync", lambda fd: None)  # noqa: B010
        self.segment = segment
        self.fsync: spool_module.FsyncPolicy = "batch" if fsync else "interval"
        self.spool = self._open()

    def _open(self) -> Spool:
        assert self.dir is not None
        return make(self.dir, max_bytes=1 << 22, segment_bytes=self.segment, fsync=self.fsync)

    @rule(batch=st.lists(PAYLOADS, min_size=1, max_size=4))
    def append(self, batch: list[bytes]) -> None:
        assert self.spool is not None
        assert self.spool.append([(p, 1) for p in batch]).stored == len(batch)
        self.model.extend(batch)

    @rule()
    def rotate(self) -> None:
        assert self.spool is not None
        self.spool.rotate()

    @rule(n=st.integers(1, 5))
    def drain(self, n: int) -> None:
        assert self.spool is not None
        got = drain(self.spool, n)
        assert got == self.model[: len(got)]
        del self.model[: len(got)]

    @rule(torn=st.binary(max_size=40), cut=st.integers(0, 40))
    def crash(self, torn: bytes, cut: int) -> None:
        """kill -9, possibly in the middle of writing a record (a torn tail)."""
        assert self.spool is not None and self.dir is not None
        paths = self.spool.segment_paths()
        self.spool.crash()
        if paths and torn:
            partial = encode_record(torn, 1)[: min(cut, HEADER_SIZE + len(torn) - 1)]
            with paths[-1].open("ab") as handle:
                handle.write(partial)
        self.spool = self._open()

    @rule()
    def reopen(self) -> None:
        assert self.spool is not None
        self.spool.close()
        self.spool = self._open()

    @invariant()
    def equals_the_model(self) -> None:
        if self.spool is not None:
            assert unread(self.spool) == self.model
            assert self.spool.backlog_items == len(self.model)
            on_disk = sum(p.stat().st_size for p in self.spool.segment_paths())
            assert self.spool.backlog_bytes == on_disk

    def teardown(self) -> None:
        if self.dir is not None:
            setattr(os, "fsync", self.real_fsync)  # noqa: B010
        if self.spool is not None:
            self.spool.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


SpoolMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("MDGEN_HYPOTHESIS_EXAMPLES", "60")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSpoolModel = SpoolMachine.TestCase


def test_an_io_error_seals_the_segment_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = make(tmp_path, on_full="drop_newest")
    spool.append([(payload(1), 1)])
    real_write = os.write
    failures = {"left": 1}

    def eio_once(fd: int, data: bytes | memoryview) -> int:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", eio_once)
    assert spool.append([(payload(2), 1)]).stored == 1
    assert spool.stats.segments_sealed == 1 and spool.stats.write_errors == 1
    failures["left"] = 10**6  # the disk is gone for good: the batch is dropped and counted
    assert spool.append([(payload(3), 1)]).dropped == 1
    monkeypatch.setattr(os, "write", real_write)
    assert unread(spool) == [payload(1), payload(2)]
    assert spool.stats.dropped_newest_items == 1
