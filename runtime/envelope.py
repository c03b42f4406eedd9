"""Envelope v1: how every record travels from a connection to a sink."""

from __future__ import annotations

from typing import Any

from runtime.spec import Record

ENVELOPE_VERSION = 1

Envelope = dict[str, Any]
"""``{"v", "exchange", "instance", "channel", "symbol", "kind", "ts_exchange", "ts_recv", "seq",
"message_id", "record"}`` — see docs/running.md."""


def wrap(instance: str, kind: str, record: Record) -> Envelope:
    """Wrap one normalized record; ``message_id`` is the exchange's own id where it has one."""
    return {
        "v": ENVELOPE_VERSION,
        "exchange": record["exchange"],
        "instance": instance,
        "channel": record["channel"],
        "symbol": record["symbol"],
        "kind": kind,
        "ts_exchange": record["ts_exchange"],
        "ts_recv": record["ts_recv"],
        "seq": record["seq"],
        "message_id": record.get("trade_id"),
        "record": record,
    }


def gap(
    exchange: str,
    instance: str,
    channel: str,
    symbol: str,
    *,
    start_ns: int,
    end_ns: int,
    reason: str,
    connection: str,
) -> Envelope:
    """A gap record: no data was received for ``channel``/``symbol`` from start to end."""
    record: Record = {
        "exchange": exchange,
        "channel": channel,
        "symbol": symbol,
        "symbol_raw": None,
        "ts_exchange": None,
        "ts_recv": end_ns,
        "seq": None,
        "gap_start": start_ns,
        "gap_end": end_ns,
        "gap_ns": end_ns - start_ns,
        "reason": reason,
        "connection": connection,
    }
    return wrap(instance, "gap", record)
