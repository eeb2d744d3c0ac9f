"""TLS on both sides of the gateway, with a private CA made by `trustme`.

Outbound: an https receiver whose certificate chains to a private CA is refused (a recorded
failed attempt naming the certificate) unless `[egress] ca_file` names that CA, which adds to
the system's CAs rather than replacing them; a receiver that accepts and never answers the TLS
handshake ends as a failed attempt within the hook's timeout. Inbound: `gateway serve` with
`[server] tls_cert`/`tls_key` serves HTTPS, and nothing in plain HTTP on that port.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Gateway

from gateway.auth import SCOPE_ADMIN, SCOPE_FORWARD, mint
from gateway.settings import Settings

PUR = "post-user-registration"
START_TIMEOUT_S = 30.0
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}


@dataclass
class HttpsReceiver:
    """A real aiohttp server on 127.0.0.1 serving a certificate of a private CA."""

    server: TestServer
    seen: list[bool] = field(default_factory=list)  # request.secure of each request

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}/hook"


@pytest.fixture
def private_ca() -> trustme.CA:
    return trustme.CA()


def write_ca(ca: trustme.CA, path: Path) -> Path:
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def make_https_receiver(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Callable[[trustme.CA], Awaitable[HttpsReceiver]]:
    async def make(ca: trustme.CA) -> HttpsReceiver:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
        seen: list[bool] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            await request.read()
            seen.append(request.secure)
            return web.json_response({"status": "success", "data": {}})

        app = web.Application()
        app.router.add_post("/hook", handler)
        server = await aiohttp_server(app, host="127.0.0.1", ssl=context)
        return HttpsReceiver(server, seen)

    return make


async def delivered_to(gw: Gateway, *urls: str, status: str | None = None) -> list[dict[str, Any]]:
    """A hook at each URL, one event sent to them all: each hook's delivery once its first
    attempt is recorded (and it has `status`)."""
    hooks = [await gw.create_hook(name=f"hook{i}", url=url, enabled=True, timeoutMs=5000)
             for i, url in enumerate(urls)]
    resp = await gw.forward(PUR, EVENT)
    assert resp.status == 202, await resp.text()
    ids = {d["hookId"]: d["deliveryId"] for d in (await resp.json())["deliveries"]}
    return [await gw.wait_delivery(ids[hook["id"]], attempts=1, status=status) for hook in hooks]


# -- outbound: receivers' certificates -----------------------------------------------------------


async def test_a_receiver_of_a_private_ca_is_refused_without_ca_file(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings],
    make_https_receiver: Callable[[trustme.CA], Awaitable[HttpsReceiver]], private_ca: trustme.CA,
) -> None:
    rx = await make_https_receiver(private_ca)
    gw = await make_gateway(make_settings())
    await gw.create_tenant("acme")

    (delivery,) = await delivered_to(gw, rx.url)

    assert delivery["status"] != "succeeded"
    attempt = delivery["attempts"][0]
    assert attempt["statusCode"] is None
    assert "TLS certificate of 127.0.0.1 not accepted" in attempt["error"]
    assert "certificate" in attempt["error"].split("not accepted:", 1)[1]  # OpenSSL's reason
    assert rx.seen == []  # nothing reached the receiver


async def test_ca_file_makes_a_receiver_of_that_ca_trusted(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings],
    make_https_receiver: Callable[[trustme.CA], Awaitable[HttpsReceiver]], private_ca: trustme.CA,
    tmp_path: Path,
) -> None:
    rx = await make_https_receiver(private_ca)
    ca_file = write_ca(private_ca, tmp_path / "private-ca.pem")
    gw = await make_gateway(make_settings(egress={"ca_file": str(ca_file)}))
    await gw.create_tenant("acme")

    (delivery,) = await delivered_to(gw, rx.url, status="succeeded")

    assert delivery["attempts"][0]["statusCode"] == 200
    assert rx.seen == [True]  # it came over TLS


async def test_ca_file_adds_to_the_system_cas_rather_than_replacing_them(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings],
    make_https_receiver: Callable[[trustme.CA], Awaitable[HttpsReceiver]], private_ca: trustme.CA,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The "system" store is a CA of the test's (OpenSSL reads SSL_CERT_FILE for its default
    store), so a receiver the system trusts can run on loopback."""
    system_ca = trustme.CA()
    monkeypatch.setenv("SSL_CERT_FILE", str(write_ca(system_ca, tmp_path / "system-ca.pem")))
    public = await make_https_receiver(system_ca)
    private = await make_https_receiver(private_ca)
    ca_file = write_ca(private_ca, tmp_path / "private-ca.pem")
    gw = await make_gateway(make_settings(egress={"ca_file": str(ca_file)}))
    await gw.create_tenant("acme")

    to_public, to_private = await delivered_to(gw, public.url, private.url, status="succeeded")

    assert [to_public["attempts"][0]["statusCode"], to_private["attempts"][0]["statusCode"]] == [200, 200]
    assert (public.seen, private.seen) == ([True], [True])


