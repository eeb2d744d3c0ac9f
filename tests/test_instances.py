"""Several instances on one PostgreSQL database, each a `gateway serve` process of its own
(SPEC: "limits, pauses and hook edits hold across instances"): news travels between them
(wake-ups, edits), and each limit holds for the deployment, not per process."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from instances import Deployment
from pgserver import PostgresServer, running_server

PUR = "post-user-registration"
CE = "credentials-exchange"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
CE_EVENT = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_server() as server:
        yield server


@pytest.fixture
async def deployment(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    url = await postgres.create_database(prefix="inst")
    dep = Deployment(database_url=url, workdir=tmp_path)
    yield dep
    dep.stop_all()


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body


async def setup_tenant(dep: Deployment, base: str, **tenant: Any) -> None:
    status, body = await call("POST", f"{base}/api/v2/tenants", json={"id": "acme", **tenant},
                              headers=dep.operator())
    assert status == 201, body


async def new_hook(dep: Deployment, base: str, **fields: Any) -> dict[str, Any]:
    payload = {"name": f"hook-{time.monotonic_ns()}", "triggerId": PUR, "enabled": True, **fields}
    status, body = await call("POST", f"{base}/api/v2/hooks", json=payload, headers=dep.auth())
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def forward(
    dep: Deployment, base: str, trigger: str = PUR, event: dict[str, Any] = EVENT
) -> tuple[int, Any]:
    return await call("POST", f"{base}/v1/tenants/acme/triggers/{trigger}", json=event, headers=dep.auth())


async def eventually(check: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_an_event_taken_in_by_an_api_instance_wakes_a_worker_instance(deployment, make_receiver):
    # Workers poll every 30 s here: a delivery within seconds means the news reached them.
    api = await deployment.start({"server": {"role": "api"}})
    await deployment.start({"server": {"role": "worker"}})
    rx = await make_receiver()
    await setup_tenant(deployment, api.base)
    await new_hook(deployment, api.base, url=rx.url())
    await asyncio.sleep(1.0)  # both idle

    started = time.monotonic()
    status, _ = await forward(deployment, api.base)
    assert status == 202
    await rx.wait_for(1, timeout=10)
    assert time.monotonic() - started < 25  # not the 30 s poll


async def test_an_edit_through_one_instance_applies_on_the_other(deployment, make_receiver) -> None:
    a = await deployment.start()
    b = await deployment.start()
    rx = await make_receiver()
    await setup_tenant(deployment, a.base)
    hook = await new_hook(deployment, a.base, url=rx.url(), triggerId=CE)
    status, _ = await call("POST", f"{a.base}/api/v2/hooks/{hook['id']}/secrets", json={"X-Api-Key": "k1"},
                           headers=deployment.auth())
    assert status == 201
    assert (await forward(deployment, b.base, CE, CE_EVENT))[0] == 200  # b has cached the tenant
    assert rx.requests[-1].headers.get("X-Api-Key") == "k1"

    status, _ = await call("DELETE", f"{a.base}/api/v2/hooks/{hook['id']}/secrets", json=["X-Api-Key"],
                           headers=deployment.auth())
    assert status == 204
    await asyncio.sleep(1.0)
    assert (await forward(deployment, b.base, CE, CE_EVENT))[0] == 200
    assert "X-Api-Key" not in rx.requests[-1].headers  # the deleted secret is no longer sent

    status, _ = await call("PATCH", f"{a.base}/api/v2/hooks/{hook['id']}", json={"enabled": False},
                           headers=deployment.auth())
    assert status == 200
    await asyncio.sleep(1.0)
    calls = len(rx.requests)
    assert (await forward(deployment, b.base, CE, CE_EVENT))[0] == 200
    assert len(rx.requests) == calls  # the disabled hook is no longer called


async def test_a_hooks_max_concurrency_holds_across_instances(deployment, make_receiver) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 5)
        return web.json_response({})

    a = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    b = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    rx = await make_receiver(slow)
    await setup_tenant(deployment, a.base)
    await new_hook(deployment, a.base, url=rx.url(), maxConcurrency=2)
    for i in range(10):
        assert (await forward(deployment, (a, b)[i % 2].base))[0] == 202
    await rx.wait_for(2)
    await asyncio.sleep(1.5)  # time for either instance to (wrongly) send more

    assert rx.state["max_active"] == 2
    release.set()
    await rx.wait_for(10, timeout=20)
    assert rx.state["max_active"] == 2


async def test_a_hooks_rate_holds_across_instances(deployment, make_receiver) -> None:
    a = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    b = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    times: list[float] = []

    async def stamp(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        times.append(time.monotonic())
        return web.json_response({})

    rx = await make_receiver(stamp)
    await setup_tenant(deployment, a.base)
    await new_hook(deployment, a.base, url=rx.url(), rateLimitPerSecond=4)
    for i in range(8):
        assert (await forward(deployment, (a, b)[i % 2].base))[0] == 202
    await rx.wait_for(8, timeout=20)

    # One turn every 250 ms whichever instance sends: no one-second window sees more than the
    # rate and the edge one (a send can start a little late, so two may come closer than 250 ms).
    assert max(sum(1 for t in times if start <= t < start + 1.0) for start in times) <= 4 + 1
    assert times[-1] - times[0] >= 7 * 0.25 - 0.25  # turns handed out up to 20 ms ahead, sends late


async def test_a_destination_pause_holds_across_instances(deployment, make_receiver) -> None:
    times: list[float] = []

    async def exhausted(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        times.append(time.monotonic())
        if len(times) == 1:
            return web.json_response({}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"})
        return web.json_response({})

    a = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    b = await deployment.start({"delivery": {"poll_interval": "200ms"}})
    rx = await make_receiver(exhausted)
    await setup_tenant(deployment, a.base)
    await new_hook(deployment, a.base, url=rx.url(), maxConcurrency=1)
    assert (await forward(deployment, a.base))[0] == 202
    await rx.wait_for(1)
    for i in range(4):
        assert (await forward(deployment, (a, b)[i % 2].base))[0] == 202
    await rx.wait_for(5, timeout=20)

    assert times[1] - times[0] >= 2.5  # nothing was sent before the reset, from either instance


async def test_the_api_rate_limit_holds_across_instances(deployment) -> None:
    limits = {"ratelimit": {"management_rate": 0.5, "management_burst": 10}}
    a = await deployment.start(limits)
    b = await deployment.start(limits)
    await setup_tenant(deployment, a.base)
    await asyncio.sleep(2.0)  # each has heard the other (presence every second): they share the limit

    allowed = 0
    for i in range(20):
        status, _ = await call("GET", f"{(a, b)[i % 2].base}/api/v2/hooks", headers=deployment.auth())
        allowed += status == 200
    assert allowed <= 10 + 2  # the burst of 10 for the deployment (and a token or two refilled)


async def test_an_instance_draining_after_sigterm_leaves_its_share_of_the_limits_to_the_others(
    deployment, make_receiver
) -> None:
    """A rolling restart: the instance told to stop keeps its share while its blocking calls
    are in flight, then says it leaves, so the survivor allows the whole limit at once (its
    callers now all come to it), not only after the leaver's presence has expired. The leaver
    is kept draining by a delivery in flight meanwhile."""
    release_call, release_delivery = asyncio.Event(), asyncio.Event()

    async def slow_call(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release_call.wait(), 20)
        return web.json_response({"status": "success", "data": {"scope": ["read"]}})

    async def slow_delivery(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release_delivery.wait(), 20)
        return web.json_response({})

    limits = {"ratelimit": {"management_rate": 50.0, "management_burst": 100}}
    a = await deployment.start({**limits, "server": {"role": "api"}})  # b delivers
    b = await deployment.start({**limits, "server": {"shutdown_timeout": "20s"}})  # drains long enough
    calls, deliveries = await make_receiver(slow_call), await make_receiver(slow_delivery)
    await setup_tenant(deployment, a.base)
    await new_hook(deployment, a.base, url=calls.url(), triggerId=CE)
    await new_hook(deployment, a.base, url=deliveries.url(), timeoutMs=30_000)

    async def limit_on_a() -> str:
        async with aiohttp.ClientSession() as http, http.get(
            f"{a.base}/api/v2/hooks", headers=deployment.auth()
        ) as resp:
            return resp.headers["X-RateLimit-Limit"]

    async def shared() -> bool:
        return await limit_on_a() == "50"

    async def whole() -> bool:
        return await limit_on_a() == "100"

    await eventually(shared)  # a counts b: half the burst each
    status, _ = await forward(deployment, a.base)
    assert status == 202
    await deliveries.wait_for(1)  # b's worker is sending it
    held = asyncio.create_task(forward(deployment, b.base, CE, CE_EVENT))
    await calls.wait_for(1)
    b.proc.send_signal(signal.SIGTERM)
    try:
        for _ in range(5):  # b's blocking call is in flight: b keeps its share meanwhile
            await asyncio.sleep(0.2)
            assert await limit_on_a() == "50"
        release_call.set()
        status, body = await held
        assert status == 200 and body["status"] == "success", body  # the call in flight finished
        await eventually(whole)
        assert b.proc.poll() is None  # b is still draining (its delivery), and no longer counted
    finally:
        release_call.set()
        release_delivery.set()
    assert b.proc.wait(timeout=30) == 0


async def test_a_tenants_blocking_calls_in_flight_are_capped_across_instances(deployment, make_receiver):
    release = asyncio.Event()

    async def slow(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 10)
        return web.json_response({"status": "success", "data": {"scope": ["read"]}})

    a = await deployment.start()
    b = await deployment.start()
    rx = await make_receiver(slow)
    await setup_tenant(deployment, a.base, maxInFlight=2)
    await new_hook(deployment, a.base, url=rx.url(), triggerId=CE)
    await asyncio.sleep(2.0)  # each has heard the other

    calls = [asyncio.create_task(forward(deployment, (a, b)[i % 2].base, CE, CE_EVENT)) for i in range(4)]
    await rx.wait_for(2)
    await asyncio.sleep(0.5)
    release.set()
    statuses = sorted(status for status, _ in await asyncio.gather(*calls))

    assert statuses == [200, 200, 429, 429]
