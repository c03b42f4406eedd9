"""Tests for runtime.convert."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from runtime import convert
from runtime.convert import (
    ConversionError,
    dec,
    dec_abs,
    get,
    is_negative,
    levels,
    lookup,
    path,
    ts_iso,
    ts_ms,
    ts_ns,
    ts_s,
    ts_us,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
JUNK_NUMBERS: list[object] = [
    "",
    "abc",
    "1.",
    ".5",
    "+1",
    " 1",
    "1 ",
    "1\n",
    "1_000",
    "0x10",
    "1e",
    "1.2.3",
    "--1",
    "nan",
    "inf",
    "Infinity",
    "١٢٣",  # Arabic-Indic digits: int() would accept them
    "²",
    None,
    True,
    False,
    [1],
    {"a": 1},
    Decimal("1"),
    b"1",
]


def ref_ns(
    y: int, mo: int, d: int, h: int, mi: int, s: int, frac_ns: int, offset_min: int = 0
) -> int:
    """Slow reference: datetime arithmetic for the seconds, manual ns for the fraction."""
    tz = timezone(timedelta(minutes=offset_min))
    secs = (datetime(y, mo, d, h, mi, s, tzinfo=tz) - EPOCH) // timedelta(seconds=1)
    return secs * 1_000_000_000 + frac_ns


# --------------------------------------------------------------------------- dec


@pytest.mark.parametrize(
    "value",
    ["63214.57", "0.00000001", "0", "-0", "-1.5", "1234567890123456789012", "1e-8", "2.5E+3"],
)
def test_dec_plain_strings_unchanged(value: str) -> None:
    assert dec(value) is value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (12, "12"),
        (-7, "-7"),
        (10**30, "1" + "0" * 30),
        (0.1, "0.1"),
        (1.0, "1.0"),
        (-2.5, "-2.5"),
        (63214.57, "63214.57"),
        (1e-05, "0.00001"),
        (-1.5e-07, "-0.00000015"),
        (1.2345e-10, "0.00000000012345"),
        (1e16, "10000000000000000"),
        (1.2345e20, "123450000000000000000"),
        (123456789.12345679, "123456789.12345679"),
    ],
)
def test_dec_numbers(value: int | float, expected: str) -> None:
    assert dec(value) == expected


def test_dec_float_round_trip_never_exponent() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        x = rng.uniform(-1, 1) * 10 ** rng.randint(-20, 25)
        s = dec(x)
        assert "e" not in s and "E" not in s
        assert float(s) == x
        assert Decimal(s) == Decimal(repr(x))


@pytest.mark.parametrize("value", [*JUNK_NUMBERS, float("nan"), float("inf"), float("-inf")])
def test_dec_rejects_junk(value: object) -> None:
    with pytest.raises(ConversionError):
        dec(value)


def test_dec_error_message_names_the_value() -> None:
    with pytest.raises(ConversionError, match="'12abc'"):
        dec("12abc")
    with pytest.raises(ConversionError, match="bool"):
        dec(True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-0.5", "0.5"), ("0.5", "0.5"), (-3, "3"), (2, "2"), (-1e-05, "0.00001"), ("-1e-5", "1e-5")],
)
def test_dec_abs(value: object, expected: str) -> None:
    assert dec_abs(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-0.5", True),
        ("-1e-5", True),
        ("0.5", False),
        ("0", False),
        ("-0", False),
        ("-0.000", False),
        ("-0e5", False),
        ("-0.0001", True),
        (-1, True),
        (0, False),
        (3, False),
        (-0.0, False),
        (0.0, False),
        (-2.5, True),
    ],
)
def test_is_negative(value: object, expected: bool) -> None:
    assert is_negative(value) is expected


@pytest.mark.parametrize("value", ["abc", None, True, float("nan"), float("-inf")])
def test_is_negative_rejects_junk(value: object) -> None:
    with pytest.raises(ConversionError):
        is_negative(value)


# --------------------------------------------------------------------------- numeric timestamps


@pytest.mark.parametrize(
    ("func", "value", "expected"),
    [
        (ts_s, "1618678142.557535", 1618678142557535000),
        (ts_s, 1618678142, 1618678142000000000),
        (ts_s, "1618678142", 1618678142000000000),
        (ts_s, "1618678142.1", 1618678142100000000),
        (ts_s, "1618678142.123456789", 1618678142123456789),
        (ts_s, "1618678142.1234567891", 1618678142123456789),  # sub-ns truncated
        (ts_s, 1618678142.557535, 1618678142557535000),
        (ts_s, 1618678142.0, 1618678142000000000),
        (ts_s, "-1.5", -1500000000),
        (ts_s, "1.618678142557535e9", 1618678142557535000),
        (ts_ms, "1652459199958", 1652459199958000000),
        (ts_ms, 1652459199958, 1652459199958000000),
        (ts_ms, 1652459199958.0, 1652459199958000000),
        (ts_ms, 1652459199958.5, 1652459199958500000),
        (ts_ms, "1652459199958.123", 1652459199958123000),
        (ts_ms, "1652459199958.1234567", 1652459199958123456),
        (ts_ms, "1.652459199958E12", 1652459199958000000),
        (ts_us, 1652459199958123, 1652459199958123000),
        (ts_us, "1652459199958123", 1652459199958123000),
        (ts_us, "1652459199958123.4", 1652459199958123400),
        (ts_us, 1.5, 1500),
        (ts_ns, 1652459199958123456, 1652459199958123456),
        (ts_ns, "1652459199958123456", 1652459199958123456),
        (ts_ns, "1652459199958123456.9", 1652459199958123456),
        (ts_ns, 1.6e18, 1600000000000000000),
        (ts_ns, "1.6e18", 1600000000000000000),
        (ts_ns, 0, 0),
    ],
)
def test_numeric_timestamps(func: Any, value: object, expected: int) -> None:
    result = func(value)
    assert result == expected
    assert type(result) is int


def test_float_timestamps_beat_naive_rounding() -> None:
    # round(x * factor) would give ...534976 and ...958000128 here.
    assert round(1618678142.557535 * 1e9) != 1618678142557535000
    assert ts_s(1618678142.557535) == 1618678142557535000
    assert ts_ms(1652459199958.0) == 1652459199958000000


@pytest.mark.parametrize("func", [ts_s, ts_ms, ts_us, ts_ns])
@pytest.mark.parametrize(
    "value", [*JUNK_NUMBERS, float("nan"), float("inf"), "1" * 100, "1e999999", "-"]
)
def test_numeric_timestamps_reject_junk(func: Any, value: object) -> None:
    with pytest.raises(ConversionError):
        func(value)


# --------------------------------------------------------------------------- ts_iso


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-04-17T16:43:30.244075Z", ref_ns(2021, 4, 17, 16, 43, 30, 244075000)),
        ("2021-04-17T16:43:30Z", ref_ns(2021, 4, 17, 16, 43, 30, 0)),
        ("2021-04-17T16:43:30", ref_ns(2021, 4, 17, 16, 43, 30, 0)),
        ("2021-04-17T16:43:30.1234567Z", ref_ns(2021, 4, 17, 16, 43, 30, 123456700)),
        ("2021-04-17T16:43:30.1234567+09:00", ref_ns(2021, 4, 17, 16, 43, 30, 123456700, 540)),
        ("2021-04-17T16:43:30.123456789Z", ref_ns(2021, 4, 17, 16, 43, 30, 123456789)),
        ("2021-04-17T16:43:30.000000001Z", ref_ns(2021, 4, 17, 16, 43, 30, 1)),
        ("2021-04-17 16:43:30.1Z", ref_ns(2021, 4, 17, 16, 43, 30, 100000000)),
        ("2021-04-17t16:43:30.5z", ref_ns(2021, 4, 17, 16, 43, 30, 500000000)),
        ("2021-04-17T16:43:30.244075", ref_ns(2021, 4, 17, 16, 43, 30, 244075000)),
        ("2021-04-17T16:43:30-05:30", ref_ns(2021, 4, 17, 16, 43, 30, 0, -330)),
        ("2021-04-17T16:43:30.25+0100", ref_ns(2021, 4, 17, 16, 43, 30, 250000000, 60)),
        ("2021-04-17T16:43:30+00:00", ref_ns(2021, 4, 17, 16, 43, 30, 0)),
        ("2021-04-17T00:30:00+09:00", ref_ns(2021, 4, 16, 15, 30, 0, 0)),
        ("1970-01-01T00:00:00Z", 0),
        ("1969-12-31T23:59:59.5Z", -500000000),
        ("2024-02-29T23:59:59.999999999Z", ref_ns(2024, 2, 29, 23, 59, 59, 999999999)),
    ],
)
def test_ts_iso(text: str, expected: int) -> None:
    assert ts_iso(text) == expected
    assert ts_iso(text) == expected  # second call is a cache hit


def test_ts_iso_matches_literal_values() -> None:
    assert ts_iso("2021-04-17T16:43:30.244075Z") == 1618677810244075000
    assert ts_iso("2021-04-17T16:43:30.1234567+09:00") == 1618645410123456700


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "2021-04-17",
        "2021-04-17T16:43Z",
        "2021-04-17T16:43:3",
        "2021-04-17X16:43:30Z",
        "2021-02-30T00:00:00Z",
        "2021-13-01T00:00:00Z",
        "2021-04-17T24:00:00Z",
        "2021-04-17T16:60:00Z",
        "2021-04-17T16:43:30.Z",
        "2021-04-17T16:43:30.",
        "2021-04-17T16:43:30.1234567890Z",
        "2021-04-17T16:43:30.12a4Z",
        "2021-04-17T16:43:30.²Z",
        "2021-04-17T16:43:30ZZ",
        "2021-04-17T16:43:30+24:00",
        "2021-04-17T16:43:30+09:60",
        "2021-04-17T16:43:30+9:00",
        "2021-04-17T16:43:30 Z",
        "2021-04-17T16:43:305Z",
        "２０２１-04-17T16:43:30Z",
        "0000-01-01T00:00:00Z",
        "2016-12-31T23:59:60Z",  # leap seconds are rejected (datetime cannot represent them)
    ],
)
def test_ts_iso_rejects_junk(text: str) -> None:
    with pytest.raises(ConversionError):
        ts_iso(text)


@pytest.mark.parametrize("value", [None, 1618677810, 1.5, b"2021-04-17T16:43:30Z", ["x"]])
def test_ts_iso_rejects_non_str(value: object) -> None:
    with pytest.raises(ConversionError, match="expected a str"):
        ts_iso(value)


def test_ts_iso_cache_is_bounded() -> None:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    for i in range(convert._ISO_CACHE_MAX + 100):
        text = (start + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.5Z")
        assert ts_iso(text) == (1640995200 + i) * 1_000_000_000 + 500_000_000
        assert len(convert._iso_cache) <= convert._ISO_CACHE_MAX


def test_ts_iso_property_against_slow_reference() -> None:
    rng = random.Random(20240417)
    lo = datetime(1970, 1, 1).toordinal()
    hi = datetime(2100, 12, 31).toordinal()
    for _ in range(3000):
        day = datetime.fromordinal(rng.randint(lo, hi))
        h, mi, s = rng.randrange(24), rng.randrange(60), rng.randrange(60)
        digits = rng.randint(0, 9)
        frac = "".join(rng.choice("0123456789") for _ in range(digits))
        frac_ns = int(frac.ljust(9, "0")) if digits else 0
        offset = rng.choice([None, 0, rng.randint(-23 * 60 - 59, 23 * 60 + 59)])
        if offset is None:
            zone = rng.choice(["", "Z"])
            offset = 0
        else:
            sign = "-" if offset < 0 else "+"
            zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        sep = rng.choice("T ")
        text = f"{day:%Y-%m-%d}{sep}{h:02d}:{mi:02d}:{s:02d}{'.' if digits else ''}{frac}{zone}"
        expected = ref_ns(day.year, day.month, day.day, h, mi, s, frac_ns, offset)
        assert ts_iso(text) == expected, text


# --------------------------------------------------------------------------- lookup / path / get


def test_lookup() -> None:
    table = {"buy": "bid", "sell": "ask", 1: "one"}
    assert lookup("buy", table) == "bid"
    assert lookup(1, table) == "one"
    with pytest.raises(ConversionError, match=r"'b'.*'buy', 'sell', 1"):
        lookup("b", table)
    with pytest.raises(ConversionError, match="allowed"):
        lookup(["buy"], table)


MSG: dict[str, Any] = {
    "arg": {"channel": "trades", "instId": "BTC-USDT"},
    "data": [{"px": "1", "sz": "2"}, {"px": "3", "sz": None}],
    "e": "trade",
    "n": None,
    "s": "text",
}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ((), MSG),
        (("e",), "trade"),
        (("arg", "channel"), "trades"),
        (("data", 0, "px"), "1"),
        (("data", -1, "px"), "3"),
        (("data", -2, "sz"), "2"),
        (("data", 1, "sz"), None),
        (("data", 2), None),
        (("data", -3), None),
        (("data", "0"), None),
        (("missing", 0), None),
        (("n", "x"), None),
        (("s", 0), None),
        (("e", "x"), None),
        (("arg", 0), None),
        (("data", 0, "px", 0), None),
        (("data", True), None),
    ],
)
def test_path(keys: tuple[str | int, ...], expected: Any) -> None:
    assert path(MSG, *keys) == expected


def test_path_non_containers_and_tuples() -> None:
    assert path(None, "a") is None
    assert path(5, 0) is None
    assert path([[1, 2], [3, 4]], 1, 0) == 3
    assert path(("a", ("b", "c")), 1, -1) == "c"
    assert path({"a": ("x",)}, "a", 0) == "x"


def test_get() -> None:
    assert get(MSG, "e") == "trade"
    assert get(MSG, "missing") is None
    assert get(MSG, "missing", 7) == 7
    assert get(MSG["data"], 1) == MSG["data"][1]
    assert get(MSG["data"], 5, "d") == "d"
    assert get(MSG["data"], "0", "d") == "d"
    assert get("text", 0, "d") == "d"
    assert get(None, "a", "d") == "d"
    assert get(MSG, "n", "d") is None  # present key with a null value


# --------------------------------------------------------------------------- levels


def test_levels_strings_drop_extra_columns() -> None:
    rows = [["63214.57", "0.5123", "3"], ["63214.56", "1", "1", "x"]]
    assert levels(rows) == [["63214.57", "0.5123"], ["63214.56", "1"]]


def test_levels_numbers_and_depth() -> None:
    rows = [[100.5, 2], [100.25, 1e-05], [100, 3]]
    assert levels(rows) == [["100.5", "2"], ["100.25", "0.00001"], ["100", "3"]]
    assert levels(rows, 2) == [["100.5", "2"], ["100.25", "0.00001"]]
    assert levels(rows, 0) == []
    assert levels(rows, 10) == levels(rows)
    assert levels([]) == []
    assert levels((("1", "2"),)) == [["1", "2"]]


def test_levels_returns_new_lists() -> None:
    rows = [["1", "2"]]
    out = levels(rows)
    assert out == rows and out[0] is not rows[0]


@pytest.mark.parametrize(
    ("rows", "depth"),
    [
        ("12", None),
        (None, None),
        ({"1": "2"}, None),
        ([["1"]], None),
        (["12"], None),
        ([["1", "x"]], None),
        ([["1", None]], None),
        ([[True, "1"]], None),
        ([["1", "2"]], -1),
    ],
)
def test_levels_rejects_junk(rows: Any, depth: int | None) -> None:
    with pytest.raises(ConversionError):
        levels(rows, depth)
