"""What to subscribe on which connection, the subscribe messages, and matching ACKs to them."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from runtime.spec import ExchangeSpec


@dataclass(frozen=True)
class Subscription:
    """One channel for one symbol."""

    channel: str
    raw: str
    symbol: str


@dataclass(frozen=True)
class ConnectionPlan:
    """One WebSocket connection: where it goes and what it carries."""

    name: str
    endpoint: str
    urls: tuple[str, ...]
    subscriptions: tuple[Subscription, ...]
    feeds_only: frozenset[str] = frozenset()
    """Channels subscribed only as another channel's snapshot source, not collected: their
    records feed books and are not emitted (nor are gap records for them)."""


@dataclass
class Outgoing:
    """One subscribe message and the subscriptions it carries."""

    req_id: int
    payload: Any
    subscriptions: list[Subscription]


def plan_connections(
    spec: ExchangeSpec,
    instance: str,
    symbols: list[str],
    channels: list[str],
    *,
    url_override: str | None = None,
) -> list[ConnectionPlan]:
    """Split subscriptions by endpoint, then into connections of at most ``max_streams`` each.

    A (channel, symbol) pair whose channel does not exist for the symbol (``for_symbols``) is
    left out.

    A book channel whose snapshots are another channel's records (``sync.snapshot_channel``)
    brings that channel's subscription along, on the same connection, just before its own.
    """
    # An ``also`` channel has no subscription of its own: its parent's carries it.
    wanted = [spec.channels[c].source or c for c in channels]
    sources = {_snapshot_channel(spec, c) for c in wanted} - {None}
    feeds_only = frozenset(c for c in sources if c is not None and c not in wanted)
    units: dict[str, list[list[Subscription]]] = {}
    seen: set[tuple[str, str]] = set()
    for channel in wanted:
        if channel in sources:
            continue  # subscribed with the channel it gives snapshots to
        endpoint = spec.channels[channel].endpoint
        source = _snapshot_channel(spec, channel)
        for symbol in symbols:
            if (channel, symbol) in seen:
                continue
            seen.add((channel, symbol))
            raw = spec.symbols.raw(symbol)
            if not applies(spec, channel, raw, symbol):
                continue
            unit = [Subscription(channel, raw, symbol)]
            if source is not None and (source, symbol) not in seen:
                seen.add((source, symbol))
                unit.insert(0, Subscription(source, raw, symbol))
            units.setdefault(endpoint, []).append(unit)
    plans = []
    for endpoint, members in units.items():
        ep = spec.endpoints[endpoint]
        size = ep.max_streams or sum(len(u) for u in members)
        urls = (url_override,) if url_override else ep.urls
        chunks: list[list[Subscription]] = [[]]
        for unit in members:  # a unit is never split across connections
            if chunks[-1] and len(chunks[-1]) + len(unit) > size:
                chunks.append([])
            chunks[-1].extend(unit)
        for n, chunk in enumerate(chunks):
            name = f"{instance}/{endpoint}#{n}"
            fed = feeds_only & {sub.channel for sub in chunk}
            plans.append(ConnectionPlan(name, endpoint, urls, tuple(chunk), frozenset(fed)))
    return plans


def applies(spec: ExchangeSpec, channel: str, raw: str, symbol: str) -> bool:
    """Does ``channel`` exist for ``symbol`` (its descriptor's ``for_symbols``)?"""
    rule = spec.channels[channel].for_symbols
    return rule is None or rule(raw, symbol)


def _snapshot_channel(spec: ExchangeSpec, channel: str) -> str | None:
    sync = spec.channels[channel].sync
    return sync.snapshot_channel if sync is not None else None


def normalize(value: Any) -> bytes:
    """A comparable form of a topic, key or ACK key (objects compare regardless of key order)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def topics_of(spec: ExchangeSpec, subs: list[Subscription]) -> list[Any]:
    """The topics of ``subs`` that have one (channels without a topic subscribe nothing), each
    once: several symbols may share one topic (a venue's per-instrument-type channel)."""
    out = []
    seen: set[bytes] = set()
    for s in subs:
        topic = spec.channels[s.channel].topic
        if topic is None:
            continue
        value = topic(s.raw, s.symbol)
        k = normalize(value)
        if k not in seen:
            seen.add(k)
            out.append(value)
    return out


def needs_subscribing(spec: ExchangeSpec, subs: Iterable[Subscription]) -> list[Subscription]:
    """The subscriptions a subscribe message must ask for (their channel has a topic)."""
    return [s for s in subs if spec.channels[s.channel].topic is not None]


def subscribe_messages(
    spec: ExchangeSpec, subs: list[Subscription], next_id: Callable[[], int]
) -> list[Outgoing]:
    """The subscribe messages for ``subs``, grouped and chunked as the descriptor says."""
    message = spec.subscribe.message
    assert message is not None
    groups: OrderedDict[bytes, tuple[Any, list[Subscription]]] = OrderedDict()
    for sub in subs:
        key_fn = spec.channels[sub.channel].key
        key = key_fn() if key_fn is not None else None
        if spec.subscribe.group == "all":
            group = b""
        elif spec.subscribe.group == "key":
            group = normalize(key)
        else:
            group = sub.raw.encode()
        groups.setdefault(group, (key, []))[1].append(sub)
    out = []
    for key, members in groups.values():
        size = spec.subscribe.chunk or len(members)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            req_id = next_id()
            raws = list(dict.fromkeys(s.raw for s in chunk))
            out.append(Outgoing(req_id, message(topics_of(spec, chunk), key, req_id, raws), chunk))
    return out


class SubscribeRejected(Exception):
    """The exchange refused every subscription of a connection."""


@dataclass
class AckResult:
    ok: bool
    reason: str | None
    latency: float


@dataclass
class AckTracker:
    """Matches ACK and error replies to the subscribe messages (or topics) waiting for them."""

    spec: ExchangeSpec
    clock: Callable[[], float]
    by_message: OrderedDict[str, tuple[asyncio.Future[AckResult], float]] = field(
        default_factory=OrderedDict
    )
    by_topic: OrderedDict[bytes, tuple[asyncio.Future[AckResult], float]] = field(
        default_factory=OrderedDict
    )
    unmatched: int = 0

    def expect(self, out: Outgoing) -> list[tuple[Subscription, asyncio.Future[AckResult]]]:
        """Futures resolved when the ACK (or error) for ``out`` arrives."""
        ack = self.spec.ack
        loop = asyncio.get_running_loop()
        now = self.clock()
        if ack is None:
            return []
        if ack.per == "topic":
            result = []
            for sub in out.subscriptions:
                fn = self.spec.channels[sub.channel].ack_key
                assert fn is not None
                key_fn = self.spec.channels[sub.channel].key
                key = key_fn() if key_fn is not None else None
                k = normalize(fn(sub.raw, sub.symbol, key))
                waiting = self.by_topic.get(k)  # a topic several symbols share: one ACK
                if waiting is not None and not waiting[0].done():
                    fut = waiting[0]
                else:
                    fut = loop.create_future()
                    self.by_topic[k] = (fut, now)
                result.append((sub, fut))
            return result
        fut = loop.create_future()
        self.by_message[str(out.req_id)] = (fut, now)
        return [(sub, fut) for sub in out.subscriptions]

    def _resolve(
        self, entry: tuple[asyncio.Future[AckResult], float] | None, ok: bool, reason: str | None
    ) -> bool:
        if entry is None:
            self.unmatched += 1
            return False
        fut, sent = entry
        if not fut.done():
            fut.set_result(AckResult(ok, reason, self.clock() - sent))
        return True

    def on_ack(self, msg: Any) -> bool:
        ack = self.spec.ack
        assert ack is not None
        ok = bool(ack.ok(msg)) if ack.ok is not None else True
        reason = None
        if not ok:
            reason = str(ack.reason(msg)) if ack.reason is not None else "rejected"
        if ack.per == "topic":
            assert ack.key is not None
            return self._resolve(self.by_topic.pop(normalize(ack.key(msg)), None), ok, reason)
        if ack.id is not None:  # ids compare as text: some venues echo 1 as "1"
            return self._resolve(self.by_message.pop(str(ack.id(msg)), None), ok, reason)
        entry = self.by_message.popitem(last=False)[1] if self.by_message else None
        return self._resolve(entry, ok, reason)

    def on_error(self, msg: Any) -> bool:
        """An error reply: fails the request it names, else the oldest one still waiting."""
        err = self.spec.error
        reason = str(err.reason(msg)) if err is not None and err.reason is not None else str(msg)
        req_id = err.id(msg) if err is not None and err.id is not None else None
        if req_id is not None and str(req_id) in self.by_message:
            return self._resolve(self.by_message.pop(str(req_id)), False, reason)
        if self.by_message:
            return self._resolve(self.by_message.popitem(last=False)[1], False, reason)
        if self.by_topic:
            return self._resolve(self.by_topic.popitem(last=False)[1], False, reason)
        return False
