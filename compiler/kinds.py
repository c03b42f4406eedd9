"""Record fields of each channel kind (record format: docs/descriptor-reference.md)."""

from __future__ import annotations

from dataclasses import dataclass

COMMON_FIELDS = ("exchange", "channel", "symbol", "symbol_raw", "ts_exchange", "ts_recv", "seq")
"""Fields every record starts with, in this order."""

COMMON_DECLARED_REQUIRED = ("symbol",)
COMMON_DECLARED_OPTIONAL = ("ts_exchange", "seq")


@dataclass(frozen=True)
class KindFields:
    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.optional


KIND_FIELDS: dict[str, KindFields] = {
    "trades": KindFields(("price", "size"), ("side", "trade_id")),
    "book": KindFields(("type", "bids", "asks"), ("seq_first", "prev_seq", "checksum")),
    "ticker": KindFields(("bid", "ask"), ("bid_size", "ask_size", "last")),
    "candles": KindFields(
        ("interval", "open", "high", "low", "close", "volume"), ("start", "closed")
    ),
    "funding": KindFields(("rate",), ("next_funding_ts", "predicted_rate")),
    "open_interest": KindFields(("open_interest",), ()),
    "mark_price": KindFields(("mark",), ("index",)),
    "liquidations": KindFields(("price", "size", "side"), ("order_id",)),
    # private (account) channels
    "orders": KindFields(
        ("order_id", "side", "status"), ("client_order_id", "price", "size", "filled_size")
    ),
    "fills": KindFields(("trade_id", "order_id", "side", "price", "size"), ("fee", "fee_currency")),
    "balances": KindFields(("currency", "total"), ("available",)),
}

CURRENCY_KINDS = frozenset({"balances"})
"""Kinds keyed by a currency, not a market: ``symbol`` is the currency code as the exchange
sends it (no symbol mapping)."""


def declared_fields(kind: str) -> tuple[str, ...]:
    """Every field a descriptor may declare for ``kind``, in record order."""
    return COMMON_DECLARED_REQUIRED + COMMON_DECLARED_OPTIONAL + KIND_FIELDS[kind].all


def required_fields(kind: str) -> tuple[str, ...]:
    return COMMON_DECLARED_REQUIRED + KIND_FIELDS[kind].required
