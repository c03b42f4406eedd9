"""Real captured traffic through generated modules: all frames understood, trades as peers saw."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from runtime.registry import exchanges, load_spec
from runtime.replay import replay_lines
from runtime.spec import Record
from tests.crosscheck import (
    CAPTURES,
    TICKER_CONVENTIONS,
    capture_name,
    compare_tickers,
    compare_trades,
    load_cryptofeed_trades,
    require_captures,
)

# Exchanges with a capture under their id or a former name (htx: "huobi").
WITH_DESCRIPTOR = sorted(
    e for e in exchanges() if (CAPTURES / capture_name(e) / "raw.ndjson").is_file()
) or ["binance"]


def _replay(exchange: str) -> tuple[list[Record], object]:
    folder = require_captures(exchange)
    with (folder / "raw.ndjson").open("rb") as lines:
        records, report = replay_lines(load_spec(exchange), lines)
        out = [{**record, "raw_line": line} for line, record in records]
    return out, report


@pytest.mark.parametrize("exchange", WITH_DESCRIPTOR)
def test_every_frame_is_recognized_and_parses(exchange: str) -> None:
    records, report = _replay(exchange)
    problems = "\n".join(f"line {p.line}: {p.reason}: {p.text}" for p in report.samples)
    assert report.unrecognized == 0 and report.malformed == 0, problems
    assert records
    assert report.frames["data"] > 0


@pytest.mark.parametrize("exchange", WITH_DESCRIPTOR)
def test_trades_equal_the_peers_output(exchange: str) -> None:
    records, _ = _replay(exchange)
    folder = require_captures(exchange)
    if not (folder / "cryptofeed" / "trades.ndjson").is_file():
        # The peer wrote no trades file because the capture holds no trade (deribit): then
        # ours must have none either.
        assert not [r for r in records if r["channel"] == "trades"]
        pytest.skip(f"the {folder.name} capture holds no trades; the peer wrote none")
    theirs = load_cryptofeed_trades(folder)
    ours = [r for r in records if r.get("price") is not None and "side" in r]
    assert theirs, "the peer produced no trades for this capture"
    mismatches = compare_trades(ours, theirs, exchange, check_ts_recv=True)
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("exchange", sorted(TICKER_CONVENTIONS))
def test_tickers_equal_the_peers_output(exchange: str) -> None:
    records, _ = _replay(exchange)
    folder = require_captures(exchange)
    theirs = [orjson.loads(line) for line in (folder / "cryptofeed" / "ticker.ndjson").open("rb")]
    assert theirs
    mismatches = compare_tickers(records, theirs, exchange)
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("exchange", WITH_DESCRIPTOR)
def test_records_have_the_normalized_shape(exchange: str) -> None:
    records, _ = _replay(exchange)
    for record in records:
        assert record["exchange"] == exchange
        assert isinstance(record["ts_recv"], int) and record["ts_recv"] > 1_500_000_000 * 10**9
        ts = record["ts_exchange"]
        assert ts is None or (isinstance(ts, int) and ts > 1_500_000_000 * 10**9)
        assert record["symbol"] == record["symbol"].upper() and "-" in record["symbol"]
        if "bids" in record:
            assert record["type"] in ("snapshot", "delta")
            for side in ("bids", "asks"):
                for level in record[side]:
                    assert len(level) == 2 and all(isinstance(v, str) for v in level)
        if "side" in record:
            assert record["side"] in ("buy", "sell", None)


def test_replay_cli_writes_records_and_strict_exit_code(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from compiler.cli import app

    folder = require_captures("okx")
    out = tmp_path / "okx.ndjson"
    result = CliRunner().invoke(
        app, ["replay", "okx", str(folder / "raw.ndjson"), "--out", str(out), "--strict"]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert len(lines) == 290 + 28 + 74
    assert orjson.loads(lines[0])["exchange"] == "okx"

    broken = tmp_path / "broken.ndjson"
    broken.write_text(
        '{"recv_ts": 1.5, "kind": "ws", "conn": "ws.1", "data": "{\\"what\\": 1}"}\n'
        '{"recv_ts": 1.6, "kind": "ws", "conn": "ws.1", "data": "{\\"arg\\": {\\"channel\\": '
        '\\"trades\\", \\"instId\\": \\"BTC-USDT\\"}, \\"data\\": [{\\"px\\": \\"x\\"}]}"}\n'
    )
    result = CliRunner().invoke(app, ["replay", "okx", str(broken), "--strict"])
    assert result.exit_code == 3
    assert "unrecognized: 1, malformed: 1" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["replay", "nosuch", str(broken)])
    assert result.exit_code == 2 and "known: " in result.output
