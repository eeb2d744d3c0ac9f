"""The egress proxy: an HTTP CONNECT proxy on a Unix socket, a sandboxed script's only way out.

A hook's sandbox has no network of its own (bubblewrap's new network namespace, the seccomp
filter's "Unix sockets only"); its runtime (runner.js) sends node's http, https and fetch
through this proxy, whose socket the sandbox sees at /hook/egress.sock. The proxy:

- reads one `CONNECT host:port HTTP/1.1` head, bounded in size (`MAX_HEAD_BYTES`) and time
  (`HEAD_TIMEOUT_S`); anything else is a 4xx and the connection is closed;
- resolves the host itself and checks every address with the gateway's egress guard
  (`gateway/egress.py`, with `[egress] allow_cidrs`, as for hook URLs), then connects only to
  the checked addresses: the script never learns or picks an address the guard did not see;
- answers 200 and splices bytes both ways, within `ProxyCaps`: tunnels open at once, bytes
  per tunnel, and connect, idle and whole-life timeouts.

Refusals are a status line and a short text body naming why (403 for a refused destination,
naming its range; 429, 502, 504), never the bytes that were sent, and are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult

from ..egress import REFUSED_RANGES, GuardedResolver, IPNetwork, hostname_problem, parse_ip_literal
from ..errors import DestinationRefused

log = logging.getLogger("gateway.runtime.egress")

MAX_HEAD_BYTES = 8192  # a CONNECT head is a request line and a Host header; more is refused (431)
HEAD_TIMEOUT_S = 5.0  # the whole head must arrive within this (408)
ANSWER_TIMEOUT_S = 1.0  # writing a refusal to a client that does not read gives up after this
CHUNK_BYTES = 64 * 1024  # read at most this much at a time from either side of a tunnel
MAX_SOCKET_PATH_BYTES = 107  # sockaddr_un's sun_path, less its final NUL
# Names are resolved on threads of the proxies' own, never the event loop's default executor:
# a script asking for names under a slow DNS zone then holds these few threads (each lookup ends
# with the system resolver's own timeout), not the gateway's own lookups for hook URLs.
LOOKUP_THREADS = 4
LOGGED_REFUSALS = 20  # refusals each proxy logs one by one; past them, only a count at its close
# Connections past the cap are held while their head arrives (for a 429) up to this many times the
# cap in all; more are closed at once: else a script opening connections without a head (up to its
# RLIMIT_NOFILE, again as they close) would hold as many of the gateway's sockets for HEAD_TIMEOUT_S.
HELD_PAST_CAP_FACTOR = 2

_REQUEST_LINE = re.compile(rb"([A-Z]{1,16}) ([\x21-\x7e]{1,300}) HTTP/1\.[01]")
# authority-form: a bracketed IPv6 address (no zone id) or a name / IPv4 address, then a port
_AUTHORITY = re.compile(rb"(?:\[([0-9A-Fa-f:.]{2,45})\]|([A-Za-z0-9.-]{1,253})):([0-9]{1,5})")
_RANGE_NAMES = {str(r.network): r.name for r in REFUSED_RANGES}
_REASONS = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 502: "Bad Gateway",
            504: "Gateway Timeout"}


@dataclass(frozen=True)
class ProxyCaps:
    connections: int = 8  # tunnels (and connections still sending their head) open at once
    bytes_per_tunnel: int = 8 << 20  # both directions together; the tunnel is closed past it
    connect_timeout_s: float = 5.0  # resolving and connecting, together
    idle_timeout_s: float = 30.0  # a tunnel with no byte either way for this long is closed
    lifetime_s: float = 60.0  # a tunnel's whole life


class _Refusal(Exception):  # noqa: N818 - not an error of the proxy: an answer to its client
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class _Cut(Exception):  # noqa: N818 - the tunnel went past its byte cap
    pass


@dataclass
class _Meter:
    left: int  # bytes the tunnel may still carry, both ways together
    last: float  # when a byte last went through (the loop's clock)


_lookups = ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="egress-proxy-dns")


class _Lookup(AbstractResolver):
    """getaddrinfo on the proxies' own threads (the guard checks what it answers)."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().run_in_executor(
            _lookups, socket.getaddrinfo, host, port, family, socket.SOCK_STREAM)
        return [ResolveResult(hostname=host, host=str(info[4][0]), port=port, family=info[0], proto=info[2],
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV) for info in infos]

    async def close(self) -> None:
        pass


