"""Tests for runtime.symbols."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import symbols
from runtime.symbols import SymbolError, SymbolMapper, SymbolRules

BINANCE_QUOTES = ("USDT", "BUSD", "USDC", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "USD")
BINANCE = SymbolMapper(SymbolRules(separator="", case="upper", quotes=BINANCE_QUOTES))
BINANCE_STREAMS = SymbolMapper(SymbolRules(separator="", case="lower", quotes=BINANCE_QUOTES))
KRAKEN = SymbolMapper(SymbolRules(separator="/", aliases={"XBT": "BTC", "XDG": "DOGE"}))
OKX = SymbolMapper(SymbolRules(separator="-", suffixes={"SWAP": "PERP"}))
COINBASE = SymbolMapper(SymbolRules(separator="-"))
GATE = SymbolMapper(SymbolRules(separator="_"))

CASES: list[tuple[SymbolMapper, str, str]] = [
    (BINANCE, "NKNUSDT", "NKN-USDT"),
    (BINANCE, "BLZETH", "BLZ-ETH"),
    (BINANCE, "BTCUSDT", "BTC-USDT"),
    (BINANCE, "ETHBTC", "ETH-BTC"),
    (BINANCE, "BNBETH", "BNB-ETH"),
    (BINANCE, "1000SHIBUSDT", "1000SHIB-USDT"),
    (BINANCE, "USDTTRY", "USDT-TRY"),
    (BINANCE, "BUSDUSDT", "BUSD-USDT"),
    (BINANCE, "EURUSDT", "EUR-USDT"),
    (BINANCE, "BTCTUSD", "BTC-TUSD"),
    (BINANCE, "BTCUSD", "BTC-USD"),
    (BINANCE_STREAMS, "runeeur", "RUNE-EUR"),
    (BINANCE_STREAMS, "btcusdt", "BTC-USDT"),
    (BINANCE_STREAMS, "ethbtc", "ETH-BTC"),
    (KRAKEN, "XBT/USD", "BTC-USD"),
    (KRAKEN, "XBT/CHF", "BTC-CHF"),
    (KRAKEN, "ADA/XBT", "ADA-BTC"),
    (KRAKEN, "XDG/USD", "DOGE-USD"),
    (KRAKEN, "ETH/EUR", "ETH-EUR"),
    (KRAKEN, "USDT/USD", "USDT-USD"),
    (OKX, "BTC-USDT", "BTC-USDT"),
    (OKX, "BTC-USD-SWAP", "BTC-USD-PERP"),
    (OKX, "ETH-USDT-SWAP", "ETH-USDT-PERP"),
    (OKX, "BTC-USD-220527", "BTC-USD-220527"),
    (OKX, "BTC-USD-220527-30000-C", "BTC-USD-220527-30000-C"),
    (OKX, "ETH-USD-220624-1500-P", "ETH-USD-220624-1500-P"),
    (COINBASE, "SKL-USD", "SKL-USD"),
    (COINBASE, "BTC-USD", "BTC-USD"),
    (COINBASE, "USDT-USD", "USDT-USD"),
    (GATE, "BTC_USDT", "BTC-USDT"),
    (GATE, "GT_USDT", "GT-USDT"),
    (GATE, "ETH_BTC", "ETH-BTC"),
]


@pytest.mark.parametrize(("mapper", "raw", "canonical"), CASES)
def test_canonical_and_back(mapper: SymbolMapper, raw: str, canonical: str) -> None:
    assert mapper.canonical(raw) == canonical
    assert mapper.canonical(raw) == canonical  # cache hit
    assert mapper.raw(canonical) == raw
    assert mapper.raw(mapper.canonical(raw)) == raw
    assert mapper.canonical(mapper.raw(canonical)) == canonical


@pytest.mark.parametrize(
    ("mapper", "raw", "canonical"),
    [
        (BINANCE, "btcusdt", "BTC-USDT"),
        (BINANCE, "BtcUsdt", "BTC-USDT"),
        (BINANCE_STREAMS, "RUNEEUR", "RUNE-EUR"),
        (KRAKEN, "xbt/usd", "BTC-USD"),
        (OKX, "btc-usd-swap", "BTC-USD-PERP"),
        (GATE, "btc_usdt", "BTC-USDT"),
    ],
)
def test_canonical_is_case_insensitive(mapper: SymbolMapper, raw: str, canonical: str) -> None:
    assert mapper.canonical(raw) == canonical


def test_raw_accepts_lower_case_canonical() -> None:
    assert KRAKEN.raw("btc-usd") == "XBT/USD"
    assert BINANCE_STREAMS.raw("BTC-USDT") == "btcusdt"


def test_longest_quote_suffix_wins() -> None:
    mapper = SymbolMapper(SymbolRules(separator="", quotes=("T", "USD", "USDT", "DT")))
    assert mapper.canonical("BTCUSDT") == "BTC-USDT"  # not BTCUSD-T nor BTCUS-DT
    assert mapper.canonical("BTCUSD") == "BTC-USD"
    assert mapper.canonical("ABCT") == "ABC-T"


def test_concatenated_aliases() -> None:
    mapper = SymbolMapper(
        SymbolRules(separator="", quotes=("USD", "XBT", "EUR"), aliases={"XBT": "BTC"})
    )
    assert mapper.canonical("XBTUSD") == "BTC-USD"
    assert mapper.canonical("ADAXBT") == "ADA-BTC"
    assert mapper.raw("ADA-BTC") == "ADAXBT"
    assert mapper.raw("BTC-EUR") == "XBTEUR"


def test_overrides_are_checked_first_and_inverted() -> None:
    rules = SymbolRules(
        separator="",
        quotes=("USDT",),
        overrides={"BTCUSDT_220624": "BTC-USDT-220624", "BTCSTUSDT": "BTCST-USDT"},
    )
    mapper = SymbolMapper(rules)
    assert mapper.canonical("BTCUSDT_220624") == "BTC-USDT-220624"
    assert mapper.canonical("btcusdt_220624") == "BTC-USDT-220624"
    assert mapper.raw("BTC-USDT-220624") == "BTCUSDT_220624"
    assert mapper.canonical("BTCSTUSDT") == "BTCST-USDT"
    assert mapper.canonical("ETHUSDT") == "ETH-USDT"


def test_first_alias_wins_for_raw() -> None:
    mapper = SymbolMapper(SymbolRules(separator="/", aliases={"XBT": "BTC", "XXBT": "BTC"}))
    assert mapper.canonical("XXBT/USD") == "BTC-USD"
    assert mapper.canonical("XBT/USD") == "BTC-USD"
    assert mapper.raw("BTC-USD") == "XBT/USD"


def test_case_keep_uses_codes_as_given() -> None:
    mapper = SymbolMapper(SymbolRules(separator="/", case="keep", aliases={"xbt": "BTC"}))
    assert mapper.canonical("xbt/usd") == "BTC-USD"
    assert mapper.raw("BTC-USD") == "xbt/USD"


def test_fallback_to_quotes_when_separator_missing() -> None:
    mapper = SymbolMapper(SymbolRules(separator="/", quotes=("USD",), aliases={"XBT": "BTC"}))
    assert mapper.canonical("XBTUSD") == "BTC-USD"
    assert mapper.raw("BTC-USD") == "XBT/USD"


@pytest.mark.parametrize(
    ("mapper", "raw", "message"),
    [
        (BINANCE, "FOOBAR", "cannot split raw symbol 'FOOBAR'"),
        (BINANCE, "USDT", "cannot split"),
        (BINANCE, "", "cannot split"),
        (BINANCE, "BTC USDT", "bad part"),
        (KRAKEN, "XBTUSD", "no separator '/'"),
        (KRAKEN, "XBT/", "bad part ''"),
        (KRAKEN, "BTC-X/USD", "bad part"),
        (OKX, "BTC--USD", "bad part ''"),
        (OKX, "BTC", "no separator"),
        (GATE, "_USDT", "bad part"),
        (COINBASE, None, "must be a str"),
        (COINBASE, ["BTC-USD"], "must be a str"),
    ],
)
def test_canonical_errors(mapper: SymbolMapper, raw: Any, message: str) -> None:
    with pytest.raises(SymbolError, match=message):
        mapper.canonical(raw)
    with pytest.raises(SymbolError):  # errors are not cached
        mapper.canonical(raw)


def test_canonical_error_hides_cache_miss() -> None:
    with pytest.raises(SymbolError) as info:
        BINANCE.canonical("FOOBAR")
    assert info.value.__suppress_context__
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("mapper", "canonical"),
    [
        (COINBASE, "BTCUSD"),
        (COINBASE, "BTC-"),
        (COINBASE, "-USD"),
        (COINBASE, ""),
        (COINBASE, None),
        (BINANCE, "BTC-USDT-PERP"),
    ],
)
def test_raw_errors(mapper: SymbolMapper, canonical: Any) -> None:
    with pytest.raises(SymbolError):
        mapper.raw(canonical)


def test_invalid_case_rule() -> None:
    with pytest.raises(SymbolError, match="case"):
        SymbolMapper(SymbolRules(case="title"))  # type: ignore[arg-type]


def test_rules_defaults_are_independent() -> None:
    a, b = SymbolRules(), SymbolRules()
    assert a.aliases == {} and a.aliases is not b.aliases
    assert a.separator == "-" and a.case == "upper" and a.quotes == ()


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(symbols, "_CACHE_MAX", 8)
    mapper = SymbolMapper(SymbolRules(separator="-"))
    for i in range(50):
        assert mapper.canonical(f"A{i}-USD") == f"A{i}-USD"
        assert mapper.raw(f"A{i}-USD") == f"A{i}-USD"
        assert len(mapper._canonical) <= 8 and len(mapper._raw) <= 8


def test_added_overrides_win_and_reset() -> None:
    mapper = SymbolMapper(
        SymbolRules(separator="-", overrides={"BTC-FOO": "BTC-USD-FOO"}, suffixes={"SWAP": "PERP"})
    )
    assert mapper.canonical("BTC-27DEC24") == "BTC-27DEC24"  # cached, then cleared below
    mapper.add_overrides({"BTC-27DEC24": "BTC-USD-20241227", "btc-foo": "BTC-USD-F"})
    assert mapper.canonical("btc-27dec24") == "BTC-USD-20241227"
    assert mapper.raw("BTC-USD-20241227") == "BTC-27DEC24"
    assert mapper.canonical("BTC-FOO") == "BTC-USD-F"
    assert mapper.raw("BTC-USD-F") == "btc-foo"
    assert mapper.raw("BTC-USD-FOO") == "BTC-USD-FOO"  # the replaced override is gone both ways
    assert mapper.overrides["BTC-27DEC24"] == "BTC-USD-20241227"
    mapper.add_overrides({"A-1": "A-B", "A-2": "A-B"})
    assert mapper.raw("A-B") == "A-1"  # the first of one call wins for raw()
    mapper.add_overrides({"A-2": "A-B"})
    assert mapper.raw("A-B") == "A-2"  # a later call wins
    mapper.reset_overrides()
    assert mapper.canonical("BTC-27DEC24") == "BTC-27DEC24"
    assert mapper.canonical("BTC-FOO") == "BTC-USD-FOO" and mapper.raw("BTC-USD-FOO") == "BTC-FOO"
    assert mapper.canonical("BTC-USD-SWAP") == "BTC-USD-PERP"


@pytest.mark.parametrize(
    ("exchange", "raw", "canonical"),
    [
        ("binance", "BTCUSDT", "BTC-USDT"),  # spot
        ("okx", "BTC-USDT", "BTC-USDT"),  # spot
        ("okx", "BTC-USD-SWAP", "BTC-USD-PERP"),  # perpetual
        ("deribit", "BTC-PERPETUAL", "BTC-USD-PERP"),  # perpetual
        ("deribit", "ETH_USDC-PERPETUAL", "ETH-USDC-PERP"),  # linear perpetual
        ("bitfinex", "tBTCF0:USTF0", "BTC-USDT-PERP"),  # perpetual
        ("binance_futures", "BTCUSDT", "BTC-USDT-PERP"),  # perpetual
    ],
)
def test_descriptor_rules_follow_the_convention(exchange: str, raw: str, canonical: str) -> None:
    """Spot and perpetuals by the rules alone; dated futures and options with the instrument
    list are in tests/test_instruments.py."""
    from runtime.registry import load_spec

    mapper = load_spec(exchange).symbols
    assert mapper.canonical(raw) == canonical
    assert mapper.raw(canonical) == raw


@pytest.mark.parametrize(
    ("exchange", "raw", "canonical"),
    [
        ("binance_futures", "BTCUSDT_250926", "BTC-USDT-20250926"),
        ("binance_futures", "BTCUSDT", "BTC-USDT-PERP"),
        ("okx", "BTC-USD-220527", "BTC-USD-20220527"),
        ("okx", "BTC-USD-220527-30000-C", "BTC-USD-20220527-30000-C"),
        ("okx", "ETH-USD-220624-1500-P", "ETH-USD-20220624-1500-P"),
        ("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP"),
        ("okx", "BTC-USDT", "BTC-USDT"),
    ],
)
def test_dated_contracts_carry_the_full_expiry_both_ways(
    exchange: str, raw: str, canonical: str
) -> None:
    """Dated futures and options: the venue's YYMMDD becomes YYYYMMDD, and back."""
    from runtime.registry import load_spec

    mapper = load_spec(exchange).symbols
    assert mapper.canonical(raw) == canonical
    assert mapper.raw(canonical) == raw
