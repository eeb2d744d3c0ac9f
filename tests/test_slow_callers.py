"""Callers that send their request body slowly, or not at all (slowloris): the whole body must
arrive within `[server] body_timeout`, else the answer is a JSON `408` and the connection is
closed, so a trickling caller holds neither a connection nor a handler for long; callers on
other connections are served meanwhile. Raw sockets on loopback write the bytes by hand."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import Gateway

from gateway.auth import SCOPE_FORWARD

PUR = "post-user-registration"
BODY_TIMEOUT_S = 1.0
EVENT = json.dumps({"user": {"id": "u1"}, "context": {"connection": {"id": "c", "name": "db"}}}).encode()


def port_of(gw: Gateway) -> int:
    port = gw.client.server.port
    assert port is not None
    return port


async def trickle(
    port: int, head: bytes, body: bytes, *, every: float, limit: float = 8.0
) -> tuple[bytes, float]:
    """Send `head`, then `body` one byte every `every` seconds until the server answers and
    closes; return what it sent and how long after the head it began to answer. Bounded by
    `limit`: a server that keeps the connection open fails the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    writer.write(head)
    await writer.drain()
    started = loop.time()

    async def feed() -> None:
        for byte in body:
            await asyncio.sleep(every)
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return

    feeder = asyncio.create_task(feed())
    answer, answered = b"", None
    try:
        async with asyncio.timeout(limit):
            while True:  # until the server closes the connection
                try:
                    chunk = await reader.read(65536)
                except ConnectionResetError:  # closed with bytes of ours unread: after the answer
                    break
                if not chunk:
                    break
                answer += chunk
                answered = answered or loop.time() - started
        return answer, answered or limit
    finally:
        feeder.cancel()
        writer.close()


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def post(path: str, token: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


async def slow_gateway(make_gateway: Any, make_settings: Any) -> Gateway:
    gw: Gateway = await make_gateway(make_settings(server={"body_timeout": f"{BODY_TIMEOUT_S}s"}))
    await gw.create_tenant("acme")
    await gw.create_tenant("other")
    return gw


async def test_an_ingest_body_trickled_past_the_timeout_is_408_and_the_connection_closed(
    make_gateway, make_settings
) -> None:
    gw = await slow_gateway(make_gateway, make_settings)
    token = gw.token("acme", (SCOPE_FORWARD,))
    raw, took = await trickle(port_of(gw), post(f"/v1/tenants/acme/triggers/{PUR}", token, len(EVENT)),
                              EVENT, every=0.25)
    status, headers, body = parse(raw)
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    assert body == {"statusCode": 408, "error": "Request Timeout",
                    "message": f"the request body did not arrive within {BODY_TIMEOUT_S:g} s"}
    assert headers.get("connection", "").lower() == "close"
    assert took < len(EVENT) * 0.25  # cut at the deadline, not when the body was whole
    assert token.encode() not in raw
    # Nothing half-read was stored: the tenant has no event.
    resp = await gw.client.get("/api/v2/deliveries", headers=gw.auth("acme"))
    assert resp.status == 200 and await resp.json() == []


async def test_a_caller_that_never_sends_its_body_is_cut_off(make_gateway, make_settings) -> None:
    gw = await slow_gateway(make_gateway, make_settings)
    raw, _ = await trickle(port_of(gw), post("/api/v2/hooks", gw.token("acme"), 500), b"", every=0.1)
    status, _, body = parse(raw)
    assert status == 408 and body["statusCode"] == 408


async def test_other_callers_are_served_while_slow_ones_trickle(make_gateway, make_settings) -> None:
    gw = await slow_gateway(make_gateway, make_settings)
    port = port_of(gw)
    token = gw.token("acme", (SCOPE_FORWARD,))
    slow = [asyncio.create_task(trickle(port, post(f"/v1/tenants/acme/triggers/{PUR}", token, len(EVENT)),
                                        EVENT, every=0.3)) for _ in range(20)]
    await asyncio.sleep(0.2)  # the slow callers have sent their heads
    for _ in range(5):
        resp = await gw.forward(PUR, json.loads(EVENT), tenant="other")
        assert resp.status == 202, await resp.text()
    answers = await asyncio.gather(*slow)
    assert [parse(raw)[0] for raw, _ in answers] == [408] * 20


async def test_a_body_sent_in_time_is_taken_even_when_slow(make_gateway, make_settings) -> None:
    """The deadline is for the whole body, not for each byte: a slow but timely caller is fine."""
    gw = await slow_gateway(make_gateway, make_settings)
    body = b'{"name": "h", "url": "http://127.0.0.1:9/", "triggerId": "post-user-registration"}'
    head = post("/api/v2/hooks", gw.token("acme"), len(body))
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(head + body[:40])
        await writer.drain()
        await asyncio.sleep(BODY_TIMEOUT_S / 2)
        writer.write(body[40:])
        await writer.drain()
        async with asyncio.timeout(5):
            line = await reader.readline()
        assert line.startswith(b"HTTP/1.1 201"), line
    finally:
        writer.close()
