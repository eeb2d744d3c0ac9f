"""`SIGTERM` drains the gateway: `gateway serve` runs as a process of its own, on a SQLite file
and on PostgreSQL. It stops taking events in at once (`503` with `Retry-After`, the listener
still open, `/readyz` `503`), lets blocking calls and sends in flight finish within
`[server] shutdown_timeout`, records the sends it cuts off, gives back what it held so the
next start delivers it at once (not after the 300 s lease), and exits with status 0. A second
signal cuts the grace short."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Received, Receiver
from instances import Deployment, Instance

from gateway.points import sample_event

MakeReceiver = Callable[..., Any]
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
GRACE = "3s"  # [server] shutdown_timeout: the receivers below answer well inside it, or never
LONG_GRACE = "60s"  # ... for the test whose second signal must end the wait long before this
LEASE = "300s"  # a delivery held by a stopped gateway and not given back would wait this long
WAIT_S = 30.0  # bound of every wait below
SCOPE = ["read:drained"]


def success(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": data}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        yield session


@pytest.fixture
def deployment(backend_url: str, tmp_path: Path) -> Iterator[Deployment]:
    """Gateways on this backend's database (run once on SQLite, once on PostgreSQL)."""
    d = Deployment(backend_url, tmp_path, overrides={"delivery": {"lease": LEASE}})
    yield d
    d.stop_all()


class Gate:
    """What the receivers wait for: `answer` lets the slow ones answer, `release` the stuck one."""

    def __init__(self) -> None:
        self.answer = asyncio.Event()
        self.release = asyncio.Event()


def responder(gate: Gate) -> Callable[..., Any]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        if request.path == "/blocking":
            await asyncio.wait_for(gate.answer.wait(), WAIT_S)
            return web.json_response(success({"scope": SCOPE}))
        if request.path == "/slow":
            await asyncio.wait_for(gate.answer.wait(), WAIT_S)
        elif request.path == "/stuck" and not gate.release.is_set():  # outlasts the grace
            await asyncio.wait_for(gate.release.wait(), WAIT_S * 3)
        return web.json_response(success({}))

    return respond


async def setup_hooks(http: aiohttp.ClientSession, d: Deployment, gw: Instance, rx: Receiver,
                      hooks: dict[str, str]) -> dict[str, str]:
    """Tenant `acme` and one hook per `path: trigger`, each to the receiver at that path; their ids."""
    ids = {}
    async with http.post(f"{gw.base}/api/v2/tenants", json={"id": "acme", "name": "Acme"},
                         headers=d.operator()) as resp:
        assert resp.status == 201, await resp.text()
    for path, trigger in hooks.items():
        body = {"name": path.strip("/"), "triggerId": trigger, "url": rx.url(path), "enabled": True,
                "timeoutMs": 60_000}
        async with http.post(f"{gw.base}/api/v2/hooks", json=body, headers=d.auth()) as resp:
            assert resp.status == 201, await resp.text()
            ids[path] = (await resp.json())["id"]
    return ids


