"""A hook's process's console (its stdout and stderr, one pipe): read on a budget, its last bytes
kept to explain how the process ended, with the hook's secrets taken out.

A script may print without end. Reading it as fast as it comes cost the gateway half of a core,
so the gateway reads at most OUTPUT_BYTES_PER_S (after a first OUTPUT_BURST_BYTES), each read
counted as MIN_READ_CHARGE at least, so that a script writing a byte at a time cannot wake the
gateway more often either: past the budget the pipe is not read until the budget has refilled,
and a script writing more blocks on the full pipe (node writes to pipes synchronously). Nothing
else is done with the output than keeping its tail: a script that prints a lot is only slowed down.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterable
from typing import cast

OUTPUT_TAIL_BYTES = 2048  # the last bytes of the output, kept for the reason of an end
OUTPUT_BYTES_PER_S = 1 << 20  # read at most this much a second, in the long run
OUTPUT_BURST_BYTES = 1 << 20  # and at most this much at once
MIN_READ_CHARGE = 4096  # each read costs at least this much of the budget: at most 256 reads a second
PIPE_READ_BYTES = 256 * 1024  # what one read of the pipe may return (asyncio's pipe transport)
SECRET_MIN_CHARS = 4  # shorter secret values are left in the output: they would blank out words
REDACTED = "[secret]"


class Output(asyncio.Protocol):
    """The gateway's end of the pipe. `ended` is done once the pipe is closed (every writer gone)."""

    def __init__(self, *, rate: float = OUTPUT_BYTES_PER_S, burst: float = OUTPUT_BURST_BYTES) -> None:
        self._loop = asyncio.get_running_loop()
        self.ended: asyncio.Future[None] = self._loop.create_future()
        self._tail = b""
        self._cut = False  # output before the tail was dropped: its first line may be a part of one
        self._rate, self._burst = rate, burst
        self._tokens = burst
        self._stamp = self._loop.time()
        self._unlimited = False
        self._resume: asyncio.TimerHandle | None = None
        self._transport: asyncio.ReadTransport | None = None

    @classmethod
    async def open(cls) -> tuple[Output, int]:
        """A pipe read by a new Output; and its write end, for the child (the caller closes it)."""
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            output = cls()
            pipe = os.fdopen(read, "rb", buffering=0)
            await asyncio.get_running_loop().connect_read_pipe(lambda: output, pipe)
        except BaseException:
            os.close(write)
            raise
        return output, write

    def tail(self, secrets: Iterable[str] = ()) -> str:
        """The last output, each of `secrets` (of SECRET_MIN_CHARS or more) as REDACTED, as it is
        or as it would be in a JSON string; without its first line when that was cut, which could
        start inside a secret."""
        secrets = [value for value in secrets if len(value) >= SECRET_MIN_CHARS]
        text = self._tail.decode("utf-8", "replace")
        if self._cut and secrets:
            text = text.partition("\n")[2]
        return redact(text, secrets)

    def unlimit(self) -> None:
        """The process ended: what is left in the pipe (at most its capacity) is read at once."""
        self._unlimited = True
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def close(self) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.ReadTransport, transport)  # a pipe's (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        size = len(data)
        if size >= OUTPUT_TAIL_BYTES:
            self._tail, self._cut = data[-OUTPUT_TAIL_BYTES:], True
        else:
            self._cut = self._cut or len(self._tail) + size > OUTPUT_TAIL_BYTES
            self._tail = (self._tail + data)[-OUTPUT_TAIL_BYTES:]
        if self._unlimited or self._transport is None:
            return
        now = self._loop.time()
        refilled = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._tokens = refilled - max(size, MIN_READ_CHARGE)
        self._stamp = now
        if self._tokens < 0 and self._resume is None:
            self._transport.pause_reading()
            self._resume = self._loop.call_later(-self._tokens / self._rate, self._refilled)

    def _refilled(self) -> None:
        self._resume = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        if not self.ended.done():
            self.ended.set_result(None)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each of `secrets` of SECRET_MIN_CHARS or more as REDACTED, the longest first (a
    secret holding another goes whole), as it is and JSON-escaped; and so the start of one that
    `text` ends with (output cut in the middle of a write)."""
    values: set[str] = set()
    for value in secrets:
        if len(value) >= SECRET_MIN_CHARS:
            values.add(value)
            values.add(json.dumps(value, ensure_ascii=False)[1:-1])
    for value in sorted(values, key=len, reverse=True):
        text = _redact_end(text.replace(value, REDACTED), value)
    return text


def _redact_end(text: str, value: str) -> str:
    """`text` ending with the first SECRET_MIN_CHARS or more characters of `value` as REDACTED."""
    head = value[:SECRET_MIN_CHARS]
    at = text.find(head, max(0, len(text) - len(value) + 1))
    while at != -1:
        if value.startswith(text[at:]):
            return text[:at] + REDACTED
        at = text.find(head, at + 1)
    return text
