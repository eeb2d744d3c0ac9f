"""`/metrics`: Prometheus text for operators, from loopback (or `metrics_allowed_cidrs`).

Every value is read as Prometheus reads it: scraped over HTTP and parsed with prometheus-client's
own parser, while real receivers on loopback hold, fail, pause and disable deliveries.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from conftest import Gateway, Receiver
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import OTHER_TENANTS

EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
PUR_EVENT = {"user": {"email": "a@example.com"}, "context": {"connection": {"id": "c", "name": "db"}}}
DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeReceiver = Callable[..., Awaitable[Receiver]]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # exposition sorts labels
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in metrics")


async def scrape(gw: Gateway) -> Samples:
    """Every sample of a scrape, by name and labels, parsed as Prometheus parses them."""
    resp = await gw.client.get("/metrics")
    assert resp.status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series not exported (yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape_when(gw: Gateway, name: str, want: float, **labels: str) -> Samples:
    """A scrape once `name{labels}` is `want`: an attempt is counted just after its outcome is
    written, which the API may show a moment sooner (bounded wait)."""
    for _ in range(500):
        samples = await scrape(gw)
        if value(samples, name, **labels) == want:
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name}{labels} never became {want}: {value(samples, name, **labels)}")


class Held:
    """A receiver that holds each request until the test answers it with a status."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[asyncio.Future[tuple[int, dict[str, str]]]] = asyncio.Queue()

    async def __call__(self, request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        answer: asyncio.Future[tuple[int, dict[str, str]]] = asyncio.get_running_loop().create_future()
        await self.waiting.put(answer)
        status, headers = await answer
        return web.json_response({"status": "success", "data": {}}, status=status, headers=headers)

    async def answer(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        (await asyncio.wait_for(self.waiting.get(), 20)).set_result((status, headers or {}))


async def test_metrics_count_events_attempts_and_invocations(gateway, make_receiver) -> None:
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=rx.url(), enabled=True)
    sent = await (await gateway.forward("post-user-registration", EVENT)).json()
    await gateway.wait_delivery(sent["deliveries"][0]["deliveryId"], status="succeeded")
    resp = await gateway.forward("credentials-exchange", CE)
    assert resp.status == 200
    resp = await gateway.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert sample(text, "gateway_events_total", trigger="post-user-registration") == 1
    assert sample(text, "gateway_delivery_attempts_total", outcome="succeeded") == 1
    assert (
        sample(text, "gateway_sync_invocations_total", trigger="credentials-exchange", result="success") == 1
    )
    assert sample(text, "gateway_delivery_backlog") == 0
    # Both calls went to the same receiver: one connection, kept alive between them.
    assert sample(text, "gateway_outbound_connections_total", scheme="http") == 1
    assert sample(text, "gateway_outbound_idle_connections") == 1
    assert sample(text, "gateway_outbound_closed_reused_total") == 0


async def test_metrics_are_refused_outside_their_allowlist(make_gateway, make_settings) -> None:
    gw = await make_gateway(make_settings(server={"metrics_allowed_cidrs": ["192.0.2.0/24"]}))
    resp = await gw.client.get("/metrics")
    assert resp.status == 403
    assert (await resp.json())["statusCode"] == 403


async def test_pending_deliveries_by_state_and_the_oldest_one_follow_the_deliveries(
    make_gateway: MakeGateway, make_settings: Any, make_receiver: MakeReceiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["1h"]}))
    await gw.create_tenant("acme")
    held = Held()
    rx = await make_receiver(held)
    await gw.create_hook(url=rx.url(), enabled=True, maxConcurrency=1)
    before = await scrape(gw)
    assert [value(before, "gateway_deliveries_pending", state=s) for s in ("due", "scheduled", "in_flight")] \
        == [0, 0, 0]
    assert value(before, "gateway_delivery_oldest_pending_age_seconds") == 0

    first = (await (await gw.forward("post-user-registration", EVENT)).json())["deliveries"][0]["deliveryId"]
    await rx.wait_for(1)
    await gw.forward("post-user-registration", EVENT)  # waits behind the first: maxConcurrency 1
    s = await scrape(gw)
    assert value(s, "gateway_deliveries_pending", state="in_flight") == 1
    assert value(s, "gateway_deliveries_pending", state="due") == 1
    assert value(s, "gateway_delivery_backlog") == 2
    assert value(s, "gateway_delivery_oldest_pending_age_seconds") > 0

    await held.answer(500)  # the first fails: its retry is an hour away; the second goes out
    await rx.wait_for(2)
    s = await scrape_when(gw, "gateway_attempt_seconds_count", 1, kind="async", outcome="http_error")
    assert value(s, "gateway_deliveries_pending", state="scheduled") == 1
    assert value(s, "gateway_deliveries_pending", state="in_flight") == 1
    assert value(s, "gateway_deliveries_pending", state="due") == 0
    assert value(s, "gateway_attempt_seconds_count", kind="async", outcome="http_error") == 1

    await held.answer(200)
    resp = await gw.client.post(f"/api/v2/deliveries/{first}/retry", headers=gw.auth())
    assert resp.status == 202, await resp.text()
    await held.answer(200)
    await gw.wait_delivery(first, status="succeeded")
    s = await scrape_when(gw, "gateway_attempt_seconds_count", 2, kind="async", outcome="success")
    states = ("due", "scheduled", "in_flight", "parked")
    assert [value(s, "gateway_deliveries_pending", state=st) for st in states] == [0, 0, 0, 0]
    assert value(s, "gateway_delivery_oldest_pending_age_seconds") == 0
    assert value(s, "gateway_attempt_seconds_count", kind="async", outcome="success") == 2
    assert value(s, "gateway_delivery_attempts_total", outcome="succeeded") == 2


