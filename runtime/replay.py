"""Run a capture (NDJSON of received frames and REST replies) through a generated module."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from runtime.booksync import BookOptions, BookStats, BookSyncs, gap_record
from runtime.convert import ts_s
from runtime.frames import FrameError, decode
from runtime.patterns import compile_template
from runtime.spec import Context, ExchangeSpec, Record

PARSE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)
"""What a parse function raises on a message whose shape does not fit its descriptor."""

MAX_SAMPLES = 20


@dataclass
class Problem:
    """A frame that was not turned into records: where it was, why, and its text."""

    line: int
    reason: str
    text: str


@dataclass
class ReplayReport:
    """What a replay saw: frames by kind, records by channel, and every frame not understood."""

    frames: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    unrecognized: int = 0
    malformed: int = 0
    samples: list[Problem] = field(default_factory=list)
    books: BookStats | None = None
    """Book sync counters when the replay keeps books."""
    final_books: list[Record] = field(default_factory=list)
    """The book of every (channel, symbol) at the end (``replay_lines`` with books)."""

    def note(self, problem: Problem, *, malformed: bool) -> None:
        if malformed:
            self.malformed += 1
        else:
            self.unrecognized += 1
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(problem)

    @property
    def clean(self) -> bool:
        return self.unrecognized == 0 and self.malformed == 0


class Replayer:
    """Feeds capture lines through one exchange's generated parser, keeping ACK-bound state.

    With ``books``, records of channels with sync rules pass through :class:`BookSyncs` as in a
    live session (REST snapshots come from the capture's REST lines): only records known to be
    good come out, plus a gap record (``gap_start``, ``gap_end``, ``reason``) per resync.
    """

    def __init__(self, spec: ExchangeSpec, *, books: BookOptions | None = None) -> None:
        self.spec = spec
        self.ctx = Context()
        self.report = ReplayReport()
        self._compression = next(iter(spec.endpoints.values())).compression
        self._rest = {ep.path: ep for ep in (spec.rest.endpoints.values() if spec.rest else ())}
        self._rest_templates = [  # paths with {placeholders}: their values join the query
            (compile_template(path), ep) for path, ep in self._rest.items() if "{" in path
        ]
        self.books = BookSyncs(spec, books) if books is not None else None
        if self.books is not None:
            self.report.books = self.books.stats
        self._last_ns = 0

    def frame(self, line: int, msg: Any, ts_recv: int) -> list[Record]:
        """Records of one WebSocket message (already decoded)."""
        spec = self.spec
        try:
            code = spec.route(msg, self.ctx)
        except PARSE_ERRORS as exc:
            self.report.note(Problem(line, f"routing failed: {exc!r}", _text(msg)), malformed=True)
            return []
        if code < 0:
            self.report.frames["unrecognized"] += 1
            self.report.note(Problem(line, "no rule matches", _text(msg)), malformed=False)
            return []
        route = spec.routes[code]
        self.report.frames[route.kind] += 1
        if route.kind == "ack" and spec.ack is not None and spec.ack.bind_key is not None:
            assert spec.ack.bind_value is not None
            try:
                self.ctx.bound[spec.ack.bind_key(msg)] = spec.ack.bind_value(msg)
            except PARSE_ERRORS as exc:
                self.report.note(
                    Problem(line, f"ACK binding failed: {exc!r}", _text(msg)), malformed=True
                )
        if route.parse is None:
            return []
        try:
            records = route.parse(msg, ts_recv, self.ctx)
        except PARSE_ERRORS as exc:
            self.report.note(
                Problem(line, f"channel '{route.channel}': {exc!r}", _text(msg)), malformed=True
            )
            return []
        books = self.books
        if books is not None and route.channel in books.channels:
            records = self._book_events(books.feed(route.channel, records))
        self._last_ns = ts_recv
        self.report.records.update(str(r["channel"]) for r in records)  # ``also``: several
        return records

    def rest(self, line: int, url: str, body: Any, ts_recv: int) -> list[Record]:
        """Records of one REST reply, matched to a declared endpoint by its URL path."""
        parts = urlsplit(url)
        endpoint = self._rest.get(parts.path)
        path_params: dict[str, str] = {}
        for template, candidate in self._rest_templates if endpoint is None else ():
            found = template.match(parts.path)
            if found is not None:
                endpoint, path_params = candidate, found
                break
        if endpoint is None:
            self.report.frames["rest_unrecognized"] += 1
            self.report.note(
                Problem(line, f"no REST endpoint has path {parts.path}", url), malformed=False
            )
            return []
        self.report.frames["rest"] += 1
        if endpoint.parse is None:
            return []
        query = dict(parse_qsl(parts.query)) | path_params
        try:
            records = endpoint.parse(body, query, ts_recv, self.ctx)
        except PARSE_ERRORS as exc:
            self.report.note(Problem(line, f"REST '{endpoint.name}': {exc!r}", url), malformed=True)
            return []
        books = self.books
        if books is not None and endpoint.channel in books.channels:
            records = self._book_events(books.snapshot(str(endpoint.channel), records))
        self.report.records[str(endpoint.channel)] += len(records)
        return records

    def _book_events(self, records: list[Record]) -> list[Record]:
        """Gap records first, then the book records; snapshot requests are the capture's job."""
        books = self.books
        assert books is not None
        books.requests.clear()
        if not books.gaps:
            return records
        gaps = [gap_record(self.spec.id, g, "replay") for g in books.gaps]
        books.gaps.clear()
        return gaps + records

    def finish(self) -> list[Record]:
        """Gap records of books still out of sync at the end of the capture."""
        if self.books is None:
            return []
        return [gap_record(self.spec.id, g, "replay") for g in self.books.close(self._last_ns)]

    def capture_line(self, line: int, entry: dict[str, Any]) -> list[Record]:
        """Records of one capture line (see shared/captures/README.md for the format)."""
        ts_recv = ts_s(repr(entry["recv_ts"]))
        if entry.get("kind") == "rest":
            try:
                body = orjson.loads(entry["data"])
            except orjson.JSONDecodeError as exc:
                self.report.note(
                    Problem(line, f"REST body is not JSON: {exc}", entry["data"]), malformed=True
                )
                return []
            return self.rest(line, str(entry.get("url", "")), body, ts_recv)
        payload: bytes | str = entry["data"]
        if "data_b64" in entry:
            payload = base64.b64decode(entry["data_b64"])
        try:
            msg = decode(payload, self._compression)
        except FrameError as exc:
            self.report.note(Problem(line, str(exc), str(entry.get("data"))), malformed=True)
            return []
        return self.frame(line, msg, ts_recv)


def replay_lines(
    spec: ExchangeSpec, lines: Iterable[bytes | str], *, books: BookOptions | None = None
) -> tuple[Iterator[tuple[int, Record]], ReplayReport]:
    """Lazily replay capture lines; yields (1-based line, record). The report fills as it runs.

    ``books``: keep order books (see :class:`Replayer`); the final books are then in
    ``report.final_books`` once the iterator is exhausted.
    """
    replayer = Replayer(spec, books=books)

    def run() -> Iterator[tuple[int, Record]]:
        number = 0
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
                replayer.report.note(
                    Problem(number, f"capture line is not JSON: {exc}", text), malformed=True
                )
                continue
            for record in replayer.capture_line(number, entry):
                yield number, record
        for record in replayer.finish():
            yield number, record
        if replayer.books is not None:
            replayer.report.final_books = replayer.books.final_books()

    return run(), replayer.report


def _text(msg: Any) -> str:
    text = msg if isinstance(msg, str) else orjson.dumps(msg).decode()
    return text if len(text) <= 300 else text[:300] + "..."
