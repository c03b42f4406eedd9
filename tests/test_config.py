"""``collector.toml`` and the ``mdgen run`` command line: runtime/config.py.

Every error code is pinned with its full rendered text; each line, column and caret was checked by
hand against the TOML it points into. Configs are written to ``tmp_path/collector.toml`` and loaded
from there as the current folder, so the file name in diagnostics is ``collector.toml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from pydantic import BaseModel

from compiler.diagnostics import CODES, Diagnostic
from runtime.config import (
    COMMAND_LINE,
    CollectorConfig,
    ConfigError,
    InstanceConfig,
    RunOverrides,
    Shard,
    ShardError,
    SinkSettings,
    load_config,
    parse_shard,
    plan_instances,
    symbol_problem,
)
from runtime.registry import exchanges, load_spec

ROOT = Path(__file__).resolve().parents[1]
BINANCE_CHANNELS = ["trades", "agg_trades", "book", "ticker", "candles"]  # no private ones
# the default: the private channels are left out
OKX_CHANNELS = [
    "trades",
    "book",
    "ticker",
    "funding",
    "open_interest",
    "mark_price",
    "liquidations",
    "candles",
]
KNOWN = ", ".join(sorted(exchanges()))  # every generated module, as E408 lists them

BINANCE = """\
[instances.binance-main]
exchange = "binance"
descriptor_path = "descriptors/binance.toml"
symbols = ["BTC-USDT", "ETH-USDT"]
channels = ["trades", "book"]
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config folder (the current folder) with descriptors for binance and okx."""
    (tmp_path / "descriptors").mkdir()
    for exchange in ("binance", "okx"):
        (tmp_path / "descriptors" / f"{exchange}.toml").write_text("# stand-in\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MDGEN_TEST_MONGO_URI", raising=False)
    return tmp_path


def write(text: str, name: str = "collector.toml") -> Path:
    path = Path(name)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(text: str, overrides: RunOverrides | None = None) -> tuple[CollectorConfig, list[str]]:
    config, warnings = load_config(write(text), overrides=overrides)
    return config, [w.render() for w in warnings]


def failure(text: str | None, overrides: RunOverrides | None = None) -> str:
    """The rendered ConfigError for ``text`` (None: no config file)."""
    path = write(text) if text is not None else None
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides=overrides)
    return str(info.value)


def codes(text: str, overrides: RunOverrides | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(text), overrides=overrides)
    return [d.code for d in info.value.diagnostics]


def expected(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# -- defaults and a valid file --------------------------------------------------------------------


def test_no_config_file_gives_the_defaults(folder: Path) -> None:
    config, warnings = load_config(None)
    assert warnings == []
    assert config.instances == {}
    assert config.sink is None
    assert config.source is None
    assert config.collector.data_dir == folder / "data"
    assert config.collector.transport == "websockets"
    assert config.collector.log_format == "auto"
    assert config.collector.log_level == "info"
    assert config.collector.shutdown_timeout == 10.0
    assert (config.pipeline.batch_size, config.pipeline.flush_interval) == (1000, 1.0)
    assert config.pipeline.queue_batches == 64
    reconnect = config.reconnect
    assert (reconnect.initial_delay, reconnect.max_delay) == (0.5, 30.0)
    assert (reconnect.multiplier, reconnect.stable_after) == (2.0, 60.0)
    assert (config.http.enabled, config.http.host, config.http.port) == (False, "127.0.0.1", 9108)


def test_empty_file_gives_the_defaults(folder: Path) -> None:
    config, warnings = load("")
    assert warnings == []
    assert config.model_dump() == load_config(None)[0].model_dump()


def test_a_full_valid_config(folder: Path) -> None:
    config, warnings = load("""\
        [collector]
        data_dir = "out"
        transport = "picows"
        log_format = "json"
        log_level = "debug"
        shutdown_timeout = 3

        [pipeline]
        batch_size = 10
        flush_interval = 0.25
        queue_batches = 2

        [reconnect]
        initial_delay = 1
        max_delay = 1
        multiplier = 1
        stable_after = 5

        [sink]
        kind = "ndjson"
        dir = "elsewhere"

        [http]
        enabled = true
        host = "0.0.0.0"
        port = 0
        stale_after = 120

        [instances.binance-main]
        exchange = "binance"
        descriptor_path = "descriptors/binance.toml"
        enabled = true
        symbols = ["BTC-USDT", "ETH-USDT", "BTC-USDT-PERP"]
        channels = ["trades", "book"]
        shard = "2/3"
        """)
    assert warnings == []
    assert config.source == Path("collector.toml")
    assert config.collector.transport == "picows"
    assert config.collector.shutdown_timeout == 3.0
    assert config.pipeline.flush_interval == 0.25
    assert config.http.port == 0
    assert config.http.stale_after == 120.0
    assert config.sink is not None and config.sink.kind == "ndjson"
    inst = config.instances["binance-main"]
    assert inst.symbols == ["BTC-USDT", "ETH-USDT", "BTC-USDT-PERP"]
    assert inst.channels == ["trades", "book"]
    assert inst.shard == Shard(2, 3)


def test_the_example_config_loads_cleanly() -> None:
    config, warnings = load_config(ROOT / "collector.example.toml")
    assert warnings == []
    assert set(config.instances) == {"binance-main", "okx-main", "kraken-backup"}
    assert not config.instances["kraken-backup"].enabled
    plans = plan_instances(config, RunOverrides(exchanges=["binance", "okx"]))
    assert [(p.name, p.symbols, p.channels) for p in plans] == [
        ("binance-main", ["BTC-USDT", "ETH-USDT"], ["trades", "book"]),
        ("okx-main", ["BTC-USDT", "ETH-USDT", "SOL-USDT"], ["trades", "book"]),
    ]


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc" / "mdgen"
    (conf / "descriptors").mkdir(parents=True)
    (conf / "descriptors" / "binance.toml").write_text("")
    (conf / "maps").mkdir()
    (conf / "maps" / "binance.toml").write_text("")
    (conf / "collector.toml").write_text(
        '[collector]\ndata_dir = "../../var/data"\n'
        '[sink]\nkind = "ndjson"\ndir = "out"\n'
        + BINANCE
        + 'symbol_map_file = "maps/binance.toml"\n'
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config, warnings = load_config(Path("../../etc/mdgen/collector.toml"))
    assert warnings == []  # the descriptor and the symbol map were found next to the config
    assert config.collector.data_dir == tmp_path / "var" / "data"
    assert config.sink is not None and config.sink.dir == conf / "out"
    inst = config.instances["binance-main"]
    assert inst.descriptor_path == conf / "descriptors" / "binance.toml"
    assert inst.symbol_map_file == conf / "maps" / "binance.toml"


def test_absolute_paths_are_kept(folder: Path) -> None:
    target = folder / "descriptors" / "binance.toml"
    config, _ = load(BINANCE.replace('"descriptors/binance.toml"', json.dumps(str(target))))
    assert config.instances["binance-main"].descriptor_path == target


def test_a_byte_order_mark_is_accepted(folder: Path) -> None:
    Path("collector.toml").write_bytes(b"\xef\xbb\xbf" + BINANCE.encode())
    config, _ = load_config(Path("collector.toml"))
    assert "binance-main" in config.instances


# -- E400 to E404: the file and its schema -------------------------------------------------------


def test_e400_invalid_toml_is_located(folder: Path) -> None:
    assert failure('[collector]\nlog_level = "info\n') == expected("""
        collector.toml:2:18: error[E400]: invalid TOML: Illegal character '\\n'
            2 | log_level = "info
              |                  ^
        """)


def test_e400_invalid_value(folder: Path) -> None:
    assert failure("[pipeline]\nbatch_size = \n") == expected("""
        collector.toml:2:14: error[E400]: invalid TOML: Invalid value
            2 | batch_size = 
              |              ^
        """)  # noqa: W291 (the source line ends with a space)


def test_e401_unknown_key_points_at_the_key_with_a_hint(folder: Path) -> None:
    assert failure("[collector]\nlog_levle = 'debug'\n") == expected("""
        collector.toml:2:1: error[E401]: unknown key 'log_levle'; did you mean 'log_level'? (keys: data_dir, transport, log_format, log_level, shutdown_timeout)
          at collector.log_levle
            2 | log_levle = 'debug'
              | ^^^^^^^^^
        """)  # noqa: E501


def test_e401_unknown_section_points_at_its_header(folder: Path) -> None:
    assert failure("[pipline]\nbatch_size = 5\n") == expected("""
        collector.toml:1:1: error[E401]: unknown key 'pipline'; did you mean 'pipeline'? (keys: collector, pipeline, reconnect, sink, http, instances)
          at pipline
            1 | [pipline]
              | ^^^^^^^^^
        """)  # noqa: E501


def test_e401_unknown_key_in_an_inline_instance(folder: Path) -> None:
    text = (
        'instances.a = { exchange = "binance", descriptor_path = "descriptors/binance.toml", '
        'symbol = ["BTC-USDT"] }\n'
    )
    assert failure(text) == expected("""
        collector.toml:1:85: error[E401]: unknown key 'symbol'; did you mean 'symbols'? (keys: exchange, descriptor_path, enabled, symbols, channels, symbol_map_file, shard)
          at instances.a.symbol
            1 | instances.a = { exchange = "binance", descriptor_path = "descriptors/binance.toml", symbol = ["BTC-USDT"] }
              |                                                                                     ^^^^^^
        """)  # noqa: E501


def test_e402_missing_key_points_at_the_table(folder: Path) -> None:
    assert failure('\n[instances.main]\nexchange = "binance"\n') == expected("""
        collector.toml:2:1: error[E402]: missing required key 'descriptor_path'
          at instances.main.descriptor_path
            2 | [instances.main]
              | ^^^^^^^^^^^^^^^^
        """)


def test_e402_sink_kind_is_required(folder: Path) -> None:
    assert failure('[sink]\ndatabase = "x"\n') == expected("""
        collector.toml:1:1: error[E402]: missing required key 'kind'
          at sink.kind
            1 | [sink]
              | ^^^^^^
        """)


def test_e403_choice(folder: Path) -> None:
    assert failure('[collector]\ntransport = "ws"\n') == expected("""
        collector.toml:2:13: error[E403]: expected 'websockets' or 'picows', not 'ws'
          at collector.transport
            2 | transport = "ws"
              |             ^^^^
        """)


def test_e403_numbers_types_and_ranges(folder: Path) -> None:
    text = """\
        [pipeline]
        batch_size = 0
        flush_interval = "1s"
        queue_batches = 1.5
        [http]
        port = 70000
        enabled = "yes"
        [reconnect]
        multiplier = nan
        """
    assert failure(text) == expected("""
        collector.toml:2:14: error[E403]: Input should be greater than or equal to 1
          at pipeline.batch_size
            2 | batch_size = 0
              |              ^
        collector.toml:3:18: error[E403]: Input should be a valid number
          at pipeline.flush_interval
            3 | flush_interval = "1s"
              |                  ^^^^
        collector.toml:4:17: error[E403]: Input should be a valid integer
          at pipeline.queue_batches
            4 | queue_batches = 1.5
              |                 ^^^
        collector.toml:6:8: error[E403]: Input should be less than or equal to 65535
          at http.port
            6 | port = 70000
              |        ^^^^^
        collector.toml:7:11: error[E403]: Input should be a valid boolean
          at http.enabled
            7 | enabled = "yes"
              |           ^^^^^
        collector.toml:9:14: error[E403]: Input should be a finite number
          at reconnect.multiplier
            9 | multiplier = nan
              |              ^^^
        """)


def test_e403_tables_arrays_and_empty_values(folder: Path) -> None:
    text = """\
        [collector]
        data_dir = ""
        [instances.main]
        exchange = "binance"
        descriptor_path = "descriptors/binance.toml"
        symbols = "BTC-USDT"
        channels = []
        [http]
        host = ""
        """
    assert failure(text) == expected("""
        collector.toml:2:12: error[E403]: the path must not be empty
          at collector.data_dir
            2 | data_dir = ""
              |            ^^
        collector.toml:6:11: error[E403]: expected an array
          at instances.main.symbols
            6 | symbols = "BTC-USDT"
              |           ^^^^^^^^^^
        collector.toml:7:12: error[E403]: channels must not be empty; leave it out for every channel
          at instances.main.channels
            7 | channels = []
              |            ^^
        collector.toml:9:8: error[E403]: String should have at least 1 character
          at http.host
            9 | host = ""
              |        ^^
        """)
    assert failure("instances = 3\n") == expected("""
        collector.toml:1:13: error[E403]: expected a table
          at instances
            1 | instances = 3
              |             ^
        """)


def test_e404_missing_file(folder: Path) -> None:
    assert failure_path(Path("nope.toml")) == (
        "nope.toml:1:1: error[E404]: the config file does not exist"
    )


def test_e404_unreadable_file(folder: Path) -> None:
    Path("dir.toml").mkdir()
    assert failure_path(Path("dir.toml")) == (
        "dir.toml:1:1: error[E404]: cannot read the config file: Is a directory"
    )
    Path("latin1.toml").write_bytes(b'[collector]\nlog_level = "\xe9"\n')
    assert failure_path(Path("latin1.toml")).startswith(
        "latin1.toml:1:1: error[E404]: cannot read the config file: 'utf-8' codec can't decode"
    )


def failure_path(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


# -- E405 to E407: names, symbols, shards --------------------------------------------------------


def test_e405_instance_name_points_at_the_key(folder: Path) -> None:
    text = BINANCE.replace("binance-main", "Binance_Main")
    assert failure(text) == expected("""
        collector.toml:1:1: error[E405]: instance name 'Binance_Main' must be lower-case letters, digits, '-' and '_', starting with a letter or digit
          at instances.Binance_Main
            1 | [instances.Binance_Main]
              | ^^^^^^^^^^^^^^^^^^^^^^^^
        """)  # noqa: E501
    assert codes('instances."-x" = { exchange = "b", descriptor_path = "d", enabled = false }') == [
        "E405"
    ]


def test_e406_symbols_must_be_canonical(folder: Path) -> None:
    text = BINANCE.replace('["BTC-USDT", "ETH-USDT"]', '["btc-usdt", "BTCUSDT", "ETH/USDT"]')
    assert failure(text) == expected("""
        collector.toml:4:12: error[E406]: 'btc-usdt' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case letters and digits, e.g. 'BTC-USDT'; did you mean 'BTC-USDT'?
          at instances.binance-main.symbols[0]
            4 | symbols = ["btc-usdt", "BTCUSDT", "ETH/USDT"]
              |            ^^^^^^^^^^
        collector.toml:4:24: error[E406]: 'BTCUSDT' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case letters and digits, e.g. 'BTC-USDT'
          at instances.binance-main.symbols[1]
            4 | symbols = ["btc-usdt", "BTCUSDT", "ETH/USDT"]
              |                        ^^^^^^^^^
        collector.toml:4:35: error[E406]: 'ETH/USDT' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case letters and digits, e.g. 'BTC-USDT'; did you mean 'ETH-USDT'?
          at instances.binance-main.symbols[2]
            4 | symbols = ["btc-usdt", "BTCUSDT", "ETH/USDT"]
              |                                   ^^^^^^^^^^
        """)  # noqa: E501


@pytest.mark.parametrize(
    "symbol", ["BTC-USDT", "ETH-BTC", "BTC-USDT-PERP", "BTC-USD-250328", "1000SHIB-USDT"]
)
def test_canonical_symbols(symbol: str) -> None:
    assert symbol_problem(symbol) is None


@pytest.mark.parametrize(
    "symbol", ["", "BTC", "BTCUSDT", "btc-usdt", "BTC--USDT", "-BTC-USDT", "BTC-USDT-", "BTC USDT"]
)
def test_not_canonical_symbols(symbol: str) -> None:
    assert symbol_problem(symbol) is not None


def test_e407_shard_in_the_config(folder: Path) -> None:
    assert failure(BINANCE + 'shard = "0/4"\n') == expected("""
        collector.toml:6:9: error[E407]: shard 0/4: shards are numbered from 1, use 1/4 .. 4/4
          at instances.binance-main.shard
            6 | shard = "0/4"
              |         ^^^^^
        """)
    assert failure(BINANCE + "shard = 2\n") == expected("""
        collector.toml:6:9: error[E407]: shard must be a string I/N, e.g. '1/4'
          at instances.binance-main.shard
            6 | shard = 2
              |         ^
        """)


@pytest.mark.parametrize(
    ("text", "shard"),
    [("1/1", Shard(1, 1)), ("1/4", Shard(1, 4)), ("4/4", Shard(4, 4)), (" 3 / 16 ", Shard(3, 16))],
)
def test_parse_shard(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(parse_shard(str(shard))) == str(shard)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/4", "shard 0/4: shards are numbered from 1, use 1/4 .. 4/4"),
        ("5/4", "shard 5/4 does not exist: use 1/4 .. 4/4"),
        ("1/0", "shard 1/0: the shard count must be at least 1"),
        ("1", "shard '1' is not I/N (shard I of N, from 1), e.g. '1/4'"),
        ("-1/4", "shard '-1/4' is not I/N (shard I of N, from 1), e.g. '1/4'"),
        ("a/b", "shard 'a/b' is not I/N (shard I of N, from 1), e.g. '1/4'"),
        ("1/4/2", "shard '1/4/2' is not I/N (shard I of N, from 1), e.g. '1/4'"),
    ],
)
def test_parse_shard_errors(text: str, message: str) -> None:
    with pytest.raises(ShardError) as info:
        parse_shard(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_shard_constructor_checks_its_range() -> None:
    with pytest.raises(ShardError):
        Shard(0, 4)
    with pytest.raises(ShardError):
        Shard(1, 0)


# -- E408 to E410: exchange, channels, descriptor ------------------------------------------------


def test_e408_unknown_exchange_lists_the_known_ones(folder: Path) -> None:
    assert failure(BINANCE.replace('exchange = "binance"', 'exchange = "binanse"')) == expected(f"""
        collector.toml:2:12: error[E408]: unknown exchange 'binanse'; did you mean 'binance'? (known: {KNOWN})
          at instances.binance-main.exchange
            2 | exchange = "binanse"
              |            ^^^^^^^^^
        """)  # noqa: E501


def test_e409_unknown_channel_with_a_hint(folder: Path) -> None:
    assert failure(BINANCE.replace('["trades", "book"]', '["trades", "books", "x"]')) == expected(
        """
        collector.toml:5:23: error[E409]: exchange 'binance' has no channel 'books'; did you mean 'book'? (channels: trades, agg_trades, book, ticker, candles, orders, fills, balances)
          at instances.binance-main.channels[1]
            5 | channels = ["trades", "books", "x"]
              |                       ^^^^^^^
        collector.toml:5:32: error[E409]: exchange 'binance' has no channel 'x' (channels: trades, agg_trades, book, ticker, candles, orders, fills, balances)
          at instances.binance-main.channels[2]
            5 | channels = ["trades", "books", "x"]
              |                                ^^^
        """  # noqa: E501
    )


def test_e410_missing_descriptor(folder: Path) -> None:
    text = BINANCE.replace("descriptors/binance.toml", "descriptor/binance.toml")
    assert failure(text) == expected(f"""
        collector.toml:3:19: error[E410]: descriptor_path 'descriptor/binance.toml' does not exist (looked for {folder}/descriptor/binance.toml)
          at instances.binance-main.descriptor_path
            3 | descriptor_path = "descriptor/binance.toml"
              |                   ^^^^^^^^^^^^^^^^^^^^^^^^^
        """)  # noqa: E501


def test_e410_descriptor_of_another_exchange(folder: Path) -> None:
    text = BINANCE.replace("descriptors/binance.toml", "descriptors/okx.toml")
    assert failure(text) == expected("""
        collector.toml:3:19: error[E410]: descriptor_path 'descriptors/okx.toml' is the descriptor of 'okx', not of 'binance' (a descriptor is named <exchange id>.toml)
          at instances.binance-main.descriptor_path
            3 | descriptor_path = "descriptors/okx.toml"
              |                   ^^^^^^^^^^^^^^^^^^^^^^
        """)  # noqa: E501


def test_e410_descriptor_that_is_a_folder(folder: Path) -> None:
    text = BINANCE.replace('"descriptors/binance.toml"', '"descriptors"')
    assert failure(text) == expected("""
        collector.toml:3:19: error[E410]: descriptor_path 'descriptors' is not a file
          at instances.binance-main.descriptor_path
            3 | descriptor_path = "descriptors"
              |                   ^^^^^^^^^^^^^
        """)


# -- W400, W401: warnings ------------------------------------------------------------------------


def test_w400_missing_symbol_map_file_is_only_a_warning(folder: Path) -> None:
    config, warnings = load(BINANCE + 'symbol_map_file = "symbols/binance.toml"\n')
    assert config.instances["binance-main"].symbol_map_file == folder / "symbols" / "binance.toml"
    assert warnings == [expected(f"""
            collector.toml:6:19: warning[W400]: symbol_map_file 'symbols/binance.toml' does not exist (looked for {folder}/symbols/binance.toml); the descriptor's symbol rules apply unchanged
              at instances.binance-main.symbol_map_file
                6 | symbol_map_file = "symbols/binance.toml"
                  |                   ^^^^^^^^^^^^^^^^^^^^^^
            """)]  # noqa: E501


def test_warnings_come_with_the_errors(folder: Path) -> None:
    text = BINANCE.replace('exchange = "binance"', 'exchange = "nope"')
    text += 'symbol_map_file = "nope.toml"\n'
    assert codes(text) == ["E408", "W400"]


def test_w401_duplicates_are_warnings(folder: Path) -> None:
    text = BINANCE.replace('["BTC-USDT", "ETH-USDT"]', '["BTC-USDT", "ETH-USDT", "BTC-USDT"]')
    text = text.replace('["trades", "book"]', '["trades", "trades"]')
    config, warnings = load(text)
    assert warnings == [
        expected("""
            collector.toml:4:36: warning[W401]: 'BTC-USDT' is listed twice in symbols
              at instances.binance-main.symbols[2]
                4 | symbols = ["BTC-USDT", "ETH-USDT", "BTC-USDT"]
                  |                                    ^^^^^^^^^^
            """),
        expected("""
            collector.toml:5:23: warning[W401]: 'trades' is listed twice in channels
              at instances.binance-main.channels[1]
                5 | channels = ["trades", "trades"]
                  |                       ^^^^^^^^
            """),
    ]
    (plan,) = plan_instances(config, RunOverrides(exchanges=["binance"]))
    assert plan.symbols == ["BTC-USDT", "ETH-USDT"]
    assert plan.channels == ["trades"]


# -- E411, E412: sink and reconnect --------------------------------------------------------------


def test_e411_uri_and_uri_env_both_set(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MDGEN_TEST_MONGO_URI", "mongodb://h")
    text = '[sink]\nkind = "mongodb"\nuri = "mongodb://h"\nuri_env = "MDGEN_TEST_MONGO_URI"\n'
    assert failure(text) == expected("""
        collector.toml:4:1: error[E411]: set either uri or uri_env, not both
          at sink.uri_env
            4 | uri_env = "MDGEN_TEST_MONGO_URI"
              | ^^^^^^^
        """)


def test_e411_mongodb_needs_a_uri(folder: Path) -> None:
    assert failure('[sink]\nkind = "mongodb"\n') == expected("""
        collector.toml:1:1: error[E411]: a kind = "mongodb" sink needs uri or uri_env
          at sink
            1 | [sink]
              | ^^^^^^
        """)


def test_e411_keys_of_the_other_sink_kind(folder: Path) -> None:
    text = '[sink]\nkind = "ndjson"\nuri = "mongodb://h"\ndatabase = "x"\n'
    assert failure(text) == expected("""
        collector.toml:3:1: error[E411]: uri applies to kind = "mongodb" only
          at sink.uri
            3 | uri = "mongodb://h"
              | ^^^
        collector.toml:4:1: error[E411]: database applies to kind = "mongodb" only
          at sink.database
            4 | database = "x"
              | ^^^^^^^^
        """)
    assert codes('[sink]\nkind = "mongodb"\nuri = "mongodb://h"\ndir = "x"\n') == ["E411"]


def test_e411_max_delay_below_initial_delay(folder: Path) -> None:
    assert failure("[reconnect]\ninitial_delay = 10\nmax_delay = 2.5\n") == expected("""
        collector.toml:3:13: error[E411]: max_delay (2.5) is smaller than initial_delay (10)
          at reconnect.max_delay
            3 | max_delay = 2.5
              |             ^^^
        """)
    assert codes("[reconnect]\ninitial_delay = 60\n") == ["E411"]  # against the default 30


def test_e403_uri_scheme(folder: Path) -> None:
    assert failure('[sink]\nkind = "mongodb"\nuri = "postgres://h"\n') == expected("""
        collector.toml:3:7: error[E403]: uri must start with mongodb:// or mongodb+srv://
          at sink.uri
            3 | uri = "postgres://h"
              |       ^^^^^^^^^^^^^^
        """)


MONGO_ENV = '[sink]\nkind = "mongodb"\nuri_env = "MDGEN_TEST_MONGO_URI"\n'


def test_e412_uri_env_not_set(folder: Path) -> None:
    assert failure(MONGO_ENV) == expected("""
        collector.toml:3:11: error[E412]: environment variable MDGEN_TEST_MONGO_URI is not set
          at sink.uri_env
            3 | uri_env = "MDGEN_TEST_MONGO_URI"
              |           ^^^^^^^^^^^^^^^^^^^^^^
        """)


def test_e412_uri_env_value_is_never_printed(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "postgres://admin:hunter2@db.internal"
    monkeypatch.setenv("MDGEN_TEST_MONGO_URI", secret)
    message = failure(MONGO_ENV)
    assert message == expected("""
        collector.toml:3:11: error[E412]: environment variable MDGEN_TEST_MONGO_URI does not hold a MongoDB URI (mongodb:// or mongodb+srv://); its value is not shown
          at sink.uri_env
            3 | uri_env = "MDGEN_TEST_MONGO_URI"
              |           ^^^^^^^^^^^^^^^^^^^^^^
        """)  # noqa: E501
    assert "hunter2" not in message


def test_uri_env_is_read_at_use_and_never_shown(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "mongodb://admin:hunter2@db.internal:27017"
    monkeypatch.setenv("MDGEN_TEST_MONGO_URI", secret)
    config, warnings = load(MONGO_ENV + 'database = "ticks"\n')
    assert warnings == []
    sink = config.sink
    assert sink is not None and sink.uri_env == "MDGEN_TEST_MONGO_URI" and sink.uri is None
    assert sink.database == "ticks"
    assert sink.connection_uri() == secret
    assert sink.connection_uri({"MDGEN_TEST_MONGO_URI": "mongodb://other"}) == "mongodb://other"
    for text in (repr(config), str(config), config.model_dump_json()):
        assert "hunter2" not in text
    with pytest.raises(LookupError, match="MDGEN_TEST_MONGO_URI is not set"):
        sink.connection_uri({})


def test_a_uri_in_the_file_is_masked_in_reprs(folder: Path) -> None:
    config, _ = load('[sink]\nkind = "mongodb"\nuri = "mongodb://admin:hunter2@h"\n')
    assert config.sink is not None
    assert "hunter2" not in repr(config)
    assert config.sink.connection_uri() == "mongodb://admin:hunter2@h"


def test_sink_rules_hold_for_models_built_in_code() -> None:
    with pytest.raises(ValueError, match="set either uri or uri_env, not both"):
        SinkSettings.model_validate({"kind": "mongodb", "uri": "mongodb://h", "uri_env": "X"})
    with pytest.raises(ValueError, match="needs uri or uri_env"):
        SinkSettings(kind="mongodb")
    assert SinkSettings(kind="ndjson").dir is None


# -- disabled instances ---------------------------------------------------------------------------


def test_disabled_instances_are_checked_for_shape_only(folder: Path) -> None:
    config, warnings = load("""\
        [instances.later]
        exchange = "not-generated-yet"
        descriptor_path = "descriptors/not-generated-yet.toml"
        enabled = false
        symbols = ["BTC-USDT"]
        channels = ["no-such-channel"]
        symbol_map_file = "missing.toml"
        """)
    assert warnings == []
    assert not config.instances["later"].enabled


def test_disabled_instances_still_have_a_shape(folder: Path) -> None:
    text = """\
        [instances.later]
        exchange = "binance"
        enabled = false
        symbols = ["btc-usdt"]
        shard = "9/4"
        colour = "red"
        """
    assert failure(text) == expected("""
        collector.toml:1:1: error[E402]: missing required key 'descriptor_path'
          at instances.later.descriptor_path
            1 | [instances.later]
              | ^^^^^^^^^^^^^^^^^
        collector.toml:4:12: error[E406]: 'btc-usdt' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case letters and digits, e.g. 'BTC-USDT'; did you mean 'BTC-USDT'?
          at instances.later.symbols[0]
            4 | symbols = ["btc-usdt"]
              |            ^^^^^^^^^^
        collector.toml:5:9: error[E407]: shard 9/4 does not exist: use 1/4 .. 4/4
          at instances.later.shard
            5 | shard = "9/4"
              |         ^^^^^
        collector.toml:6:1: error[E401]: unknown key 'colour' (keys: exchange, descriptor_path, enabled, symbols, channels, symbol_map_file, shard)
          at instances.later.colour
            6 | colour = "red"
              | ^^^^^^
        """)  # noqa: E501


# -- every problem in one run --------------------------------------------------------------------


def test_every_problem_is_reported_in_one_run(folder: Path) -> None:
    text = """\
        [collector]
        transport = "ws"
        [reconnect]
        initial_delay = 10
        max_delay = 5
        multiplier = 0
        [sink]
        kind = "mongodb"
        uri_env = "MDGEN_TEST_MONGO_URI"
        dir = "x"
        [instances.Bad]
        exchange = "binanse"
        descriptor_path = "descriptors/binance.toml"
        symbols = ["btc"]
        [instances.main]
        exchange = "binance"
        descriptor_path = "nope.toml"
        channels = ["trade"]
        symbol_map_file = "nope.toml"
        shard = "1/0"
        """
    assert codes(text, RunOverrides(["okex"], symbols=["x"], shard="x", duration=0)) == [
        "E403",  # transport
        "E411",  # max_delay < initial_delay
        "E403",  # multiplier
        "E412",  # uri_env not set
        "E411",  # dir on a mongodb sink
        "E405",  # instance name
        "E408",  # exchange
        "E406",  # symbol
        "E410",  # descriptor_path
        "E409",  # channel
        "W400",  # symbol_map_file
        "E407",  # shard
        "E408",  # command line: exchange
        "E406",  # command line: --symbols
        "E407",  # command line: --shard
        "E403",  # command line: --duration
    ]


def test_config_error_carries_the_diagnostics(folder: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write('[collector]\ntransport = "ws"\nlog_format = "yaml"\n'))
    error = info.value
    assert [d.code for d in error.errors] == ["E403", "E403"]
    assert all(isinstance(d, Diagnostic) for d in error.diagnostics)
    assert str(error) == "\n".join(d.render() for d in error.diagnostics)
    assert [(d.line, d.col) for d in error.diagnostics] == [(2, 13), (3, 14)]


MUTATIONS = ["3", "-1", '"x"', '""', "[]", '["x", 1]', "{}", "{ a = 1 }", "true", "nan", "1.5"]


@pytest.mark.parametrize("value", MUTATIONS)
def test_no_traceback_whatever_the_values(folder: Path, value: str) -> None:
    """Every key of the example set to an odd value: a ConfigError or a config, nothing else."""
    example = (
        (ROOT / "collector.example.toml")
        .read_text()
        .replace("descriptors/", f"{ROOT}/descriptors/")
    )
    lines = example.splitlines()
    for i, line in enumerate(lines):
        found = re.match(r"(\s*[a-z_]+\s*=\s*)", line)
        if not found:
            continue
        mutated = lines[:i] + [found.group(1) + value] + lines[i + 1 :]
        try:
            load_config(write("\n".join(mutated) + "\n"), overrides=RunOverrides(["binance"]))
        except ConfigError as exc:
            assert exc.errors, exc


# -- the command line ----------------------------------------------------------------------------


def cli_failure(overrides: RunOverrides, text: str = BINANCE) -> str:
    return failure(text, overrides)


def test_cli_errors_point_into_the_command_line(folder: Path) -> None:
    overrides = RunOverrides(
        exchanges=["binance", "okex"],
        symbols=["BTC-USDT", "eth-usdt"],
        channels=["trades", "books"],
        shard="4/3",
        duration=-5,
    )
    line = (
        "mdgen run binance okex --symbols BTC-USDT,eth-usdt --channels trades,books --shard 4/3 "
        "--duration -5"
    )
    assert cli_failure(overrides) == expected(f"""
        {COMMAND_LINE}:1:19: error[E408]: unknown exchange 'okex'; did you mean 'okx'? (known: {KNOWN})
          at EXCHANGE
            1 | {line}
              |                   ^^^^
        {COMMAND_LINE}:1:43: error[E406]: 'eth-usdt' is not a canonical symbol: expected BASE-QUOTE[-EXTRA...] in upper-case letters and digits, e.g. 'BTC-USDT'; did you mean 'ETH-USDT'?
          at --symbols
            1 | {line}
              |                                           ^^^^^^^^
        {COMMAND_LINE}:1:70: error[E409]: exchange 'binance' has no channel 'books'; did you mean 'book'? (channels: trades, agg_trades, book, ticker, candles, orders, fills, balances)
          at --channels
            1 | {line}
              |                                                                      ^^^^^
        {COMMAND_LINE}:1:84: error[E407]: shard 4/3 does not exist: use 1/3 .. 3/3
          at --shard
            1 | {line}
              |                                                                                    ^^^
        {COMMAND_LINE}:1:99: error[E403]: --duration must be a positive number of seconds
          at --duration
            1 | {line}
              |                                                                                                   ^^
        """)  # noqa: E501


def test_cli_channels_are_checked_against_every_exchange(folder: Path) -> None:
    overrides = RunOverrides(
        exchanges=["binance", "okx"], symbols=["BTC-USDT"], channels=["agg_trades"]
    )
    assert cli_failure(overrides, "") == expected(f"""
        {COMMAND_LINE}:1:53: error[E409]: exchange 'okx' has no channel 'agg_trades'; did you mean 'trades'? (channels: trades, book, ticker, funding, open_interest, mark_price, liquidations, candles, orders, fills, balances)
          at --channels
            1 | mdgen run binance okx --symbols BTC-USDT --channels agg_trades
              |                                                     ^^^^^^^^^^
        """)  # noqa: E501


def test_private_channels_need_their_credentials_before_anything_runs(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "OKX_API_KEY", "OKX_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OKX_API_KEY", "set")
    monkeypatch.setenv("OKX_API_PASSPHRASE", "set")
    overrides = RunOverrides(
        exchanges=["binance_futures"], symbols=["BTC-USDT-PERP"], channels=["trades", "orders"]
    )
    assert cli_failure(overrides, "") == expected(f"""
        {COMMAND_LINE}:1:69: error[E415]: channel 'orders' of 'binance_futures' is private and needs credentials: set the environment variables BINANCE_API_KEY, BINANCE_API_SECRET
          at --channels
            1 | mdgen run binance_futures --symbols BTC-USDT-PERP --channels trades,orders
              |                                                                     ^^^^^^
        """)  # noqa: E501
    text = """
        [instances.okx-account]
        exchange = "okx"
        descriptor_path = "descriptors/okx.toml"
        symbols = ["BTC-USDT"]
        channels = ["balances"]
        """
    assert codes(text) == ["E415"]
    monkeypatch.setenv("OKX_API_SECRET", "set")
    config, warnings = load(text)  # public channels never need them, private ones once set
    assert warnings == [] and config.instances["okx-account"].channels == ["balances"]


def test_cli_errors_without_a_config_file(folder: Path) -> None:
    assert failure(None, RunOverrides(exchanges=["binance"], shard="1-4")) == expected(f"""
        {COMMAND_LINE}:1:11: error[E413]: no symbols to collect from 'binance': pass --symbols, or enable an instance with exchange = "binance" in the config
          at EXCHANGE
            1 | mdgen run binance --shard 1-4
              |           ^^^^^^^
        {COMMAND_LINE}:1:27: error[E407]: shard '1-4' is not I/N (shard I of N, from 1), e.g. '1/4'
          at --shard
            1 | mdgen run binance --shard 1-4
              |                           ^^^
        """)  # noqa: E501


def test_cli_empty_lists(folder: Path) -> None:
    assert failure(None, RunOverrides(exchanges=["binance"], symbols=[], channels=["trades"])) == (
        expected(f"""
            {COMMAND_LINE}:1:11: error[E413]: no symbols to collect from 'binance': pass --symbols, or enable an instance with exchange = "binance" in the config
              at EXCHANGE
                1 | mdgen run binance --symbols  --channels trades
                  |           ^^^^^^^
            {COMMAND_LINE}:1:19: error[E403]: --symbols lists nothing
              at --symbols
                1 | mdgen run binance --symbols  --channels trades
                  |                   ^^^^^^^^^
            """)  # noqa: E501
    )


def test_command_line_problems_come_after_file_problems(folder: Path) -> None:
    text = BINANCE.replace('"ETH-USDT"', '"eth"')
    found = codes(text, RunOverrides(exchanges=["nope"]))
    assert found == ["E406", "E408"]


# -- E413 and plans ------------------------------------------------------------------------------


def test_e413_config_instance_without_symbols(folder: Path) -> None:
    text = BINANCE.replace('symbols = ["BTC-USDT", "ETH-USDT"]\n', "")
    assert failure(text, RunOverrides(exchanges=["binance"])) == expected("""
        collector.toml:1:1: error[E413]: instance 'binance-main' has no symbols: list them in symbols, or pass --symbols
          at instances.binance-main.symbols
            1 | [instances.binance-main]
              | ^^^^^^^^^^^^^^^^^^^^^^^^
        """)  # noqa: E501
    config, _ = load(text)  # fine on its own: the command line may bring the symbols
    (plan,) = plan_instances(config, RunOverrides(["binance"], symbols=["SOL-USDT"]))
    assert plan.symbols == ["SOL-USDT"]


def test_e413_names_the_disabled_instances(folder: Path) -> None:
    text = BINANCE + "enabled = false\n"
    assert failure(text, RunOverrides(exchanges=["binance"])) == expected(f"""
        {COMMAND_LINE}:1:11: error[E413]: no symbols to collect from 'binance': pass --symbols, or enable an instance with exchange = "binance" in the config (disabled: binance-main)
          at EXCHANGE
            1 | mdgen run binance
              |           ^^^^^^^
        """)  # noqa: E501


def test_e413_nothing_to_run(folder: Path) -> None:
    assert failure(BINANCE + "enabled = false\n", RunOverrides()) == expected(f"""
        {COMMAND_LINE}:1:10: error[E413]: nothing to run: name an exchange, or enable an instance
            1 | mdgen run
              |          ^
        """)


def test_plan_uses_the_config_instances(folder: Path) -> None:
    config, _ = load(BINANCE + """
        [instances.binance-alts]
        exchange = "binance"
        descriptor_path = "descriptors/binance.toml"
        symbols = ["SOL-USDT"]

        [instances.okx-main]
        exchange = "okx"
        descriptor_path = "descriptors/okx.toml"
        symbols = ["BTC-USDT"]
        channels = ["trades"]
        """)
    plans = plan_instances(config, RunOverrides(exchanges=["okx", "binance"]))
    assert [(p.name, p.exchange, p.symbols, p.channels, p.shard) for p in plans] == [
        ("okx-main", "okx", ["BTC-USDT"], ["trades"], None),
        ("binance-main", "binance", ["BTC-USDT", "ETH-USDT"], ["trades", "book"], None),
        ("binance-alts", "binance", ["SOL-USDT"], BINANCE_CHANNELS, None),
    ]
    assert plans[0].spec is load_spec("okx")
    only_okx = plan_instances(config, RunOverrides(exchanges=["okx"]))
    assert [p.name for p in only_okx] == ["okx-main"]
    everything = plan_instances(config, RunOverrides())
    assert [p.name for p in everything] == ["binance-main", "binance-alts", "okx-main"]


def test_cli_symbols_and_channels_override_the_config(folder: Path) -> None:
    config, _ = load(BINANCE + 'symbol_map_file = "descriptors/okx.toml"\n')
    overrides = RunOverrides(
        exchanges=["binance", "binance"], symbols=["DOGE-USDT", "DOGE-USDT"], channels=["ticker"]
    )
    (plan,) = plan_instances(config, overrides)
    assert (plan.name, plan.symbols, plan.channels) == ("binance-main", ["DOGE-USDT"], ["ticker"])
    assert plan.symbol_map_file == folder / "descriptors" / "okx.toml"
    (plan,) = plan_instances(config, RunOverrides(["binance"], channels=["candles"]))
    assert (plan.symbols, plan.channels) == (["BTC-USDT", "ETH-USDT"], ["candles"])


def test_implicit_instance_for_an_exchange_without_one(folder: Path) -> None:
    config, _ = load(BINANCE)
    plans = plan_instances(config, RunOverrides(["okx", "binance"], symbols=["BTC-USDT"]))
    assert [(p.name, p.exchange, p.symbols, p.channels) for p in plans] == [
        ("okx", "okx", ["BTC-USDT"], OKX_CHANNELS),
        ("binance-main", "binance", ["BTC-USDT"], ["trades", "book"]),
    ]
    assert plans[0].symbol_map_file is None
    config, _ = load_config(None)
    (plan,) = plan_instances(config, RunOverrides(["okx"], symbols=["ETH-USDT"], channels=["book"]))
    assert (plan.name, plan.symbols, plan.channels) == ("okx", ["ETH-USDT"], ["book"])


def test_load_config_with_overrides_checks_the_plan(folder: Path) -> None:
    config, warnings = load(BINANCE, RunOverrides(["binance"], shard="1/2", duration=30))
    assert warnings == []
    (plan,) = plan_instances(config, RunOverrides(["binance"], shard="1/2"))
    assert plan.shard == Shard(1, 2)


def test_plan_instances_raises_config_error(folder: Path) -> None:
    config, _ = load(BINANCE)
    with pytest.raises(ConfigError) as info:
        plan_instances(config, RunOverrides(["coinbase"]))
    assert [d.code for d in info.value.diagnostics] == ["E413"]
    with pytest.raises(ConfigError) as info:
        plan_instances(config, RunOverrides(["binance"], symbols=["btc"]))
    assert [(d.code, d.file) for d in info.value.diagnostics] == [("E406", COMMAND_LINE)]


def test_plan_of_a_config_built_in_code() -> None:
    inst = InstanceConfig(
        exchange="binance",
        descriptor_path=Path("descriptors/binance.toml"),
        symbols=["BTC-USDT"],
        channels=["nope"],
    )
    config = CollectorConfig(instances={"main": inst})
    with pytest.raises(ConfigError) as info:
        plan_instances(config, RunOverrides(["binance"]))
    (diag,) = info.value.diagnostics
    assert (diag.code, diag.file, diag.toml_path) == (
        "E409",
        "<config>",
        "instances.main.channels[0]",
    )
    good = config.model_copy(
        update={"instances": {"main": inst.model_copy(update={"channels": None})}}
    )
    (plan,) = plan_instances(good, RunOverrides())
    assert plan.channels == BINANCE_CHANNELS


# -- shards --------------------------------------------------------------------------------------

BASES = "BTC ETH SOL XRP DOGE ADA LINK DOT AVAX TRX LTC BCH ATOM NEAR APT ARB OP SUI TON PEPE"
SYMBOLS = [f"{base}-{quote}" for base in BASES.split() for quote in ("USDT", "USDC", "BTC")]


def test_shard_assignment_is_crc32_of_the_symbol() -> None:
    for symbol in SYMBOLS:
        owners = [i for i in range(1, 5) if Shard(i, 4).owns(symbol)]
        assert owners == [zlib.crc32(symbol.encode()) % 4 + 1]
    # pinned, so that a change of the hash (it would reshuffle every deployment) is noticed
    assert [i for i in range(1, 5) if Shard(i, 4).owns("BTC-USDT")] == [4]
    assert [i for i in range(1, 5) if Shard(i, 4).owns("ETH-USDT")] == [2]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 16])
def test_shards_partition_the_symbols(folder: Path, count: int) -> None:
    config, _ = load(BINANCE.replace('["BTC-USDT", "ETH-USDT"]', json.dumps(SYMBOLS)))
    chosen: list[list[str]] = []
    for index in range(1, count + 1):
        (plan,) = plan_instances(config, RunOverrides(["binance"], shard=f"{index}/{count}"))
        assert plan.shard == Shard(index, count)
        assert plan.symbols == [s for s in SYMBOLS if s in plan.symbols]  # order is kept
        chosen.append(plan.symbols)
    flat = [s for part in chosen for s in part]
    assert sorted(flat) == sorted(SYMBOLS)  # union is everything, and nothing twice
    assert len(flat) == len(set(flat))
    if count > 1:
        assert all(len(part) < len(SYMBOLS) for part in chosen)


def test_a_shard_may_own_no_symbol(folder: Path) -> None:
    config, _ = load(BINANCE.replace('["BTC-USDT", "ETH-USDT"]', '["BTC-USDT"]'))
    owners = [i for i in range(1, 9) if Shard(i, 8).owns("BTC-USDT")]
    empty = next(i for i in range(1, 9) if i not in owners)
    (plan,) = plan_instances(config, RunOverrides(["binance"], shard=f"{empty}/8"))
    assert plan.symbols == []


def test_config_shard_and_cli_shard(folder: Path) -> None:
    config, _ = load(
        BINANCE.replace('["BTC-USDT", "ETH-USDT"]', json.dumps(SYMBOLS)) + 'shard = "1/3"\n'
    )
    (plan,) = plan_instances(config, RunOverrides(["binance"]))
    assert plan.shard == Shard(1, 3) and plan.symbols == Shard(1, 3).select(SYMBOLS)
    (plan,) = plan_instances(config, RunOverrides(["binance"], shard="2/2"))
    assert plan.shard == Shard(2, 2) and plan.symbols == Shard(2, 2).select(SYMBOLS)


SHARD_SCRIPT = """
import json, sys
from runtime.config import parse_shard
symbols = json.loads(sys.argv[1])
print(json.dumps({s: [i for i in range(1, 6) if parse_shard(f"{i}/5").owns(s)] for s in symbols}))
print(hash("BTC-USDT"))
"""


def test_shard_assignment_does_not_depend_on_pythonhashseed() -> None:
    outputs = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", SHARD_SCRIPT, json.dumps(SYMBOLS)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assignment, str_hash = done.stdout.splitlines()
        outputs.append((json.loads(assignment), str_hash))
    (first, hash_a), (second, hash_b) = outputs
    assert hash_a != hash_b  # the two processes really hashed strings differently
    assert first == second
    assert all(len(owners) == 1 for owners in first.values())


# -- documentation -------------------------------------------------------------------------------


def test_codes_are_registered_and_documented() -> None:
    doc = (ROOT / "docs" / "collector-config.md").read_text()
    config_codes = [c for c in CODES if re.fullmatch(r"[EW]4\d\d", c)]
    assert config_codes == [f"E{n}" for n in range(400, 416)] + ["W400", "W401"]
    for code in config_codes:
        assert f"### {code}" in doc, code


def test_every_key_is_documented() -> None:
    doc = (ROOT / "docs" / "collector-config.md").read_text()
    defaults = load_config(None)[0]
    sections: dict[str, type[BaseModel]] = {
        "collector": type(defaults.collector),
        "pipeline": type(defaults.pipeline),
        "reconnect": type(defaults.reconnect),
        "http": type(defaults.http),
        "sink": SinkSettings,
        "instances.<name>": InstanceConfig,
    }
    for section, model in sections.items():
        assert f"[{section}]" in doc, section
        for key in model.model_fields:
            assert f"`{key}`" in doc, f"{section}.{key}"
