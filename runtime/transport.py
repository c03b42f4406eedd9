"""WebSocket transports behind one interface: ``websockets`` (default) and ``picows`` (fast)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Literal, Protocol

TransportName = Literal["websockets", "picows"]


class TransportError(Exception):
    """Connecting failed (refused, handshake rejected, timeout)."""


class TransportClosed(Exception):
    """The connection is closed; ``code``/``reason`` as the peer or the transport gave them."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"connection closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class Connection(Protocol):
    """One open WebSocket connection."""

    async def recv(self) -> bytes | str:
        """The next message (text as str, binary as bytes); raises TransportClosed."""
        ...

    async def send(self, data: str | bytes) -> None: ...

    async def close(self) -> None: ...


class Transport(Protocol):
    """Opens connections."""

    async def connect(
        self, url: str, *, timeout: float, ping_interval: float | None
    ) -> Connection: ...


# -- websockets ---------------------------------------------------------------------------------
class _WebsocketsConnection:
    def __init__(self, ws: object) -> None:
        from websockets.asyncio.client import ClientConnection

        assert isinstance(ws, ClientConnection)
        self._ws = ws

    async def recv(self) -> bytes | str:
        from websockets.exceptions import ConnectionClosed

        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            raise TransportClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from exc

    async def send(self, data: str | bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            await self._ws.send(data)
        except ConnectionClosed as exc:
            raise TransportClosed(None, "closed while sending") from exc

    async def close(self) -> None:
        await self._ws.close()


class WebsocketsTransport:
    """The ``websockets`` library (asyncio); answers and sends protocol pings itself."""

    async def connect(self, url: str, *, timeout: float, ping_interval: float | None) -> Connection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI

        try:
            ws = await connect(
                url,
                open_timeout=timeout,
                ping_interval=ping_interval,
                ping_timeout=None if ping_interval is None else max(ping_interval, 10.0),
                max_size=None,
                max_queue=1024,
                close_timeout=1,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise TransportError(f"cannot connect to {url}: {exc}") from exc
        return _WebsocketsConnection(ws)


# -- picows -------------------------------------------------------------------------------------
_TEXT: object = None
_BINARY: object = None
_CONTINUATION: object = None
_CLOSE: object = None


def _load_picows_types() -> None:
    global _TEXT, _BINARY, _CONTINUATION, _CLOSE
    from picows import WSMsgType

    _TEXT, _BINARY = WSMsgType.TEXT, WSMsgType.BINARY
    _CONTINUATION, _CLOSE = WSMsgType.CONTINUATION, WSMsgType.CLOSE


class _PicowsConnection:
    """Adapts picows' callback listener to ``recv()``; reassembles fragmented messages."""

    def __init__(self) -> None:
        self._queue: deque[bytes | str] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: TransportClosed | None = None
        self._parts: list[bytes] = []
        self._part_text = False
        self.transport: object = None

    # listener side (called by picows)
    def frame(self, frame: object) -> None:
        msg_type = frame.msg_type  # type: ignore[attr-defined]
        if msg_type is _TEXT or msg_type is _BINARY:
            if frame.fin and not self._parts:  # type: ignore[attr-defined]
                if msg_type is _TEXT:
                    self._push(frame.get_payload_as_utf8_text())  # type: ignore[attr-defined]
                else:
                    self._push(frame.get_payload_as_bytes())  # type: ignore[attr-defined]
                return
            self._part_text = msg_type is _TEXT
            self._parts = [frame.get_payload_as_bytes()]  # type: ignore[attr-defined]
        elif msg_type is _CONTINUATION:
            self._parts.append(frame.get_payload_as_bytes())  # type: ignore[attr-defined]
            if frame.fin:  # type: ignore[attr-defined]
                data = b"".join(self._parts)
                self._parts = []
                self._push(data.decode("utf-8") if self._part_text else data)
        elif msg_type is _CLOSE:
            self.lost(TransportClosed(frame.get_close_code(), frame.get_close_message() or ""))  # type: ignore[attr-defined]

    def _push(self, item: bytes | str) -> None:
        self._queue.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def lost(self, exc: TransportClosed) -> None:
        if self._closed is None:
            self._closed = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # consumer side
    async def recv(self) -> bytes | str:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    async def send(self, data: str | bytes) -> None:
        from picows import WSMsgType

        if self._closed is not None:
            raise TransportClosed(None, "closed while sending")
        if isinstance(data, str):
            self.transport.send(WSMsgType.TEXT, data.encode("utf-8"))  # type: ignore[attr-defined]
        else:
            self.transport.send(WSMsgType.BINARY, data)  # type: ignore[attr-defined]

    async def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_disconnected:  # type: ignore[attr-defined]
            from picows import WSCloseCode

            transport.send_close(WSCloseCode.OK)  # type: ignore[attr-defined]
            transport.disconnect()  # type: ignore[attr-defined]
        self.lost(TransportClosed(1000, "closed by client"))


class PicowsTransport:
    """``picows`` (Cython): several times the frame rate of ``websockets``; no deflate."""

    async def connect(self, url: str, *, timeout: float, ping_interval: float | None) -> Connection:
        from picows import WSError, WSListener, ws_connect

        _load_picows_types()
        conn = _PicowsConnection()

        class Listener(WSListener):
            def on_ws_connected(self, transport: object) -> None:
                conn.transport = transport

            def on_ws_frame(self, transport: object, frame: object) -> None:
                conn.frame(frame)

            def on_ws_disconnected(self, transport: object) -> None:
                conn.lost(TransportClosed(None, "disconnected"))

        try:
            transport, _ = await asyncio.wait_for(
                ws_connect(
                    Listener,
                    url,
                    websocket_handshake_timeout=timeout,
                    enable_auto_ping=ping_interval is not None,
                    auto_ping_idle_timeout=ping_interval or 10.0,
                    auto_ping_reply_timeout=max(ping_interval or 10.0, 10.0),
                    max_frame_size=64 * 1024 * 1024,
                ),
                timeout,
            )
        except (OSError, TimeoutError, WSError) as exc:
            raise TransportError(f"cannot connect to {url}: {exc}") from exc
        conn.transport = transport
        return conn


def make_transport(name: TransportName) -> Transport:
    """The transport selected in collector.toml (``[collector] transport``)."""
    if name == "picows":
        return PicowsTransport()
    return WebsocketsTransport()
