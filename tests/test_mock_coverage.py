"""Issue 7, mock coverage: REST replies by method (KuCoin's POST bootstrap), frames held back
for clients that pace their subscribes (GMO), clear 404/405 answers."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from runtime.collector import Collector, Instance
from runtime.mock import MockExchange, RestIndex, RestReply, load_capture
from runtime.pipeline import Pipeline
from runtime.registry import load_spec
from runtime.replay import replay_lines
from runtime.run import capture_symbols
from runtime.session import Backoff
from runtime.sinks import MemorySink
from runtime.spec import ExchangeSpec
from runtime.transport import make_transport
from tests.conftest import ROOT

CAPTURES = ROOT / "tests" / "fixtures" / "captures"
MDGEN = Path(sys.executable).parent / "mdgen"
FAST = Backoff(initial=0.01, cap=0.05, stable_after=60)


def _capture(exchange: str) -> Path:
    return CAPTURES / exchange / "raw.ndjson"


def _comparable(records: list[dict[str, Any]]) -> list[bytes]:
    return sorted(
        orjson.dumps({k: v for k, v in r.items() if k != "ts_recv"}, option=orjson.OPT_SORT_KEYS)
        for r in records
    )


def _replay(exchange: str, channels: set[str]) -> list[dict[str, Any]]:
    """What ``mdgen replay`` gives for the capture's WebSocket frames on ``channels``."""
    lines = [ln for ln in _capture(exchange).read_bytes().splitlines() if b'"kind": "ws"' in ln]
    records, _ = replay_lines(load_spec(exchange), lines)
    return [r for _, r in records if r["channel"] in channels]


def _data(sink: MemorySink) -> list[dict[str, Any]]:
    return [e["record"] for e in sink.envelopes if e["kind"] not in ("gap", "dead_letter")]


async def _collect(
    mock: MockExchange, spec: ExchangeSpec, enough: int, duration: float = 8
) -> tuple[list[dict[str, Any]], Instance]:
    """Run a collector on every channel/symbol of the mock's capture until ``enough`` records
    arrived (or ``duration`` passed)."""
    channels = sorted({c for c, _ in mock.capture.pairs()})
    sink = MemorySink()
    pipeline = Pipeline(sink, batch_size=50, flush_interval=0.05, queue_batches=8)
    inst = Instance("t", spec, capture_symbols(mock, channels), channels)
    collector = Collector([inst], make_transport("websockets"), pipeline, backoff=FAST)

    async def watch() -> None:
        while len(_data(sink)) < enough:
            await asyncio.sleep(0.02)
        collector.request_stop()

    watcher = asyncio.create_task(watch())
    await collector.run(duration=duration)
    watcher.cancel()
    return _data(sink), inst


# -- REST by method ----------------------------------------------------------------------------
def test_capture_lines_carry_the_request_method() -> None:
    cap = load_capture(load_spec("kucoin"), _capture("kucoin"))
    methods = {(r.method, r.path) for r in cap.rest}
    assert ("POST", "/api/v1/bullet-public") in methods
    assert ("GET", "/api/v1/market/orderbook/level2_100") in methods  # no "method": GET


def test_rest_index_matches_method_path_and_parameters() -> None:
    def reply(method: str, query: dict[str, str], body: str) -> RestReply:
        return RestReply(1, "/v1/key", tuple(query.items()), body.encode(), 200, method)

    index = RestIndex(
        [
            reply("GET", {}, "get"),
            reply("POST", {}, "created"),
            reply("PUT", {"key": "a"}, "kept a"),
            reply("PUT", {"key": "b"}, "kept b"),
        ]
    )

    def body(method: str, target: str) -> bytes | None:
        found = index.find(method, target)
        return None if found is None else found.body

    assert body("POST", "/v1/key") == b"created"
    assert body("PUT", "/v1/key?key=b") == b"kept b"
    assert body("put", "/v1/key?key=a") == b"kept a"
    assert body("HEAD", "/v1/key") == b"get"  # HEAD is served from GET
    assert body("DELETE", "/v1/key") is None
    assert index.methods("/v1/key") == ["GET", "HEAD", "POST", "PUT"]
    assert index.paths() == ["/v1/key", "POST /v1/key", "PUT /v1/key"]


