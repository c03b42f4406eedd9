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

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from runtime.httpserver import H11Server, Response

__all__ = ["MAX_REQUEST_BYTES", "OpsHttpServer", "Response"]

log = logging.getLogger("mdgen.ops.http")

MAX_REQUEST_BYTES = 16 * 1024
IDLE_TIMEOUT = 60.0
"""Seconds an idle keep-alive connection is kept open."""


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
        self._http: H11Server | None = None
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
        self._http = H11Server(
            self.respond,
            max_request_bytes=MAX_REQUEST_BYTES,
            idle_timeout=IDLE_TIMEOUT,
            grace=2.0,
            extra_headers=[(b"cache-control", b"no-store")],
        )
        await self._http.start(self.host, self.port)
        self.port = self._http.port

    async def _shutdown(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.stop()

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