class EgressProxy:
    """One proxy listening on one Unix socket; `close` ends it and every tunnel."""

    def __init__(self, path: Path, server: asyncio.AbstractServer, resolver: GuardedResolver,
                 caps: ProxyCaps, only: frozenset[tuple[str, int]] | None) -> None:
        self.path = path
        self.caps = caps
        self._server = server
        self._resolver = resolver
        self._only = only
        self._handlers: set[asyncio.Task[None]] = set()
        self._closed = False
        self._refusals = 0

    @classmethod
    async def start(cls, path: Path, *, allow_cidrs: Sequence[IPNetwork], caps: ProxyCaps = ProxyCaps(),  # noqa: B008 - frozen
                    only: Collection[tuple[str, int]] | None = None,
                    owner: tuple[int, int] | None = None) -> EgressProxy:
        """Listen on `path` (mode 0o600, owned by `owner` when given). `only`: the (host, port)
        pairs CONNECT may reach (e.g. the npm registry); None: any the guard allows."""
        sock = _listening_socket(path, owner)
        resolver = GuardedResolver(allow_cidrs=allow_cidrs, inner=_Lookup())
        allowed = None if only is None else frozenset((_normal(host), port) for host, port in only)
        proxy: EgressProxy | None = None

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert proxy is not None  # noqa: S101 - set before the server accepts
            await proxy._handle(reader, writer)

        try:
            server = await asyncio.start_unix_server(connected, sock=sock, limit=MAX_HEAD_BYTES)
        except BaseException:
            sock.close()
            await resolver.close()
            raise
        proxy = cls(path, server, resolver, caps, allowed)
        return proxy

    async def close(self) -> None:
        """Stop listening, close every tunnel, remove the socket file (safe to call again)."""
        self._closed = True
        self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()
        with contextlib.suppress(OSError):
            self.path.unlink()
        await self._resolver.close()
        if self._refusals > LOGGED_REFUSALS:
            log.info("egress proxy %s refused %d CONNECTs in all (%d not logged)", self.path, self._refusals,
                     self._refusals - LOGGED_REFUSALS)
            self._refusals = 0  # a second close logs nothing more

    # -- one client connection ----------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - a server's handler runs in a task
        self._handlers.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            if self._closed or len(self._handlers) > HELD_PAST_CAP_FACTOR * self.caps.connections:
                return
            over = len(self._handlers) > self.caps.connections
            # The head is read even when over the cap: a client still writing it when the
            # connection closed would see EPIPE rather than the 429.
            host, port = await self._read_head(reader)
            if over:
                raise _Refusal(429, f"too many tunnels: at most {self.caps.connections} at once")
            up_reader, upstream = await self._connect(host, port)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await self._splice(reader, writer, up_reader, upstream)
        except _Refusal as refusal:
            self._refusals += 1
            if self._refusals <= LOGGED_REFUSALS:  # a script refused in a loop does not flood the log
                log.info("egress proxy %s refused a CONNECT: %d %s", self.path, refusal.status, refusal.text)
            await _answer(writer, refusal.status, refusal.text)
        except (OSError, asyncio.IncompleteReadError):
            pass  # either side went away
        finally:
            for end in (upstream, writer):
                if end is not None:
                    _close(end)
            self._handlers.discard(task)

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, int]:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise _Refusal(408, f"the request head did not arrive within {HEAD_TIMEOUT_S:g} s") from None
        except asyncio.LimitOverrunError:
            raise _Refusal(431, f"the request head is longer than {MAX_HEAD_BYTES} bytes") from None
        except asyncio.IncompleteReadError:
            raise _Refusal(400, "the connection ended before the request head did") from None
        line = _REQUEST_LINE.fullmatch(head.split(b"\r\n", 1)[0])
        if line is None:
            raise _Refusal(400, "not an HTTP/1.1 request line")
        if line[1] != b"CONNECT":
            raise _Refusal(405, "only CONNECT host:port is served here")
        target = _AUTHORITY.fullmatch(line[2])
        if target is None:
            raise _Refusal(400, "the CONNECT target must be host:port")
        port = int(target[3])
        if not 1 <= port <= 65535:
            raise _Refusal(400, "the port must be from 1 to 65535")
        host = (target[1] or target[2]).decode("ascii")
        if target[1] is not None and parse_ip_literal(f"[{host}]") is None:
            raise _Refusal(400, "not an IPv6 address between the brackets")
        if target[2] is not None and parse_ip_literal(host) is None and (problem := hostname_problem(host)):
            raise _Refusal(400, f"invalid host name: {problem}")
        if self._only is not None and (_normal(host), port) not in self._only:
            raise _Refusal(403, "this proxy reaches only its own destinations")
        return host, port

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to one of the host's checked addresses, within the connect timeout."""
        failures: list[str] = []
        try:
            async with asyncio.timeout(self.caps.connect_timeout_s):
                for address in await self._addresses(host, port):
                    try:
                        return await asyncio.open_connection(address["host"], port, limit=CHUNK_BYTES)
                    except OSError as exc:
                        failures.append(f"{address['host']}: {exc.strerror or type(exc).__name__}")
        except TimeoutError:
            raise _Refusal(504, f"connecting timed out after {self.caps.connect_timeout_s:g} s") from None
        raise _Refusal(502, f"connect failed ({'; '.join(failures)})"[:300])

    async def _addresses(self, host: str, port: int) -> list[ResolveResult]:
        try:
            results = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except DestinationRefused as refused:
            name = _RANGE_NAMES.get(refused.range)
            where = f"{refused.range}, {name}" if name else refused.range
            raise _Refusal(403, f"refused destination: {refused.address} is in {where}") from None
        except (OSError, UnicodeError):
            raise _Refusal(502, "the host name could not be resolved") from None
        if not results:
            raise _Refusal(502, "the host name has no addresses")
        return results

    async def _splice(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                      up_r: asyncio.StreamReader, up_w: asyncio.StreamWriter) -> None:
        """Copy both ways until both sides are done, the byte cap, or a timeout."""
        loop = asyncio.get_running_loop()
        caps = self.caps
        meter = _Meter(caps.bytes_per_tunnel, loop.time())

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while True:  # bounded: every turn moves at least one byte of the tunnel's cap
                data = await src.read(CHUNK_BYTES)
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                over = len(data) > meter.left
                dst.write(data[: meter.left])
                meter.left = max(meter.left - len(data), 0)
                await dst.drain()
                meter.last = loop.time()
                if over:
                    raise _Cut

        pumps = {asyncio.ensure_future(pump(client_r, up_w)), asyncio.ensure_future(pump(up_r, client_w))}
        why = "done"
        try:
            async with asyncio.timeout(caps.lifetime_s):
                pending = pumps
                while pending:  # bounded by the lifetime timeout
                    idle_end = meter.last + caps.idle_timeout_s
                    done, pending = await asyncio.wait(pending, timeout=max(idle_end - loop.time(), 0),
                                                       return_when=asyncio.FIRST_EXCEPTION)
                    for task in done:
                        if isinstance(task.exception(), _Cut):
                            why = f"cut past {caps.bytes_per_tunnel} bytes"
                            return
                        if task.exception() is not None:
                            return  # a side went away: nothing more can pass
                    if pending and loop.time() >= meter.last + caps.idle_timeout_s:
                        why = f"idle for {caps.idle_timeout_s:g} s"
                        return
        except TimeoutError:
            why = f"open for its whole life of {caps.lifetime_s:g} s"
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            if why != "done":
                log.info("egress proxy %s closed a tunnel: %s", self.path, why)


def _listening_socket(path: Path, owner: tuple[int, int] | None) -> socket.socket:
    """A socket listening at `path`, with its mode and owner set before it appears there: it is
    bound under a random name beside `path`, then renamed (a connect finds the socket by inode)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    if len(os.fsencode(temporary)) > MAX_SOCKET_PATH_BYTES:
        raise OSError(f"the egress proxy's socket path is too long for a Unix socket: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fsencode(temporary))
        try:
            os.chmod(temporary, 0o600)
            if owner is not None:
                os.chown(temporary, *owner)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _close(writer: asyncio.StreamWriter) -> None:
    """Close once what was written has left; abort (nothing is waited for) when some is still
    buffered for a peer that does not read."""
    if writer.transport.get_write_buffer_size() == 0:
        writer.close()
    else:
        writer.transport.abort()


def _normal(host: str) -> str:
    """A host as `only` compares it: an address in its usual form, a name in lower case."""
    address = parse_ip_literal(host)
    return str(address) if address is not None else host.lower().rstrip(".")


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = (text + "\n").encode()
    writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                 b"Connection: close\r\n\r\n%s" % (status, _REASONS[status].encode(), len(body), body))
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await writer.drain()
