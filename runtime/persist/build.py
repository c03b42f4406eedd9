"""Building the sink ``mdgen run`` writes to, from ``[sink]`` of collector.toml."""

from __future__ import annotations

from pathlib import Path

from runtime.config import SinkSettings
from runtime.persist.fallback import SinkError
from runtime.sinks import NdjsonGzSink, Sink

__all__ = ["SinkError", "build_sink", "sink_summary"]


def build_sink(
    settings: SinkSettings | None,
    data_dir: Path,
    *,
    shard: str | None = None,
    environ: dict[str, str] | None = None,
) -> Sink:
    """NDJSON.gz under ``data_dir`` (no ``[sink]``, or ``kind = "ndjson"``), else MongoDB.

    The MongoDB sink spools to ``spool_dir`` (default ``<data_dir>/spool``); a process started
    with ``--shard I/N`` uses its subfolder ``shard-I-of-N``, so shards never share a spool.
    """
    if settings is None:
        return NdjsonGzSink(data_dir)
    if settings.kind == "ndjson":
        return NdjsonGzSink(settings.dir or data_dir)
    from runtime.persist.dedup import DedupWindow
    from runtime.persist.fallback import FallbackSink
    from runtime.persist.mongo import MongoStore
    from runtime.persist.spool import Spool

    directory = settings.spool_dir or data_dir / "spool"
    if shard:
        directory = directory / ("shard-" + "-of-".join(p.strip() for p in shard.split("/")))
    spool = Spool(
        directory,
        max_bytes=settings.spool_max_bytes,
        segment_bytes=settings.spool_segment_bytes,
        on_full=settings.on_full,
        fsync=settings.fsync,
        fsync_interval=settings.fsync_interval,
    )
    dedup = None
    if settings.dedup_window > 0:
        dedup = DedupWindow(settings.dedup_window, settings.dedup_max_keys)
    store = MongoStore(settings.connection_uri(environ), settings.database)
    return FallbackSink(store, spool, dedup=dedup, replay_rate=settings.replay_rate)


def sink_summary(sink: Sink) -> str:
    """One line for the end of ``mdgen run``: where the records went."""
    from runtime.persist.fallback import FallbackSink

    if isinstance(sink, NdjsonGzSink):
        return f"records are under {sink.root}/"
    if isinstance(sink, FallbackSink):
        return f"MongoDB database '{sink.store.database_name}': {sink.summary()}"
    return f"records went to {type(sink).__name__}"
