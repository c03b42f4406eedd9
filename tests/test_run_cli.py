"""`mdgen run` as a user runs it: a subprocess against the in-process mock, files on disk."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from runtime.registry import load_spec
from runtime.replay import Replayer
from tests.crosscheck import require_captures

MDGEN = Path(sys.executable).parent / "mdgen"


def _read_tree(root: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(root.rglob("*.ndjson.gz")):
        with gzip.open(path) as handle:
            out.extend(orjson.loads(line) for line in handle if line.strip())
    return out


def _ws_records(exchange: str) -> list[bytes]:
    capture = require_captures(exchange) / "raw.ndjson"
    replayer = Replayer(load_spec(exchange))
    records = []
    for n, line in enumerate(capture.open("rb"), 1):
        entry = orjson.loads(line)
        if entry["kind"] == "ws":
            records.extend(replayer.capture_line(n, entry))
    return _comparable(records)


def _comparable(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(
        orjson.dumps({k: v for k, v in r.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS)
        for r in records
    )


def test_run_mock_duration_writes_what_replay_gives(tmp_path: Path) -> None:
    expected = _ws_records("kraken")
    data = tmp_path / "data"
    result = subprocess.run(
        [str(MDGEN), "run", "kraken", "--mock", "--duration", "4", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    envelopes = _read_tree(data)
    records = [e["record"] for e in envelopes if e["kind"] not in ("gap", "dead_letter")]
    assert _comparable(records) == expected
    assert "kraken: stopped;" in result.stderr and "0 unrecognized, 0 malformed" in result.stderr
    layout = {p.relative_to(data).parts[:2] for p in data.rglob("*.ndjson.gz")}
    assert layout == {("kraken", "trades"), ("kraken", "book"), ("kraken", "ticker")}


def test_sigterm_flushes_everything_and_exits_zero(tmp_path: Path) -> None:
    require_captures("coinbase")
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [str(MDGEN), "run", "coinbase", "--mock", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(data.rglob("*.ndjson.gz")):
            time.sleep(0.1)
        assert list(data.rglob("*.ndjson.gz")), "no data was written before the deadline"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    summary = next(line for line in stderr.splitlines() if line.startswith("coinbase: "))
    records = int(summary.split(" messages, ")[1].split(" records")[0])
    stored = [e for e in _read_tree(data) if e["kind"] not in ("gap", "dead_letter")]
    assert records > 0 and len(stored) == records  # every parsed record reached the files


def test_bad_config_is_reported_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('[collector]\ntransport = "carrier-pigeon"\n')
    result = subprocess.run(
        [str(MDGEN), "run", "okx", "--config", str(config), "--symbols", "BTC-USDT"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "collector.toml:2:" in result.stderr and "Traceback" not in result.stderr
