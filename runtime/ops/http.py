"""The /healthz and /metrics server: HTTP/1.1 with h11, by default on an event loop of its own
thread.

The collector's event loop can be busy for seconds at full load (a session reads buffered
frames without yielding); answering from a thread keeps answers within tens of milliseconds
whatever the load (the GIL changes hands at least every 5 ms). Answers only read the runtime's
objects (plain counters, containers copied first), and the thread costs nothing while nobody
asks. GET and HEAD only; keep-alive; other paths 404.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["MAX_REQUEST_BYTES", "OpsHttpServer", "Response"]

log = logging.getLogger("mdgen.ops.http")

MAX_REQUEST_BYTES = 16 * 1024
IDLE_TIMEOUT = 60.0
"""Seconds an idle keep-alive connection is kept open."""

Response = tuple[int, str, bytes]
"""(status, content type, body)"""

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_INDEX = (
    b"mdgen collector: /healthz (JSON; 200 healthy, 503 not), /livez (the same without the "
    b"sink's health), /metrics (Prometheus)\n"
)


class OpsHttpServer:
    """Serves ``/healthz`` and ``/livez`` from ``health(include_sink)`` (-> (healthy, document))
    and ``/metrics`` from a prometheus_client registry.

    ``threaded`` (default): on an event loop in a thread of its own, answering promptly however
    busy the collector's loop is; otherwise on the caller's loop (cheaper when scraped very
    often under full load, but answers wait for the loop; see docs/operations.md).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Callable[[bool], tuple[bool, dict[str, Any]]],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        threaded: bool = True,
    ) -> None:
        self.registry = registry
        self.health = health
        self.host = host
        self.port = port
        self.threaded = threaded
        self.scrapes = 0
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Listen; ``port`` 0 picks a free port (``self.port`` then tells which). Raises OSError
        when the address cannot be bound."""
        if not self.threaded:
            await self._listen()
        else:
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name="mdgen-ops-http", daemon=True
            )
            self._thread.start()
            try:
                await asyncio.wrap_future(ready)
            except BaseException:
                await asyncio.to_thread(self._thread.join, 5.0)
                self._thread = None
                raise
        log.info("serving /healthz and /metrics at %s", self.url, extra={"event": "http_listen"})

    async def stop(self) -> None:
        """Stop listening, close every connection (idle keep-alive ones too), end the thread."""
        if not self.threaded:
            await self._shutdown()
            return
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopping.set)
        await asyncio.to_thread(thread.join, 10.0)

    def _run(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve_forever(ready))
        finally:
            loop.close()

    async def _serve_forever(self, ready: concurrent.futures.Future[None]) -> None:
        self._stopping = asyncio.Event()
        try:
            await self._listen()
        except OSError as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        await self._stopping.wait()
        await self._shutdown()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in self._clients.values():
            writer.close()  # the handler sees the end of the stream and returns
        tasks = set(self._clients)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def respond(self, method: str, target: str, accept: str = "") -> Response:
        """The answer to one request (also used directly by tests and benchmarks)."""
        if method not in ("GET", "HEAD"):
            return 405, _JSON, b'{"error": "method not allowed"}'
        path = urlsplit(target).path.rstrip("/") or "/"
        if path in ("/healthz", "/livez"):
            healthy, doc = self.health(path == "/healthz")
            body = orjson.dumps(
                doc, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
            )
            return (200 if healthy else 503), _JSON, body
        if path == "/metrics":
            self.scrapes += 1
            encoder, content_type = choose_encoder(accept)
            return 200, content_type, encoder(self.registry)
        if path == "/":
            return 200, _TEXT, _INDEX
        return 404, _JSON, orjson.dumps({"error": "not found", "path": path})

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients[task] = writer
        try:
            await self._serve(reader, writer)
        except (h11.ProtocolError, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            log.debug("http client dropped", exc_info=True)
        finally:
            self._clients.pop(task, None)
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
                async with asyncio.timeout(IDLE_TIMEOUT):
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
            while not isinstance(await next_event(), h11.EndOfMessage):
                pass  # discard a request body
            method = request.method.decode("ascii", "replace")
            accept = next((v for k, v in request.headers if k == b"accept"), b"")
            try:
                response = self.respond(
                    method, request.target.decode("ascii", "replace"), accept.decode("latin-1")
                )
            except Exception as exc:  # a bug must not take the server down: 500 and a log line
                log.exception("http: %s %r failed", method, request.target)
                response = 500, _JSON, orjson.dumps({"error": repr(exc)})
            await self._send(writer, conn, method, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter, conn: h11.Connection, method: str, response: Response
    ) -> None:
        status, content_type, body = response
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        if method != "HEAD":
            writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
