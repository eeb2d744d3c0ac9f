"""Requests aiohttp's HTTP parser refuses are answered as JSON `{statusCode, error, message}`
with a fixed message that echoes no request byte, and the connection is closed.

The server is started as `gateway serve` starts it (`gateway.server.GatewayRunner`), and once
as `gateway serve` itself; the requests are raw bytes no HTTP library would send. Each carries
`SECRET`, standing for the start of a bearer token, that must never come back.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import HS256_SECRET

from gateway.app import create_app
from gateway.auth import SCOPE_ADMIN, mint
from gateway.server import GatewayRunner
from gateway.settings import Settings

SECRET = b"eyJsecretTokenStart"
MALFORMED = "malformed HTTP request"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Answer:
    raw: bytes
    status: int
    headers: dict[str, str]
    body: Any


def parse(raw: bytes) -> Answer:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(raw, int(status_line.split()[1]), headers, json.loads(body))


async def exchange(port: int, *parts: bytes) -> bytes:
    """Write `parts` (a short pause between them), then read until the server closes; a
    server that keeps the connection open fails the test after 5 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i, part in enumerate(parts):
            if i:
                await asyncio.sleep(0.1)  # the server has begun on what came before
            writer.write(part)
            await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


def assert_json_error(answer: Answer, status: int, message: str) -> None:
    assert answer.status == status, answer.raw
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.body == {"statusCode": status, "error": answer.body["error"], "message": message}
    assert isinstance(answer.body["error"], str) and answer.body["error"]
    assert SECRET not in answer.raw


@pytest.fixture
async def server_port(make_settings: Callable[..., Settings]) -> AsyncIterator[int]:
    """The gateway served by `GatewayRunner` on a loopback port, as `gateway serve` serves it."""
    runner = GatewayRunner(create_app(make_settings(), start_workers=False))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def request(head: bytes, body: bytes = b"") -> bytes:
    return b"POST /api/v2/hooks HTTP/1.1\r\nHost: gw\r\n" + head + b"\r\n" + body


CASES: dict[str, tuple[bytes, int, str]] = {
    "a header line over the limit, holding a bearer token": (
        b"GET /api/v2/hooks HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + SECRET + b"A" * 17000
        + b"\r\n\r\n",
        431, "request header fields too large",
    ),
    "too many header lines": (
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + b"".join(b"X-%d: %b\r\n" % (i, SECRET) for i in range(200))
        + b"\r\n",
        431, "request header fields too large",
    ),
    "a request line over the limit": (
        b"GET /" + SECRET * 600 + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 414, "request line too long",
    ),
    "a malformed method": (b"GE(T /" + SECRET + b" HTTP/1.1\r\nHost: gw\r\n\r\n", 400, MALFORMED),
    "a control character in the method": (b"G\x01T /" + SECRET + b" HTTP/1.1\r\n\r\n", 400, MALFORMED),
    "a bad HTTP version": (b"GET / HTTP/9." + SECRET + b"\r\nHost: gw\r\n\r\n", 400, MALFORMED),
    "bare LF line ends": (b"GET /" + SECRET + b" HTTP/1.1\nHost: gw\n\n", 400, MALFORMED),
    "TLS bytes on the HTTP port": (b"\x16\x03\x01\x02\x00\x01" + SECRET + b"\r\n\r\n", 400, MALFORMED),
    "a NUL in a header value": (
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + SECRET + b"\x00x\r\n\r\n",
        400, MALFORMED,
    ),
    "a header line without a colon": (
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n" + SECRET + b"\r\n\r\n", 400, MALFORMED,
    ),
    "a space in a header name": (
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX " + SECRET + b": 1\r\n\r\n", 400, MALFORMED,
    ),
    "a Content-Length that is not a number": (
        request(b"Content-Length: " + SECRET + b"\r\n"), 400, MALFORMED,
    ),
    "both Content-Length and chunked": (
        request(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\nX-T: " + SECRET + b"\r\n", b"0\r\n\r\n"),
        400, MALFORMED,
    ),
    "a chunk size that is not hex": (
        request(b"Transfer-Encoding: chunked\r\n", b"zz" + SECRET + b"\r\n"), 400, MALFORMED,
    ),
    "a chunk longer than its size": (
        request(b"Transfer-Encoding: chunked\r\n", b"3\r\n{}" + SECRET + b"\r\n0\r\n\r\n"),
        400, MALFORMED,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_request_the_parser_refuses_is_answered_as_json_without_its_bytes(
    server_port: int, case: str
) -> None:
    data, status, message = CASES[case]
    answer = parse(await exchange(server_port, data))  # and the server closed the connection
    assert_json_error(answer, status, message)


async def test_a_malformed_request_after_a_good_one_on_a_kept_alive_connection(server_port: int) -> None:
    raw = await exchange(
        server_port,
        b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n",
        b"GET /" + SECRET + b"\x00 HTTP/1.1\r\nHost: gw\r\n\r\n",
    )
    first, _, second = raw.partition(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200 "), raw
    assert_json_error(parse(second), 400, MALFORMED)


async def test_an_unsupported_expect_header_is_json_without_its_value(server_port: int) -> None:
    data = request(b"Expect: " + SECRET + b"\r\nContent-Length: 2\r\n", b"{}")
    answer = parse(await exchange(server_port, data))
    assert_json_error(answer, 417, 'only "Expect: 100-continue" is supported')


async def test_chunk_framing_broken_while_the_body_is_read_is_400_and_closes(
    server_port: int, make_settings: Callable[..., Settings]
) -> None:
    """The head and the first chunk are handled (the handler is reading the body) before the
    broken framing arrives: the handler's read fails, rather than waiting for ever."""
    operator = mint(make_settings(), tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=600).encode()
    head = (b"POST /api/v2/tenants HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + operator
            + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"i")
    answer = parse(await exchange(server_port, head, b"zz" + SECRET + b"\r\n\r\n"))
    assert_json_error(answer, 400, "malformed request body")
    assert answer.headers["connection"] == "close"


# -- `gateway serve` itself ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gateway_serve_answers_parser_errors_as_json(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\nport = {port}\n[database]\nurl = "sqlite:///{tmp_path / "gw.db"}"\n'
        f'[auth]\nhs256_secret = "{HS256_SECRET}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "gateway serve exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "gateway serve did not start"
                time.sleep(0.05)
        for case in ("a header line over the limit, holding a bearer token", "a NUL in a header value"):
            data, status, message = CASES[case]
            assert_json_error(parse(asyncio.run(exchange(port, data))), status, message)
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0  # SIGTERM is a clean shutdown