async def test_paused_destinations_and_disabled_hooks_are_counted(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    async def low(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "600"})

    async def gone(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, status=410)

    paced, leaving = await make_receiver(low), await make_receiver(gone)
    await gateway.create_hook(name="paced", url=paced.url(), enabled=True)
    gone_hook = await gateway.create_hook(name="gone", url=leaving.url(), enabled=True)
    idle = await gateway.create_hook(name="idle", url=paced.url(), enabled=True)
    s = await scrape(gateway)
    assert value(s, "gateway_destinations_paused") == 0
    assert value(s, "gateway_hooks_disabled", by="gateway") == 0

    resp = await gateway.client.patch(f"/api/v2/hooks/{idle['id']}", json={"enabled": False},
                                      headers=gateway.auth())
    assert resp.status == 200
    sent = await (await gateway.forward("post-user-registration", EVENT)).json()
    ids = {d["hookId"]: d["deliveryId"] for d in sent["deliveries"]}
    await gateway.wait_delivery(ids[gone_hook["id"]], attempts=1)
    await paced.wait_for(1)
    s = await scrape_when(gateway, "gateway_delivery_attempts_total", 1, outcome="succeeded")
    assert value(s, "gateway_destinations_paused") == 1
    assert value(s, "gateway_hooks_disabled", by="gateway") == 1  # 410 Gone
    assert value(s, "gateway_hooks_disabled", by="tenant") == 1
    assert value(s, "gateway_deliveries_pending", state="parked") == 1  # the 410's, until re-enabled
    assert value(s, "gateway_attempt_seconds_count", kind="async", outcome="http_error") == 1


