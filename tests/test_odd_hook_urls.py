"""Hook URLs that trip the URL parser itself (empty IPv6 brackets with user-info) are a JSON
`400` when a hook is saved or changed, never a `500`."""

from __future__ import annotations

import pytest
from conftest import Gateway

ODD_URLS = ["https://[]@/", "https://[]@", "http://[]@hooks.example.com/"]


@pytest.mark.parametrize("url", ODD_URLS)
async def test_a_url_the_parser_chokes_on_is_400(gateway: Gateway, url: str) -> None:
    resp = await gateway.client.post(
        "/api/v2/hooks",
        json={"name": "n", "triggerId": "post-user-registration", "url": url},
        headers=gateway.auth(),
    )
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["statusCode"] == 400 and body["message"].startswith("url ")

    hook = await gateway.create_hook()
    resp = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}", json={"url": url}, headers=gateway.auth()
    )
    assert resp.status == 400, await resp.text()
