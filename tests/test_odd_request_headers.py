"""Request headers no HTTP library would send, written as raw bytes: they are answered with
the right JSON error (or ignored, where the header is optional), never a `500`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from conftest import Gateway

from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]


async def exchange(port: int, data: bytes) -> tuple[int, dict[str, object]]:
    """Send `data` on a new connection; the answer's status and JSON body (bounded in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize(
    "token", [b"\xff\xfe", b"eyJ\xc3(.e30.x", b"\xed\xa0\x80"], ids=["latin-1", "bad-utf-8", "surrogate"]
)
async def test_a_bearer_token_that_is_not_utf8_is_401(gateway: Gateway, token: bytes) -> None:
    data = (b"GET /api/v2/hooks HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + token
            + b"\r\nConnection: close\r\n\r\n")
    status, body = await exchange(gateway.client.port, data)  # type: ignore[arg-type]
    assert status == 401, body
    assert body == {"statusCode": 401, "error": "Unauthorized", "message": "malformed token"}


@pytest.mark.parametrize(
    "since",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "Mon, 01 Jan 2026 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 2026 99999999999999999999:00:00 GMT",
    ],
    ids=["year", "offset", "hour"],
)
async def test_an_if_modified_since_with_huge_numbers_is_ignored(
    make_gateway: MakeGateway, make_settings: MakeSettings, since: str
) -> None:
    gw = await make_gateway(make_settings(
        egress={"regions": {"us": ["203.0.113.10/32"]}, "regions_updated_at": "2026-11-20T08:30:00Z"}
    ))
    resp = await gw.client.get("/v1/ip-ranges", headers={"If-Modified-Since": since})
    assert resp.status == 200, await resp.text()  # an unreadable date is ignored (RFC 9110)
    assert (await resp.json())["regions"]["us"]["ipv4_cidrs"] == ["203.0.113.10/32"]
