"""The supervisor's protocol with a hook's runtime process (gateway/runtime/node/runner.js).

Frames of a 4-byte big-endian length and that much UTF-8 JSON, over one end of a Unix socket
pair whose other end the process got as a descriptor:

    runtime -> gateway, once:  {"ready": true}
    gateway -> runtime:        {"id": n, "body": "<request body>", "secrets": {name: value}}
    runtime -> gateway:        {"id": n, "status": 200, "body": "<answer body>"}

`Channel` is the gateway's end: an asyncio protocol that cuts frames out of the bytes as they
arrive and hands each message on at once, with no reader task in between (one turn of the event
loop less per answer than a stream reader).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from json.encoder import encode_basestring  # C: what json.dumps(s, ensure_ascii=False) uses
from typing import Any, cast

HEADER = struct.Struct(">I")
EARLY_MESSAGES = 16  # messages kept for a handler not bound yet (only `ready` comes unasked)


class ProtocolError(Exception):
    """The process sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(data)) + data


def encode_secrets(secrets: dict[str, str]) -> str:
    """The `secrets` member of a call, encoded once per set of secrets (not once per call)."""
    return json.dumps(secrets, separators=(",", ":"), ensure_ascii=False)


def encode_call(call_id: int, body: str, secrets: str) -> bytes:
    """A call's frame; `secrets` as `encode_secrets` made it. The same bytes as `encode`."""
    data = f'{{"id":{call_id:d},"body":{encode_basestring(body)},"secrets":{secrets}}}'.encode()
    return HEADER.pack(len(data)) + data


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except ValueError:
        raise ProtocolError("a frame is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame is not a JSON object")
    return message


class Channel(asyncio.Protocol):
    """The gateway's end of the socket pair. `bind(on_message, on_end)`: each message as it is
    complete, then once `on_end(reason)`: None when the stream ended or failed, else why the
    process broke the protocol (a `ProtocolError` from the framing or from `on_message`)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.transport: asyncio.Transport | None = None
        self._partial = bytearray()  # the start of a frame not complete yet
        self._need = HEADER.size  # bytes `_partial` must hold before a frame can be cut out of it
        self._on_message: Callable[[dict[str, Any]], None] | None = None
        self._on_end: Callable[[str | None], None] | None = None
        self._early: list[dict[str, Any]] = []
        self._ended = False
        self._end_reason: str | None = None

    def bind(self, on_message: Callable[[dict[str, Any]], None],
             on_end: Callable[[str | None], None]) -> None:
        self._on_message, self._on_end = on_message, on_end
        early, self._early = self._early, []
        try:
            for message in early:
                on_message(message)
        except ProtocolError as exc:
            self._finish(str(exc))
        if self._ended:
            on_end(self._end_reason)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        if self._partial:  # appended to in place: a large frame in many pieces is copied once
            self._partial += data
            if len(self._partial) < self._need:
                return
            data, self._partial = bytes(self._partial), bytearray()
        size, pos, total = HEADER.size, 0, len(data)
        try:
            while total - pos >= size:
                (length,) = HEADER.unpack_from(data, pos)
                if length > self.max_bytes:
                    raise ProtocolError(f"answer larger than {self.max_bytes} bytes")
                end = pos + size + length
                if total < end:
                    break
                message = decode(data[pos + size:end])
                pos = end
                self._deliver(message)
                if self._ended:
                    return
        except ProtocolError as exc:
            self._finish(str(exc))
            self.abort()
            return
        if pos < total:
            rest = total - pos
            self._partial = bytearray(data[pos:])
            self._need = size + HEADER.unpack_from(data, pos)[0] if rest >= size else size

    def eof_received(self) -> bool:
        if self._partial and not self._ended:
            self._partial = bytearray()
            self._finish("the stream ended inside a frame")
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(None)

    def _deliver(self, message: dict[str, Any]) -> None:
        if self._on_message is None:
            if len(self._early) >= EARLY_MESSAGES:
                raise ProtocolError("messages before the first call")
            self._early.append(message)
        else:
            self._on_message(message)

    def _finish(self, reason: str | None) -> None:
        if self._ended:
            return
        self._ended = True
        self._end_reason = reason
        if self._on_end is not None:
            self._on_end(reason)