async def forward(http: aiohttp.ClientSession, d: Deployment, gw: Instance, trigger: str,
                  event: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
    url = f"{gw.base}/v1/tenants/acme/triggers/{trigger}"
    async with http.post(url, json=event, headers=d.auth()) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def readyz_turns_503(http: aiohttp.ClientSession, gw: Instance) -> tuple[dict[str, str], Any]:
    """Poll `/readyz` (bounded) until the signal is seen; a refused connection fails the test."""
    end = time.monotonic() + WAIT_S
    while True:
        async with http.get(f"{gw.base}/readyz") as resp:
            if resp.status == 503:
                return dict(resp.headers), await resp.json()
            assert resp.status == 200
        assert time.monotonic() < end, "/readyz never answered 503 after SIGTERM"
        await asyncio.sleep(0.02)


async def exit_code(proc: subprocess.Popen[bytes]) -> int:
    end = time.monotonic() + WAIT_S
    while proc.poll() is None:
        assert time.monotonic() < end, "the gateway did not exit"
        await asyncio.sleep(0.05)
    return proc.returncode


async def delivery(http: aiohttp.ClientSession, d: Deployment, gw: Instance, delivery_id: str,
                   status: str) -> dict[str, Any]:
    """The delivery once it has `status`, polled for at most `WAIT_S` (far below the lease)."""
    end = time.monotonic() + WAIT_S
    while True:
        async with http.get(f"{gw.base}/api/v2/deliveries/{delivery_id}", headers=d.auth()) as resp:
            assert resp.status == 200, await resp.text()
            found: dict[str, Any] = await resp.json()
        if found["status"] == status:
            return found
        assert time.monotonic() < end, f"delivery not {status}: {found}"
        await asyncio.sleep(0.05)


def assert_refused_while_draining(status: int, headers: dict[str, str], body: Any) -> None:
    assert status == 503
    assert int(headers["Retry-After"]) >= 1
    assert body["statusCode"] == 503 and body["error"] == "Service Unavailable"
    assert "shutting down" in body["message"]


async def test_sigterm_refuses_new_work_finishes_what_is_in_flight_and_exits_0(
    deployment: Deployment, make_receiver: MakeReceiver, http: aiohttp.ClientSession
) -> None:
    gate = Gate()
    rx: Receiver = await make_receiver(responder(gate))
    gw = await deployment.start({"server": {"shutdown_timeout": GRACE}})
    hook_ids = await setup_hooks(http, deployment, gw, rx, {
        "/blocking": "credentials-exchange",
        "/slow": "post-user-registration",
        "/stuck": "post-user-registration",
    })
    status, _, accepted = await forward(http, deployment, gw, "post-user-registration", EVENT)
    assert status == 202, accepted
    ids = {h["hookId"]: h["deliveryId"] for h in accepted["deliveries"]}
    await rx.wait_for(2)  # both sends are at their receivers
    blocking = asyncio.create_task(forward(http, deployment, gw, "credentials-exchange",
                                           sample_event("credentials-exchange")))
    await rx.wait_for(3)  # and the blocking call is at its hook

    gw.proc.send_signal(signal.SIGTERM)
    ready_headers, ready = await readyz_turns_503(http, gw)  # the listener is still open
    assert int(ready_headers["Retry-After"]) >= 1 and ready["statusCode"] == 503
    assert_refused_while_draining(*await forward(http, deployment, gw, "post-user-registration", EVENT))
    assert_refused_while_draining(*await forward(http, deployment, gw, "credentials-exchange",
                                                 sample_event("credentials-exchange")))
    async with http.get(f"{gw.base}/healthz") as resp:  # what balancers check for blocking points
        assert resp.status == 503 and int(resp.headers["Retry-After"]) >= 1
    gate.answer.set()

    status, _, answer = await blocking
    assert (status, answer) == (200, success({"scope": SCOPE}))  # the hook's real answer
    assert await exit_code(gw.proc) == 0  # once the stuck send is cut off at the grace's end
    assert len(rx.requests) == 3  # nothing refused reached a receiver
    gate.release.set()

    again = await deployment.start()  # the next start, on the same database
    slow = await delivery(http, deployment, again, ids[hook_ids["/slow"]], "succeeded")
    assert [a["statusCode"] for a in slow["attempts"]] == [200]  # finished during the drain
    stuck = await delivery(http, deployment, again, ids[hook_ids["/stuck"]], "succeeded")
    interrupted, answered = stuck["attempts"]
    assert interrupted["statusCode"] is None and "shutdown" in interrupted["error"]
    assert answered["statusCode"] == 200
    assert stuck["attemptCount"] == 1  # the interruption used no try of the schedule
    assert [r.path for r in rx.requests].count("/stuck") == 2


async def test_a_second_sigterm_cuts_the_grace_short_and_gives_every_held_delivery_back(
    deployment: Deployment, make_receiver: MakeReceiver, http: aiohttp.ClientSession
) -> None:
    gate = Gate()
    rx: Receiver = await make_receiver(responder(gate))
    gw = await deployment.start({"server": {"shutdown_timeout": LONG_GRACE}})
    await setup_hooks(http, deployment, gw, rx, {"/stuck": "post-user-registration"})
    held = []
    for n in range(3):  # each send is held by the receiver, past any grace
        status, _, accepted = await forward(http, deployment, gw, "post-user-registration",
                                            {**EVENT, "user": {"id": f"u{n}"}})
        assert status == 202, accepted
        held.append(accepted["deliveries"][0]["deliveryId"])
    await rx.wait_for(3)

    gw.proc.send_signal(signal.SIGTERM)
    await readyz_turns_503(http, gw)
    gw.proc.send_signal(signal.SIGTERM)  # do not wait out the 60 s grace
    assert await exit_code(gw.proc) == 0  # within WAIT_S, half the grace
    gate.release.set()

    again = await deployment.start()  # every delivery is due at once, not after the lease
    for delivery_id in held:
        done = await delivery(http, deployment, again, delivery_id, "succeeded")
        assert done["attempts"][-1]["statusCode"] == 200