async def test_blocking_invocations_by_point_and_outcome_and_in_flight_per_tenant(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    async def deny(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({"status": "error", "data": {
            "name": "PreUserRegistrationError", "message": "no", "friendlyMessage": "No."}})

    async def broken(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, status=400)

    held = Held()
    ok, denier, failing, slow = (await make_receiver(), await make_receiver(deny),
                                 await make_receiver(broken), await make_receiver(held))
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=ok.url(), enabled=True)
    await gateway.create_hook(name="pur", triggerId="pre-user-registration", url=denier.url(), enabled=True)
    await gateway.create_tenant("globex")
    await gateway.create_hook("globex", name="ce", triggerId="credentials-exchange", url=failing.url(),
                              enabled=True)
    await gateway.create_tenant("initech")
    await gateway.create_hook("initech", name="ce", triggerId="credentials-exchange", url=slow.url(),
                              enabled=True)

    assert (await gateway.forward("credentials-exchange", CE)).status == 200
    assert (await (await gateway.forward("pre-user-registration", PUR_EVENT)).json())["status"] == "error"
    failed = await (await gateway.forward("credentials-exchange", CE, tenant="globex")).json()
    assert failed["data"]["name"] == "ServerError"
    waiting = asyncio.ensure_future(gateway.forward("credentials-exchange", CE, tenant="initech"))
    await slow.wait_for(1)
    s = await scrape(gateway)
    assert value(s, "gateway_sync_in_flight", tenant="initech") == 1
    assert value(s, "gateway_sync_in_flight", tenant="acme") == 0  # none in flight: not exported
    await held.answer(200)
    assert (await waiting).status == 200

    s = await scrape(gateway)
    assert value(s, "gateway_sync_in_flight", tenant="initech") == 0
    assert value(s, "gateway_sync_in_flight", tenant=OTHER_TENANTS) == 0
    count = "gateway_sync_invocation_seconds_count"
    assert value(s, count, trigger="credentials-exchange", outcome="success") == 2
    assert value(s, count, trigger="pre-user-registration", outcome="denied") == 1
    assert value(s, count, trigger="credentials-exchange", outcome="failed") == 1
    # A deny is an answer: of the four hooks' requests three were answered 2xx.
    assert value(s, "gateway_attempt_seconds_count", kind="sync", outcome="success") == 3
    assert value(s, "gateway_attempt_seconds_count", kind="sync", outcome="http_error") == 1


async def test_in_flight_invocations_name_only_the_busiest_tenants(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    gateway.svc.metrics.tenant_series = 2
    held = Held()
    slow = await make_receiver(held)
    calls = []
    for tenant, count in (("alpha", 1), ("bravo", 3), ("charlie", 1), ("delta", 1)):
        await gateway.create_tenant(tenant)
        await gateway.create_hook(tenant, name="ce", triggerId="credentials-exchange", url=slow.url(),
                                  enabled=True)
        calls += [asyncio.ensure_future(gateway.forward("credentials-exchange", CE, tenant=tenant))
                  for _ in range(count)]
    await slow.wait_for(6)
    s = await scrape(gateway)
    exported = {dict(labels)["tenant"]: v for (name, labels), v in s.items()
                if name == "gateway_sync_in_flight"}
    assert exported == {"bravo": 3, "alpha": 1, OTHER_TENANTS: 2}  # ties go by name
    for _ in calls:
        await held.answer(200)
    await asyncio.gather(*calls)


async def test_the_grafana_dashboard_uses_only_metrics_the_gateway_exports(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 10
    named = [name for e in exprs for name in re.findall(r"gateway_\w+", e)]
    used = {re.sub(r"_(bucket|count|sum)$", "", name) for name in named}
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=rx.url(), enabled=True)
    sent = await (await gateway.forward("post-user-registration", EVENT)).json()
    await gateway.wait_delivery(sent["deliveries"][0]["deliveryId"], status="succeeded")
    await gateway.forward("credentials-exchange", CE)
    resp = await gateway.client.get("/metrics")
    families = list(text_string_to_metric_families(await resp.text()))
    exported = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert used - exported == set()
    # Every panel asks for a metric of the gateway, and the database's gauges are not summed
    # over instances (each reports the same values).
    for e in exprs:
        assert "gateway_" in e
        for gauge in ("gateway_deliveries_pending", "gateway_delivery_oldest_pending_age_seconds",
                      "gateway_destinations_paused", "gateway_hooks_disabled"):
            assert not re.search(rf"sum[^(]*\(\s*{gauge}", e), e
