"""The gateway's outbound HTTP client: signed POSTs to receivers, behind the egress guard.

Why not aiohttp's `ClientSession`: measured in `bench/`, it costs ~70 us of CPU per request,
more than half of what a whole relayed request costs; this client costs ~15 us for the same
request. It does only what deliveries need: `POST` with a body of known length, HTTP/1.1
keep-alive pools per host, TLS with certificate checks, answers parsed by httptools (the C
parser uvicorn uses) and bounded, a connect timeout and a total timeout, and no redirects,
cookies, proxies or environment settings.

The egress guard: every address a host resolves to is checked before any connection is made
(`egress.GuardedResolver`), literal addresses included, and the connection goes to the address
that was checked. Checked answers are reused for `DNS_CACHE_TTL_S`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult

from ..egress import DNS_CACHE_TTL_S, GuardedResolver, IPNetwork
from ..errors import AnswerTimeout, ConnectTimeout, TransportError
from ..metrics import Metrics
from ..peers import Cidrs
from ..tls import client_context
from .connection import Answer, Connection
from .target import Target

HAPPY_EYEBALLS_DELAY_S = 0.25  # before the next address is tried beside a slow one (RFC 8305)
# An idle pooled connection is closed after this long, and never reused past it. Shorter than
# the idle timeouts receivers commonly use (Node's http server and uvicorn: 5 s, Apache: 5 s),
# so that it is almost always the gateway, not the receiver, that closes an idle connection:
# the race where a receiver closes one just as a request goes out on it (a failed attempt, see
# `post`) then needs a receiver with a shorter timeout still. A hook called less often than
# this pays a new connection each time, which at that rate costs nothing that matters.
KEEPALIVE_S = 4.0
MAX_IDLE_PER_HOST = 256  # idle connections kept per host, port and scheme


class Transport:
    """One per process (the app owns it); `post` is safe to call from many tasks at once."""

    def __init__(
        self,
        *,
        allow_http: bool = False,
        allow_cidrs: Sequence[IPNetwork] = (),
        resolver: AbstractResolver | None = None,
        source_address: str | None = None,
        connect_timeout_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_s: float = KEEPALIVE_S,
        clock: Any = time.monotonic,
        metrics: Metrics | None = None,
    ) -> None:
        self._allow_http = allow_http
        self._cidrs = allow_cidrs if isinstance(allow_cidrs, Cidrs) else Cidrs(allow_cidrs)
        self._resolver = GuardedResolver(allow_cidrs=self._cidrs, inner=resolver)
        self._local_addr = (source_address, 0) if source_address is not None else None
        self.connect_timeout_s = connect_timeout_s
        self._ssl = ssl_context if ssl_context is not None else client_context()
        self._keepalive_s = keepalive_s
        self._clock = clock
        self._idle: dict[tuple[str, int, bool], list[Connection]] = {}
        self._open: set[Connection] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[ResolveResult]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._metrics = metrics or Metrics()

    def target(self, url: str) -> Target:
        """`url` checked against this client's policy (scheme, user-info, literal addresses);
        `BadRequest` if refused. Cached per URL."""
        return Target.of(url, allow_http=self._allow_http, allow_cidrs=self._cidrs)

    async def post(self, target: Target, body: bytes, headers: Mapping[str, str] | bytes, *,
                   timeout_s: float, body_cap: int) -> Answer:
        """POST `body`; the answer, or `TransportError` / `DestinationRefused`. Within `timeout_s`
        in all, of which connecting (TCP and TLS) may take `connect_timeout_s`. `headers` is a
        mapping, or lines already rendered by `header_lines` (the hot path renders a hook's
        fixed headers once); `Host` and `Content-Length` are added here."""
        if self._closed:
            raise TransportError("the outbound client is closed")
        lines = headers if isinstance(headers, bytes) else header_lines(headers)
        data = b"%b%bContent-Length: %d\r\n\r\n%b" % (target.head, lines, len(body), body)
        started = time.monotonic()
        conn = self._checkout(target.key)
        if conn is not None:
            try:
                return await self._send(conn, data, timeout_s, body_cap)
            except TransportError as exc:
                # A pooled connection closed by the receiver before it answered: it may have read
                # the request (and sent the SMS), so it is not sent again here. The caller records
                # this failed attempt (`exc.reused`) and may make a new one.
                if exc.reused:
                    self._metrics.closed_reused.inc()
                raise
        conn = await self._connect(target, timeout_s - (time.monotonic() - started), timeout_s)
        if self._closed:  # closed while this request was connecting: it must not go out now
            conn.close()
            raise TransportError("the outbound client is closed", unsent=True)
        left = timeout_s - (time.monotonic() - started)
        if left <= 0:
            conn.close()
            raise AnswerTimeout(f"timed out after {timeout_s:g}s")
        return await self._send(conn, data, left, body_cap, timeout_s)

    async def close(self) -> None:
        """Close every connection; requests in flight fail."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self._open):
            conn.close()
        self._idle.clear()
        await self._resolver.close()

    @property
    def idle_connections(self) -> int:
        return sum(len(v) for v in self._idle.values())

    # -- connections -----------------------------------------------------------------------

    async def _send(self, conn: Connection, data: bytes, timeout_s: float, cap: int,
                    whole_s: float | None = None) -> Answer:
        waiter = conn.request(data, timeout_s=timeout_s, cap=cap, reported_s=whole_s)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Mid-request, the connection's state is unknown: drop it. If the answer had come
            # already, the connection is back in the pool, maybe carrying another request now.
            if waiter.cancelled() or not waiter.done():  # cancelling the task cancels the waiter too
                conn.abort()
            raise

    def _checkout(self, key: tuple[str, int, bool]) -> Connection | None:
        """An idle connection that has been idle less than the keep-alive time and that the
        receiver has not closed, as far as can be known before writing on it."""
        idle = self._idle.get(key)
        oldest = self._clock() - self._keepalive_s
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if conn.usable and conn.idle_since > oldest and conn.quiet():
                return conn
            conn.close()
        return None

    def _returned(self, conn: Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            conn.close()
            return
        conn.idle_since = self._clock()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s / 2, self._sweep)

    def _lost(self, conn: Connection) -> None:
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def _sweep(self) -> None:
        """Close connections idle longer than the keep-alive time."""
        self._sweeper = None
        oldest = self._clock() - self._keepalive_s
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.idle_since > oldest and conn.usable:
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self._keepalive_s / 2, self._sweep)

    async def _connect(self, target: Target, left_s: float, timeout_s: float) -> Connection:
        """A new connection within the connect timeout and `left_s`, what is left of the
        request's time."""
        if left_s <= 0:
            raise AnswerTimeout(f"timed out after {timeout_s:g}s", unsent=True)
        try:
            async with asyncio.timeout(min(self.connect_timeout_s, left_s)):
                return await self._open_connection(target)
        except TimeoutError:
            limit = min(self.connect_timeout_s, timeout_s)
            raise ConnectTimeout(f"timed out connecting after {limit:g}s", unsent=True) from None

    async def _open_connection(self, target: Target) -> Connection:
        """Happy Eyeballs (RFC 8305) over the checked addresses, families interleaved: the next
        address is tried when the previous one failed or has not connected within
        `HAPPY_EYEBALLS_DELAY_S`; the first connection made wins, the others are dropped. So a
        host whose IPv6 address is unreachable still gets its IPv4 one well within the timeout."""
        addresses = _interleaved(await self._addresses(target.host, target.port))
        if len(addresses) == 1:  # the common case: no tasks
            try:
                conn = await self._dial(target, addresses[0])
            except _DialFailed as exc:
                raise _cannot_connect(target, [str(exc)]) from None
        else:
            conn = await self._race(target, addresses)
        self._open.add(conn)
        self._metrics.connected("https" if target.tls else "http")
        return conn

    async def _race(self, target: Target, addresses: list[ResolveResult]) -> Connection:
        failures: list[str] = []
        running: set[asyncio.Task[Connection]] = set()
        winner: Connection | None = None
        todo = list(addresses)
        try:
            while winner is None and (todo or running):
                if todo:
                    running.add(asyncio.ensure_future(self._dial(target, todo.pop(0))))
                done, _ = await asyncio.wait(
                    running, timeout=HAPPY_EYEBALLS_DELAY_S if todo else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for task in done:
                    running.discard(task)
                    exc = task.exception()
                    if exc is None:
                        if winner is None:
                            winner = task.result()
                        else:
                            task.result().close()
                    elif isinstance(exc, _DialFailed):
                        failures.append(str(exc))
                    else:  # a certificate refused: no other address will do better
                        if winner is not None:
                            winner.close()
                        raise exc
        finally:
            for task in running:
                task.cancel()
            if running:  # one may have connected before it saw the cancel; a cancel of ours propagates
                for late in await asyncio.gather(*running, return_exceptions=True):
                    if isinstance(late, Connection):
                        late.close()
        if winner is None:
            raise _cannot_connect(target, failures)
        return winner

    async def _dial(self, target: Target, address: ResolveResult) -> Connection:
        conn = Connection(target.key, self._returned, self._lost)
        try:
            await asyncio.get_running_loop().create_connection(
                lambda: conn,
                host=address["host"],
                port=target.port,
                family=address["family"],
                proto=socket.IPPROTO_TCP,
                ssl=self._ssl if target.tls else None,
                server_hostname=target.host if target.tls else None,
                local_addr=self._local_addr,
            )
        except ssl.SSLCertVerificationError as exc:
            raise TransportError(f"TLS certificate of {target.host} not accepted: {exc.verify_message}",
                                 unsent=True) from None
        except OSError as exc:  # ssl.SSLError included
            raise _DialFailed(f"{address['host']}: {exc.strerror or exc}", unsent=True) from None
        return conn

    async def _addresses(self, host: str, port: int) -> list[ResolveResult]:
        """The host's checked addresses; `DestinationRefused` if any of them is refused."""
        now = self._clock()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:  # DestinationRefused passes through
            results = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec refuses
            why = getattr(exc, "strerror", None) or exc
            raise TransportError(f"cannot resolve {host}: {why}", unsent=True) from None
        if not results:
            raise TransportError(f"cannot resolve {host}: no addresses", unsent=True)
        if len(self._dns) > 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_CACHE_TTL_S, results)
        return results


