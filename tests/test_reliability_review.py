"""Faults found by reviewing the reliability work (issue 15), each against real peers: a SQLite
file locked by another process, raw sockets, the OpenAPI document the gateway serves."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received
from sqlite_lock import Lock

from gateway.ingest import INTAKE

PUR = "post-user-registration"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
WAIT_S = 20.0  # bound of every wait below

def locked_quickly(path: Path) -> dict[str, str]:
    """[database] of a SQLite file whose writes give up on a held lock after 200 ms."""
    return {"url": f"sqlite:///{path}", "busy_timeout": "200ms"}


async def logged(caplog: pytest.LogCaptureFixture, needle: str) -> None:
    """Wait (bounded) until a record of the gateway's logs mentions `needle`."""
    end = time.monotonic() + WAIT_S
    while not any(needle in r.getMessage() for r in caplog.records):
        assert time.monotonic() < end, f"never logged: {needle}"
        await asyncio.sleep(0.02)


@pytest.mark.sqlite_only
async def test_a_200_whose_rate_limit_pause_cannot_be_stored_yet_is_recorded_delivered_once(
    tmp_path: Path, make_gateway: Callable[..., Any], make_settings: Callable[..., Any],
    make_receiver: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """The receiver answers 200 with `X-RateLimit-Remaining: 0` while the database is locked:
    storing the destination's pause fails. The receiver did get the event: the delivery is
    `succeeded` once the lock is gone, with its one attempt; it was not an "internal error" that
    used up a try and sent the event a second time."""
    caplog.set_level(logging.INFO, logger="gateway")
    path = tmp_path / "gateway.db"
    gw: Gateway = await make_gateway(make_settings(database=locked_quickly(path)))
    lock = Lock(path)

    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        if len(state.setdefault("seen", [])) == 0:
            await lock.take()  # before the gateway reads the answer: it cannot store the pause
        state["seen"].append(1)
        return web.json_response({"status": "success", "data": {}},
                                 headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"})

    try:
        await gw.create_tenant("acme")
        rx = await make_receiver(respond)
        await gw.create_hook(name="limited", url=rx.url(), enabled=True)
        resp = await gw.forward(PUR, EVENT)
        assert resp.status == 202, await resp.text()
        delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
        await rx.wait_for(1)
        await logged(caplog, delivery_id)  # the gateway met the lock after the answer
        await lock.release()
        done = await gw.wait_delivery(delivery_id, status="succeeded", timeout=WAIT_S)
    finally:
        lock.kill()
    assert [a["statusCode"] for a in done["attempts"]] == [200], done["attempts"]
    assert done["attemptCount"] == 1
    assert len(rx.requests) == 1  # not sent a second time


async def test_every_status_the_gateway_answers_while_draining_or_timing_out_is_documented(
    make_gateway: Callable[..., Any], make_settings: Callable[..., Any],
) -> None:
    """`/healthz` answers 503 once a SIGTERM closed the intake, and every operation that takes a
    body answers 408 when the body is too slow: the OpenAPI document lists both."""
    gw: Gateway = await make_gateway(make_settings(server={"body_timeout": "200ms"}))
    await gw.create_tenant("acme")
    doc = await (await gw.client.get("/api/v2/openapi.json")).json()

    # A body that never arrives, on the Management API and on ingest: 408.
    host, port = gw.client.server.host, gw.client.server.port
    for path in ("/api/v2/hooks", f"/v1/tenants/acme/triggers/{PUR}"):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {gw.token()}\r\nContent-Length: 100\r\n\r\n{{".encode()
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readline(), timeout=WAIT_S)
        finally:
            writer.close()
        assert head.split()[1] == b"408", head
    for path in ("/api/v2/hooks", "/v1/tenants/{tenant}/triggers/{triggerId}"):
        assert "408" in doc["paths"][path]["post"]["responses"], path

    gw.app[INTAKE].close()  # what a SIGTERM does first (gateway/app.py's drain)
    health = await gw.client.get("/healthz")
    assert health.status == 503
    assert "503" in doc["paths"]["/healthz"]["get"]["responses"]


@pytest.mark.sqlite_only
async def test_an_idle_gateway_is_ready_again_by_itself_once_the_lock_is_gone(
    tmp_path: Path, make_gateway: Callable[..., Any], make_settings: Callable[..., Any],
) -> None:
    """No event comes while the database is locked, or after: the workers' idle claims (writes
    that change nothing) must not keep the probe write from ever running, or `/readyz` stays
    `503` for good and a balancer never sends the traffic that would clear it."""
    path = tmp_path / "gateway.db"
    gw: Gateway = await make_gateway(make_settings(database=locked_quickly(path)))
    lock = Lock(path)
    try:
        await lock.take()
        refused = await gw.client.post("/api/v2/tenants", json={"id": "acme"},
                                       headers={"Authorization": f"Bearer {gw.operator_token()}"})
        assert refused.status == 503, await refused.text()
        ready = await gw.client.get("/readyz")
        assert ready.status == 503 and "database locked" in (await ready.json())["message"]
        await lock.release()
    finally:
        lock.kill()
    end = time.monotonic() + WAIT_S
    while (await gw.client.get("/readyz")).status != 200:
        assert time.monotonic() < end, f"/readyz still 503 {WAIT_S} s after the lock was released"
        await asyncio.sleep(0.1)


@pytest.mark.sqlite_only
async def test_an_outcome_that_cannot_be_stored_during_the_drain_is_stored_once_the_database_allows(
    tmp_path: Path, make_gateway: Callable[..., Any], make_settings: Callable[..., Any],
    make_receiver: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    """A SIGTERM's drain (`engine.stop`) begins while a delivery's 200 waits for a locked database
    to be recorded. The grace is long: the outcome is recorded once the lock is gone, instead of
    dropped at the next failure, which left the delivery leased (sent again after the lease, a
    duplicate the receiver sees, and nothing recorded of the first)."""
    caplog.set_level(logging.INFO, logger="gateway")
    path = tmp_path / "gateway.db"
    gw: Gateway = await make_gateway(make_settings(database=locked_quickly(path)))
    lock = Lock(path)

    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        await lock.take()  # before the gateway reads the answer: it cannot record it
        return web.json_response({"status": "success", "data": {}})

    try:
        await gw.create_tenant("acme")
        rx = await make_receiver(respond)
        await gw.create_hook(name="h", url=rx.url(), enabled=True)
        resp = await gw.forward(PUR, EVENT)
        assert resp.status == 202, await resp.text()
        delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
        await rx.wait_for(1)
        await logged(caplog, delivery_id)  # its outcome waits for the database
        seen = len(caplog.records)
        stopping = asyncio.create_task(gw.engine.stop(WAIT_S))  # the drain, with a long grace
        end = time.monotonic() + WAIT_S
        while not any(delivery_id in r.getMessage() for r in caplog.records[seen:]):
            assert time.monotonic() < end, "no write of the outcome was tried during the drain"
            await asyncio.sleep(0.02)
        await lock.release()
        await asyncio.wait_for(stopping, timeout=WAIT_S)
    finally:
        lock.kill()
    done = await gw.delivery(delivery_id)
    assert done["status"] == "succeeded", done
    assert [a["statusCode"] for a in done["attempts"]] == [200]
