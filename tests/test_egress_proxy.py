"""The hosted hooks' egress proxy (gateway/runtime/egress_proxy.py) on its own, spoken to with raw
bytes over its Unix socket: CONNECT to an allowed loopback peer works; everything else is a 4xx
(or a 5xx for a destination that cannot be reached) and a closed connection, never a hang, and
a refused destination is never connected to. Only loopback; no name but localhost is resolved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sockets import RawPeer, RawServers, answering, endless_body, http_answer, refusing_port, silent

from gateway.runtime import egress_proxy
from gateway.runtime.egress_proxy import EgressProxy, ProxyCaps

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
READ_BOUND_S = 20.0  # a bound on every read here, far above any answer's time: a hang fails the test
MAX_READS = 10_000

StartProxy = Callable[..., Awaitable[EgressProxy]]


@pytest.fixture
async def start_proxy(tmp_path: Path) -> AsyncIterator[StartProxy]:
    started: list[EgressProxy] = []

    async def start(**options: Any) -> EgressProxy:
        options.setdefault("allow_cidrs", LOOPBACK)
        proxy = await EgressProxy.start(tmp_path / f"egress-{len(started)}.sock", **options)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawServers]:
    servers = RawServers()
    yield servers
    await servers.close()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the proxy closes (a reset after its answer counts as closed)."""
    data = b""
    async with asyncio.timeout(READ_BOUND_S):
        for _ in range(MAX_READS):
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


async def exchange(proxy: EgressProxy, data: bytes, *, eof: bool = False) -> bytes:
    """Send `data` (then end our side, with `eof`) and return all the proxy sent until it closed."""
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        return await read_all(reader)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer[9:12])


def connect(target: str) -> bytes:
    return f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()


async def test_connect_to_an_allowed_loopback_peer_carries_bytes_both_ways(
    start_proxy: StartProxy, raw: RawServers
) -> None:
    peer = await raw.start(answering(http_answer(b'{"ok":true}')))
    proxy = await start_proxy()
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    try:
        request = b"POST /hook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
        writer.write(connect(f"127.0.0.1:{peer.port}") + request)  # sent before the 200: forwarded after it
        async with asyncio.timeout(READ_BOUND_S):
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and await reader.readexactly(11) == b'{"ok":true}'
    finally:
        writer.close()
    assert peer.requests == 1


async def test_a_name_is_resolved_by_the_proxy_and_each_checked_address_tried(
    start_proxy: StartProxy, raw: RawServers
) -> None:
    peer = await raw.start(answering(http_answer(b"{}")))  # on 127.0.0.1 only: ::1, if tried first, refuses
    proxy = await start_proxy()
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    try:
        writer.write(connect(f"localhost:{peer.port}") + b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        async with asyncio.timeout(READ_BOUND_S):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 Connection established")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    finally:
        writer.close()
    assert peer.requests == 1


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03marker\r\n\r\n",  # a TLS ClientHello, say
    b"marker marker marker\r\n\r\n",
    b"CONNECT  127.0.0.1:80 HTTP/1.1\r\n\r\n",  # two spaces
    b"CONNECT 127.0.0.1:80 HTTP/2.0\r\n\r\n",
    b"CONNECT 127.0.0.1:80\r\n\r\n",
    b"connect 127.0.0.1:80 HTTP/1.1\r\n\r\n",
])
async def test_garbage_is_a_400_and_closed_without_echoing_it(
    start_proxy: StartProxy, garbage: bytes
) -> None:
    proxy = await start_proxy()
    answer = await exchange(proxy, garbage)
    assert status_of(answer) == 400 and b"marker" not in answer


