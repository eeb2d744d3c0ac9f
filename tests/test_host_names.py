"""Host names of hook URLs are checked as DNS can carry them: letters, digits and hyphens in
labels of 1 to 63 bytes (no hyphen first or last), 253 bytes in all, valid IDNA for
internationalized names. Anything else is a JSON 400 when a hook is saved, and is refused by
the outbound client before any lookup or connection, so it never reaches the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Gateway
from fakes import FakeResolver

from gateway.delivery.attempt import send
from gateway.errors import BadRequest
from gateway.peers import networks
from gateway.transport import Transport

LOOPBACK = networks(["127.0.0.0/8", "::1/128"])

REFUSED_HOSTS = {
    "a NUL": "a\x00b.example.com",
    "a percent-encoded NUL": "a%00b.example.com",
    "a percent sign": "a%2eb.example.com",
    "a space": "a b.example.com",
    "a tab (which URL parsers drop)": "a\tb.example.com",
    "a line break": "a\nb.example.com",
    "a control character": "a\x01b.example.com",
    "DEL": "a\x7fb.example.com",
    "an underscore": "a_b.example.com",
    "an asterisk": "a*b.example.com",
    "a leading hyphen": "-ab.example.com",
    "a trailing hyphen": "ab-.example.com",
    "an empty label": "a..example.com",
    "a label of 64 bytes": "a" * 64 + ".example.com",
    "254 bytes in all": ("a" * 62 + ".") * 4 + "abc",
    "a punycode label that is not IDNA": "xn--a.example.com",
    "a Unicode name IDNA refuses": "\u2603.example.com",
    "a last label that is a number": "hooks.example.123",
    "a non-breaking space": "a\u00a0b.example.com",
}

ACCEPTED_HOSTS = {
    "a plain name": "hooks.example.com",
    "a final dot": "hooks.example.com.",
    "upper case": "Hooks.Example.COM",
    "digits and inner hyphens": "1-hook--2.example.com",
    "a label of 63 bytes": "a" * 63 + ".example.com",
    "an internationalized name": "b\u00fccher.example",
    "its punycode": "xn--bcher-kva.example",
}


async def post_hook(gw: Gateway, url: str) -> tuple[int, Any]:
    resp = await gw.client.post(
        "/api/v2/hooks",
        json={"name": "n", "triggerId": "post-user-registration", "url": url},
        headers=gw.auth(),
    )
    return resp.status, await resp.json()


async def patch_hook(gw: Gateway, hook_id: str, url: str) -> tuple[int, Any]:
    resp = await gw.client.patch(f"/api/v2/hooks/{hook_id}", json={"url": url}, headers=gw.auth())
    return resp.status, await resp.json()


@pytest.mark.parametrize("case", list(REFUSED_HOSTS))
async def test_a_host_dns_cannot_carry_is_a_json_400_at_create_and_update(
    gateway: Gateway, case: str
) -> None:
    url = f"https://{REFUSED_HOSTS[case]}/hook"
    status, body = await post_hook(gateway, url)
    assert status == 400, body
    assert set(body) == {"statusCode", "error", "message"} and body["statusCode"] == 400
    assert "url" in body["message"]

    good = await gateway.create_hook(name="good", url="https://hooks.example.com/x")
    status, body = await patch_hook(gateway, good["id"], url)
    assert status == 400, body
    assert body["statusCode"] == 400 and "url" in body["message"]
    hook = await gateway.client.get(f"/api/v2/hooks/{good['id']}", headers=gateway.auth())
    assert (await hook.json())["url"] == "https://hooks.example.com/x"


@pytest.mark.parametrize("case", list(ACCEPTED_HOSTS))
async def test_a_name_dns_can_carry_is_accepted(gateway: Gateway, case: str) -> None:
    url = f"https://{ACCEPTED_HOSTS[case]}/hook"
    status, body = await post_hook(gateway, url)
    assert status == 201, body
    assert body["url"] == url


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A loopback server that records whatever any connection sends it."""
    received: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], received
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("case", list(REFUSED_HOSTS))
async def test_the_outbound_client_refuses_the_host_before_any_lookup(
    listener: tuple[int, list[bytes]], case: str
) -> None:
    """As if the hook had been saved before the rule existed: the resolver would send the name
    to the loopback listener, but it is never asked, and nothing is sent."""
    port, received = listener
    host = REFUSED_HOSTS[case]
    resolver = FakeResolver({host: ["127.0.0.1"], host.lower(): ["127.0.0.1"]})
    transport = Transport(allow_http=True, allow_cidrs=LOOPBACK, resolver=resolver)
    url = f"http://{host}:{port}/hook"
    try:
        with pytest.raises(BadRequest, match="url"):
            transport.target(url)
        result = await send(transport, url, b"{}", {"Content-Type": "application/json"},
                            timeout_s=2.0, body_cap=1024)
    finally:
        await transport.close()
    assert result.error is not None and "url" in result.error
    assert result.status_code is None
    assert resolver.asked == []
    await asyncio.sleep(0.05)  # a connection made anyway would have been recorded by now
    assert received == []


async def test_the_outbound_client_sends_to_an_internationalized_name_in_punycode(
    listener: tuple[int, list[bytes]],
) -> None:
    port, received = listener
    resolver = FakeResolver({"xn--bcher-kva.example": ["127.0.0.1"]})
    transport = Transport(allow_http=True, allow_cidrs=LOOPBACK, resolver=resolver)
    try:
        target = transport.target(f"http://b\u00fccher.example:{port}/hook")
        assert target.host == "xn--bcher-kva.example"
        await send(transport, target.url, b"{}", {}, timeout_s=2.0, body_cap=1024)
    finally:
        await transport.close()
    assert resolver.asked == ["xn--bcher-kva.example"]
    assert received and f"Host: xn--bcher-kva.example:{port}\r\n".encode() in received[0]


