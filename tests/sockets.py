"""Sockets for tests: a peer which never accepts, a port that refuses, and raw receivers whose
answers are written byte by byte (resets, trickles, endless bodies, silence)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@contextmanager
def blackhole(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on `host` whose accept queue is full: a new connect to it hangs until it times out."""
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        for _ in range(8):
            client = socket.socket()
            client.settimeout(0.2)
            queued.append(client)
            try:
                client.connect((host, port))
            except TimeoutError:
                break
        else:
            pytest.skip("this network stack accepts connections beyond the listen backlog")
        yield port
    finally:
        for client in queued:
            client.close()
        listener.close()


# --- raw receivers: answers written byte by byte, for faults no HTTP library would make --------


@contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on `host` that is bound but not listening: a connect to it is refused at once, and
    no other process can start listening on it while the test runs."""
    holder = socket.socket()
    holder.bind((host, 0))
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


@dataclass
class RawPeer:
    """A raw asyncio server on 127.0.0.1; counts what it saw."""

    port: int = 0
    accepted: int = 0  # TCP connections
    requests: int = 0  # whole requests read (head and a body of Content-Length)

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/hook"


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, RawPeer], Awaitable[None]]


class RawServers:
    """Raw servers started by a test; `close` ends them and every connection they hold."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, handler: RawHandler) -> RawPeer:
        peer = RawPeer()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            peer.accepted += 1
            try:
                await handler(reader, writer, peer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the client went away (what a timeout or a cap does), or the teardown
            finally:
                writer.close()
                self._tasks.discard(task)

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        self._servers.append(server)
        peer.port = server.sockets[0].getsockname()[1]
        return peer

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


MAX_REQUESTS_PER_CONNECTION = 100_000  # every handler's loop is bounded


async def read_request(reader: asyncio.StreamReader, peer: RawPeer) -> bool:
    """Read one request (head, and a body of Content-Length); False once the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    peer.requests += 1
    return True


def http_answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    """An HTTP/1.1 answer with a Content-Length, and `headers` as they are."""
    head = b"".join(h + b"\r\n" for h in headers)
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n" + head + b"\r\n" + body)


def answering(answer: bytes) -> RawHandler:
    """Every request on a connection is answered with the same bytes (kept alive)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            if not await read_request(reader, peer):
                return
            writer.write(answer)
            await writer.drain()

    return handle


def redirecting_to_itself(status: bytes = b"302 Found") -> RawHandler:
    """A redirect loop: every request is sent back to the same URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
        location = b"Location: " + peer.url().encode()
        await answering(http_answer(b"", location, status=status))(reader, writer, peer)

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
    """Accept, read whatever comes (a TLS ClientHello, say) until the client closes, and never
    send a byte."""
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        if not await reader.read(65536):
            return


async def never_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
    """Read the request, then send nothing, not even the status line, until the client closes."""
    if await read_request(reader, peer):
        await silent(reader, writer, peer)


def reset_mid_body(sent: int = 100, length: int = 1000) -> RawHandler:
    """Answer the head and `sent` of `length` body bytes, then reset the connection (RST:
    SO_LINGER with a zero timeout, then close)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
        if not await read_request(reader, peer):
            return
        writer.write(http_answer(b"{" * length)[: -(length - sent)])
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return handle


def trickling(interval_s: float = 0.5, length: int = 120) -> RawHandler:
    """Answer a head promising `length` body bytes, then one byte every `interval_s` until the
    client closes (or all are sent: `length * interval_s` bounds the handler)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
        if not await read_request(reader, peer):
            return
        writer.write(http_answer(b" " * length)[:-length])
        for _ in range(length):
            writer.write(b" ")
            await writer.drain()
            if writer.is_closing():
                return
            await asyncio.sleep(interval_s)

    return handle


def endless_body(total: int, chunk: int = 64 * 1024) -> RawHandler:
    """Answer a head promising `total` body bytes and write them until the client stops reading
    and closes; the peer holds one chunk in memory, not the whole body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: RawPeer) -> None:
        block = b" " * chunk
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            if not await read_request(reader, peer):
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % total)
            for _ in range(total // chunk):
                writer.write(block)
                await writer.drain()
            writer.write(block[: total % chunk])
            await writer.drain()

    return handle
