"""Cross-check our replayed trades against what cryptofeed produced from the same capture.

This is a helper module for tests (not a test file).  A capture folder
(``shared/captures/<exchange>/``) holds ``raw.ndjson`` and ``cryptofeed/trades.ndjson``; every
cryptofeed row carries ``raw_line``, the 1-based line of ``raw.ndjson`` that produced it.  Our
replay emits one normalized record per produced row, also tagged with ``raw_line``.

:func:`compare_trades` pairs rows by ``raw_line`` plus trade id and reports every cryptofeed row
that has no equal counterpart in our output.  Where cryptofeed's meaning of a field differs from
the exchange's raw field, the difference is written down in :data:`CONVENTIONS` and applied
explicitly; nothing is compared loosely.

Our normalized trade conventions (what ``ours`` must contain):

* ``side`` is the TAKER (aggressor) side, ``"buy"``/``"sell"`` (or ``None`` if unknown);
* ``ts_exchange`` is the exchange's trade time in integer nanoseconds;
* ``price`` / ``size`` are exact decimal strings exactly as the exchange sent them (no contract
  multipliers applied: OKX SWAP/FUTURES ``sz`` stays in contracts, as cryptofeed keeps it);
* ``symbol_raw`` is the exchange-native instrument id (``NKNUSDT``, ``XBT/CHF``,
  ``BTC-USD-220527``), ``symbol`` the canonical ``BASE-QUOTE`` (Kraken ``XBT`` -> ``BTC``).

Evidence for every entry below (line numbers, counts) is in ``/work/scratch/captures-report.md``
and was verified by joining all cryptofeed rows of the four captures to their raw lines.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import pytest

CAPTURES = Path(__file__).resolve().parents[2] / "shared" / "captures"

Record = Mapping[str, Any]

# cryptofeed encodes futures expiries as YY + month code + DD ("22K27" = 2022-05-27).
_MONTH_CODES = "FGHJKMNQUVXZ"

_CF_TRADE_KEYS = frozenset({"symbol", "side", "amount", "price", "id", "timestamp", "raw_line"})


# --------------------------------------------------------------------------------------------
# cryptofeed symbol -> exchange-native symbol
# --------------------------------------------------------------------------------------------


def _binance_raw(cf_symbol: str) -> str:
    # cryptofeed "NKN-USDT" <- exchangeInfo baseAsset/quoteAsset; the raw "s" field is "NKNUSDT"
    # (stream names use the lowercase form "nknusdt@aggTrade").
    return cf_symbol.replace("-", "")


def _coinbase_raw(cf_symbol: str) -> str:
    # Coinbase product_id is already BASE-QUOTE ("SKL-USD").
    return cf_symbol


def _kraken_raw(cf_symbol: str) -> str:
    # cryptofeed takes the v1 "wsname" ("XBT/CHF") and replaces XBT->BTC and XDG->DOGE.
    # Undo that per component (a whole-string replace would turn e.g. "WBTC" into "WXBT").
    back = {"BTC": "XBT", "DOGE": "XDG"}
    return "/".join(back.get(part, part) for part in cf_symbol.split("-"))


def _okx_expiry(cf_expiry: str) -> str:
    # "22K27" -> "220527"
    year, code, day = cf_expiry[:2], cf_expiry[2], cf_expiry[3:]
    return f"{year}{_MONTH_CODES.index(code) + 1:02d}{day.zfill(2)}"


def _okx_raw(cf_symbol: str) -> str:
    parts = cf_symbol.split("-")
    if len(parts) == 2:  # SPOT: "BTC-USDT"
        return cf_symbol
    if len(parts) == 3 and parts[2] == "PERP":  # SWAP: "UNI-USD-PERP" <- "UNI-USD-SWAP"
        return f"{parts[0]}-{parts[1]}-SWAP"
    if len(parts) == 3:  # FUTURES: "BTC-USD-22K27" <- "BTC-USD-220527"
        return f"{parts[0]}-{parts[1]}-{_okx_expiry(parts[2])}"
    if len(parts) == 5:  # OPTION: "BTC-USD-30000-22K27-C" <- "BTC-USD-220527-30000-C"
        base, quote, strike, expiry, kind = parts
        return f"{base}-{quote}-{_okx_expiry(expiry)}-{strike}-{kind}"
    raise ValueError(f"unrecognised cryptofeed OKX symbol {cf_symbol!r}")


def _bitstamp_raw(cf_symbol: str) -> str:
    # cryptofeed "ETH-USD" <- trading-pairs-info "name" ETH/USD; channels and REST paths use the
    # lower-case "url_symbol" ("live_trades_ethusd").
    return cf_symbol.replace("-", "").lower()


def _htx_raw(cf_symbol: str) -> str:
    # cryptofeed "TRIO-ETH" <- /v1/common/symbols base-currency/quote-currency; topics and "ch"
    # use the lower-case "symbol" ("market.trioeth.trade.detail").
    return cf_symbol.replace("-", "").lower()


def _gateio_raw(cf_symbol: str) -> str:
    # cryptofeed "DIS-USDT" <- currency_pairs base/quote; the raw currency_pair is "DIS_USDT".
    return cf_symbol.replace("-", "_")


_DERIBIT_MONTHS = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)


def _deribit_raw(cf_symbol: str) -> str:
    # cryptofeed rewrites Deribit instruments: options "BTC-24SEP21-8000-P" -> "BTC-8000-21U24-put",
    # futures "BTC-24SEP21" -> "BTC-USD-21U24", perpetuals "BTC-PERPETUAL" -> "BTC-USD-PERP".
    # Deribit writes days without a leading zero ("1OCT21").
    def expiry(code: str) -> str:
        year, month, day = code[:2], _MONTH_CODES.index(code[2]), int(code[3:])
        return f"{day}{_DERIBIT_MONTHS[month]}{year}"

    parts = cf_symbol.split("-")
    if len(parts) == 4 and parts[3] in ("call", "put"):  # option
        base, strike, code, kind = parts
        return f"{base}-{expiry(code)}-{strike}-{'C' if kind == 'call' else 'P'}"
    if len(parts) == 3 and parts[2] == "PERP":
        return f"{parts[0]}-PERPETUAL" if parts[1] == "USD" else f"{parts[0]}_{parts[1]}-PERPETUAL"
    if len(parts) == 3:  # dated future
        return f"{parts[0]}-{expiry(parts[2])}"
    return cf_symbol.replace("-", "_")  # spot "BTC-USDC" -> "BTC_USDC"


# --------------------------------------------------------------------------------------------
# The table: what cryptofeed's trade columns mean, per exchange
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeConvention:
    """How cryptofeed (2.4.x) derived its ``trades.ndjson`` columns from the raw messages."""

    raw_message: str
    """Which raw message(s) cryptofeed turned into trade rows."""
    raw_side: str
    """What the exchange's own side field means (per its documentation)."""
    cryptofeed_side: Literal["taker", "maker"]
    """What cryptofeed's ``side`` column means.  Ours is always the taker side, so a
    ``"maker"`` entry would be inverted before comparing; ``"taker"`` is compared as is."""
    ts_field: str
    """Raw field behind cryptofeed's ``timestamp`` (float seconds) and its unit."""
    id_field: str | None
    """Raw field behind cryptofeed's ``id``; ``None`` when cryptofeed emits ``null``, in which
    case rows of one raw line are paired by position (cryptofeed keeps the raw array order)."""
    to_raw_symbol: Callable[[str], str]
    """Maps cryptofeed's ``symbol`` to the exchange-native id (compared with ``symbol_raw``)."""
    notes: str
    our_channels: tuple[str, ...] = ("trades",)
    """Our record ``channel`` values that correspond to cryptofeed's trades for this exchange."""


