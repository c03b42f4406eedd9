"""Sinks: where batches of envelopes end up. The embedded default writes NDJSON.gz files."""

from __future__ import annotations

import asyncio
import gzip
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import orjson

from runtime.envelope import Envelope


class Sink(Protocol):
    """Receives batches in order; ``write`` returns once the batch is stored."""

    async def open(self) -> None: ...

    async def write(self, batch: list[Envelope]) -> None: ...

    async def close(self) -> None: ...


_DAY_NS = 86_400 * 1_000_000_000


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part) or "_"


class NdjsonGzSink:
    """``data/<exchange>/<channel>/<YYYY-MM-DD>/<symbol>.ndjson.gz``, one gzip member per batch.

    Each flushed batch is appended as a complete gzip member, so a crash leaves every earlier
    batch readable (zcat, pandas and DuckDB read multi-member files). The day is the UTC date of
    ``ts_recv``. Files are written from a worker thread so the event loop keeps receiving.
    """

    def __init__(self, root: Path, *, compresslevel: int = 1) -> None:
        self.root = root
        self.compresslevel = compresslevel
        self.files_written: set[Path] = set()
        self._paths: dict[tuple[str, str, str, int], Path] = {}

    async def open(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, exchange: str, channel: str, symbol: str, day: int) -> Path:
        date = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
        return self.root / _safe(exchange) / _safe(channel) / date / f"{_safe(symbol)}.ndjson.gz"

    def _write(self, batch: list[Envelope]) -> None:
        groups: dict[tuple[str, str, str, int], list[bytes]] = defaultdict(list)
        dumps = orjson.dumps
        for env in batch:
            key = (env["exchange"], env["channel"], env["symbol"], env["ts_recv"] // _DAY_NS)
            groups[key].append(dumps(env))
        for key, lines in groups.items():
            path = self._paths.get(key)
            if path is None:
                path = self._paths[key] = self._path(*key)
                path.parent.mkdir(parents=True, exist_ok=True)
            member = gzip.compress(b"\n".join(lines) + b"\n", self.compresslevel, mtime=0)
            with path.open("ab") as handle:
                handle.write(member)
            self.files_written.add(path)

    async def write(self, batch: list[Envelope]) -> None:
        await asyncio.to_thread(self._write, batch)

    async def close(self) -> None:
        return None


class MemorySink:
    """Keeps every envelope in a list (tests and benchmarks)."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def open(self) -> None:
        return None

    async def write(self, batch: list[Envelope]) -> None:
        self.envelopes.extend(batch)

    async def close(self) -> None:
        return None
