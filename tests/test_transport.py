"""The outbound HTTP client (`gateway.transport`) against real peers on loopback.

Two kinds of peer: aiohttp servers (`receiver`), for what a well-behaved receiver sees and
answers, and raw asyncio servers (`raw_server`), whose answers the tests write byte by byte to
send odd, malformed or endless HTTP. Every wait is bounded (`until`), and the only sleeps are the
short polls inside it and the delays a timeout test needs. The netguard plugin fails any test
that connects beyond loopback; names that must never reach DNS go through `FakeResolver`.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import socket
import ssl
import struct
import sys
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import ResolveResult
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakes import FakeResolver
from multidict import CIMultiDict, CIMultiDictProxy
from sockets import blackhole

from gateway.delivery.attempt import send
from gateway.errors import AnswerTimeout, BadRequest, ConnectTimeout, DestinationRefused, TransportError
from gateway.metrics import Metrics
from gateway.peers import Cidrs, networks
from gateway.transport import Answer, Target, Transport

LOOPBACK = networks(["127.0.0.0/8", "::1/128"])
CAP = 256 * 1024
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

ServerFactory = Callable[..., Awaitable[TestServer]]
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="only Linux routes all of 127.0.0.0/8")


def target(url: str) -> Target:
    return Target.of(url, allow_http=True, allow_cidrs=LOOPBACK)


async def post(
    transport: Transport,
    url: str,
    body: bytes = b'{"event":1}',
    headers: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 5.0,
    body_cap: int = CAP,
) -> Answer:
    headers = {"Content-Type": "application/json"} if headers is None else headers
    return await transport.post(target(url), body, headers, timeout_s=timeout_s, body_cap=body_cap)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, bounded, until `condition()` holds (for what a server saw, which lags the client)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"still not true after {timeout}s")
        await asyncio.sleep(0.005)


def raw_answer(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{lines}\r\n".encode() + body


@pytest.fixture
async def make_transport() -> AsyncIterator[Callable[..., Transport]]:
    """Transports allowed to reach loopback unless told otherwise; all closed at teardown."""
    made: list[Transport] = []

    def make(**options: Any) -> Transport:
        options.setdefault("allow_cidrs", LOOPBACK)
        made.append(Transport(**options))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def transport(make_transport: Callable[..., Transport]) -> Transport:
    return make_transport()  # in a running loop, as Transport() needs


# --- peers --------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as an aiohttp receiver saw it."""

    method: str
    raw_path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer: tuple[str, int]
    secure: bool


@dataclass
class Receiver:
    server: TestServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    @property
    def connections(self) -> int:
        """TCP connections the requests came on (told apart by the client's address and port)."""
        return len({s.peer for s in self.seen})


Respond = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
def receiver(aiohttp_server: ServerFactory) -> ReceiverFactory:
    async def make(respond: Respond | None = None, **server_options: Any) -> Receiver:
        async def handle(request: web.Request) -> web.StreamResponse:
            assert request.transport is not None
            host, port = request.transport.get_extra_info("peername")[:2]
            body = await request.read()
            made.seen.append(Seen(request.method, request.raw_path, request.headers, body, (host, port),
                                  request.secure))
            return await respond(request) if respond is not None else web.Response(text="ok")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        made = Receiver(await aiohttp_server(app, **server_options))
        return made

    return make


@dataclass
class RawPeer:
    """A raw asyncio server on loopback; its handler writes the answers byte by byte."""

    port: int = 0
    accepts: int = 0  # TCP connections accepted
    requests: list[bytes] = field(default_factory=list)  # every request read, head and body
    hangups: int = 0  # connections on which a handler saw the client close

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@dataclass
class RawConn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: RawPeer
    number: int  # 1 for the first connection the server accepted

    async def read_request(self) -> bytes | None:
        """One request (head, and a body of Content-Length), recorded; None once the client closed."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        request = head + await self.reader.readexactly(length)
        self.peer.requests.append(request)
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def serve(self, answer: bytes = OK) -> None:
        """Answer every request on this connection with `answer` until the client closes."""
        while await self.read_request() is not None:
            await self.send(answer)
        self.peer.hangups += 1

    async def wait_hangup(self) -> None:
        """Read and drop whatever comes until the client closes its side."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.peer.hangups += 1


RawHandler = Callable[[RawConn], Awaitable[None]]
RawServerFactory = Callable[[RawHandler], Awaitable[RawPeer]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServerFactory]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def make(handler: RawHandler) -> RawPeer:
        peer = RawPeer()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            peer.accepts += 1
            try:
                await handler(RawConn(reader, writer, peer, peer.accepts))
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client went away mid-answer: what some tests do on purpose
            except asyncio.CancelledError:
                pass  # the teardown below (3.11's start_server logs a cancelled handler as an error)
            finally:
                writer.close()

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        servers.append(server)
        peer.port = server.sockets[0].getsockname()[1]
        return peer

    yield make
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


# --- keep-alive ---------------------------------------------------------------------------


async def test_sequential_posts_reuse_one_connection(transport: Transport, receiver: ReceiverFactory) -> None:
    got = await receiver()
    answers = [await post(transport, got.url(), b"n%d" % i) for i in range(3)]
    assert [(a.status, a.body) for a in answers] == [(200, b"ok")] * 3
    assert [s.body for s in got.seen] == [b"n0", b"n1", b"n2"]
    assert got.connections == 1
    assert transport.idle_connections == 1


async def test_concurrent_posts_open_several_connections_then_reuse_them(
    transport: Transport, receiver: ReceiverFactory
) -> None:
    arrived = asyncio.Event()

    async def hold_until_three(request: web.Request) -> web.StreamResponse:
        if len(got.seen) >= 3:
            arrived.set()
        async with asyncio.timeout(5):
            await arrived.wait()  # all three are in flight at once, so none can share
        return web.Response(text="ok")

    got = await receiver(hold_until_three)
    answers = await asyncio.gather(*(post(transport, got.url(), b"c%d" % i) for i in range(3)))
    assert [a.status for a in answers] == [200, 200, 200]
    assert got.connections == 3
    assert transport.idle_connections == 3

    for i in range(3):
        assert (await post(transport, got.url(), b"s%d" % i)).status == 200
    assert got.connections == 3  # the pooled ones, no new connection
    assert transport.idle_connections == 3


