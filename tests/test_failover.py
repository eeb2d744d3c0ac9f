"""Failures of a deployment of several instances on one PostgreSQL database (SPEC: the
instances "take over a crashed instance's work"; nothing accepted is lost): one instance killed
with SIGKILL while deliveries flow, and PostgreSQL stopped and started again under load."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from instances import Deployment, Instance
from pgserver import PostgresServer, running_server

PUR = "post-user-registration"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
LEASE = "3s"  # a crashed instance's claims come due again after this


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_server() as server:
        yield server


@pytest.fixture
async def deployment(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    url = await postgres.create_database(prefix="fail")
    dep = Deployment(database_url=url, workdir=tmp_path, overrides={"delivery": {"lease": LEASE}})
    yield dep
    dep.stop_all()


@dataclass
class Spans:
    """What a receiver saw: per `webhook-id`, when each request started and ended."""

    by_id: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # the sender was still there for the answer
    aborted: int = 0  # requests whose sender went away before the answer
    active: int = 0
    max_active: int = 0

    def overlapping(self) -> list[str]:
        out = []
        for wid, spans in self.by_id.items():
            ordered = sorted(spans)
            if any(later[0] < earlier[1] for earlier, later in zip(ordered, ordered[1:], strict=False)):
                out.append(wid)
        return out

    def duplicates(self) -> int:
        return sum(len(s) - 1 for s in self.by_id.values())


async def start_receiver(aiohttp_server: Any, spans: Spans, delay: tuple[float, float]) -> str:
    """An aiohttp server on 127.0.0.1 that answers 200 after a random delay in `delay`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        wid = request.headers.get("webhook-id", "")
        spans.active += 1
        spans.max_active = max(spans.max_active, spans.active)
        answered = False
        try:
            await request.read()
            await asyncio.sleep(random.uniform(*delay))  # noqa: S311 - not for security
            # A killed instance's request (cancelled, or its socket closed) never learns the answer.
            answered = request.transport is not None and not request.transport.is_closing()
            return web.json_response({})
        finally:
            spans.active -= 1
            if answered:
                spans.answered.add(wid)
            else:
                spans.aborted += 1
            spans.by_id.setdefault(wid, []).append((started, time.monotonic()))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("/hook"))


