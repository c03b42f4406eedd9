"""The REST side of the mock: captured replies served over HTTP/1.1 (h11, keep-alive)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

import orjson

from runtime.httpserver import H11Server, Response
from runtime.mock.capture import RestReply

MAX_REQUEST_BYTES = 1 << 20

Reply = tuple[int, bytes]


class RestIndex:
    """Captured replies by URL path; the query that matches best wins.

    Score of a captured reply for a request: (query pairs equal, minus pairs that differ).
    Among equally good captured queries the first in capture order wins; when one query was
    captured several times, successive requests get the successive replies (wrapping around).
    """

    def __init__(self, replies: Iterable[RestReply]) -> None:
        self._by_path: dict[str, dict[tuple[tuple[str, str], ...], list[RestReply]]] = {}
        self._next: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
        for reply in replies:
            query = tuple(sorted(reply.query))
            self._by_path.setdefault(reply.path, {}).setdefault(query, []).append(reply)

    def paths(self) -> list[str]:
        return sorted(self._by_path)

    def find(self, target: str) -> RestReply | None:
        parts = urlsplit(target)
        groups = self._by_path.get(parts.path or "/")
        if not groups:
            return None
        asked = dict(parse_qsl(parts.query, keep_blank_values=True))

        def score(query: tuple[tuple[str, str], ...]) -> tuple[int, int]:
            have = dict(query)
            equal = sum(1 for k, v in asked.items() if have.get(k) == v)
            differ = sum(1 for k in asked.keys() | have.keys() if have.get(k) != asked.get(k))
            return equal, -differ

        best = max(groups, key=score)  # max() keeps the first of equal scores
        replies = groups[best]
        slot = (parts.path or "/", best)
        index = self._next.get(slot, 0)
        self._next[slot] = (index + 1) % len(replies)
        return replies[index]


class HttpServer:
    """The mock's REST listener: ``handle(method, target) -> (status, body)`` over HTTP/1.1;
    bodies that parse as JSON are served as ``application/json``."""

    def __init__(self, handle: Callable[[str, str], Reply]) -> None:
        self._handle = handle
        self._server = H11Server(self._respond, max_request_bytes=MAX_REQUEST_BYTES)

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self, host: str, port: int) -> None:
        await self._server.start(host, port)

    async def stop(self) -> None:
        await self._server.stop()

    def _respond(self, method: str, target: str, accept: str) -> Response:
        status, body = self._handle(method, target)
        try:
            orjson.loads(body)
            ctype = "application/json"
        except orjson.JSONDecodeError:
            ctype = "text/plain; charset=utf-8"
        return status, ctype, body
