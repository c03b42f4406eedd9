"""The REST side of the mock: captured replies served over HTTP/1.1 (h11, keep-alive)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from runtime.httpserver import H11Server, HttpRequest, Response
from runtime.mock.capture import RestReply, body_params

MAX_REQUEST_BYTES = 1 << 20

Reply = tuple[int, bytes]
Query = tuple[tuple[str, str], ...]


class RestIndex:
    """Captured replies by request method and URL path; the query that matches best wins.

    Score of a captured reply for a request: (query pairs equal, minus pairs that differ).
    Among equally good captured queries the first in capture order wins; when one query was
    captured several times, successive requests get the successive replies (wrapping around).
    ``HEAD`` is answered from ``GET`` replies when no ``HEAD`` reply was captured.
    """

    def __init__(self, replies: Iterable[RestReply]) -> None:
        self._by_path: dict[tuple[str, str], dict[Query, list[RestReply]]] = {}
        self._next: dict[tuple[str, str, Query], int] = {}
        for reply in replies:
            query = tuple(sorted(reply.query))
            groups = self._by_path.setdefault((reply.method, reply.path), {})
            groups.setdefault(query, []).append(reply)

    def paths(self) -> list[str]:
        """Captured paths; those of other methods than GET are prefixed with the method."""
        return sorted(
            {path if method == "GET" else f"{method} {path}" for method, path in self._by_path}
        )

    def methods(self, path: str) -> list[str]:
        """The methods with a captured reply at ``path`` (HEAD included where GET is)."""
        found = {method for method, p in self._by_path if p == path}
        if "GET" in found:
            found.add("HEAD")
        return sorted(found)

    def find(self, method: str, target: str) -> RestReply | None:
        """The reply for ``method`` at ``target`` (path and query), or None."""
        parts = urlsplit(target)
        path = parts.path or "/"
        method = method.upper()
        groups = self._by_path.get((method, path))
        if not groups and method == "HEAD":
            method = "GET"
            groups = self._by_path.get((method, path))
        if not groups:
            return None
        asked = dict(parse_qsl(parts.query, keep_blank_values=True))

        def score(query: Query) -> tuple[int, int]:
            have = dict(query)
            equal = sum(1 for k, v in asked.items() if have.get(k) == v)
            differ = sum(1 for k in asked.keys() | have.keys() if have.get(k) != asked.get(k))
            return equal, -differ

        best = max(groups, key=score)  # max() keeps the first of equal scores
        replies = groups[best]
        slot = (method, path, best)
        index = self._next.get(slot, 0)
        self._next[slot] = (index + 1) % len(replies)
        return replies[index]


def with_body_params(target: str, body: bytes) -> str:
    """``target`` with the request body's parameters (JSON object or form) added to its query,
    so that they are matched like query parameters."""
    params = body_params(body)
    if not params:
        return target
    sep = "&" if "?" in target else "?"
    return target + sep + urlencode(params)


class HttpServer:
    """The mock's REST listener: ``handle(method, target) -> (status, body)`` over HTTP/1.1,
    the request body's parameters added to ``target``'s query (:func:`with_body_params`);
    bodies that parse as JSON are served as ``application/json``."""

    def __init__(
        self,
        handle: Callable[[str, str], Reply],
        check: Callable[[str, str, Mapping[str, str]], Reply | None] | None = None,
    ) -> None:
        self._handle = handle
        self._check = check
        """``check(method, target, headers)``: a refusal (e.g. bad credentials) answered
        instead of ``handle``, or None."""
        self._server = H11Server(request_handler=self._respond, max_request_bytes=MAX_REQUEST_BYTES)

    @property
    def port(self) -> int:
        return self._server.port

    async def start(self, host: str, port: int) -> None:
        await self._server.start(host, port)

    async def stop(self) -> None:
        await self._server.stop()

    def _respond(self, request: HttpRequest) -> Response:
        target = with_body_params(request.target, request.body)
        method = request.method.upper()
        refused = self._check(method, target, request.headers) if self._check else None
        status, body = refused if refused is not None else self._handle(method, target)
        try:
            orjson.loads(body)
            ctype = "application/json"
        except orjson.JSONDecodeError:
            ctype = "text/plain; charset=utf-8"
        return status, ctype, body
