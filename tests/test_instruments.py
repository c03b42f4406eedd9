"""Symbol overrides at run time: instrument lists from REST and symbol map files."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from compiler.pipeline import compile_descriptor
from runtime.config import ConfigError, load_config
from runtime.convert import ConversionError, ymd
from runtime.instruments import (
    SymbolReport,
    descriptor_map_file,
    normalize_symbols,
    prepare_symbols,
)
from runtime.registry import load_spec
from runtime.rest import RestClient
from runtime.spec import ExchangeSpec, RestSpec
from runtime.symbolmap import SymbolMapError, load_symbol_map

ROOT = Path(__file__).resolve().parents[1]
MDGEN = Path(sys.executable).parent / "mdgen"


def _item(name: str, kind: str, period: str, expiry_ms: int) -> dict[str, Any]:
    return {
        "instrument_name": name,
        "kind": kind,
        "settlement_period": period,
        "expiration_timestamp": expiry_ms,
    }


# Shaped like Deribit's public/get_instruments (docs example values).
DERIBIT_REPLY = {
    "jsonrpc": "2.0",
    "result": [
        _item("BTC-PERPETUAL", "future", "perpetual", 32503708800000),
        _item("BTC-27DEC24", "future", "month", 1735286400000),
        _item("BTC-27DEC24-100000-C", "option", "month", 1735286400000),
        _item("SOL_USDC-29JUL22-40-P", "option", "month", 1659081600000),
        _item("BTC-BAD", "option", "month", "soon"),  # unreadable expiry: skipped
        {"kind": "option"},  # no instrument_name: skipped
        _item("BTC-FS-27DEC24_PERP", "future_combo", "month", 1735286400000),  # dropped by where
    ],
}


@pytest.fixture
def deribit() -> Iterator[ExchangeSpec]:
    spec = load_spec("deribit")
    yield spec
    spec.symbols.reset_overrides()


def _factory(handler: Callable[[httpx.Request], httpx.Response]) -> Callable[[RestSpec], Any]:
    def make(rest: RestSpec) -> RestClient:
        return RestClient(rest, transport=httpx.MockTransport(handler), max_retries=0)

    return make


def _reply(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body))


# -- instrument lists ------------------------------------------------------------------------


def test_instrument_list_gives_the_convention_both_ways(deribit: ExchangeSpec) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.params["currency"])
        return _reply(DERIBIT_REPLY if request.url.params["currency"] == "BTC" else {"result": []})

    report = asyncio.run(prepare_symbols(deribit, client_factory=_factory(handler)))
    assert asked == ["BTC", "ETH", "USDC", "USDT"]  # one call per entry of `requests`
    assert (report.requests, report.requests_failed, report.instruments) == (4, 0, 3)
    assert report.items_skipped == 2 and not report.fell_back
    sym = deribit.symbols
    for raw, canonical in [
        ("BTC_USDC", "BTC-USDC"),  # spot: rules
        ("BTC-PERPETUAL", "BTC-USD-PERP"),  # perpetual: rules
        ("BTC-27DEC24", "BTC-USD-20241227"),  # dated future: instrument list
        ("BTC-27DEC24-100000-C", "BTC-USD-20241227-100000-C"),  # option
        ("SOL_USDC-29JUL22-40-P", "SOL-USDC-20220729-40-P"),  # linear option
    ]:
        assert sym.canonical(raw) == canonical
        assert sym.raw(canonical) == raw
    # Records go through the same mapper: the generated parser sees the overrides.
    assert normalize_symbols(sym, ["BTC-USD-27DEC24", "BTC-USD-PERP"]) == [
        "BTC-USD-20241227",
        "BTC-USD-PERP",
    ]


def test_failed_instrument_list_falls_back_to_the_rules(
    deribit: ExchangeSpec, caplog: pytest.LogCaptureFixture
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _reply({"error": "down"}, status=503)

    with caplog.at_level(logging.WARNING, "mdgen.symbols"):
        report = asyncio.run(prepare_symbols(deribit, client_factory=_factory(handler)))
    assert report.fell_back and report.requests_failed == 4 and report.instruments == 0
    assert "no instrument list (4 calls failed)" in caplog.text
    assert "follow the [symbols] rules" in caplog.text
    assert deribit.symbols.canonical("BTC-27DEC24") == "BTC-USD-27DEC24"  # the rules' spelling


def test_unreachable_host_and_bad_reply_are_counted(deribit: ExchangeSpec) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused")
        if calls == 2:
            return _reply({"unexpected": True})  # `each` cannot read it
        return _reply(DERIBIT_REPLY)

    report = asyncio.run(prepare_symbols(deribit, client_factory=_factory(handler)))
    assert (report.requests, report.requests_failed) == (4, 2)
    assert deribit.symbols.canonical("BTC-27DEC24") == "BTC-USD-20241227"


def test_map_files_win_over_the_instrument_list(deribit: ExchangeSpec, tmp_path: Path) -> None:
    first = tmp_path / "a.toml"
    first.write_text('"BTC-27DEC24" = "BTC-USD-DEC24"\nFOO_BAR = "FOO-BAR"\n')
    second = tmp_path / "b.toml"
    second.write_text('"btc-27dec24" = "BTC-USD-Q4"\n')
    maps = [(first, load_symbol_map(first)), (second, load_symbol_map(second))]
    report = asyncio.run(
        prepare_symbols(deribit, maps, client_factory=_factory(lambda r: _reply(DERIBIT_REPLY)))
    )
    assert report.file_entries == 2 and report.files == [str(first), str(second)]
    assert deribit.symbols.canonical("BTC-27DEC24") == "BTC-USD-Q4"  # the later file wins
    assert deribit.symbols.raw("BTC-USD-Q4") == "btc-27dec24"
    assert deribit.symbols.canonical("FOO_BAR") == "FOO-BAR"
    assert deribit.symbols.canonical("BTC-27DEC24-100000-C") == "BTC-USD-20241227-100000-C"
    deribit.symbols.reset_overrides()
    assert deribit.symbols.canonical("BTC-27DEC24") == "BTC-USD-27DEC24"


def test_captured_replies_replace_the_call(deribit: ExchangeSpec) -> None:
    captured = [
        ("https://www.deribit.com/api/v2/public/get_instruments?currency=BTC", DERIBIT_REPLY),
        ("https://www.deribit.com/api/v2/public/get_order_book?x=1", {"result": {}}),
    ]
    report = asyncio.run(prepare_symbols(deribit, captured=captured))
    assert (report.requests, report.instruments) == (1, 3)
    assert deribit.symbols.canonical("BTC-27DEC24") == "BTC-USD-20241227"


def test_report_summary() -> None:
    report = SymbolReport("x", instruments=3, requests=2, requests_failed=1, items_skipped=4)
    assert report.summary() == (
        "x: symbol overrides: 3 from the instrument list (1 of 2 calls failed, 4 items skipped)"
    )
    assert SymbolReport("y").summary() == "y: symbol overrides: none"


def test_ymd() -> None:
    assert ymd(1735286400000 * 1_000_000) == "20241227"
    with pytest.raises(ConversionError, match="expected int ns"):
        ymd("1735286400000")


# -- compiler ----------------------------------------------------------------------------------

_DESCRIPTOR = """schema = "1.4"
[exchange]
id = "demo"
name = "Demo"
[symbols.instruments]
endpoint = "{endpoint}"
each = 'data'
raw = 'it.id'
canonical = 'it.base + "-" + it.quote'
[websocket.endpoints.public]
urls = ["wss://example.com/ws"]
[websocket.subscribe]
message = '{{"op": "subscribe", "args": topics}}'
[rest]
base_urls = ["https://example.com"]
[rest.endpoints.list]
path = "/instruments"
[channels.trades]
kind = "trades"
topic = '"trades." + raw'
match = 'topic == "trades"'
[channels.trades.fields]
symbol = 's'
price = 'dec(p)'
size = 'dec(q)'
"""


def test_compiler_emits_the_instrument_functions() -> None:
    _, text, diags = compile_descriptor("demo.toml", _DESCRIPTOR.format(endpoint="list"), ROOT)
    assert text is not None and not diags
    assert "def instruments_canonical(m: Any, it: Any) -> str:" in text
    assert "instruments=rt.InstrumentsSpec(" in text and "requests=({},)" in text


def test_compiler_checks_the_endpoint() -> None:
    _, text, diags = compile_descriptor("demo.toml", _DESCRIPTOR.format(endpoint="nope"), ROOT)
    assert text is None
    (diag,) = diags
    assert diag.code == "E304" and diag.toml_path == "symbols.instruments.endpoint"
    assert (diag.line, diag.col) == (6, 12)


# -- symbol map files --------------------------------------------------------------------------


def test_symbol_map_file(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('# raw = canonical\n"BTC-27DEC24" = "BTC-USD-20241227"\nXBTUSD = "BTC-USD"\n')
    assert load_symbol_map(path) == {"BTC-27DEC24": "BTC-USD-20241227", "XBTUSD": "BTC-USD"}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('A_B = "a/b"\n', (1, 7), "'a/b' is not a canonical symbol"),
        ("A_B = 3\n", (1, 7), "must be a string, not int"),
        ('[t]\nA = "A-B"\n', (1, 1), "'t' is a table"),
        ('A_B = "A-B"\n"a_b" = "A-C"\n', (2, 1), "'a_b' is 'A_B' again"),
        ('" A" = "A-B"\n', (1, 1), "empty or has spaces"),
        ('A = "A-B\n', (1, 9), "invalid TOML"),
    ],
)
def test_symbol_map_errors_are_located(
    tmp_path: Path, text: str, where: tuple[int, int], message: str
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(SymbolMapError) as info:
        load_symbol_map(path, display="m.toml")
    (diag,) = info.value.diagnostics
    assert diag.code == "E414" and message in diag.message
    assert (diag.file, diag.line, diag.col) == ("m.toml", *where)
    assert info.value.render().startswith(f"m.toml:{where[0]}:{where[1]}: error[E414]")


def test_unreadable_symbol_map(tmp_path: Path) -> None:
    with pytest.raises(SymbolMapError, match="cannot read the symbol map file"):
        load_symbol_map(tmp_path)  # a folder


def test_config_checks_the_instance_map_file(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('BTCUSDT = "btcusdt"\n')
    config = tmp_path / "collector.toml"
    config.write_text(
        "[instances.main]\n"
        'exchange = "binance"\n'
        f'descriptor_path = "{ROOT / "descriptors" / "binance.toml"}"\n'
        'symbols = ["BTC-USDT"]\n'
        'symbol_map_file = "bad.toml"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(config)
    (diag,) = info.value.errors
    assert diag.code == "E414" and diag.file.endswith("bad.toml") and diag.line == 1


def test_descriptor_map_file_is_relative_to_the_descriptor(deribit: ExchangeSpec) -> None:
    assert descriptor_map_file(deribit) is None
    spec = ExchangeSpec(**{**deribit.__dict__, "symbol_map_file": "maps/x.toml"})
    assert descriptor_map_file(spec) == ROOT / "descriptors" / "maps" / "x.toml"


# -- command line ------------------------------------------------------------------------------


def _capture(tmp_path: Path) -> Path:
    frame = {
        "jsonrpc": "2.0",
        "method": "subscription",
        "params": {
            "channel": "trades.BTC-27DEC24.100ms",
            "data": [
                {
                    "trade_seq": 1,
                    "trade_id": "1",
                    "timestamp": 1700000000000,
                    "price": 40000.5,
                    "instrument_name": "BTC-27DEC24",
                    "direction": "buy",
                    "amount": 10.0,
                }
            ],
        },
    }
    url = "https://www.deribit.com/api/v2/public/get_instruments?currency=BTC&expired=false"
    lines = [
        {"recv_ts": 1.0, "kind": "rest", "conn": "rest", "url": url, "data": DERIBIT_REPLY},
        {"recv_ts": 2.0, "kind": "ws", "conn": "ws.1", "data": frame},
    ]
    path = tmp_path / "raw.ndjson"
    path.write_bytes(
        b"".join(
            orjson.dumps({**e, "data": orjson.dumps(e["data"]).decode()}) + b"\n" for e in lines
        )
    )
    return path


def test_replay_uses_captured_instruments_and_symbol_map(tmp_path: Path) -> None:
    capture = _capture(tmp_path)
    result = subprocess.run(
        [str(MDGEN), "replay", "deribit", str(capture)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (record,) = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert (record["symbol"], record["symbol_raw"]) == ("BTC-USD-20241227", "BTC-27DEC24")
    assert "3 from the instrument list" in result.stderr

    overrides = tmp_path / "map.toml"
    overrides.write_text('"BTC-27DEC24" = "BTC-USD-Z24"\n')
    result = subprocess.run(
        [str(MDGEN), "replay", "deribit", str(capture), "--symbol-map", str(overrides)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["symbol"] == "BTC-USD-Z24"

    overrides.write_text('"BTC-27DEC24" = 1\n')
    result = subprocess.run(
        [str(MDGEN), "replay", "deribit", str(capture), "--symbol-map", str(overrides)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "map.toml:1:17: error[E414]" in result.stderr and "Traceback" not in result.stderr


def test_run_mock_loads_the_instrument_list(tmp_path: Path) -> None:
    from tests.crosscheck import require_captures

    require_captures("deribit")
    data = tmp_path / "data"
    result = subprocess.run(
        [str(MDGEN), "run", "deribit", "--mock", "--duration", "2", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "from the instrument list (0 of 4 calls failed" in result.stderr
    names = {p.name for p in data.rglob("*.ndjson.gz")}
    assert "BTC-USD-20210924-8000-P.ndjson.gz" in names, sorted(names)
    assert not any("SEP21" in n for n in names)


def test_symbol_override_counts_are_metrics() -> None:
    from runtime.collector import Collector
    from runtime.instruments import SymbolReport
    from runtime.ops import ObservedSink
    from runtime.ops.health import Monitor
    from runtime.ops.metrics import RuntimeMetrics
    from runtime.pipeline import Pipeline
    from runtime.sinks import MemorySink
    from runtime.transport import make_transport

    pipeline = Pipeline(MemorySink(), batch_size=10, flush_interval=1.0, queue_batches=2)
    collector = Collector([], make_transport("websockets"), pipeline)
    report = SymbolReport("deribit", instruments=812, requests=4, requests_failed=1)
    report.items_skipped, report.file_entries = 2, 3
    collector.symbol_reports = {"deribit": report}
    sink = ObservedSink(MemorySink())
    metrics = RuntimeMetrics(collector, sink, Monitor(collector, sink))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.collect()
        if family.name.startswith(("mdgen_symbol", "mdgen_instrument"))
        for s in family.samples
    }
    ex = ("exchange", "deribit")
    assert samples == {
        ("mdgen_symbol_overrides", (ex, ("source", "instruments"))): 812,
        ("mdgen_symbol_overrides", (ex, ("source", "file"))): 3,
        ("mdgen_instrument_list_requests_total", (ex, ("outcome", "ok"))): 3,
        ("mdgen_instrument_list_requests_total", (ex, ("outcome", "failed"))): 1,
        ("mdgen_instrument_list_items_skipped_total", (ex,)): 2,
    }
