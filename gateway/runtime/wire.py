"""The supervisor's protocol with a hook's runtime process (gateway/runtime/node/runner.js).

Frames of a 4-byte big-endian length and that much UTF-8 JSON, over one end of a Unix socket
pair whose other end the process got as a descriptor:

    runtime -> gateway, once:  {"ready": true}
    gateway -> runtime:        {"id": n, "body": "<request body>", "secrets": {name: value}}
    runtime -> gateway:        {"id": n, "status": 200, "body": "<answer body>"}
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """The process sent something that is not a frame of this protocol."""


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any] | None:
    """The next message; None at a clean end of the stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the stream ended inside a frame") from None
        return None
    (size,) = HEADER.unpack(head)
    if size > max_bytes:
        raise ProtocolError(f"answer larger than {max_bytes} bytes")
    try:
        data = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None
    try:
        message = json.loads(data)
    except ValueError:
        raise ProtocolError("a frame is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame is not a JSON object")
    return message
