"""PostgreSQL going away and coming back (SPEC: nothing accepted is lost): while it is away,
ingest answers `503` with `Retry-After` (never a `202` it cannot keep, never a `500`), blocking
points keep answering from the cached view, `/readyz` says so; when it is back, all resumes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from pgserver import PostgresServer, running_server

PUR = "post-user-registration"
CE = "credentials-exchange"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
CE_EVENT = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own: it is stopped and started again."""
    with running_server() as server:
        yield server


async def test_ingest_answers_503_while_postgres_is_away_and_resumes_after(
    own_postgres, make_gateway, make_settings, make_receiver
) -> None:
    url = await own_postgres.create_database(prefix="away")
    gw = await make_gateway(make_settings(database={"url": url, "migrate": "auto"}))
    await gw.create_tenant("acme")

    async def claims(request: web.Request, received: object, state: dict[str, object]) -> web.StreamResponse:
        return web.json_response({"status": "success", "data": {"scope": ["read", "extra"]}})

    rx = await make_receiver(claims)
    await gw.create_hook(name="ce", triggerId=CE, url=rx.url(), enabled=True)
    await gw.create_hook(name="pur", url=rx.url(), enabled=True)
    assert (await gw.forward(CE, CE_EVENT)).status == 200  # the tenant's view is cached now

    own_postgres.halt()
    try:
        resp = await gw.forward(PUR, EVENT)
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["statusCode"] == 503
        blocking = await gw.forward(CE, CE_EVENT)
        assert blocking.status == 200  # logins go on from the cached view
        assert (await blocking.json())["data"]["scope"] == ["read", "extra"]
        assert (await gw.client.get("/readyz")).status == 503
    finally:
        own_postgres.resume()

    end = time.monotonic() + 20
    while True:
        resp = await gw.forward(PUR, EVENT)
        if resp.status == 202:
            break
        assert resp.status == 503 and time.monotonic() < end, await resp.text()
        await asyncio.sleep(0.2)
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await gw.wait_delivery(delivery_id, status="succeeded")
    assert (await gw.client.get("/readyz")).status == 200