class _DialFailed(TransportError):
    """One address could not be connected to; the others may still be."""


def _cannot_connect(target: Target, failures: list[str]) -> TransportError:
    return TransportError(f"cannot connect to {target.host}:{target.port} ({'; '.join(failures)})"[:500],
                          unsent=True)


def _interleaved(addresses: list[ResolveResult]) -> list[ResolveResult]:
    """Families alternated, the first answer's family first (RFC 8305, section 4)."""
    if len(addresses) < 2:
        return addresses
    first = addresses[0]["family"]
    same = [a for a in addresses if a["family"] == first]
    other = [a for a in addresses if a["family"] != first]
    out: list[ResolveResult] = []
    for i in range(max(len(same), len(other))):
        out += same[i:i + 1] + other[i:i + 1]
    return out


def header_lines(headers: Mapping[str, str]) -> bytes:
    """`Name: value\r\n` for each header. A name or value with CR or LF in it (header
    injection), a name that is not a token, or text outside latin-1 is refused."""
    text = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    if text.count("\n") != len(headers) or text.count("\r") != len(headers):
        raise TransportError("a request header contains a line break")
    for name in headers:
        if not name or not _TOKEN.issuperset(name):
            raise TransportError(f"{name[:50]!r} is not a valid header name")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise TransportError("a request header is not latin-1 text") from None


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
