"""A capture loaded for serving: WS frames classified by the spec, REST replies, known topics."""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson

from runtime.frames import Compression, FrameError, decode
from runtime.replay import PARSE_ERRORS
from runtime.spec import Context, ExchangeSpec

FrameKind = Literal["data", "unroutable", "meta"]
Pair = tuple[str, str]
"""(channel, symbol_raw)."""


@dataclass(frozen=True)
class Frame:
    """One captured WebSocket frame the mock may send.

    ``kind``: ``data`` (routed and parsed; ``pairs`` are the (channel, symbol_raw) of its
    records), ``unroutable`` (no route, routing/parse failed or no records: sent to every
    subscriber), ``meta`` (heartbeat/info: sent to every subscriber regardless of topics).
    ``text`` is the frame as received; ``raw`` the original bytes of a binary frame.
    """

    line: int
    ts: float
    conn: str
    kind: FrameKind
    text: str
    raw: bytes | None = None
    pairs: frozenset[Pair] = frozenset()


@dataclass(frozen=True)
class WsReply:
    """A captured reply to a WebSocket request (``[mock.request]``): ``position`` is the number
    of streamed frames (``Capture.frames``) captured before it; ``msg`` the decoded frame."""

    position: int
    frame: Frame
    msg: Any


@dataclass(frozen=True)
class RestReply:
    """One captured REST reply and the request it answered: ``query`` holds the URL's query
    parameters and those of the request body (``request_body``), ``method`` is upper-case."""

    line: int
    path: str
    query: tuple[tuple[str, str], ...]
    body: bytes
    status: int = 200
    method: str = "GET"