CONVENTIONS: dict[str, TradeConvention] = {
    "binance": TradeConvention(
        raw_message='combined-stream {"stream":"<sym>@aggTrade","data":{"e":"aggTrade",...}}',
        # Binance: "m" = "Is the buyer the market maker?"; m=true -> the seller was the taker.
        raw_side="m (bool): buyer is maker; taker side = 'sell' if m else 'buy'",
        # cryptofeed binance.py: SELL if msg['m'] else BUY  -> already the taker side.
        cryptofeed_side="taker",
        # cryptofeed binance.py _trade: timestamp_normalize(msg['T']) (trade time, ms), not the
        # event time E.  In this capture E == T on both aggTrade lines (114, 213), so only the
        # source code tells them apart; ours should use T as well.
        ts_field="T (int ms, trade time)",
        # aggTrade id "a" is the AGGREGATE trade id (covers raw trades f..l); cryptofeed's
        # "trades" for Binance are aggregated trades, not the @trade stream's "t" ids.
        id_field="a (aggregate trade id, int -> str)",
        to_raw_symbol=_binance_raw,
        notes="2 rows (lines 114, 213); all fields agree with the obvious mapping.",
        # Our binance descriptor names the @aggTrade channel "agg_trades" (and @trade "trades").
        # Each raw line belongs to exactly one stream, so accepting both names cannot pair a
        # cryptofeed row with a record of another stream.
        our_channels=("trades", "agg_trades"),
    ),
    "coinbase": TradeConvention(
        raw_message='{"type":"match"} and {"type":"last_match"} (matches channel)',
        # Coinbase Exchange docs: "The side field indicates the maker order side. If the side is
        # sell this indicates the maker was a sell order and the match is considered an up-tick."
        raw_side="side = MAKER order side; taker side = the opposite",
        # cryptofeed 2.4.0 coinbase.py: SELL if msg['side'] == 'buy' else BUY -> it INVERTS the
        # raw field, so its column is the taker side.  Verified: 107/107 rows are the opposite
        # of the raw match side, and each equals the same trade's ticker "side" (which Coinbase
        # reports as the taker side).  A parser that copies the raw "side" fails every row.
        cryptofeed_side="taker",
        ts_field="time (ISO 8601, microseconds, UTC 'Z')",
        id_field="trade_id (int -> str, per product)",
        to_raw_symbol=_coinbase_raw,
        # last_match = the product's latest trade, replayed once on subscribe (time precedes
        # the connection); cryptofeed emits it as an ordinary trade (10 rows, lines 8-40).
        notes="107 rows = 97 match + 10 last_match; cryptofeed used 2.4.0 (2.4.1 is Advanced "
        "Trade).",
    ),
    "kraken": TradeConvention(
        raw_message='[channelID, [[price, volume, time, side, ordType, misc], ...], "trade", pair]',
        # Kraken v1 trade: side "b"/"s" is the side of the taker (triggering) order.
        raw_side="side 'b'/'s' = taker side",
        cryptofeed_side="taker",
        ts_field="time (string float seconds, 6 decimals = microseconds)",
        # WS v1 trades carry no trade id (v2 added trade_id); cryptofeed emits id=null.
        id_field=None,
        to_raw_symbol=_kraken_raw,
        notes="10 rows from 8 messages (lines 2160 and 2875 carry 2 trades each).",
    ),
    "okx": TradeConvention(
        raw_message='{"arg":{"channel":"trades","instId":...},"data":[{...}]}',
        raw_side="side = taker side",
        cryptofeed_side="taker",
        ts_field="ts (string int ms)",
        id_field="tradeId (string, per instrument)",
        # cryptofeed renames instruments: SWAP -> "-PERP", FUTURES expiry "220527" -> "22K27".
        # sz is in contracts for SWAP/FUTURES (ctVal 10 USD for UNI-USD-SWAP, 100 USD for
        # BTC-USD-220527); cryptofeed passes sz through unchanged and so must ours.
        to_raw_symbol=_okx_raw,
        notes="74 rows; the first trade per instrument (lines 47-49) predates the connection.",
    ),
    "bitstamp": TradeConvention(
        raw_message='{"event":"trade","channel":"live_trades_<pair>","data":{...}}',
        # Bitstamp WebSocket v2 docs: "type: Trade type (0 - buy; 1 - sell)", the side of the
        # order that took liquidity. cryptofeed bitstamp.py: BUY if data['type'] == 0 else SELL.
        # Verified on all 10 rows (lines 210-743): 1 type 0 -> buy, 9 type 1 -> sell.
        raw_side="type 0 = buy, 1 = sell: the taker (aggressor) side",
        cryptofeed_side="taker",
        # cryptofeed: Decimal(data['microtimestamp']) / 1e6; e.g. line 210 microtimestamp
        # "1641343699596000" -> 1641343699.596 (the "timestamp" field has seconds only).
        ts_field="microtimestamp (string, µs)",
        id_field="id (int -> str)",
        to_raw_symbol=_bitstamp_raw,
        # cryptofeed reads amount_str/price_str-equal values ("0.0792" vs "0.07920000"): equal as
        # Decimals; ours keeps the exchange's strings.
        notes="10 rows, all ETH-USD (the only pair that traded in the 30 s).",
    ),
    "htx": TradeConvention(
        raw_message='gzip {"ch":"market.<sym>.trade.detail","tick":{"data":[{...}, ...]}}',
        # HTX docs: "direction: Aggressive order side (taker's order side) of the trade".
        # cryptofeed huobi.py passes trade['direction'] through.
        raw_side="direction = taker side",
        cryptofeed_side="taker",
        # cryptofeed: timestamp_normalize(trade['ts']) (ms); line 23 ts 1618678027940 ->
        # 1618678027.94.
        ts_field="data[].ts (int ms)",
        # cryptofeed uses tradeId (line 23: 100045088885); the 27-digit "id" arrives as a float.
        id_field="tradeId (int -> str)",
        to_raw_symbol=_htx_raw,
        # Prices are JSON numbers such as 9.2E-7: cryptofeed prints "0.00000092", ours dec() gives
        # the same shortest exact form. Capture folder "huobi" = exchange id "htx".
        notes="73 rows from 44 messages (lines 23-350; 56 are FIL3S-USDT); the first message "
        "per symbol replays the last trade before the subscription.",
    ),
    "gateio": TradeConvention(
        raw_message='{"channel":"spot.trades","event":"update","result":{...}}',
        # Gate v4 docs: spot.trades "side: buy or sell side"; only the taker side is published.
        # cryptofeed gateio.py passes result['side'] through.
        raw_side="side = taker side",
        cryptofeed_side="taker",
        # cryptofeed: float(create_time_ms) / 1000; line 103 "1619093543708.2642" ->
        # 1619093543.708264 (µs; ours keeps the extra digit in ns).
        ts_field="create_time_ms (string ms with a fraction)",
        id_field="id (int -> str)",
        to_raw_symbol=_gateio_raw,
        notes="9 rows, one per message (lines 103-245; 7 sell, 2 buy).",
    ),
    "deribit": TradeConvention(
        raw_message='{"method":"subscription","params":{"channel":"trades.<inst>.<interval>",'
        '"data":[{...}, ...]}}',
        # Deribit docs (public trade): "direction: Trade direction of the taker".
        raw_side="direction = taker side",
        cryptofeed_side="taker",
        ts_field="data[].timestamp (int ms)",
        id_field="trade_id (string)",
        to_raw_symbol=_deribit_raw,
        # The capture subscribed trades.<inst>.raw for 10 options but none traded in the 30 s:
        # cryptofeed wrote no trades.ndjson (its replay_report lists only ticker and book).
        notes="no rows: the capture holds no trade; tickers are cross-checked instead.",
    ),
}