async def test_a_head_cut_short_is_a_400_and_closed(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    assert status_of(await exchange(proxy, b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n", eof=True)) == 400


async def test_a_huge_head_is_a_431_and_closed(start_proxy: StartProxy) -> None:
    proxy = await start_proxy()
    head = b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nX-Filler: " + b"a" * (4 * egress_proxy.MAX_HEAD_BYTES)
    assert status_of(await exchange(proxy, head)) == 431


async def test_a_slow_head_is_a_408_and_closed(
    start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(egress_proxy, "HEAD_TIMEOUT_S", 0.2)
    proxy = await start_proxy()
    assert status_of(await exchange(proxy, b"CONNECT 127.0.0.1:")) == 408


async def test_a_method_other_than_connect_is_a_405_and_nothing_is_forwarded(
    start_proxy: StartProxy, raw: RawServers
) -> None:
    peer = await raw.start(answering(http_answer(b"{}")))
    proxy = await start_proxy()
    request = f"GET http://127.0.0.1:{peer.port}/ HTTP/1.1\r\nHost: 127.0.0.1:{peer.port}\r\n\r\n".encode()
    assert status_of(await exchange(proxy, request)) == 405
    assert peer.accepted == 0


@pytest.mark.parametrize("target", ["127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999", "127.0.0.1:http",
                                    "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:+80", "[::1:80",
                                    "[fe80::1%25eth0]:80", "[not-v6]:80", "exa_mple.com:80", "1.2.3.256:80",
                                    "-bad.example:80", "user@127.0.0.1:80"])
async def test_a_bad_target_is_a_400_and_closed(start_proxy: StartProxy, target: str) -> None:
    proxy = await start_proxy()
    assert status_of(await exchange(proxy, connect(target))) == 400


async def test_a_name_resolving_to_a_refused_address_is_a_403_and_never_connected(
    start_proxy: StartProxy, raw: RawServers
) -> None:
    peer = await raw.start(answering(http_answer(b"{}")))
    proxy = await start_proxy(allow_cidrs=())
    answer = await exchange(proxy, connect(f"localhost:{peer.port}"))
    assert status_of(answer) == 403 and b"loopback" in answer
    assert peer.accepted == 0


@pytest.mark.parametrize(("target", "named"), [
    ("169.254.169.254:80", b"link-local (cloud metadata)"),
    ("10.0.0.1:443", b"private"),
    ("0x7f.1:80", b"loopback"),  # 127.0.0.1 written as inet_aton reads it
    ("[::ffff:169.254.169.254]:80", b"link-local (cloud metadata)"),
])
async def test_a_refused_address_is_a_403_naming_its_range(
    start_proxy: StartProxy, target: str, named: bytes
) -> None:
    proxy = await start_proxy(allow_cidrs=())
    answer = await exchange(proxy, connect(target))
    assert status_of(answer) == 403 and named in answer, answer


async def test_only_limits_the_destinations(start_proxy: StartProxy, raw: RawServers) -> None:
    peer = await raw.start(answering(http_answer(b"{}")))
    other = await raw.start(answering(http_answer(b"{}")))
    proxy = await start_proxy(only=[("127.0.0.1", peer.port)])
    assert status_of(await exchange(proxy, connect(f"127.0.0.1:{other.port}"))) == 403
    assert other.accepted == 0
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    try:
        writer.write(connect(f"127.0.0.1:{peer.port}"))
        async with asyncio.timeout(READ_BOUND_S):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_a_closed_port_is_a_502_and_a_blackhole_a_504(
    start_proxy: StartProxy, unaccepted_port: int
) -> None:
    proxy = await start_proxy(caps=ProxyCaps(connect_timeout_s=0.5))
    with refusing_port() as port:
        assert status_of(await exchange(proxy, connect(f"127.0.0.1:{port}"))) == 502
    assert status_of(await exchange(proxy, connect(f"127.0.0.1:{unaccepted_port}"))) == 504


async def open_tunnel(proxy: EgressProxy, peer: RawPeer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_unix_connection(proxy.path)
    writer.write(connect(f"127.0.0.1:{peer.port}"))
    async with asyncio.timeout(READ_BOUND_S):
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    return reader, writer


async def test_tunnels_over_the_cap_are_a_429(start_proxy: StartProxy, raw: RawServers) -> None:
    peer = await raw.start(silent)
    proxy = await start_proxy(caps=ProxyCaps(connections=2))
    tunnels = [await open_tunnel(proxy, peer) for _ in range(2)]
    answer = await exchange(proxy, connect(f"127.0.0.1:{peer.port}"))
    assert status_of(answer) == 429 and b"too many tunnels" in answer
    assert peer.accepted == 2
    for _, writer in tunnels:
        writer.close()


async def test_a_tunnel_is_cut_past_its_byte_cap(start_proxy: StartProxy, raw: RawServers) -> None:
    peer = await raw.start(endless_body(4 << 20))
    proxy = await start_proxy(caps=ProxyCaps(bytes_per_tunnel=100_000))
    reader, writer = await open_tunnel(proxy, peer)
    try:
        writer.write(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        got = await read_all(reader)
    finally:
        writer.close()
    assert 0 < len(got) <= 100_000  # the request's bytes count too


async def test_an_idle_tunnel_is_closed(start_proxy: StartProxy, raw: RawServers) -> None:
    peer = await raw.start(silent)
    proxy = await start_proxy(caps=ProxyCaps(idle_timeout_s=0.2))
    reader, writer = await open_tunnel(proxy, peer)
    try:
        assert await read_all(reader) == b""
    finally:
        writer.close()


async def test_close_ends_every_tunnel_and_removes_the_socket(
    start_proxy: StartProxy, raw: RawServers
) -> None:
    peer = await raw.start(silent)
    proxy = await start_proxy()
    reader, writer = await open_tunnel(proxy, peer)
    await proxy.close()
    try:
        assert await read_all(reader) == b""
    finally:
        writer.close()
    assert not proxy.path.exists()


async def test_the_socket_is_only_for_its_owner(start_proxy: StartProxy) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    proxy = await start_proxy(owner=(1_800_001, 1_800_002))
    info = proxy.path.lstat()
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (1_800_001, 1_800_002)
    assert [p.name for p in proxy.path.parent.iterdir()] == [proxy.path.name]  # no temporary left
