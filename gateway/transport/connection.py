"""One HTTP/1.1 connection to a receiver: write a request, parse its answer with httptools.

A connection carries one request at a time. The answer's head and body are bounded (header
lines, header bytes, body cap); a body past the cap is cut there and the connection closed,
so the rest is never downloaded. A connection whose answer was complete and that both sides
keep alive goes back to its pool.
"""

from __future__ import annotations

import asyncio
import select
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from ..errors import AnswerTimeout, TransportError

MAX_LINE_SIZE = 8190  # bytes in the status line or in one header line
MAX_HEAD_BYTES = 64 * 1024  # bytes of the whole answer head (status line and headers)
MAX_HEADERS = 128  # header lines in one answer
CHUNK_FRAMING_BYTES = 64  # allowed per chunk for its size line and extensions

_poll = getattr(select, "poll", None)  # not on Windows


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined with ", "
    body: bytes  # at most the cap the request was sent with
    truncated: bool  # the body was longer than the cap


class Connection(asyncio.Protocol):
    """The protocol of one connection; `Transport` owns it and its pool slot."""

    def __init__(self, key: tuple[str, int, bool], on_idle: Callable[[Connection], None],
                 on_lost: Callable[[Connection], None]) -> None:
        self.key = key
        self.idle_since = 0.0
        self.requests = 0  # requests sent on this connection
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout_s = 0.0
        self._cap = 0
        self._received = 0  # bytes of the current answer's head and body so far
        self._body_seen = 0  # body bytes parsed, past the cap too
        self._chunks = 0
        self._answered = False  # any byte came back for the current request (interim answers too)
        self._keep_alive = False
        self._extra = False  # bytes came after the complete answer: the connection is out of step
        self._head_done = False
        self._status = 0
        self._headers: dict[str, str] = {}
        self._header_count = 0
        self._body: list[bytes] = []
        self._size = 0
        self._complete = False
        self._peer_closed = False  # the receiver's FIN came (eof_received)
        self._poller: select.poll | None = None  # the socket's, for `quiet`

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and _poll is not None:
            self._poller = _poll()
            self._poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._received += len(data)
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._complete:
                self._fail(TransportError("receiver switched protocols"))
            self._extra = True
        except httptools.HttpParserError as exc:
            if not self._complete and self._waiter is not None:  # not already settled by a callback
                self._fail(TransportError(f"answer is not valid HTTP: {exc}"))
            self._extra = True
        if self._waiter is None:
            return
        if self._complete:  # settled only now: bytes after the answer must not reach the pool
            self._settle(keep_alive=self._keep_alive and not self._extra)
        elif not self._head_done:
            if self._received > MAX_HEAD_BYTES:
                self._fail(TransportError(f"answer head longer than {MAX_HEAD_BYTES} bytes"))
        elif self._received - self._body_seen > 2 * MAX_HEAD_BYTES + CHUNK_FRAMING_BYTES * self._chunks:
            # Bytes that are neither head nor body: chunk sizes, extensions, trailer fields. The
            # parser buffers an unfinished line, so an endless one must be stopped here.
            self._fail(TransportError("answer has too much chunk framing or too many trailer bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost(self)
        if self._waiter is None:
            return
        if exc is None and self._head_done and not self._complete and self._delimited_by_close():
            self._complete = True
            self._settle(keep_alive=False)
            return
        if not self._answered and self.requests > 1:
            # Most likely the receiver closed the connection as idle just as the request went out,
            # but it may have read the request and acted on it: never sent again silently.
            why = ("connection closed before an answer (reused connection; the receiver may have read "
                   "the request)")
            reused = True
        else:
            why = "connection closed by the receiver" + (" before answering" if not self._answered else
                                                         " in the middle of the answer")
            reused = False
        if exc is not None:
            why += f" ({exc})"
        self._fail(TransportError(why, reused=reused))

    def eof_received(self) -> bool | None:
        self._peer_closed = True
        return False  # close our side too; connection_lost settles the request

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second answer to one request
            self._extra = True

    def on_status(self, status: bytes) -> None:
        if len(status) > MAX_LINE_SIZE:
            self._fail(TransportError(f"answer status line longer than {MAX_LINE_SIZE} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._waiter is None or self._complete:
            return
        self._header_count += 1
        if self._head_done:  # a trailer field of a chunked body: counted, never an answer header
            if self._header_count > 2 * MAX_HEADERS:
                self._fail(TransportError(f"answer has more than {MAX_HEADERS} trailer lines"))
            return
        if len(name) + len(value) + 4 > MAX_LINE_SIZE:
            self._fail(TransportError(f"answer header line longer than {MAX_LINE_SIZE} bytes"))
            return
        if self._header_count > MAX_HEADERS:
            self._fail(TransportError(f"answer has more than {MAX_HEADERS} header lines"))
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        if self._complete:
            return
        self._head_done = True
        self._status = self._parser.get_status_code()

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_body(self, body: bytes) -> None:
        if self._waiter is None or self._complete:
            return
        self._body_seen += len(body)
        room = self._cap - self._size
        if len(body) > room:  # past the cap: keep what fits, stop reading, drop the connection
            if room > 0:
                self._body.append(body[:room])
                self._size += room
            self._complete = True
            self._settle(keep_alive=False, truncated=True)
            return
        self._body.append(body)
        self._size += len(body)

    def on_message_complete(self) -> None:
        if self._waiter is None or self._complete:
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
            self._reset_answer()
            return
        self._complete = True  # settled once the bytes read so far are parsed (data_received)
        self._keep_alive = self._parser.should_keep_alive()

    # -- used by Transport -----------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return (self._transport is not None and not self._transport.is_closing() and self._waiter is None
                and not self._peer_closed)

    def quiet(self) -> bool:
        """Nothing is waiting to be read on this idle connection. A receiver's FIN, a reset or
        stray bytes that the kernel has but the event loop has not handled yet would show here:
        such a connection must not carry a request (the receiver has closed it, or is out of
        step). One `poll` with no wait (~1 us); True where poll is not available."""
        if self._poller is None:
            return True
        try:
            return not self._poller.poll(0)
        except OSError:
            return False

    def request(self, data: bytes, *, timeout_s: float, cap: int,
                reported_s: float | None = None) -> asyncio.Future[Answer]:
        """Send one request; the future is the answer, or a `TransportError` (`AnswerTimeout`
        after `timeout_s`, reported as the request's whole timeout `reported_s`)."""
        assert self._transport is not None and self._waiter is None
        loop = asyncio.get_running_loop()
        self.requests += 1
        self._waiter = waiter = loop.create_future()
        self._answered = False
        self._extra = False
        self._cap = cap
        self._timeout_s = timeout_s if reported_s is None else reported_s
        self._timer = loop.call_later(timeout_s, self._on_timeout)
        self._reset_answer()
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._waiter is not None:
            self._fail(TransportError("connection closed"))

    def abort(self) -> None:
        """Drop the connection at once: its request was cancelled (and so is its answer)."""
        waiter = self._detach()
        if self._transport is not None:
            self._transport.abort()
        if waiter is not None:
            waiter.cancel()

    # -- internals -------------------------------------------------------------------------

    def _reset_answer(self) -> None:
        self._received = 0
        self._body_seen = 0
        self._chunks = 0
        self._head_done = False
        self._status = 0
        self._headers = {}
        self._header_count = 0
        self._body = []
        self._size = 0
        self._complete = False

    def _delimited_by_close(self) -> bool:
        """An answer with neither a length nor chunked as its last coding ends when the
        receiver closes (RFC 9112, 6.3)."""
        if "content-length" in self._headers and "transfer-encoding" not in self._headers:
            return False
        codings = self._headers.get("transfer-encoding", "").lower().split(",")
        return codings[-1].strip() != "chunked"

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail(AnswerTimeout(f"timed out after {self._timeout_s:g}s"))

    def _detach(self) -> asyncio.Future[Answer] | None:
        """The pending request's future, taken off the connection, and its timer stopped."""
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter

    def _settle(self, *, keep_alive: bool, truncated: bool = False) -> None:
        waiter = self._detach()
        if waiter is None or waiter.done():
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        try:
            body, cut = _decoded(self._headers.get("content-encoding"), body, self._cap)
        except TransportError as exc:
            waiter.set_exception(exc)
            self.close()
            return
        answer = Answer(self._status, self._headers, body, truncated or cut)
        self._body = []
        if keep_alive and self._transport is not None:
            self._on_idle(self)
        else:
            self.close()
        waiter.set_result(answer)

    def _fail(self, exc: TransportError) -> None:
        waiter = self._detach()
        if self._transport is not None:
            self._transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


def _decoded(encoding: str | None, body: bytes, cap: int) -> tuple[bytes, bool]:
    """The body without gzip/deflate (for receivers that compress although asked not to), at
    most `cap` bytes of it, and whether the decoded body was longer."""
    if not encoding or not body:
        return body, False
    name = encoding.strip().lower()
    if name in ("identity", ""):
        return body, False
    if name not in ("gzip", "x-gzip", "deflate"):
        raise TransportError(f"answer uses an unsupported Content-Encoding: {encoding[:50]}")
    for wbits in ((31,) if "gzip" in name else (15, -15)):  # deflate: zlib-wrapped, or raw as some send it
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, cap + 1)  # one byte more tells a longer body from one of `cap`
        except zlib.error:
            continue
        return out[:cap], len(out) > cap
    raise TransportError(f"answer body is not valid {name}")