@dataclass(frozen=True)
class TickerConvention:
    """How cryptofeed (2.4.x) derived its ``ticker.ndjson`` rows (bid, ask, timestamp)."""

    raw_message: str
    our_channel: str
    """Our record ``channel`` whose records correspond to cryptofeed's ticker rows."""
    ts_field: str
    to_raw_symbol: Callable[[str], str]
    notes: str


TICKER_CONVENTIONS: dict[str, TickerConvention] = {
    "deribit": TickerConvention(
        raw_message='{"method":"subscription","params":{"channel":"ticker.<inst>.<interval>"}}',
        our_channel="ticker",
        # cryptofeed deribit.py: best_bid_price / best_ask_price as sent (0.0 for an empty side
        # in this 2021 capture), timestamp_normalize(timestamp) (ms).
        ts_field="timestamp (int ms)",
        to_raw_symbol=_deribit_raw,
        notes="89 rows, one per ticker message.",
    ),
    "gateio": TickerConvention(
        raw_message='{"channel":"spot.tickers","event":"update","time":...,"result":{...}}',
        # cryptofeed gateio.py: highest_bid / lowest_ask, timestamp = the message's "time" (s).
        our_channel="tickers",
        ts_field="time (int s; time_ms when present)",
        to_raw_symbol=_gateio_raw,
        notes="22 rows, one per spot.tickers message.",
    ),
}