def test_post_put_delete_are_served_and_unknown_requests_get_clear_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def line(method: str | None, url: str, data: Any, **extra: Any) -> bytes:
        entry = {"recv_ts": 1.0, "kind": "rest", "conn": "rest", "url": url, **extra}
        entry["data"] = data if isinstance(data, str) else orjson.dumps(data).decode()
        if method is not None:
            entry["method"] = method
        return orjson.dumps(entry)

    base = "https://api.example.com/api/v1/stream"
    # a JSON text with "\/" escapes in one URL
    reply = '{"key": "K1", "url": "wss://s.example.com:443/ws", "escaped": "wss:\\/\\/x.com\\/a"}'
    path = tmp_path / "raw.ndjson"
    path.write_bytes(
        b"\n".join(
            [
                line("POST", base, reply),
                line("PUT", base, {"kept": "K1"}, request_body='{"key": "K1"}'),
                line("PUT", base, {"kept": "K2"}, request_body="key=K2"),
                line("delete", base + "?key=K1", {}),
                line(None, "https://api.example.com/api/v1/time", {"t": 1}),
            ]
        )
        + b"\n"
    )

    async def main() -> MockExchange:
        mock = MockExchange(load_spec("kucoin"), path)
        async with mock, httpx.AsyncClient(base_url=mock.http_url) as client:
            created = await client.post("/api/v1/stream")
            assert created.status_code == 200
            host = mock.ws_url.rstrip("/")
            assert created.json() == {"key": "K1", "url": f"{host}/ws", "escaped": f"{host}/a"}
            kept = await client.put("/api/v1/stream", json={"key": "K2"})
            assert kept.json() == {"kept": "K2"}
            kept = await client.put("/api/v1/stream", content=b"key=K1")
            assert kept.json() == {"kept": "K1"}
            assert (await client.delete("/api/v1/stream?key=K1")).json() == {}
            assert (await client.head("/api/v1/time")).status_code == 200
            for _ in range(2):
                refused = await client.post("/api/v1/time")
                assert refused.status_code == 405
                assert refused.json()["allowed"] == ["GET", "HEAD"]
                missing = await client.patch("/no/such/path?x=1")
                assert missing.status_code == 404
                assert missing.json() == {
                    "error": "not found",
                    "method": "PATCH",
                    "path": "/no/such/path",
                }
        return mock

    with caplog.at_level(logging.WARNING, logger="runtime.mock.server"):
        mock = asyncio.run(main())
    assert not mock.stats.errors
    warnings = [r.getMessage() for r in caplog.records]
    warnings = [w for w in warnings if "no captured REST reply" in w]
    assert len(warnings) == 2  # once per method and path
    assert any("PATCH /no/such/path (404)" in w for w in warnings)
    assert any("POST /api/v1/time (405; captured: GET, HEAD)" in w for w in warnings)


# -- KuCoin: the bootstrap POST against the mock --------------------------------------------------
def test_kucoin_bootstraps_from_the_captured_post_reply() -> None:
    spec = load_spec("kucoin")
    books = {name for name, ch in spec.channels.items() if ch.kind == "book"}
    expected = _replay("kucoin", set(spec.channels) - books)
    token = load_capture(spec, _capture("kucoin")).rest[0].body.split(b'"token":"')[1]
    token = token.split(b'"')[0]

    async def main() -> tuple[list[dict[str, Any]], MockExchange]:
        async with MockExchange(spec, _capture("kucoin")) as mock:
            enough = len(_replay("kucoin", set(spec.channels)))
            records, inst = await _collect(mock, mock.client_spec(), enough, duration=6)
            assert inst.sessions[0].stats.unrecognized == 0
            return records, mock

    records, mock = asyncio.run(main())
    assert "/api/v1/bullet-public" in mock.stats.rest_requests
    assert mock.stats.paths and mock.stats.paths[0] == f"/?token={token.decode()}"
    others = [r for r in records if r["channel"] not in books]
    assert _comparable(others) == _comparable(expected)
    assert any(r["channel"] in books for r in records), "no order-book record arrived"
    assert not mock.stats.errors


def test_mdgen_run_kucoin_mock_connects_with_the_bootstrap_token(tmp_path: Path) -> None:
    spec = load_spec("kucoin")
    books = {name for name, ch in spec.channels.items() if ch.kind == "book"}
    data = tmp_path / "data"
    result = subprocess.run(
        [str(MDGEN), "run", "kucoin", "--mock", "--duration", "3", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bootstrap failed" not in result.stderr
    assert "?token=" in result.stderr  # the connection's URL (its token redacted)
    records: list[dict[str, Any]] = []
    for file in sorted(data.rglob("*.ndjson.gz")):
        with gzip.open(file) as handle:
            records.extend(orjson.loads(ln)["record"] for ln in handle if ln.strip())
    others = [r for r in records if r["channel"] not in books]
    assert _comparable(others) == _comparable(_replay("kucoin", set(spec.channels) - books))
    assert "0 unrecognized, 0 malformed" in result.stderr


# -- GMO: paced subscribes get every captured frame --------------------------------------------
def test_gmo_paced_subscribes_get_every_captured_record() -> None:
    spec = load_spec("gmo")
    expected = _replay("gmo", set(spec.channels))
    assert spec.subscribe.chunk == 1 and spec.subscribe.interval >= 1.0

    async def main() -> tuple[list[dict[str, Any]], MockExchange, float]:
        async with MockExchange(spec, _capture("gmo")) as mock:
            # still one subscribe at a time, 0.2 s apart (1.1 s in the descriptor)
            paced = dataclasses.replace(mock.client_spec().subscribe, interval=0.2)
            client = dataclasses.replace(mock.client_spec(), subscribe=paced)
            loop = asyncio.get_running_loop()
            start = loop.time()
            records, _ = await _collect(mock, client, len(expected))
            return records, mock, loop.time() - start

    records, mock, elapsed = asyncio.run(main())
    pairs = len(mock.capture.pairs())
    assert mock.stats.subscribes == pairs == 6
    assert elapsed >= 0.2 * (pairs - 1)  # the subscribes were paced
    assert _comparable(records) == _comparable(expected)
    assert mock.stats.data_frames_sent == len(mock.capture.frames)
    assert not mock.stats.errors