async def test_idle_connection_is_closed_after_the_keepalive_time(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory
) -> None:
    peer = await raw_server(RawConn.serve)
    transport = make_transport(keepalive_s=0.1)
    assert (await post(transport, peer.url)).status == 200
    assert transport.idle_connections == 1
    await until(lambda: peer.hangups == 1)  # the client closed it: the server saw the disconnect
    assert transport.idle_connections == 0


# --- the request as the receiver sees it --------------------------------------------------


async def test_receiver_sees_the_post_as_sent(transport: Transport, receiver: ReceiverFactory) -> None:
    got = await receiver()
    body = bytes(range(256)) * 3  # every byte value, not valid UTF-8
    headers = {"Content-Type": "application/octet-stream", "X-Hook-Id": "hk_1", "Webhook-Id": "msg_2"}
    answer = await post(transport, got.url("/hooks/a%2Fb/%C3%A9?x=1&y=%26%3D%2B%23%20&z"), body, headers)
    assert answer.status == 200
    (seen,) = got.seen
    assert seen.method == "POST"
    assert seen.raw_path == "/hooks/a%2Fb/%C3%A9?x=1&y=%26%3D%2B%23%20&z"  # encoding and query kept as given
    assert seen.headers["Host"] == f"127.0.0.1:{got.port}"
    assert seen.headers["Content-Length"] == str(len(body))
    assert "Transfer-Encoding" not in seen.headers
    for name, value in headers.items():
        assert seen.headers.getall(name) == [value]
    assert seen.body == body


async def test_empty_body_is_sent_with_content_length_zero(
    transport: Transport, receiver: ReceiverFactory
) -> None:
    got = await receiver()
    assert (await post(transport, got.url("/"), b"", {})).status == 200
    (seen,) = got.seen
    assert seen.headers["Content-Length"] == "0"
    assert seen.body == b""


@pytest.mark.parametrize(
    ("url", "head"),
    [
        ("http://hooks.example.test/x", b"POST /x HTTP/1.1\r\nHost: hooks.example.test\r\n"),
        ("https://hooks.example.test:443/x?a=b", b"POST /x?a=b HTTP/1.1\r\nHost: hooks.example.test\r\n"),
        ("https://hooks.example.test:8443", b"POST / HTTP/1.1\r\nHost: hooks.example.test:8443\r\n"),
        ("http://[::1]:8080/x#frag", b"POST /x HTTP/1.1\r\nHost: [::1]:8080\r\n"),
    ],
)
def test_target_renders_the_request_line_and_host(url: str, head: bytes) -> None:
    # A default port is left out of Host, as receivers that check Host expect; no DNS here.
    assert target(url).head == head


# --- answers ------------------------------------------------------------------------------


async def test_answer_with_content_length(transport: Transport, receiver: ReceiverFactory) -> None:
    async def created(request: web.Request) -> web.StreamResponse:
        return web.Response(status=201, body=b'{"id":"x1"}', content_type="application/json")

    got = await receiver(created)
    answer = await post(transport, got.url())
    assert (answer.status, answer.body, answer.truncated) == (201, b'{"id":"x1"}', False)
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["content-length"] == "11"
    assert transport.idle_connections == 1