def compare_tickers(
    ours: list[dict[str, Any]], theirs: list[dict[str, Any]], exchange: str
) -> list[str]:
    """Mismatches between cryptofeed ticker rows and our ticker records of the same raw line:
    bid and ask equal as Decimals, exchange time to the microsecond, the same instrument."""
    conv = TICKER_CONVENTIONS[exchange]
    by_line: dict[int, list[Record]] = defaultdict(list)
    for rec in ours:
        line = _line_of(rec)
        if rec.get("channel") == conv.our_channel and line is not None:
            by_line[line].append(rec)
    problems = []
    for row in theirs:
        where = f"{exchange} raw_line {row['raw_line']} ({row['symbol']})"
        raw = conv.to_raw_symbol(str(row["symbol"]))
        mine = [r for r in by_line.get(int(row["raw_line"]), []) if r.get("symbol_raw") == raw]
        if not mine:
            problems.append(f"{where}: no ticker record of ours for {raw!r}")
            continue
        our = mine[0]
        for key in ("bid", "ask"):
            if _dec(our.get(key)) is None or _dec(our.get(key)) != _dec(row.get(key)):
                problems.append(f"{where}: {key} ours={our.get(key)!r} cryptofeed={row.get(key)!r}")
        ts = our.get("ts_exchange")
        if row.get("timestamp") is not None and (
            not isinstance(ts, int) or _us_from_ns(ts) != _us_from_seconds(float(row["timestamp"]))
        ):
            problems.append(
                f"{where}: ts_exchange ours={ts!r} cryptofeed={row['timestamp']!r} "
                f"({conv.ts_field})"
            )
    return problems