async def prepare(dep: Deployment, base: str, url: str, **hook: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/v2/tenants", json={"id": "acme"}, headers=dep.operator()) as r:
            assert r.status == 201, await r.text()
        payload = {"name": "failover", "triggerId": PUR, "enabled": True, "url": url, **hook}
        async with http.post(f"{base}/api/v2/hooks", json=payload, headers=dep.auth()) as r:
            assert r.status == 201, await r.text()


async def wait_until(check: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not reached in {timeout} s: {what()}" if callable(what) else what)
        await asyncio.sleep(0.05)


def alive(instances: list[Instance]) -> list[Instance]:
    return [i for i in instances if i.proc.poll() is None]


async def test_the_survivor_delivers_every_accepted_event_of_a_killed_instance(deployment, aiohttp_server):
    events, batch = 2000, 32
    a = await deployment.start()
    b = await deployment.start()
    spans = Spans()
    url = await start_receiver(aiohttp_server, spans, (0.005, 0.05))
    await prepare(deployment, a.base, url, maxConcurrency=4)
    headers = deployment.auth()
    accepted: set[str] = set()
    statuses: Counter[Any] = Counter()
    gate = asyncio.Semaphore(batch)

    async def send(http: aiohttp.ClientSession, i: int) -> None:
        async with gate:
            live = alive([a, b]) or [a]
            target = live[i % len(live)]
            try:
                async with http.post(f"{target.base}/v1/tenants/acme/triggers/{PUR}", json=EVENT,
                                     headers=headers) as resp:
                    statuses[resp.status] += 1
                    if resp.status == 202:
                        accepted.add((await resp.json())["deliveries"][0]["deliveryId"])
            except aiohttp.ClientError:
                statuses["connection lost"] += 1  # the killed instance's in-flight requests

    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        sending = asyncio.gather(*(send(http, i) for i in range(events)))
        await wait_until(lambda: len(accepted) >= events // 2 and len(spans.by_id) >= 50, 30,
                         lambda: f"{len(accepted)} accepted, {len(spans.by_id)} delivered")
        b.proc.kill()  # SIGKILL, mid-flight: it takes in events, holds claims and sends requests
        killed_at = time.monotonic() - started
        await asyncio.wait_for(sending, 60)
    sent_at = time.monotonic() - started

    assert statuses[202] >= events // 2, statuses
    assert set(statuses) <= {202, "connection lost"}, statuses
    await wait_until(lambda: accepted <= spans.answered, 50,
                     lambda: f"{len(accepted - spans.answered)} accepted events not delivered")
    done_at = time.monotonic() - started
    await asyncio.sleep(0.5)  # anything still arriving counts towards duplicates and overlaps
    summary = (f"answers {dict(statuses)}, killed at {killed_at:.1f}s, sent by {sent_at:.1f}s,"
               f" all delivered by {done_at:.1f}s, duplicates {spans.duplicates()},"
               f" cut off by the kill {spans.aborted}, max concurrent {spans.max_active}")
    print(summary)
    assert a.proc.poll() is None, deployment.log_of(a)[-3000:]
    assert "" not in spans.by_id, "a request without a webhook-id"
    assert spans.overlapping() == [], summary
    assert spans.max_active <= 4, summary


async def test_a_postgres_restart_under_load_loses_no_accepted_event(postgres, deployment, aiohttp_server):
    a = await deployment.start()
    b = await deployment.start()
    spans = Spans()
    url = await start_receiver(aiohttp_server, spans, (0.0, 0.005))
    await prepare(deployment, a.base, url)
    headers = deployment.auth()
    # (sent, answered, instance, status, Retry-After, deliveryId)
    answers: list[tuple[float, float, int, Any, str | None, str | None]] = []
    stop = asyncio.Event()

    async def stream(http: aiohttp.ClientSession, lane: int) -> None:
        for i in range(100_000):  # bounded: `stop` ends it long before
            if stop.is_set():
                return
            target = (a, b)[(lane + i) % 2]
            sent = time.monotonic()
            try:
                async with http.post(f"{target.base}/v1/tenants/acme/triggers/{PUR}", json=EVENT,
                                     headers=headers) as resp:
                    body = await resp.json() if resp.content_type == "application/json" else {}
                    delivery = body["deliveries"][0]["deliveryId"] if resp.status == 202 else None
                    answers.append((sent, time.monotonic(), target.port, resp.status,
                                    resp.headers.get("Retry-After"), delivery))
            except aiohttp.ClientError as exc:
                answers.append((sent, time.monotonic(), target.port, type(exc).__name__, None, None))
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession() as http:
        lanes = [asyncio.create_task(stream(http, lane)) for lane in range(8)]
        try:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(postgres.halt)
            halted = time.monotonic()
            await asyncio.sleep(2.0)
            resuming = time.monotonic()
            await asyncio.to_thread(postgres.resume)
            resumed = time.monotonic()
            after = lambda: [x[3] for x in answers if x[0] > resumed]  # noqa: E731
            await wait_until(lambda: after().count(202) >= 50, 20,
                             lambda: f"no 202s after the restart: {Counter(after())}")
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*lanes), 15)

    down = [x for x in answers if x[0] >= halted and x[1] <= resuming]
    assert down, "no ingest was answered while PostgreSQL was down"
    assert {x[3] for x in down} == {503}, Counter(x[3] for x in down)
    assert all(x[4] is not None and int(x[4]) >= 1 for x in down), "a 503 without Retry-After"
    assert set(Counter(x[3] for x in answers)) <= {202, 503}, Counter(x[3] for x in answers)
    accepted = {x[5] for x in answers if x[3] == 202}
    assert alive([a, b]) == [a, b], "an instance exited"
    await wait_until(lambda: accepted <= spans.answered, 30,
                     lambda: f"{len(accepted - spans.answered)} of {len(accepted)} not delivered")
    print(f"answers {dict(Counter(x[3] for x in answers))}; while down {len(down)} x 503;"
          f" restart took {resumed - resuming:.1f}s; {len(accepted)} delivered,"
          f" duplicates {spans.duplicates()}")
