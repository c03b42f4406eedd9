"""Decoding WebSocket frames into messages: decompression, then JSON (or plain text)."""

from __future__ import annotations

import zlib
from typing import Any, Literal

import orjson

Compression = Literal["none", "gzip", "deflate"]


class FrameError(ValueError):
    """A frame that cannot be decompressed or decoded."""


def decompress(payload: bytes, compression: Compression) -> bytes:
    """Undo the frame compression the descriptor declares (gzip or raw deflate)."""
    try:
        if compression == "gzip":
            return zlib.decompress(payload, 31)
        if compression == "deflate":
            return zlib.decompress(payload, -15)
    except zlib.error as exc:
        size = len(payload)
        raise FrameError(f"cannot {compression}-decompress a {size}-byte frame: {exc}") from exc
    return payload


def decode(payload: bytes | str, compression: Compression = "none") -> Any:
    """One frame as a message: JSON when it parses, else the frame's text (e.g. ``pong``)."""
    if isinstance(payload, bytes) and compression != "none":
        payload = decompress(payload, compression)
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        if isinstance(payload, bytes):
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FrameError(f"binary frame is neither JSON nor UTF-8 text: {exc}") from exc
        return payload