# --------------------------------------------------------------------------------------------
# Capture access
# --------------------------------------------------------------------------------------------


def capture_name(exchange: str) -> str:
    """The capture folder name of an exchange: its id, or a former name (``aliases``, e.g. the
    capture ``huobi`` of exchange ``htx``) that has a capture."""
    from runtime.registry import exchanges, load_spec

    names = [exchange]
    if exchange in exchanges():
        names += list(load_spec(exchange).aliases)
    for name in names:
        if (CAPTURES / name / "raw.ndjson").is_file():
            return name
    return exchange


def require_captures(exchange: str | None = None) -> Path:
    """Return the captures folder (or one exchange's folder), skipping the test if absent.

    ``exchange`` is an exchange id; a capture recorded under a former name is found too."""
    if not CAPTURES.is_dir():
        pytest.skip(
            f"real captures not found at {CAPTURES} (shared/captures is expected beside the "
            "repository checkout); skipping capture cross-check"
        )
    if exchange is None:
        return CAPTURES
    folder = CAPTURES / capture_name(exchange)
    if not (folder / "raw.ndjson").is_file():
        pytest.skip(f"capture for {exchange!r} not found at {folder}")
    return folder


def load_cryptofeed_trades(capture_dir: Path) -> list[dict[str, Any]]:
    """Read ``<capture_dir>/cryptofeed/trades.ndjson`` (one JSON object a line), in file order."""
    path = capture_dir / "cryptofeed" / "trades.ndjson"
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            missing = _CF_TRADE_KEYS - row.keys()
            if missing:
                raise ValueError(f"{path}:{lineno}: missing keys {sorted(missing)}")
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _us_from_seconds(value: float) -> int:
    # repr() gives the shortest decimal that round-trips; cryptofeed's floats come from exact
    # ms/us decimal values, so this recovers them exactly before rounding to microseconds.
    return int((Decimal(repr(value)) * 1_000_000).quantize(Decimal(1), ROUND_HALF_EVEN))