async def test_chunked_answer_is_joined(transport: Transport, receiver: ReceiverFactory) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in (b"first,", b"second,", b"x" * 10_000):
            await response.write(piece)
        await response.write_eof()
        return response

    got = await receiver(chunked)
    for _ in range(2):
        answer = await post(transport, got.url())
        assert answer.headers["transfer-encoding"] == "chunked"
        assert answer.body == b"first,second," + b"x" * 10_000
        assert not answer.truncated
    assert got.connections == 1  # a complete chunked answer keeps the connection
    assert transport.idle_connections == 1


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
async def test_answer_delimited_by_connection_close(
    transport: Transport, raw_server: RawServerFactory, version: str
) -> None:
    body = b"no length, ends when the receiver closes " * 100

    async def close_delimited(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(f"{version} 200 OK\r\nContent-Type: text/plain\r\n\r\n".encode())
        await conn.send(body[:100])
        await conn.send(body[100:])
        # the handler returns and the connection is closed: that ends the body

    peer = await raw_server(close_delimited)
    for _ in range(2):
        answer = await post(transport, peer.url)
        assert (answer.status, answer.body, answer.truncated) == (200, body, False)
        assert transport.idle_connections == 0
    assert peer.accepts == 2


async def test_answer_delimited_by_close_but_reset_is_not_taken_as_complete(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """A reset is not the end of a close-delimited body: what came may be only part of it."""

    async def resets_midway(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"status\":")
        await asyncio.sleep(0.05)
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.writer.transport.abort()  # with a zero linger time: a reset, not a FIN

    peer = await raw_server(resets_midway)
    with pytest.raises(TransportError, match="in the middle of the answer") as info:
        await post(transport, peer.url)
    assert not info.value.unsent


async def test_connection_close_answer_is_not_pooled(transport: Transport, receiver: ReceiverFactory) -> None:
    async def closing(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="bye")
        response.force_close()
        return response

    got = await receiver(closing)
    for _ in range(2):
        answer = await post(transport, got.url())
        assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"bye", "close")
        assert transport.idle_connections == 0
    assert got.connections == 2


@pytest.mark.parametrize("split", [True, False], ids=["separate-writes", "one-write"])
async def test_interim_100_continue_is_skipped(
    transport: Transport, raw_server: RawServerFactory, split: bool
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
    final = raw_answer(b"real", "X-Final: 1", status="202 Accepted")

    async def continue_then_answer(conn: RawConn) -> None:
        while await conn.read_request() is not None:
            if split:
                await conn.send(interim)
                await asyncio.sleep(0)
                await conn.send(final)
            else:
                await conn.send(interim + final)

    peer = await raw_server(continue_then_answer)
    for _ in range(2):
        answer = await post(transport, peer.url)
        assert (answer.status, answer.body) == (202, b"real")
        assert "x-interim" not in answer.headers  # only the final answer's headers
        assert answer.headers["x-final"] == "1"
    assert peer.accepts == 1  # kept alive across the interim answers


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", zlib.compress)],
)
async def test_compressed_answer_is_decoded(
    transport: Transport, receiver: ReceiverFactory, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    plain = b'{"status":"success","data":{"note":"' + b"z" * 5000 + b'"}}'

    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(body=compress(plain), headers={"Content-Encoding": encoding})

    got = await receiver(compressed)
    answer = await post(transport, got.url())
    assert answer.body == plain
    assert not answer.truncated


async def test_compressed_answer_decoding_past_the_cap_is_marked_truncated(
    transport: Transport, receiver: ReceiverFactory
) -> None:
    """The cap holds for the decoded body, and a body cut at the cap must say so: deliveries
    record "answer larger than N bytes" only when `truncated` is set."""
    plain = b"a" * 100_000

    async def compressed(request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip.compress(plain), headers={"Content-Encoding": "gzip"})

    got = await receiver(compressed)
    answer = await post(transport, got.url(), body_cap=1000)  # ~130 bytes on the wire
    assert answer.body == plain[:1000]
    assert answer.truncated


async def test_unsupported_content_encoding_fails(transport: Transport, receiver: ReceiverFactory) -> None:
    async def brotli(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x0b\x01\x80hi\x03", headers={"Content-Encoding": "br"})

    got = await receiver(brotli)
    with pytest.raises(TransportError, match="unsupported Content-Encoding: br"):
        await post(transport, got.url())


async def test_answer_header_names_are_lower_case_and_repeats_joined(
    transport: Transport, receiver: ReceiverFactory
) -> None:
    async def headers(request: web.Request) -> web.StreamResponse:
        return web.Response(
            text="ok",
            headers=CIMultiDict([("X-Multi", "a"), ("X-CamelCase", "Keep Value Case"), ("x-multi", "b"),
                                 ("X-MULTI", "c"), ("Retry-After", "30")]),
        )

    got = await receiver(headers)
    answer = await post(transport, got.url())
    assert all(name == name.lower() for name in answer.headers)
    assert answer.headers["x-multi"] == "a, b, c"
    assert answer.headers["x-camelcase"] == "Keep Value Case"
    assert answer.headers["retry-after"] == "30"


# --- caps ---------------------------------------------------------------------------------


async def test_body_over_the_cap_is_cut_and_the_connection_dropped(
    transport: Transport, receiver: ReceiverFactory
) -> None:
    data = bytes(i % 251 for i in range(200_000))

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data)

    got = await receiver(big)
    answer = await post(transport, got.url(), body_cap=1000)
    assert (answer.status, answer.body, answer.truncated) == (200, data[:1000], True)
    assert transport.idle_connections == 0  # the rest is never read: the connection goes

    small = await post(transport, got.url(), body_cap=len(data))
    assert (small.body, small.truncated) == (data, False)
    assert got.connections == 2


async def test_chunked_body_over_the_cap_is_cut(transport: Transport, raw_server: RawServerFactory) -> None:
    async def endless_chunks(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10_000):  # bounded; the client stops reading long before
            await conn.send(b"400\r\n" + b"y" * 0x400 + b"\r\n")

    peer = await raw_server(endless_chunks)
    answer = await post(transport, peer.url, body_cap=5000)
    assert (answer.body, answer.truncated) == (b"y" * 5000, True)
    assert transport.idle_connections == 0


@pytest.mark.parametrize("size", [0, 1, 1000])
async def test_body_of_exactly_the_cap_is_whole(
    transport: Transport, receiver: ReceiverFactory, size: int
) -> None:
    data = b"q" * size

    async def exact(request: web.Request) -> web.StreamResponse:
        return web.Response(body=data)

    got = await receiver(exact)
    answer = await post(transport, got.url(), body_cap=size)
    assert (answer.body, answer.truncated) == (data, False)
    assert transport.idle_connections == 1


async def test_header_line_over_8190_bytes_fails(transport: Transport, raw_server: RawServerFactory) -> None:
    async def long_header(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(raw_answer(b"ok", "X-Long: " + "a" * 8190))

    peer = await raw_server(long_header)
    with pytest.raises(TransportError, match="8190"):
        await post(transport, peer.url)
    assert transport.idle_connections == 0


async def test_header_line_under_8190_bytes_is_accepted(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    value = "b" * (8190 - len("X-Long: \r\n"))

    async def long_header(conn: RawConn) -> None:
        await conn.serve(raw_answer(b"ok", f"X-Long: {value}"))

    peer = await raw_server(long_header)
    assert (await post(transport, peer.url)).headers["x-long"] == value


@pytest.mark.parametrize("count", [128, 129])
async def test_at_most_128_header_lines(
    transport: Transport, raw_server: RawServerFactory, count: int
) -> None:
    lines = [f"X-H{i}: {i}" for i in range(count - 1)]  # and Content-Length

    async def many_headers(conn: RawConn) -> None:
        await conn.serve(raw_answer(b"ok", *lines))

    peer = await raw_server(many_headers)
    if count == 128:
        answer = await post(transport, peer.url)
        assert len(answer.headers) == 128
    else:
        with pytest.raises(TransportError, match="more than 128 header lines"):
            await post(transport, peer.url)


async def test_endless_answer_head_fails_past_64_kib(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    # 4000-byte lines: the head-size limit is reached long before the 128-line one.
    async def endless_head(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\n")
        for i in range(1000):  # ~4 MB at most; the client hangs up long before
            await conn.send(b"X-Fill-%04d: %s\r\n" % (i, b"f" * 3986))

    peer = await raw_server(endless_head)
    with pytest.raises(TransportError, match="answer head longer than 65536 bytes"):
        await post(transport, peer.url)
    assert transport.idle_connections == 0


@pytest.mark.parametrize(
    "garbage",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"HTTP/1.1 abc OK\r\n\r\n"],
    ids=["ssh-banner", "tls-hello", "bad-status"],
)
async def test_garbage_instead_of_http_fails(
    transport: Transport, raw_server: RawServerFactory, garbage: bytes
) -> None:
    async def not_http(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(garbage)
        await conn.wait_hangup()  # keep the connection open: the client must give up on its own

    peer = await raw_server(not_http)
    with pytest.raises(TransportError, match="answer is not valid HTTP") as info:
        await post(transport, peer.url)
    assert not isinstance(info.value, AnswerTimeout)
    assert transport.idle_connections == 0
    await until(lambda: peer.hangups == 1)


async def test_switching_protocols_fails(transport: Transport, raw_server: RawServerFactory) -> None:
    async def upgrade(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        await conn.wait_hangup()

    peer = await raw_server(upgrade)
    with pytest.raises(TransportError, match="switched protocols"):
        await post(transport, peer.url)


# --- timeouts -----------------------------------------------------------------------------


async def test_receiver_that_never_answers_times_out(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    async def silent(conn: RawConn) -> None:
        await conn.read_request()
        await conn.wait_hangup()

    peer = await raw_server(silent)
    with pytest.raises(AnswerTimeout, match=r"^timed out after 0\.2s$") as info:
        await post(transport, peer.url, timeout_s=0.2)
    assert not info.value.unsent  # the request was sent: it must not be taken as undelivered
    assert transport.idle_connections == 0
    await until(lambda: peer.hangups == 1)  # the client gave up on the connection
    assert len(peer.requests) == 1


async def test_answer_that_stops_midway_times_out(transport: Transport, raw_server: RawServerFactory) -> None:
    async def stalls(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await conn.wait_hangup()

    peer = await raw_server(stalls)
    with pytest.raises(AnswerTimeout, match=r"^timed out after 0\.2s$"):
        await post(transport, peer.url, timeout_s=0.2)


@pytest.mark.parametrize(("connect_timeout_s", "timeout_s"), [(5.0, 0.2), (0.2, 30.0)])
async def test_connect_timeout_is_the_smaller_of_both(
    make_transport: Callable[..., Transport], unaccepted_port: int, connect_timeout_s: float, timeout_s: float
) -> None:
    transport = make_transport(connect_timeout_s=connect_timeout_s)
    with pytest.raises(ConnectTimeout, match=r"^timed out connecting after 0\.2s$") as info:
        await post(transport, f"http://127.0.0.1:{unaccepted_port}/hook", timeout_s=timeout_s)
    assert info.value.unsent


async def test_refused_connection_fails_as_unsent(transport: Transport) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nobody listens here once it is closed
    with pytest.raises(TransportError, match=rf"cannot connect to 127\.0\.0\.1:{port}") as info:
        await post(transport, f"http://127.0.0.1:{port}/hook")
    assert info.value.unsent


async def test_timeout_covers_resolving_and_connecting_too(
    make_transport: Callable[..., Transport], receiver: ReceiverFactory
) -> None:
    """`post` promises an answer or an error "within timeout_s in all". Here resolving takes
    0.2 s and the receiver answers 0.2 s after the request: 0.4 s in all, over the 0.3 s."""

    class SlowResolver(FakeResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            await asyncio.sleep(0.2)
            return await super().resolve(host, port, family)

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.Response(text="late")

    got = await receiver(slow)
    transport = make_transport(resolver=SlowResolver({"slow.test": ["127.0.0.1"]}))
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        answer: Answer | TransportError = await post(transport, got.url(host="slow.test"), timeout_s=0.3)
    except TransportError as exc:
        answer = exc
    elapsed = loop.time() - started
    assert isinstance(answer, AnswerTimeout), f"got {answer!r} after {elapsed:.2f}s with timeout_s=0.3"


# --- stale and broken connections ---------------------------------------------------------


async def test_pooled_connection_closed_by_the_receiver_is_replaced(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    answered: list[int] = []

    async def one_request_per_connection(conn: RawConn) -> None:
        # Keeps the connection alive in its answer, then closes it right away (an idle timeout).
        if await conn.read_request() is not None:
            await conn.send(raw_answer(b"conn%d" % conn.number))
            answered.append(conn.number)

    peer = await raw_server(one_request_per_connection)
    assert (await post(transport, peer.url)).body == b"conn1"
    await until(lambda: answered == [1])
    assert (await post(transport, peer.url)).body == b"conn2"
    assert len(peer.requests) == 2  # exactly one request reached the receiver per post
    assert peer.accepts == 2


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_pooled_connection_closed_as_the_request_arrives_fails_and_is_not_resent(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory, how: str
) -> None:
    """The race a pool cannot avoid: the receiver closes an idle connection just as the next
    request is written on it. It may have read the request (and sent the SMS), so the request
    is not sent again behind the caller's back: the post fails, marked `reused`, and it is the
    caller that makes (and records) a new attempt."""
    metrics = Metrics()
    transport = make_transport(metrics=metrics)

    async def drops_the_second(conn: RawConn) -> None:
        if conn.number > 1:
            await conn.serve()
            return
        await conn.read_request()
        await conn.send(OK)
        await conn.read_request()  # the second request, read whole, and dropped unanswered
        if how == "rst":
            conn.writer.transport.abort()

    peer = await raw_server(drops_the_second)
    assert (await post(transport, peer.url, b"first")).status == 200
    with pytest.raises(TransportError) as info:
        await post(transport, peer.url, b"second")
    assert info.value.reused and not info.value.unsent
    assert info.value.message.startswith(
        "connection closed before an answer (reused connection; the receiver may have read the request)"
    )
    assert [r.endswith(b"second") for r in peer.requests] == [False, True]  # sent once, not twice
    assert peer.accepts == 1
    assert metrics.registry.get_sample_value("gateway_outbound_closed_reused_total") == 1  # operators see it

    answer = await post(transport, peer.url, b"second, again")  # the caller's new attempt
    assert (answer.status, answer.body) == (200, b"ok")
    assert [r.endswith(b"second") for r in peer.requests] == [False, True, False]
    assert peer.accepts == 2
    assert metrics.registry.get_sample_value("gateway_outbound_connections_total", {"scheme": "http"}) == 2


async def test_a_request_reaches_the_receiver_once_per_recorded_attempt(raw_server: RawServerFactory) -> None:
    """A receiver that reads a whole request on a kept-alive connection, then closes without
    answering. Each `send` is one attempt, recorded by its caller; the receiver gets exactly
    one request per attempt, and the failed one says why."""

    async def reads_the_second_then_closes(conn: RawConn) -> None:
        if conn.number > 1:
            await conn.serve()
            return
        await conn.read_request()
        await conn.send(OK)
        await conn.read_request()

    peer = await raw_server(reads_the_second_then_closes)
    transport = Transport(allow_http=True, allow_cidrs=LOOPBACK)
    try:
        results = [
            await send(transport, peer.url, b"attempt%d" % i, {"Content-Type": "application/json"},
                       timeout_s=5.0, body_cap=CAP)
            for i in range(3)
        ]
    finally:
        await transport.close()
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in peer.requests] == [b"attempt0", b"attempt1", b"attempt2"]
    assert [(r.status_code, r.error, r.closed_reused) for r in results] == [
        (200, None, False),
        (None, "connection failed: connection closed before an answer (reused connection; the receiver "
               "may have read the request)", True),
        (200, None, False),
    ]


@linux_only  # a FIN on loopback is in the peer's receive queue when shutdown() returns
async def test_pooled_connection_the_receiver_half_closed_is_not_used(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """The receiver's FIN has reached this host but the event loop has not handled it yet (it
    came in the same turn): the pooled connection is seen to be closed before a request is
    written on it, and the request goes on a new connection, once."""
    writers: list[asyncio.StreamWriter] = []

    async def answers_then_half_closes(conn: RawConn) -> None:
        if conn.number > 1:
            await conn.serve()
            return
        await conn.read_request()
        await conn.send(OK)
        writers.append(conn.writer)
        await conn.read_request()  # a request written on the half-closed connection would land here

    peer = await raw_server(answers_then_half_closes)
    assert (await post(transport, peer.url, b"first")).status == 200
    await until(lambda: bool(writers))
    writers[0].write_eof()  # shutdown(SHUT_WR) now, and no await before the next post
    answer = await post(transport, peer.url, b"second")
    assert (answer.status, answer.body) == (200, b"ok")
    assert [r.endswith(b"second") for r in peer.requests] == [False, True]
    assert peer.accepts == 2


async def test_idle_connection_older_than_the_keepalive_time_is_not_reused(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory
) -> None:
    """Not even before the sweeper has run: a receiver with a keep-alive time a little longer
    than ours must never see a request on a connection it is about to close."""
    now = [1000.0]
    peer = await raw_server(RawConn.serve)
    transport = make_transport(keepalive_s=4.0, clock=lambda: now[0])
    assert (await post(transport, peer.url)).status == 200
    now[0] += 3.9
    assert (await post(transport, peer.url)).status == 200
    assert peer.accepts == 1  # idle for less than the keep-alive time: reused
    now[0] += 4.0
    assert (await post(transport, peer.url)).status == 200
    assert peer.accepts == 2


@pytest.mark.parametrize("pooled", [False, True], ids=["new-connection", "pooled-connection"])
async def test_connection_closed_in_the_middle_of_an_answer_is_not_retried(
    transport: Transport, raw_server: RawServerFactory, pooled: bool
) -> None:
    async def cuts_the_answer(conn: RawConn) -> None:
        if pooled:
            await conn.read_request()
            await conn.send(OK)
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        # and closes: 93 bytes short

    peer = await raw_server(cuts_the_answer)
    if pooled:
        assert (await post(transport, peer.url)).status == 200
    with pytest.raises(TransportError, match="in the middle of the answer") as info:
        await post(transport, peer.url)
    assert not info.value.unsent
    assert len(peer.requests) == (2 if pooled else 1)  # the cut request was not sent again
    assert peer.accepts == 1


async def test_connection_closed_before_any_answer_on_a_new_connection_is_not_retried(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    async def reads_and_closes(conn: RawConn) -> None:
        await conn.read_request()

    peer = await raw_server(reads_and_closes)
    with pytest.raises(TransportError, match="closed by the receiver before answering") as info:
        await post(transport, peer.url)
    assert not info.value.unsent  # a new connection that took the request may have acted on it
    assert len(peer.requests) == 1
    assert peer.accepts == 1


async def test_close_after_100_continue_on_a_pooled_connection_is_not_retried(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """A receiver that sent `100 Continue` has the request; if it then closes, the request must
    not be sent again (a hook would run twice)."""

    async def continues_then_closes(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(OK)
        await conn.read_request()
        await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        # and closes

    peer = await raw_server(continues_then_closes)
    assert (await post(transport, peer.url)).status == 200
    try:
        outcome: Answer | TransportError = await post(transport, peer.url)
    except TransportError as exc:
        outcome = exc
    second = len(peer.requests) - 1
    assert second == 1, f"the second request reached the receiver {second} times; outcome {outcome!r}"
    assert isinstance(outcome, TransportError) and not outcome.unsent


@pytest.mark.parametrize(
    "extra",
    [b"!!", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Stray: 1\r\n\r\n"],
    ids=["stray-bytes", "stray-head"],
)
async def test_bytes_after_a_complete_answer_do_not_spoil_the_next_post(
    transport: Transport, raw_server: RawServerFactory, extra: bytes
) -> None:
    """A receiver whose answer runs past its Content-Length (counting characters, not bytes,
    say). The module's rule is that such a connection cannot be trusted; the next post must
    get its own answer, whichever connection it goes on."""

    async def overlong_first_answer(conn: RawConn) -> None:
        if conn.number == 1:
            await conn.read_request()
            await conn.send(raw_answer(b"ok") + extra)  # one write: the client reads both at once
        await conn.serve(raw_answer(b"second", status="201 Created"))

    peer = await raw_server(overlong_first_answer)
    assert (await post(transport, peer.url)).body == b"ok"
    answer = await post(transport, peer.url)
    assert (answer.status, answer.body, "x-stray" in answer.headers) == (201, b"second", False)


# --- the egress guard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer", [["10.0.0.5"], ["169.254.169.254"], ["fd00::1"], ["127.0.0.1", "10.0.0.5"]]
)
async def test_refused_dns_answer_fails_before_any_connect(
    make_transport: Callable[..., Transport],
    raw_server: RawServerFactory,
    netguard_attempts: list[tuple[str, int]],
    answer: list[str],
) -> None:
    peer = await raw_server(RawConn.serve)  # 127.0.0.1 of the mixed answer would reach this
    resolver = FakeResolver({"hooks.example.test": answer})
    transport = make_transport(resolver=resolver)
    with pytest.raises(DestinationRefused) as info:
        await post(transport, f"http://hooks.example.test:{peer.port}/hook")
    assert info.value.address == answer[-1]
    assert str(info.value).startswith(f"destination refused: {answer[-1]} (")
    assert resolver.asked == ["hooks.example.test"]
    assert netguard_attempts == []
    assert peer.accepts == 0  # not even the allowed address of a mixed answer was tried


async def test_literal_loopback_is_refused_without_allow_cidrs(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory
) -> None:
    peer = await raw_server(RawConn.serve)
    with pytest.raises(BadRequest, match=r"destination refused: 127\.0\.0\.1 \(127\.0\.0\.0/8\)"):
        Target.of(peer.url, allow_http=True, allow_cidrs=networks([]))
    transport = make_transport(allow_cidrs=Cidrs())  # its own guard, whatever made the target
    with pytest.raises(DestinationRefused, match=r"^destination refused: 127\.0\.0\.1 \(127\.0\.0\.0/8\)$"):
        await post(transport, peer.url)
    with pytest.raises(DestinationRefused):
        await post(transport, f"http://0x7f.1:{peer.port}/hook")  # another notation of the same
    assert peer.accepts == 0


async def test_dns_answers_are_reused(
    make_transport: Callable[..., Transport], receiver: ReceiverFactory
) -> None:
    async def closing(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.force_close()
        return response

    got = await receiver(closing)
    resolver = FakeResolver({"receiver.test": ["127.0.0.1"]})
    transport = make_transport(resolver=resolver)
    for _ in range(2):
        assert (await post(transport, got.url(host="receiver.test"))).status == 200
    assert got.connections == 2  # each post connected anew...
    assert resolver.asked == ["receiver.test"]  # ...to the address resolved once
    assert got.seen[0].headers["Host"] == f"receiver.test:{got.port}"


@linux_only
async def test_next_address_is_tried_when_one_refuses(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory
) -> None:
    peer = await raw_server(RawConn.serve)  # on 127.0.0.1 only: 127.0.0.3 refuses the connect
    transport = make_transport(resolver=FakeResolver({"two.test": ["127.0.0.3", "127.0.0.1"]}))
    assert (await post(transport, f"http://two.test:{peer.port}/hook")).status == 200
    assert peer.accepts == 1


@pytest.mark.parametrize("source", ["127.0.0.1", pytest.param("127.0.0.2", marks=linux_only)])
async def test_source_address_is_bound(
    make_transport: Callable[..., Transport], receiver: ReceiverFactory, source: str
) -> None:
    got = await receiver()
    transport = make_transport(source_address=source)
    for _ in range(2):
        assert (await post(transport, got.url())).status == 200
    assert [s.peer[0] for s in got.seen] == [source, source]


# --- request headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Note": "a\r\nX-Injected: 1"},
        {"X-Note": "a\nX-Injected: 1"},
        {"X-Note": "a\rb"},
        {"X-Note\r\nX-Injected": "1"},
        {"X-Ok": "1", "X-Note": "a\r\n\r\nGET / HTTP/1.1"},
    ],
)
async def test_header_with_a_line_break_is_refused_and_nothing_sent(
    transport: Transport, raw_server: RawServerFactory, headers: dict[str, str]
) -> None:
    peer = await raw_server(RawConn.serve)
    with pytest.raises(TransportError, match="line break"):
        await post(transport, peer.url, headers=headers)
    assert peer.accepts == 0
    assert (await post(transport, peer.url, headers={"X-Note": "fine"})).status == 200
    assert len(peer.requests) == 1


async def test_header_outside_latin_1_is_refused(transport: Transport, raw_server: RawServerFactory) -> None:
    peer = await raw_server(RawConn.serve)
    with pytest.raises(TransportError, match="latin-1"):
        await post(transport, peer.url, headers={"X-Name": "Zoë ☃"})
    assert peer.accepts == 0


# --- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


@pytest.fixture
def certificate(tmp_path: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, valid from a minute ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    made = Certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    made.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    made.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return made


@pytest.fixture
async def tls_receiver(receiver: ReceiverFactory, certificate: Certificate) -> Receiver:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate.cert, certificate.key)
    return await receiver(ssl=server_context)


def localhost_resolver() -> FakeResolver:
    return FakeResolver({"localhost": ["127.0.0.1"], "other.test": ["127.0.0.1"]})


async def test_tls_to_a_trusted_certificate(
    make_transport: Callable[..., Transport], tls_receiver: Receiver, certificate: Certificate
) -> None:
    transport = make_transport(
        resolver=localhost_resolver(), ssl_context=ssl.create_default_context(cafile=certificate.cert)
    )
    for i in range(2):
        answer = await post(transport, tls_receiver.url(host="localhost", scheme="https"), b"tls%d" % i)
        assert (answer.status, answer.body) == (200, b"ok")
    assert [(s.secure, s.body) for s in tls_receiver.seen] == [(True, b"tls0"), (True, b"tls1")]
    assert tls_receiver.connections == 1  # TLS connections are pooled too
    assert tls_receiver.seen[0].headers["Host"] == f"localhost:{tls_receiver.port}"


async def test_tls_certificate_not_trusted_by_the_system_fails(
    make_transport: Callable[..., Transport], tls_receiver: Receiver
) -> None:
    transport = make_transport(resolver=localhost_resolver())  # the system's CAs
    with pytest.raises(TransportError, match="certificate") as info:
        await post(transport, tls_receiver.url(host="localhost", scheme="https"))
    assert "TLS certificate of localhost not accepted" in info.value.message
    assert info.value.unsent
    assert tls_receiver.seen == []


async def test_tls_certificate_for_another_name_fails(
    make_transport: Callable[..., Transport], tls_receiver: Receiver, certificate: Certificate
) -> None:
    transport = make_transport(
        resolver=localhost_resolver(), ssl_context=ssl.create_default_context(cafile=certificate.cert)
    )
    with pytest.raises(TransportError, match="TLS certificate of other.test not accepted"):
        await post(transport, tls_receiver.url(host="other.test", scheme="https"))
    assert tls_receiver.seen == []


# --- cancellation and close ---------------------------------------------------------------


async def test_cancelled_post_closes_its_connection(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    async def first_never_answers(conn: RawConn) -> None:
        if conn.number > 1:
            await conn.serve()
            return
        await conn.read_request()
        await conn.wait_hangup()

    peer = await raw_server(first_never_answers)
    # A long timeout, so the connection closing below is the cancel's doing, not the timer's.
    task = asyncio.create_task(post(transport, peer.url, timeout_s=60.0))
    await until(lambda: len(peer.requests) == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert transport.idle_connections == 0
    await until(lambda: peer.hangups == 1)  # the half-used connection was closed, not pooled
    assert (await post(transport, peer.url)).status == 200
    assert peer.accepts == 2


async def test_close_closes_idle_connections_and_refuses_new_posts(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    peer = await raw_server(RawConn.serve)
    assert (await post(transport, peer.url)).status == 200
    assert transport.idle_connections == 1
    await transport.close()
    assert transport.idle_connections == 0
    await until(lambda: peer.hangups == 1)
    with pytest.raises(TransportError, match="closed"):
        await post(transport, peer.url)
    assert len(peer.requests) == 1


async def test_close_fails_a_post_in_flight(transport: Transport, raw_server: RawServerFactory) -> None:
    async def never_answers(conn: RawConn) -> None:
        await conn.read_request()
        await conn.wait_hangup()

    peer = await raw_server(never_answers)
    task = asyncio.create_task(post(transport, peer.url))
    await until(lambda: len(peer.requests) == 1)
    await transport.close()
    with pytest.raises(TransportError, match="connection closed"):
        await task
    await until(lambda: peer.hangups == 1)


# --- uvloop -------------------------------------------------------------------------------


def test_transport_runs_on_uvloop() -> None:
    """Production runs on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")
    peers: list[tuple[str, int]] = []

    async def scenario() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)

        async def echo(request: web.Request) -> web.StreamResponse:
            assert request.transport is not None
            peers.append(request.transport.get_extra_info("peername")[:2])
            return web.Response(body=await request.read())

        app = web.Application()
        app.router.add_post("/{tail:.*}", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        transport = Transport(allow_cidrs=LOOPBACK)
        try:
            answers = [await post(transport, url, b"u%d" % i) for i in range(3)]
            assert [(a.status, a.body) for a in answers] == [(200, b"u0"), (200, b"u1"), (200, b"u2")]
            assert len(set(peers)) == 1 and transport.idle_connections == 1
            cut = await post(transport, url, b"x" * 100, body_cap=10)  # drops its connection
            assert (cut.body, cut.truncated, transport.idle_connections) == (b"x" * 10, True, 0)
        finally:
            await transport.close()
            await runner.cleanup()
        with pytest.raises(TransportError, match="closed"):
            await post(transport, url)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


# --- several addresses: Happy Eyeballs ------------------------------------------------------


@linux_only
async def test_an_address_that_hangs_does_not_keep_the_next_one_from_being_tried(
    make_transport: Callable[..., Transport],
) -> None:
    """A dual-stack host whose first address is unreachable (a blackholed IPv6, say): the
    second one is tried beside it and answers, well within the connect timeout that a
    one-after-the-other client would spend on the first address alone."""
    with blackhole("127.0.0.2") as port:
        await _second_address_answers(make_transport, port)


async def _second_address_answers(make_transport: Callable[..., Transport], port: int) -> None:
    answered: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.3", port)
    try:
        resolver = FakeResolver({"dual.test": ["127.0.0.2", "127.0.0.3"]})
        transport = make_transport(resolver=resolver, connect_timeout_s=1.0)
        reply = await post(transport, f"http://dual.test:{port}/hook", timeout_s=1.0)
        assert (reply.status, reply.body) == (200, b"ok")
        assert len(answered) == 1 and answered[0].startswith(b"POST /hook HTTP/1.1")
    finally:
        server.close()
        await server.wait_closed()


async def test_every_address_failing_names_each_of_them(make_transport: Callable[..., Transport]) -> None:
    ports = []
    for _ in range(2):
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            ports.append(closed.getsockname()[1])
    resolver = FakeResolver({"gone.test": ["127.0.0.1", "::1"]})
    transport = make_transport(resolver=resolver)
    with pytest.raises(TransportError, match=r"cannot connect to gone\.test:\d+ \(.*; ") as info:
        await post(transport, f"http://gone.test:{ports[0]}/hook")
    assert "127.0.0.1" in info.value.message and "::1" in info.value.message
    assert info.value.unsent


# --- review: adversarial cases ------------------------------------------


async def test_cancel_after_the_answer_does_not_strand_the_next_post_on_the_connection(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """A's answer arrives and its connection goes back to the pool; in the same turn of the
    loop A is cancelled (a caller's timeout, shutdown) and B takes that connection. A's
    cancellation must not take B's request with it: B still ends within its own timeout."""
    peer = await raw_server(RawConn.serve)
    first = asyncio.create_task(post(transport, peer.url, b"a"))
    for _ in range(10_000):  # bounded: one turn of the loop per step
        if transport.idle_connections == 1:
            break
        await asyncio.sleep(0)
    assert transport.idle_connections == 1  # A's answer is in, A's task has not run since
    assert not first.done()
    first.cancel()  # too late to matter to A's request: it was answered
    outcome: Answer | Exception
    try:
        async with asyncio.timeout(1.5):
            outcome = await post(transport, peer.url, b"b", timeout_s=0.3)  # takes A's pooled connection
    except TransportError as exc:
        outcome = exc  # a failure within B's timeout would do; hanging past it would not
    except TimeoutError as exc:
        outcome = exc
    assert not isinstance(outcome, TimeoutError), "B's post hung past its 0.3 s timeout"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_endless_trailer_line_fails_like_an_endless_head(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """After `0\\r\\n` come trailer fields, parsed like header lines. The head's limits (8190
    bytes a line, 64 KiB in all) must hold there too: a receiver sending one trailer line that
    never ends is cut off once past them, not read (and kept in memory) for the whole timeout."""
    written: list[int] = []

    async def endless_trailer(conn: RawConn) -> None:
        await conn.read_request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ")
        for _ in range(64):  # 4 MiB at most, bounded
            await conn.send(b"t" * 65536)
            written.append(65536)
        await conn.wait_hangup()

    peer = await raw_server(endless_trailer)
    with pytest.raises(TransportError) as info:
        await post(transport, peer.url, timeout_s=0.5)
    assert not isinstance(info.value, AnswerTimeout), f"read {sum(written)} trailer bytes, then timed out"


async def test_trailer_fields_are_not_taken_as_answer_headers(
    transport: Transport, raw_server: RawServerFactory
) -> None:
    """RFC 9110 6.5.1: a trailer field must not be merged into the header section. Deliveries
    read `content-encoding`, `retry-after` and the rate-limit headers from `Answer.headers`."""

    async def trailers(conn: RawConn) -> None:
        await conn.serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                         b"Content-Encoding: gzip\r\nRetry-After: 3600\r\n\r\n")

    peer = await raw_server(trailers)
    answer = await post(transport, peer.url)
    assert (answer.status, answer.body) == (200, b"ok")
    assert "retry-after" not in answer.headers
    assert "content-encoding" not in answer.headers


@pytest.mark.parametrize(
    "host", ["a..b.localhost", "a" * 64 + ".localhost"], ids=["empty-label", "long-label"]
)
async def test_unencodable_hostname_fails_as_a_transport_error(transport: Transport, host: str) -> None:
    """`check_url` now refuses these names when a hook is saved, but a hook saved before that
    may still hold one: `socket.getaddrinfo` refuses it before any lookup is sent (so no DNS
    leaves here), and `attempt.send` promises never to raise for what a URL or the network does."""
    url = f"http://{host}:9/hook"
    with pytest.raises(BadRequest, match="invalid host name"):
        target(url)
    unchecked = Target(url=url, host=host, port=9, tls=False, head=b"POST /hook HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(TransportError, match="cannot resolve") as info:
        # the default resolver: aiohttp's ThreadedResolver
        await transport.post(unchecked, b"{}", {}, timeout_s=5.0, body_cap=1024)
    assert info.value.unsent


async def test_close_while_connecting_fails_the_post_and_sends_nothing(
    make_transport: Callable[..., Transport], raw_server: RawServerFactory
) -> None:
    resolving = asyncio.Event()
    release = asyncio.Event()

    class HeldResolver(FakeResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            resolving.set()
            async with asyncio.timeout(2):
                await release.wait()
            return await super().resolve(host, port, family)

    peer = await raw_server(RawConn.serve)
    transport = make_transport(resolver=HeldResolver({"held.test": ["127.0.0.1"]}))
    task = asyncio.create_task(post(transport, f"http://held.test:{peer.port}/hook", timeout_s=0.5))
    async with asyncio.timeout(1):
        await resolving.wait()
    await transport.close()  # "requests in flight fail"
    release.set()
    try:
        outcome: Answer | TransportError = await task
    except TransportError as exc:
        outcome = exc
    assert isinstance(outcome, TransportError), f"a post in flight at close() got {outcome!r}"
    assert peer.requests == []  # nothing sent after close()


def _untrusted_server_context() -> ssl.SSLContext:
    """A server context whose certificate (for localhost) no client context here trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
    return context


@linux_only
async def test_race_winner_is_closed_when_another_address_refuses_its_certificate(
    make_transport: Callable[..., Transport], certificate: Certificate
) -> None:
    """Two addresses for localhost, one presenting a trusted certificate and one an untrusted
    one. A relay in front of both holds the servers' first TLS flight until both have one and
    then passes both on at once, so both handshakes end in the same turn of the client's loop.
    `_race` then raises the certificate error; the connection that did succeed must be closed.
    (Which of the two `_race` looks at first depends on set order: several rounds.)"""
    import contextlib

    good_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    good_ctx.load_cert_chain(certificate.cert, certificate.key)
    bad_ctx = _untrusted_server_context()

    async def tls_backend(context: ssl.SSLContext) -> tuple[asyncio.Server, int]:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.read(65536)
            writer.close()

        server = await asyncio.start_server(hold, "127.0.0.1", 0, ssl=context)
        return server, server.sockets[0].getsockname()[1]

    good_backend, good_port = await tls_backend(good_ctx)
    bad_backend, bad_port = await tls_backend(bad_ctx)
    open_to_good: set[asyncio.StreamWriter] = set()
    tasks: set[asyncio.Task[None]] = set()
    servers: list[asyncio.Server] = [good_backend, bad_backend]

    def relay_to(backend_port: int, good: bool, round_: dict[str, Any]) -> Callable[..., Awaitable[None]]:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            tasks.add(asyncio.current_task())  # type: ignore[arg-type]
            if good:
                open_to_good.add(writer)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend_port)

            async def client_to_server() -> None:
                while data := await reader.read(65536):
                    up_writer.write(data)
                up_writer.close()

            pump = asyncio.create_task(client_to_server())
            try:
                first = await up_reader.read(65536)  # the server's first flight: held
                round_["held"].append((writer, first))
                if len(round_["held"]) == 2:
                    for w, data in round_["held"]:  # both at once, in one step
                        w.write(data)
                while data := await up_reader.read(65536):
                    writer.write(data)
                await reader.read()  # until the client closes
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                pump.cancel()
                up_writer.close()
                writer.close()
                if good:
                    open_to_good.discard(writer)

        return relay

    leaked_rounds = 0
    try:
        for _ in range(8):
            round_: dict[str, Any] = {"held": []}
            bad_relay = await asyncio.start_server(relay_to(bad_port, False, round_), "127.0.0.2", 0)
            port = bad_relay.sockets[0].getsockname()[1]
            good_relay = await asyncio.start_server(relay_to(good_port, True, round_), "127.0.0.1", port)
            servers += [bad_relay, good_relay]
            transport = make_transport(
                resolver=FakeResolver({"localhost": ["127.0.0.2", "127.0.0.1"]}),
                ssl_context=ssl.create_default_context(cafile=certificate.cert),
            )
            with pytest.raises(TransportError, match="certificate"):
                await post(transport, f"https://localhost:{port}/hook", timeout_s=2.0)
            await transport.close()
            with contextlib.suppress(AssertionError):
                await until(lambda: not open_to_good, timeout=0.3)
            if open_to_good:
                leaked_rounds += 1
                for w in list(open_to_good):
                    w.transport.abort()
                open_to_good.clear()
            bad_relay.close()
            good_relay.close()
    finally:
        for server in servers:
            server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert leaked_rounds == 0, f"the winning connection was left open in {leaked_rounds} of 8 rounds"


async def test_the_client_checks_urls_against_its_own_policy(
    make_transport: Callable[..., Transport],
) -> None:
    """The client that enforces the guard at connect time also owns the URL rules, so every
    caller checks a hook's URL against the same policy."""
    strict = make_transport(allow_cidrs=[])
    with pytest.raises(BadRequest, match="url must use https"):
        strict.target("http://hooks.example.com/x")
    with pytest.raises(BadRequest, match="not allowed"):
        strict.target("https://127.0.0.1/x")
    lenient = make_transport(allow_http=True)  # and loopback allowed, as make_transport does
    assert lenient.target("http://127.0.0.1:8080/x?a=1").head.startswith(b"POST /x?a=1 HTTP/1.1\r\n")
