"""Test support: a real wire-protocol MongoDB server (nx-27017) and a fault-injecting TCP proxy.

``MDGEN_TEST_MONGO_URI`` set: tests run against that MongoDB instead of a local nx-27017.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

ENV_URI = "MDGEN_TEST_MONGO_URI"

ProxyMode = Literal["pass", "blackhole", "reset", "latency"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nx_binary() -> str | None:
    """The ``nx-27017`` executable (next to this Python, or on PATH), or None."""
    local = Path(sys.executable).parent / "nx-27017"
    if local.exists():
        return str(local)
    return shutil.which("nx-27017")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class NxServer:
    """One nx-27017 process (MongoDB wire protocol over SQLite) on 127.0.0.1.

    ``kill()`` is kill -9; ``start()`` again reuses the port and the database file, so
    acknowledged writes survive like on a real server.
    """

    def __init__(self, directory: Path | None = None, port: int | None = None) -> None:
        binary = nx_binary()
        if binary is None:
            raise RuntimeError("nx-27017 is not installed: pip install nx-27017")
        self.binary = binary
        self.directory = directory or Path(tempfile.mkdtemp(prefix="mdgen-nx-"))
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=1000"

    def start(self, timeout: float = 15.0) -> None:
        d = self.directory
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--host",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--db",
                str(d / "db.sqlite"),
                "--pid-file",
                str(d / "nx.pid"),
                "--log-file",
                str(d / "nx.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("nx-27017 did not start listening")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9, and wait until it is gone."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


_shared: NxServer | None = None


def shared_mongo_uri() -> str:
    """The URI tests use: ``MDGEN_TEST_MONGO_URI``, or one nx-27017 for the whole process."""
    uri = os.environ.get(ENV_URI)
    if uri:
        return uri
    global _shared
    if _shared is None:
        server = NxServer()
        server.start()
        atexit.register(shutil.rmtree, server.directory, True)
        atexit.register(server.kill)  # runs first
        _shared = server
    return _shared.uri


class TcpProxy:
    """A TCP proxy on 127.0.0.1 that injects network faults (runs its own event loop thread).

    Modes: ``pass``; ``latency`` (each chunk delayed by ``latency`` seconds); ``blackhole``
    (connections are accepted, nothing is forwarded either way); ``reset`` (every connection is
    aborted, new ones are aborted on accept).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode: ProxyMode = "pass"
        self.latency = 0.0
        self.accepted = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def uri(self, options: str = "serverSelectionTimeoutMS=1000") -> str:
        return f"mongodb://127.0.0.1:{self.port}/?{options}"

    def set_mode(self, mode: ProxyMode, latency: float = 0.0) -> None:
        asyncio.run_coroutine_threadsafe(self._set_mode(mode, latency), self._loop).result(5)

    async def _set_mode(self, mode: ProxyMode, latency: float) -> None:
        self.mode = mode
        self.latency = latency
        if mode == "reset":
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

    def stop(self) -> None:
        async def _stop() -> None:
            await self._set_mode("reset", 0.0)
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode == "reset":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                writer.transport.abort()
                return
            if self.mode == "blackhole":
                continue
            if self.mode == "latency" and self.latency > 0:
                await asyncio.sleep(self.latency)
            writer.write(data)
            await writer.drain()