async def test_a_tls_handshake_that_stalls_is_a_failed_attempt_within_the_hook_timeout(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings],
) -> None:
    hello: list[bytes] = []
    hangups = asyncio.Event()

    async def never_answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello.append(await reader.read(5))  # the start of the ClientHello; nothing is sent back
        await reader.read()  # until the gateway gives up and closes
        hangups.set()
        writer.close()

    stall = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    port = stall.sockets[0].getsockname()[1]
    # The connect timeout is longer than the hook's: the hook's timeout is what ends the attempt.
    gw = await make_gateway(make_settings(egress={"connect_timeout": "60s"}))
    await gw.create_tenant("acme")
    try:
        hook = await gw.create_hook(url=f"https://127.0.0.1:{port}/hook", enabled=True, timeoutMs=1000)
        resp = await gw.forward(PUR, EVENT)
        assert resp.status == 202, await resp.text()
        (delivery,) = [d for d in (await resp.json())["deliveries"] if d["hookId"] == hook["id"]]
        done = await gw.wait_delivery(delivery["deliveryId"], attempts=1)
        attempt = done["attempts"][0]
        assert attempt["statusCode"] is None
        assert "timed out connecting after 1s" in attempt["error"]
        assert hello and hello[0][:1] == b"\x16"  # a TLS handshake record reached the peer
        await asyncio.wait_for(hangups.wait(), 10)  # and the gateway closed its connection
    finally:
        stall.close()
        await stall.wait_closed()


# -- inbound: the gateway serving HTTPS ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve() -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """`gateway serve --config` of a settings file, in a process stopped at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "gateway.cli", "serve", "--config", settings.source],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture
async def https_client(private_ca: trustme.CA) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context()
    private_ca.configure_trust(context)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        yield http


async def wait_ready(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            assert proc.stderr is not None
            raise AssertionError(f"gateway exited: {proc.stderr.read()[-3000:]!r}")
        try:
            async with http.get(f"{base}/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("gateway not ready over https")


async def test_the_gateway_serves_https_with_tls_cert_and_tls_key(
    make_settings: Callable[..., Settings], serve: Callable[[Settings], subprocess.Popen[bytes]],
    https_client: aiohttp.ClientSession, private_ca: trustme.CA, tmp_path: Path,
) -> None:
    cert = private_ca.issue_cert("localhost", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    port = free_port()
    settings = make_settings(server={
        "host": "127.0.0.1", "port": port, "shutdown_timeout": "2s",
        "tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem"),
    })
    proc = serve(settings)
    base = f"https://127.0.0.1:{port}"
    await wait_ready(https_client, base, proc)

    async with https_client.get(f"{base}/healthz") as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    operator = mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=600)
    async with https_client.post(f"{base}/api/v2/tenants", json={"id": "acme"},
                                 headers={"Authorization": f"Bearer {operator}"}) as resp:
        assert resp.status == 201, await resp.text()
    forward = mint(settings, tenant="acme", scopes=(SCOPE_FORWARD,), ttl_s=600)
    async with https_client.post(f"{base}/v1/tenants/acme/triggers/{PUR}", json=EVENT,
                                 headers={"Authorization": f"Bearer {forward}"}) as resp:
        assert resp.status == 202, await resp.text()

    # Plain HTTP to the same port is not served: no HTTP answer comes back, only the end of
    # the connection (and perhaps a TLS alert).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        for _ in range(100):  # bounded: the server closes, or the socket timeout raises
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert b"HTTP/" not in answer
    assert b"ok" not in answer

    # A client that does not trust the private CA refuses the gateway's certificate.
    async with aiohttp.ClientSession() as untrusting:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await untrusting.get(f"{base}/healthz")