def norm(value: Any) -> bytes:
    """A value's identity for topic comparison: canonical JSON (sorted keys)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


@dataclass
class Capture:
    """Everything the mock serves from one capture file."""

    frames: list[Frame] = field(default_factory=list)
    """Frames streamed after a subscribe, in capture order (data, unroutable, meta)."""
    greeting: list[Frame] = field(default_factory=list)
    """Info frames the first capture connection received before anything else: sent on connect."""
    rest: list[RestReply] = field(default_factory=list)
    symbols: dict[str, str] = field(default_factory=dict)
    """Raw symbols seen in data records -> their canonical symbol."""
    counts: Counter[str] = field(default_factory=Counter)
    """Captured frames by route kind (plus ``unroutable``, ``skipped_meta``, ``rest``,
    ``reply``)."""
    acks: dict[bytes, str] = field(default_factory=dict)
    """For specs whose ACKs bind values (``ack.bind_key``) per topic: ACK key -> the captured
    ACK text, replayed by the mock so that the client binds what the captured data uses."""
    replies: dict[bytes, list[WsReply]] = field(default_factory=dict)
    """For specs with ``mock.request``: reply key (canonical JSON) -> the captured replies, in
    capture order. They are sent as answers to requests, never streamed."""

    def pairs(self) -> set[Pair]:
        """Every (channel, symbol_raw) that has data frames."""
        return {p for f in self.frames for p in f.pairs}


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            if raw.strip():
                entry = orjson.loads(raw)
                if isinstance(entry, dict):
                    yield number, entry


def load_capture(spec: ExchangeSpec, path: Path | None) -> Capture:
    """Read and classify a capture NDJSON (see shared/captures/README.md for the format)."""
    return classify(spec, _lines(path) if path is not None else ())


def classify(spec: ExchangeSpec, entries: Iterable[tuple[int, dict[str, Any]]]) -> Capture:
    """Classify capture entries: ``spec.route`` per frame, ACK bindings per capture connection."""
    cap = Capture()
    default: Compression = next(iter(spec.endpoints.values())).compression
    contexts: dict[str, Context] = {}
    primary: str | None = None
    greeting_open = True
    for line, entry in entries:
        if entry.get("kind") == "rest":
            cap.counts["rest"] += 1
            cap.rest.append(_rest_reply(line, entry))
            continue
        conn = str(entry.get("conn", ""))
        if primary is None:
            primary = conn
        text = str(entry.get("data", ""))
        raw = base64.b64decode(entry["data_b64"]) if "data_b64" in entry else None
        encoding = entry.get("encoding")
        compression: Compression = encoding if encoding in ("gzip", "deflate") else default
        ctx = contexts.setdefault(conn, Context())
        reply = _reply(spec, raw if raw is not None else text, compression)
        if reply is not None:
            cap.counts["reply"] += 1
            greeting_open = greeting_open and conn != primary
            frame = Frame(line, _ts(entry), conn, "data", text, raw)
            cap.replies.setdefault(reply[0], []).append(WsReply(len(cap.frames), frame, reply[1]))
            continue
        kind, pairs, route_kind = _classify_frame(
            spec, raw if raw is not None else text, compression, ctx, cap
        )
        cap.counts[route_kind] += 1
        if conn == primary and greeting_open:
            if kind == "meta" and route_kind == "info":
                cap.greeting.append(Frame(line, _ts(entry), conn, kind, text, raw))
                continue
            greeting_open = False
        if kind == "meta" and conn != primary:
            cap.counts["skipped_meta"] += 1
        elif kind is not None:
            cap.frames.append(Frame(line, _ts(entry), conn, kind, text, raw, pairs))
    return cap


def _classify_frame(
    spec: ExchangeSpec, payload: bytes | str, compression: Compression, ctx: Context, cap: Capture
) -> tuple[FrameKind | None, frozenset[Pair], str]:
    """(frame kind or None when the mock generates such frames itself, pairs, route kind)."""
    try:
        msg = decode(payload, compression)
        code = spec.route(msg, ctx)
    except (FrameError, *PARSE_ERRORS):
        return "unroutable", frozenset(), "unroutable"
    if code < 0:
        return "unroutable", frozenset(), "unroutable"
    route = spec.routes[code]
    if route.kind == "ack":
        _bind(spec, msg, ctx)
        _keep_ack(spec, msg, cap)
    if route.kind in ("heartbeat", "info"):
        return "meta", frozenset(), route.kind
    if route.kind != "data" or route.parse is None:
        return None, frozenset(), route.kind  # ack/error/ping/pong/reconnect: generated
    try:
        records = route.parse(msg, 0, ctx)
        pairs = frozenset((str(r["channel"]), str(r["symbol_raw"])) for r in records)
    except PARSE_ERRORS:
        return "unroutable", frozenset(), "unroutable"
    if not pairs:
        return "unroutable", frozenset(), "unroutable"
    for r in records:
        symbol = r.get("symbol")
        cap.symbols.setdefault(str(r["symbol_raw"]), symbol if isinstance(symbol, str) else "")
    return "data", pairs, "data"


def _reply(
    spec: ExchangeSpec, payload: bytes | str, compression: Compression
) -> tuple[bytes, Any] | None:
    """(reply key, decoded frame) when ``mock.request.reply_key`` says the frame is a reply."""
    rule = spec.mock.request if spec.mock is not None else None
    if rule is None:
        return None
    try:
        msg = decode(payload, compression)
        key = rule.reply_key(msg)
        return None if key is None else (norm(key), msg)
    except (FrameError, *PARSE_ERRORS, orjson.JSONEncodeError):
        return None


def _bind(spec: ExchangeSpec, msg: Any, ctx: Context) -> None:
    ack = spec.ack
    if ack is None or ack.bind_key is None or ack.bind_value is None:
        return
    with contextlib.suppress(*PARSE_ERRORS):
        ctx.bound[ack.bind_key(msg)] = ack.bind_value(msg)


def _keep_ack(spec: ExchangeSpec, msg: Any, cap: Capture) -> None:
    ack = spec.ack
    if ack is None or ack.bind_key is None or ack.key is None or ack.per != "topic":
        return
    with contextlib.suppress(*PARSE_ERRORS, orjson.JSONEncodeError):
        cap.acks.setdefault(norm(ack.key(msg)), orjson.dumps(msg).decode())


def _ts(entry: dict[str, Any]) -> float:
    ts = entry.get("recv_ts")
    return float(ts) if isinstance(ts, int | float) else 0.0


def _rest_reply(line: int, entry: dict[str, Any]) -> RestReply:
    """A ``kind: rest`` entry; ``method`` (default GET) and ``request_body`` are optional."""
    parts = urlsplit(str(entry.get("url", "")))
    status = entry.get("status")
    method = entry.get("method")
    request_body = entry.get("request_body")
    params = parse_qsl(parts.query, keep_blank_values=True)
    if isinstance(request_body, str):
        params += body_params(request_body.encode())
    return RestReply(
        line,
        parts.path or "/",
        tuple(params),
        str(entry.get("data", "")).encode(),
        status if isinstance(status, int) else 200,
        method.upper() if isinstance(method, str) and method.strip() else "GET",
    )


def body_params(body: bytes) -> list[tuple[str, str]]:
    """A request body's parameters, to match like query parameters: the members of a JSON
    object (strings as they are, other values as JSON), else form-encoded pairs."""
    if not body.strip():
        return []
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    if not isinstance(value, dict):
        return []
    return [
        (str(k), v if isinstance(v, str) else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode())
        for k, v in value.items()
    ]


class TopicIndex:
    """Maps subscription (topic, key) to the (channel, symbol_raw) pairs it stands for.

    Built from ``spec.channels[c].topic(raw, canonical)`` for every channel and every raw symbol
    of the capture; topics compare as canonical JSON. A channel with a key matches only when
    the request's key equals ``channel.key()`` (or when the spec's mock has no ``key`` rule).
    """

    def __init__(self, spec: ExchangeSpec, symbols: dict[str, str]) -> None:
        self._keyed: dict[tuple[bytes, bytes], set[Pair]] = {}
        self._by_topic: dict[bytes, set[Pair]] = {}
        self._unkeyed: dict[bytes, set[Pair]] = {}
        self.strings: dict[str, set[Pair]] = {}
        """String topics (for URL-mode subscriptions)."""
        for name, channel in spec.channels.items():
            if channel.topic is None:  # nothing to subscribe (e.g. a user stream)
                continue
            key = channel.key() if channel.key is not None else None
            for raw, canonical in symbols.items():
                symbol = canonical or _canonical(spec, raw)
                try:
                    topic = channel.topic(raw, symbol)
                    t = norm(topic)
                except (*PARSE_ERRORS, orjson.JSONEncodeError):
                    continue
                pair = (name, raw)
                self._by_topic.setdefault(t, set()).add(pair)
                if isinstance(topic, str):
                    self.strings.setdefault(topic, set()).add(pair)
                if channel.key is None:
                    self._unkeyed.setdefault(t, set()).add(pair)
                else:
                    self._keyed.setdefault((t, norm(key)), set()).add(pair)

    def lookup(self, topic: Any, key: Any, has_key: bool) -> set[Pair]:
        """Pairs of one requested topic (empty when unknown)."""
        try:
            t = norm(topic)
        except orjson.JSONEncodeError:
            return set()
        if not has_key:
            return set(self._by_topic.get(t, ()))
        try:
            k = norm(key)
        except orjson.JSONEncodeError:
            k = b""
        return self._unkeyed.get(t, set()) | self._keyed.get((t, k), set())


def _canonical(spec: ExchangeSpec, raw: str) -> str:
    try:
        return spec.symbols.canonical(raw)
    except ValueError:
        return raw
