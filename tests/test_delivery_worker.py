"""The delivery engine's lifecycle: prompt wake-up on ingest, leases of dead workers, clean
shutdown, and the shared throttles (per-hook limits, destination pauses)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import backends
import pytest
from aiohttp import web

from gateway.delivery.throttle import Pauses, destination
from gateway.store.sqlite import SqliteStore

PUR = "post-user-registration"


def event(user_id: str = "u1") -> dict[str, Any]:
    return {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}


def row(settings: Any, delivery_id: str) -> tuple[Any, ...]:
    (found,) = backends.db_rows(
        settings.database.url,
        "SELECT status, lease_owner, next_attempt_at, attempt_count FROM deliveries WHERE id = ?",
        delivery_id,
    )
    return found


def delivery_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("delivery")]


async def first_delivery(resp: Any) -> str:
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["deliveries"][0]["deliveryId"])


async def test_ingest_wakes_idle_workers_at_once(make_gateway, make_settings, make_receiver) -> None:
    # Idle workers would look again only after 30 s; the ingest's notify must wake them.
    gw = await make_gateway(make_settings(delivery={"poll_interval": "30s"}))
    await gw.create_tenant("acme")
    rx = await make_receiver()
    await gw.create_hook(url=rx.url(), enabled=True)
    await asyncio.sleep(0.1)  # the workers have found nothing and gone idle

    for i in range(3):
        delivery_id = await first_delivery(await gw.forward(PUR, event(f"u{i}")))
        await gw.wait_delivery(delivery_id, status="succeeded", timeout=5)


async def test_a_delivery_leased_by_a_dead_worker_is_taken_up_after_the_lease(
    make_gateway, make_settings, make_receiver
) -> None:
    async def stamp(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        state["t"] = time.time()
        return web.json_response({})

    settings = make_settings(delivery={"lease": "1s"})
    gw = await make_gateway(settings, start_workers=False)
    await gw.create_tenant("acme")
    rx = await make_receiver(stamp)
    await gw.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gw.forward(PUR, event()))
    claimed_at = time.time()
    claimed = await gw.svc.store.claim_due(now=claimed_at, limit=10, lease_s=1.0, owner="a-worker-that-died")
    assert [c.delivery.id for c in claimed] == [delivery_id]

    gw.engine.start()
    await gw.wait_delivery(delivery_id, status="succeeded")

    (received,) = rx.requests
    assert rx.state["t"] >= claimed_at + 1.0
    assert received.headers["webhook-id"] == delivery_id


async def test_a_clean_shutdown_lets_in_flight_attempts_finish(make_gateway, make_receiver) -> None:
    arrived = asyncio.Event()

    async def slow(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(0.3)
        return web.json_response({})

    gw = await make_gateway()
    await gw.create_tenant("acme")
    rx = await make_receiver(slow)
    await gw.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gw.forward(PUR, event()))
    await asyncio.wait_for(arrived.wait(), 10)

    await gw.client.close()

    assert row(gw.settings, delivery_id)[:2] == ("succeeded", None)
    assert delivery_tasks() == []


async def test_a_shutdown_gives_back_attempts_that_do_not_finish_in_time(
    make_gateway, make_settings, make_receiver
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def stuck(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({})

    gw = await make_gateway(make_settings(server={"shutdown_timeout": "100ms"}, delivery={"lease": "5m"}))
    await gw.create_tenant("acme")
    rx = await make_receiver(stuck)
    await gw.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gw.forward(PUR, event()))
    await asyncio.wait_for(arrived.wait(), 10)

    await gw.client.close()
    release.set()

    status, owner, due, attempts = row(gw.settings, delivery_id)
    assert (status, owner, attempts) == ("pending", None, 0)
    assert due <= time.time()  # due at once for the next start, not after the 5-minute lease
    assert delivery_tasks() == []


# -- destination pauses ------------------------------------------------------------------------


class CountingStore(SqliteStore):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0

    async def get_pause(self, tenant_id: str, destination: str, now: float) -> float | None:
        self.reads += 1
        return await super().get_pause(tenant_id, destination, now)


@pytest.fixture
async def counting_store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    store = CountingStore(f"sqlite:///{tmp_path / 'pauses.db'}")
    await store.open()
    yield store
    await store.close()


async def test_pauses_are_read_from_the_store_at_most_once_per_interval(
    counting_store: CountingStore,
) -> None:
    pauses = Pauses(counting_store, refresh_s=0.2)
    dest = destination("https://Hooks.Example.com/a")
    assert dest == "https://hooks.example.com:443"

    results = await asyncio.gather(*(pauses.check("acme", dest) for _ in range(50)))
    assert results == [None] * 50
    assert counting_store.reads == 1

    # Another instance pauses the destination: seen after the refresh interval, not before.
    until = time.time() + 60
    await counting_store.set_pause("acme", dest, until)
    assert await pauses.check("acme", dest) is None
    await asyncio.sleep(0.2)
    assert await pauses.check("acme", dest) == until
    assert counting_store.reads == 2
    assert await pauses.check("globex", dest) is None  # pauses are per tenant


async def test_a_pause_set_here_applies_at_once_without_a_read(counting_store: CountingStore) -> None:
    pauses = Pauses(counting_store, refresh_s=60)
    dest = destination("http://127.0.0.1:8080/x")
    assert await pauses.check("acme", dest) is None
    until = time.time() + 30
    await pauses.pause("acme", dest, until)
    assert await pauses.check("acme", dest) == until
    assert counting_store.reads == 1


async def test_a_database_away_while_a_claimed_delivery_is_checked_uses_up_no_try(
    make_gateway, make_receiver
) -> None:
    # Between its claim and its send, a delivery reads its destination's pause: the first read of
    # a new destination goes to the database. The database refusing connections then (PostgreSQL
    # restarting) is waited out: one attempt, the receiver's, and no "internal error" attempt
    # that would use up a try and put the delivery off by the retry schedule's first delay.
    gw = await make_gateway()
    await gw.create_tenant("acme")
    rx = await make_receiver()
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    store = gw.engine.store
    real = store.get_pause
    refused: list[float] = []

    async def away(*args: Any, **kwargs: Any) -> Any:
        if len(refused) < 3:
            refused.append(time.monotonic())
            raise ConnectionRefusedError(111, "Connection refused")
        return await real(*args, **kwargs)

    store.get_pause = away  # type: ignore[method-assign]
    try:
        delivery_id = await first_delivery(await gw.forward(PUR, event()))
        d = await gw.wait_delivery(delivery_id, status="succeeded", timeout=10)
    finally:
        store.get_pause = real  # type: ignore[method-assign]
    assert len(refused) == 3  # the reads were tried again, after growing pauses
    assert refused[2] - refused[1] > refused[1] - refused[0] > 0
    assert [(a["number"], a["statusCode"]) for a in d["attempts"]] == [(1, 200)], d["attempts"]
    assert len(rx.requests) == 1
    assert (await gw.only_delivery(hook["id"]))["attemptCount"] == 1
