"""A small HTTP/1.1 server on asyncio streams and h11 (keep-alive; handlers see the method,
target and ``Accept``, or the whole request with its body).

Shared by the mock exchange's REST side and the /healthz + /metrics endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h11
import orjson

log = logging.getLogger("mdgen.http")

Response = tuple[int, str, bytes]
"""(status, content type, body)"""

Handler = Callable[[str, str, str], Response]
"""``handler(method, target, accept) -> response``."""


@dataclass(frozen=True)
class HttpRequest:
    """One request as a ``request_handler`` sees it (header names lower-case)."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


RequestHandler = Callable[[HttpRequest], Response]

_JSON = "application/json"


class H11Server:
    """Answers every request through ``handler`` (request bodies are read and discarded) or,
    when given instead, ``request_handler`` (bodies up to ``max_request_bytes``; larger: 413).

    ``idle_timeout`` closes keep-alive connections that stay silent that long (None: never);
    ``grace`` is how long :meth:`stop` lets open requests finish before cancelling them. A
    handler that raises gets a 500 answer and a log line; it never takes the server down.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        request_handler: RequestHandler | None = None,
        max_request_bytes: int = 1 << 20,
        idle_timeout: float | None = None,
        grace: float = 0.0,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        if (handler is None) == (request_handler is None):
            raise ValueError("H11Server needs exactly one of handler and request_handler")
        self.handler = handler
        self.request_handler = request_handler
        self.max_request_bytes = max_request_bytes
        self.idle_timeout = idle_timeout
        self.grace = grace
        self.extra_headers = list(extra_headers)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> None:
        """Listen; ``port`` 0 picks a free port (``self.port`` tells which)."""
        self._server = await asyncio.start_server(self._client, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection, idle keep-alive ones too."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._clients.values():
            writer.close()  # a handler waiting for the next request sees the end and returns
        tasks = set(self._clients)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.grace) if self.grace else ((), tasks)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._serve(reader, writer)
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("http client dropped", exc_info=True)  # garbage, hang-up or idle
        finally:
            self._clients.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_request_bytes)

        async def next_event() -> object:
            while True:
                event = conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                async with asyncio.timeout(self.idle_timeout):
                    conn.receive_data(await reader.read(65536))

        while True:
            try:
                request = await next_event()
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    body = b'{"error": "bad request"}'
                    await self._send(writer, conn, "GET", (exc.error_status_hint, _JSON, body))
                return
            if not isinstance(request, h11.Request):
                return  # ConnectionClosed or PAUSED
            payload = bytearray()
            while not isinstance(event := await next_event(), h11.EndOfMessage):
                if self.request_handler is None or not isinstance(event, h11.Data):
                    continue  # a plain handler never sees the body: discarded
                if len(payload) <= self.max_request_bytes:  # past the limit: read, not kept
                    payload += event.data
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            try:
                if self.request_handler is None:
                    assert self.handler is not None
                    response = self.handler(method, target, headers.get("accept", ""))
                elif len(payload) > self.max_request_bytes:
                    response = 413, _JSON, b'{"error": "request body too large"}'
                else:
                    req = HttpRequest(method, target, headers, bytes(payload))
                    response = self.request_handler(req)
            except Exception as exc:  # a bug must not take the server down: 500 and a log line
                log.exception("http: %s %s failed", method, target)
                response = 500, _JSON, orjson.dumps({"error": repr(exc)})
            await self._send(writer, conn, method, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _send(
        self, writer: asyncio.StreamWriter, conn: h11.Connection, method: str, response: Response
    ) -> None:
        status, content_type, body = response
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *self.extra_headers,
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