def _us_from_ns(value: int) -> int:
    return int((Decimal(value) / 1000).quantize(Decimal(1), ROUND_HALF_EVEN))


def _line_of(rec: Record) -> int | None:
    value = rec.get("raw_line")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _taker_side(cf_side: Any, conv: TradeConvention) -> Any:
    if conv.cryptofeed_side == "taker" or cf_side not in ("buy", "sell"):
        return cf_side
    return "sell" if cf_side == "buy" else "buy"


def _pair_rows(
    ours: Sequence[Record], theirs: Sequence[Record]
) -> list[tuple[Record, Record | None]]:
    """Pair each cryptofeed row of one raw line with one of our rows of that line.

    Rows with a cryptofeed id are paired by trade id; rows without one (Kraken v1) take the
    remaining rows of ours in order, as both keep the raw array order.
    """
    free = list(ours)
    pairs: list[tuple[Record, Record | None]] = []
    positional: list[Record] = []
    for row in theirs:
        if row.get("id") is None:
            positional.append(row)
            continue
        want = str(row["id"])
        match = next((r for r in free if str(r.get("trade_id")) == want), None)
        if match is not None:
            free.remove(match)
        pairs.append((row, match))
    for row in positional:
        pairs.append((row, free.pop(0) if free else None))
    return pairs


def _compare_pair(
    exchange: str, conv: TradeConvention, cf: Record, our: Record, check_ts_recv: bool
) -> Iterable[str]:
    where = f"{exchange} raw_line {cf['raw_line']} trade id={cf.get('id')!r} ({cf['symbol']})"

    # price / size: equal as Decimals ("58.00000000" == "58").
    for our_key, cf_key in (("price", "price"), ("size", "amount")):
        mine, theirs = _dec(our.get(our_key)), _dec(cf.get(cf_key))
        if mine is None or theirs is None or mine != theirs:
            yield f"{where}: {our_key} ours={our.get(our_key)!r} cryptofeed={cf.get(cf_key)!r}"

    # side: ours is the taker side; CONVENTIONS says what cryptofeed's column means.
    expected_side = _taker_side(cf.get("side"), conv)
    if our.get("side") != expected_side:
        yield (
            f"{where}: side ours={our.get('side')!r} expected taker side {expected_side!r} "
            f"(cryptofeed {cf.get('side')!r} is the {conv.cryptofeed_side} side; raw: "
            f"{conv.raw_side})"
        )

    # exchange timestamp, to the microsecond.
    cf_ts = cf.get("timestamp")
    if cf_ts is not None:
        our_ts = our.get("ts_exchange")
        if not isinstance(our_ts, int) or isinstance(our_ts, bool):
            yield f"{where}: ts_exchange ours={our_ts!r} cryptofeed={cf_ts!r} ({conv.ts_field})"
        elif _us_from_ns(our_ts) != _us_from_seconds(float(cf_ts)):
            yield (
                f"{where}: ts_exchange ours={our_ts} ns cryptofeed={cf_ts!r} s "
                f"(differ at microsecond precision; source {conv.ts_field})"
            )

    if check_ts_recv and cf.get("receipt_timestamp") is not None:
        our_recv = our.get("ts_recv")
        if not isinstance(our_recv, int) or isinstance(our_recv, bool):
            yield f"{where}: ts_recv ours={our_recv!r} cryptofeed={cf['receipt_timestamp']!r}"
        elif _us_from_ns(our_recv) != _us_from_seconds(float(cf["receipt_timestamp"])):
            yield (
                f"{where}: ts_recv ours={our_recv} ns "
                f"cryptofeed receipt_timestamp={cf['receipt_timestamp']!r} s"
            )

    # instrument: symbol_raw exactly (after undoing cryptofeed's renaming); the canonical
    # symbol only for plain spot symbols, where cryptofeed's BASE-QUOTE is ours too.  For
    # derivatives (OKX "-PERP", "-22K27") symbol_raw already pins the instrument.
    expected_raw = conv.to_raw_symbol(str(cf["symbol"]))
    if our.get("symbol_raw") != expected_raw:
        yield f"{where}: symbol_raw ours={our.get('symbol_raw')!r} expected {expected_raw!r}"
    if str(cf["symbol"]).count("-") == 1 and our.get("symbol") != cf["symbol"]:
        yield f"{where}: symbol ours={our.get('symbol')!r} cryptofeed={cf['symbol']!r}"


