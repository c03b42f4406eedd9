"""Deterministic identities of envelopes: the MongoDB ``_id`` and the dedup key.

An identity is ``{exchange}|{channel}|{symbol}|{ident}``, where ``ident`` is, by priority:

* ``m:{message_id}`` — the exchange's own id (trade id);
* ``s:{seq}:{digest}`` — the exchange's sequence number, with a digest of the record (without
  ``ts_recv``) so two different records that share a sequence number (a snapshot and a diff)
  never collide;
* ``h:{ts}:{digest}`` — the digest of the record (without ``ts_recv``) and ``ts``, the exchange
  time, or the receive time when the exchange gives none; ``#n`` is appended to the n-th
  identical record of one frame (records of one frame share ``ts_recv``), so two identical
  trades in one message stay two records.

The same envelope always gets the same identity, so a batch written twice (a retry, a replay
from the spool, a second collector of the same feed when ``ts_exchange`` is known) is stored
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from runtime.envelope import Envelope

_SORTED = orjson.OPT_SORT_KEYS


def digest(record: Any) -> str:
    """A 20-hex-digit BLAKE2b digest of ``record`` without its ``ts_recv`` (sorted JSON)."""
    if isinstance(record, dict) and "ts_recv" in record:
        record = {k: v for k, v in record.items() if k != "ts_recv"}
    return hashlib.blake2b(orjson.dumps(record, option=_SORTED), digest_size=10).hexdigest()


def identities(batch: Sequence[Envelope]) -> list[str]:
    """The identity of every envelope of ``batch``, in order (see the module docstring)."""
    out: list[str] = []
    seen: dict[tuple[Any, str], int] = {}
    for env in batch:
        prefix = f"{env['exchange']}|{env['channel']}|{env['symbol']}|"
        message_id = env.get("message_id")
        if message_id is not None:
            out.append(f"{prefix}m:{message_id}")
            continue
        record = env.get("record")
        seq = env.get("seq")
        if seq is not None:
            out.append(f"{prefix}s:{seq}:{digest(record)}")
            continue
        ts = env.get("ts_exchange")
        base = f"{prefix}h:{env['ts_recv'] if ts is None else ts}:{digest(record)}"
        frame = (env.get("ts_recv"), base)
        n = seen.get(frame, 0)
        seen[frame] = n + 1
        out.append(base if n == 0 else f"{base}#{n}")
    return out
