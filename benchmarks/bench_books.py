"""Order-book throughput over the real captures: book updates/s, apply + checksum.

Run: .venv/bin/python benchmarks/bench_books.py [--repeat N]

Per exchange with a capture and a synced book channel, the capture's book records (REST
snapshots included) are parsed once and kept in memory, then fed through a fresh
``BookSyncs`` per pass (sequence rule, apply, truncation, checksum): "sync" is updates/s with
the checksum ("levels/s": the price levels those updates carry), "no checksum" the same
without it. "replay" is the whole capture (every frame, all channels) from text through parse
and book sync, in messages/s: the figure to set beside the peer's (cryptofeed replaying the
same captures through its handlers, from shared/notes/performance.md; it gives only the range
and two venues). Best of N passes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from runtime.booksync import BookOptions, BookSyncs
from runtime.captures import find_capture
from runtime.registry import exchanges, load_spec
from runtime.replay import Replayer
from runtime.spec import ExchangeSpec, Record

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"
PEER = {"coinbase": "90k", "htx": "3k"}
"""cryptofeed's replay rate of a capture (messages/s), where the notes give one."""
PEER_ALL = "43-48k"
"""cryptofeed over all the captures (messages/s)."""
MIN_UPDATES = 20_000
"""Each timed pass feeds the capture's book records this many times over (fresh books)."""


def book_records(spec: ExchangeSpec, lines: list[bytes]) -> list[tuple[bool, str, Record]]:
    """(from REST, channel, record) of every book record of the capture, in order."""
    replayer = Replayer(spec)
    channels = BookSyncs(spec).channels
    out = []
    for number, line in enumerate(lines, 1):
        entry = orjson.loads(line)
        rest = entry.get("kind") == "rest"
        for rec in replayer.capture_line(number, entry):
            if rec["channel"] in channels:
                out.append((rest, rec["channel"], rec))
    return out


def run_sync(
    spec: ExchangeSpec, records: list[tuple[bool, str, Record]], *, checksums: bool
) -> Callable[[], int]:
    loops = max(1, MIN_UPDATES // max(1, len(records)))

    def run() -> int:
        for _ in range(loops):
            syncs = BookSyncs(spec, BookOptions())
            if not checksums:
                syncs.checksums.clear()
            feed, snapshot = syncs.feed, syncs.snapshot
            for rest, channel, rec in records:
                if rest:
                    snapshot(channel, [rec])
                else:
                    feed(channel, [rec])
            assert syncs.stats.checksum_failures == 0 and syncs.stats.gaps == 0
        return loops * len(records)

    return run


def run_replay(spec: ExchangeSpec, lines: list[bytes]) -> Callable[[], int]:
    entries = [orjson.loads(line) for line in lines]

    def run() -> int:
        replayer = Replayer(spec, books=BookOptions())
        for number, entry in enumerate(entries, 1):
            replayer.capture_line(number, entry)
        return sum(1 for e in entries if e.get("kind") != "rest")

    return run


def best_rate(fn: Callable[[], int], repeat: int) -> float:
    best, count = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if not CAPTURES.is_dir():
        raise SystemExit(f"captures not found at {CAPTURES}")
    print(
        f"{'exchange':<10} {'book msgs':>9} {'levels':>8} {'checksum':>12} "
        f"{'sync upd/s':>11} {'levels/s':>10} {'no checksum':>12} {'replay msg/s':>13} "
        f"{'peer msg/s':>11}"
    )
    for exchange in sorted(exchanges()):
        spec = load_spec(exchange)
        path = find_capture(exchange, aliases=spec.aliases, folders=[CAPTURES])
        if path is None or not BookSyncs(spec).channels:
            continue
        lines = [line for line in path.read_bytes().splitlines() if line.strip()]
        records = book_records(spec, lines)
        if not records:
            continue
        levels = sum(len(r["bids"]) + len(r["asks"]) for _, _, r in records)
        rules = {BookSyncs(spec).rules[c].checksum for _, c, _ in records}
        sync = best_rate(run_sync(spec, records, checksums=True), args.repeat)
        plain = best_rate(run_sync(spec, records, checksums=False), args.repeat)
        replay = best_rate(run_replay(spec, lines), args.repeat)
        peer = PEER.get(exchange, f"({PEER_ALL})")
        print(
            f"{exchange:<10} {len(records):>9} {levels:>8} {'/'.join(sorted(rules)):>12} "
            f"{sync:>11,.0f} {sync * levels / len(records):>10,.0f} {plain:>12,.0f} "
            f"{replay:>13,.0f} {peer:>11}"
        )
    print(f"\npeer: cryptofeed 2.4 replaying the captures, {PEER_ALL} msg/s over all of them")


if __name__ == "__main__":
    main()
