"""``[sink]`` keys of the MongoDB sink: validation, paths, and the sink ``mdgen run`` builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.config import ConfigError, load_config
from runtime.persist.build import build_sink
from runtime.persist.fallback import FallbackSink

MONGO = '[sink]\nkind = "mongodb"\nuri = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100"\n'


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return load_config(path)[0]


def codes(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return [d.code for d in info.value.errors]


def test_spool_keys_and_defaults(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        MONGO + 'spool_dir = "spool"\non_full = "drop_oldest"\nfsync = "interval"\n'
        "fsync_interval = 0.5\nspool_max_bytes = 4194304\nspool_segment_bytes = 1048576\n"
        "dedup_window = 30\n",
    )
    sink = config.sink  # type: ignore[attr-defined]
    assert sink.spool_dir == tmp_path / "spool"  # relative to the config file
    assert (sink.on_full, sink.fsync, sink.fsync_interval) == ("drop_oldest", "interval", 0.5)
    assert sink.dedup_window == 30.0 and sink.dedup_max_keys == 1_000_000
    assert sink.replay_rate == 20_000.0
    built = build_sink(sink, tmp_path / "data")
    assert isinstance(built, FallbackSink)
    assert built.spool.directory == tmp_path / "spool" and built.spool.on_full == "drop_oldest"
    assert built.spool.max_bytes == 4 << 20 and built.dedup is not None
    default = build_sink(load(tmp_path, MONGO).sink, tmp_path / "data")  # type: ignore[attr-defined]
    assert isinstance(default, FallbackSink) and default.dedup is None
    assert default.spool.directory == tmp_path / "data" / "spool"
    assert default.spool.fsync_policy == "batch" and default.spool.on_full == "block"


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ('on_full = "drop"\n', "E403"),
        ('fsync = "always"\n', "E403"),
        ("spool_max_bytes = 1000\n", "E403"),
        ("fsync_interval = 0\n", "E403"),
        ("spool_max_bytes = 2097152\nspool_segment_bytes = 2097152\n", "E411"),
    ],
)
def test_bad_spool_values(tmp_path: Path, extra: str, code: str) -> None:
    assert codes(tmp_path, MONGO + extra) == [code]


def test_spool_keys_belong_to_mongodb_only(tmp_path: Path) -> None:
    text = '[sink]\nkind = "ndjson"\nspool_dir = "x"\non_full = "block"\n'
    assert codes(tmp_path, text) == ["E411", "E411"]


def test_ndjson_kind_honours_dir(tmp_path: Path) -> None:
    config = load(tmp_path, '[sink]\nkind = "ndjson"\ndir = "out"\n')
    sink = build_sink(config.sink, tmp_path / "data")  # type: ignore[attr-defined]
    assert getattr(sink, "root", None) == tmp_path / "out"