def compare_trades(
    ours: list[dict[str, Any]],
    theirs: list[dict[str, Any]],
    exchange: str,
    *,
    check_ts_recv: bool = False,
) -> list[str]:
    """Return human-readable mismatches; empty when every cryptofeed trade is matched.

    ``ours``: our normalized records, each with ``raw_line``; only rows of this exchange whose
    ``channel`` is in the convention's ``our_channels`` are used.  ``theirs``: rows from
    :func:`load_cryptofeed_trades`.  A cryptofeed row matches when one of our rows from the same
    raw line (and, where cryptofeed has one, the same trade id) has equal price and size as
    Decimals, the expected taker side, the same exchange time to the microsecond and the same
    instrument.  Our extra rows are not reported.  ``check_ts_recv`` also compares ``ts_recv``
    with cryptofeed's ``receipt_timestamp`` (the recorded ``recv_ts``) to the microsecond.
    """
    key = exchange.lower()
    if key not in CONVENTIONS:
        raise ValueError(
            f"no cryptofeed trade conventions recorded for {exchange!r}; add an entry to "
            f"CONVENTIONS (known: {sorted(CONVENTIONS)})"
        )
    conv = CONVENTIONS[key]

    our_by_line: dict[int, list[Record]] = defaultdict(list)
    unlocated = 0
    for rec in ours:
        if rec.get("channel") not in conv.our_channels:
            continue
        if str(rec.get("exchange", "")).lower() != key:
            continue
        line = _line_of(rec)
        if line is None:
            unlocated += 1
        else:
            our_by_line[line].append(rec)

    their_by_line: dict[int, list[Record]] = defaultdict(list)
    for row in theirs:
        line = _line_of(row)
        if line is None:
            raise ValueError(f"cryptofeed row without an integer raw_line: {row!r}")
        their_by_line[line].append(row)

    problems: list[str] = []
    if unlocated:
        problems.append(
            f"{exchange}: {unlocated} of our trade records lack raw_line; cannot match them"
        )
    for line in sorted(their_by_line):
        for cf, our in _pair_rows(our_by_line.get(line, []), their_by_line[line]):
            if our is None:
                problems.append(
                    f"{exchange} raw_line {line}: cryptofeed trade id={cf.get('id')!r} "
                    f"{cf.get('side')} {cf.get('amount')} @ {cf.get('price')} ({cf['symbol']}) "
                    "has no counterpart in ours"
                )
                continue
            problems.extend(_compare_pair(exchange, conv, cf, our, check_ts_recv))
    return problems
