"""The REST side of the mock: captured replies served over HTTP/1.1 (h11, keep-alive)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11
import orjson

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


_HANGUPS = (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError)


class HttpServer:
    """A minimal HTTP/1.1 server (h11) answering every request through ``handle(method, target)``.

    ``handle`` returns (status, body); bodies that parse as JSON are served as
    ``application/json``.
    """

    def __init__(self, handle: Callable[[str, str], Reply]) -> None:
        self._handle = handle
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):  # idle keep-alive connections included
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            # A client that sends garbage or hangs up mid-request just ends its connection.
            with contextlib.suppress(
                h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError
            ):
                await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)

        async def next_event() -> object:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                conn.receive_data(await reader.read(65536))

        while True:
            try:
                request = await next_event()
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    status = exc.error_status_hint
                    await self._send(writer, conn, "GET", status, b'{"error": "bad request"}')
                return
            if not isinstance(request, h11.Request):
                return  # ConnectionClosed or PAUSED
            while not isinstance(await next_event(), h11.EndOfMessage):
                pass  # discard a request body
            method = request.method.decode("ascii", "replace")
            status, body = self._handle(method, request.target.decode("ascii", "replace"))
            await self._send(writer, conn, method, status, body)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, conn: h11.Connection, method: str, status: int, body: bytes
    ) -> None:
        try:
            orjson.loads(body)
            ctype = b"application/json"
        except orjson.JSONDecodeError:
            ctype = b"text/plain; charset=utf-8"
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        assert data is not None
        writer.write(data)
        if method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
