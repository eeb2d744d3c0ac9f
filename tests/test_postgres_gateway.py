"""The whole gateway on PostgreSQL (`[database] url = "postgresql://..."`): an event delivered to
a real receiver and shown by the deliveries API, a blocking call answered, and the schema's
life: `gateway migrate`, `gateway serve` refusing an unmigrated database with a message that
names the command, and `migrate = "auto"`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import Gateway, Received, Receiver
from pgserver import PostgresServer

from gateway.points import sample_event
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
MakeReceiver = Callable[..., Awaitable[Receiver]]
PUR = "post-user-registration"
CE = "credentials-exchange"
CLI_TIMEOUT_S = 60


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own command
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_an_event_is_delivered_and_a_blocking_call_answered_on_postgresql(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver, pg_url: str
) -> None:
    gw = await make_gateway(make_settings(database={"url": pg_url}))
    await gw.create_tenant("acme")
    rx = await make_receiver()
    await gw.create_hook(url=rx.url(), enabled=True)

    async def claims(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        body = received.json()
        return web.json_response({"status": "success",
                                  "data": {"scope": body["scope"], "https://example.com/pg": "yes"}})

    ce = await make_receiver(claims)
    await gw.create_hook(name="ce", triggerId=CE, url=ce.url(), enabled=True)

    resp = await gw.forward(PUR, sample_event(PUR))
    assert resp.status == 202, await resp.text()
    (delivery_id,) = [d["deliveryId"] for d in (await resp.json())["deliveries"]]
    (received,) = await rx.wait_for(1)
    shown = await gw.wait_delivery(delivery_id, status="succeeded")
    answer = await gw.forward(CE, {**sample_event(CE), "scope": ["read"]})

    assert received.json()["user"] == sample_event(PUR)["user"]
    assert received.headers["webhook-id"]
    assert [a["statusCode"] for a in shown["attempts"]] == [200]
    listing = await gw.client.get("/api/v2/deliveries", headers=gw.auth())
    assert listing.status == 200
    assert delivery_id in [d["id"] for d in await listing.json()]
    assert answer.status == 200
    assert await answer.json() == {"status": "success",
                                   "data": {"scope": ["read"], "https://example.com/pg": "yes"}}
    assert (await gw.client.get("/readyz")).status == 200


async def test_text_postgresql_cannot_hold_is_a_4xx_not_a_500(
    make_gateway: MakeGateway, make_settings: MakeSettings, pg_url: str
) -> None:
    gw = await make_gateway(make_settings(database={"url": pg_url}))
    await gw.create_tenant("acme")

    renamed = await gw.client.patch("/api/v2/tenants/acme", json={"name": "a\u0000b"},
                                    headers={"Authorization": f"Bearer {gw.operator_token()}"})
    looked_up = await gw.client.get("/api/v2/hooks/hk_%00", headers=gw.auth())

    assert renamed.status == 400 and "NUL" in (await renamed.json())["message"]
    assert looked_up.status == 404  # as on SQLite: no hook has that id


def test_serve_refuses_an_unmigrated_database_naming_gateway_migrate(
    make_settings: MakeSettings, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database_sync(prefix="bare")
    make_settings(database={"url": url}, server={"port": 9})  # writes tmp_path/settings.toml
    config = str(tmp_path / "settings.toml")

    refused = cli("serve", "--config", config)

    assert refused.returncode == 2
    assert "gateway migrate" in refused.stderr
    assert "has no gateway schema" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_migrate_applies_the_schema_once(
    make_settings: MakeSettings, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database_sync(prefix="mig")
    make_settings(database={"url": url})
    config = str(tmp_path / "settings.toml")

    first = cli("migrate", "--config", config)
    again = cli("migrate", "--config", config)

    assert first.returncode == 0, first.stderr
    latest = len(list((Path(__file__).parent.parent / "gateway/store/postgres/migrations").glob("*.sql")))
    assert f"migrated from version 0 to {latest}" in first.stdout
    assert again.returncode == 0, again.stderr
    assert f"already at version {latest}" in again.stdout


async def test_migrate_auto_lets_the_gateway_start_on_an_empty_database(
    make_gateway: MakeGateway, make_settings: MakeSettings, postgres_server: PostgresServer
) -> None:
    url = await postgres_server.create_database(prefix="auto")

    gw = await make_gateway(make_settings(database={"url": url, "migrate": "auto"}))
    await gw.create_tenant("acme")

    assert (await gw.client.get("/readyz")).status == 200
