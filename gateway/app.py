"""`create_app(settings)`: routes, middlewares, the cleanup contexts that own the database,
the outbound client and the delivery workers, and the drain a SIGTERM runs (gateway/server.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from . import dashboard, delivery, ingest, ipranges
from .api import (
    deliveries,
    hook_test,
    hooks,
    openapi,
    operational_events,
    secrets,
    signing_secrets,
    tenants,
)
from .context import SERVICES, Services, services
from .coordination import RESET, TENANT
from .crypto import cipher_from_settings
from .delivery import ENGINE
from .errors import Forbidden, ServiceUnavailable, cannot_write
from .ingest import INTAKE, Intake
from .invoke import INVOKER, Invoker
from .middleware import guard
from .peers import contains, peer_address
from .runtime.lifecycle import hosting_context
from .server import DRAIN
from .settings import Settings
from .store import open_store
from .store.base import Store
from .transport import Transport
from .web import BODY_TIMEOUT, LINGER_S, json_response

log = logging.getLogger("gateway.shutdown")


async def healthz(request: web.Request) -> web.Response:
    """`200` while the process serves; `503` once a SIGTERM has closed the intake, like
    `/readyz`: a balancer that checks blocking points on `/healthz` (examples/haproxy.cfg)
    stops sending them here while what is in flight finishes."""
    intake = request.app[INTAKE]
    if not intake.open:
        raise intake.refusal()
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    intake = request.app[INTAKE]
    if not intake.open:
        raise intake.refusal()
    try:
        await services(request).store.ping()  # raises, too, while writes fail (disk full, ...)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        reason = cannot_write(exc)
        if reason is not None:
            raise ServiceUnavailable(f"database cannot be written: {reason}") from None
        raise ServiceUnavailable(f"database not reachable: {type(exc).__name__}") from None
    return json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    svc = services(request)
    if not contains(svc.metrics_cidrs, peer_address(request, svc.trusted_proxies)):
        raise Forbidden("metrics are not served to this address")
    await svc.metrics.refresh(svc.store, svc.clock())  # the gauges read from the database
    return web.Response(body=svc.metrics.render(), headers={"Content-Type": svc.metrics.content_type})


async def drain(app: web.Application, grace_s: float, cut_short: asyncio.Event) -> None:
    """SIGTERM: forwards are refused from now on (`503`); blocking calls and sends in flight get
    `grace_s` to finish (less if `cut_short` is set), while what the workers claimed but have
    not begun is given back at once; sends cut off are recorded and given back too."""
    app[INTAKE].close()
    engine = app.get(ENGINE)

    async def intake_then_leave() -> int:
        # Once the blocking calls in flight here are done, the other instances take this one's
        # share of the in-memory limits (until then it still holds part of them).
        inside = await app[INTAKE].wait_empty(grace_s, cut_short)
        app[SERVICES].bus.leave()
        return inside

    inside, *stopped = await asyncio.gather(
        intake_then_leave(),
        *([engine.stop(grace_s, cut_short=cut_short)] if engine is not None else []),
        return_exceptions=True,
    )
    if isinstance(inside, int) and inside:
        log.warning("shutdown: %d forwards still in progress at the end of the grace time", inside)
    for failed in (inside, *stopped):
        if isinstance(failed, BaseException):
            log.error("shutdown: draining failed", exc_info=failed)


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    store: Store | None = None,
    **seams: Any,
) -> web.Application:
    """The gateway as an aiohttp application. `seams` are passed to the parts that take them:
    `resolver=` (the egress guard's DNS), `sleep=` (retries of blocking points), `rng=` (retry
    jitter), `start_workers=False` (no delivery workers)."""
    cipher = cipher_from_settings(settings)
    svc = Services.build(settings, store or open_store(settings), cipher, clock=clock)
    svc.extras.update(seams)
    app = web.Application(
        middlewares=[guard],
        client_max_size=settings.server.max_body_bytes,
        handler_args={"max_field_size": 16384, "lingering_time": LINGER_S},
    )
    app[SERVICES] = svc
    app[INTAKE] = Intake()
    app[DRAIN] = lambda grace_s, cut_short: drain(app, grace_s, cut_short)
    app[BODY_TIMEOUT] = float(settings.server.body_timeout)

    async def database(app: web.Application) -> AsyncIterator[None]:
        await svc.store.open()
        yield
        await svc.store.close()

    async def coordination(app: web.Application) -> AsyncIterator[None]:
        """News from the other instances: edits drop cached views (gateway/coordination.py)."""
        svc.bus.subscribe(TENANT, lambda tenant_id: svc.registry.invalidate(tenant_id, announce=False))
        svc.bus.subscribe(RESET, lambda _payload: svc.registry.invalidate_all())
        await svc.bus.start()
        yield
        await svc.bus.stop()

    async def invoker(app: web.Application) -> AsyncIterator[None]:
        def transport() -> Transport:
            assert svc.transport is not None, "the outbound client is closed"
            return svc.transport

        inv = Invoker(
            settings,
            svc.store,
            transport,
            clock=clock,
            sleep=seams.get("sleep", asyncio.sleep),
            metrics=svc.metrics,
            instances=svc.bus.instances,
        )
        app[INVOKER] = inv
        yield
        await inv.drain()

    # Started in this order, closed in reverse: workers stop before the client, the client
    # before the database.
    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(coordination)
    app.cleanup_ctx.append(delivery.transport_context)
    app.cleanup_ctx.append(hosting_context)  # hosted hooks' runtime processes (gateway/runtime/)
    app.cleanup_ctx.append(invoker)
    app.cleanup_ctx.append(delivery.workers_context)

    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    app.router.add_get("/metrics", metrics, allow_head=False)
    if settings.server.role == "worker":  # delivers only: no API, so operators scale it apart
        return app
    app.add_routes(tenants.routes())
    app.add_routes(hooks.routes())
    app.add_routes(secrets.routes())
    app.add_routes(signing_secrets.routes())
    app.add_routes(hook_test.routes())
    app.add_routes(deliveries.routes())
    app.add_routes(operational_events.routes())
    app.add_routes(ingest.routes())
    app.add_routes(ipranges.routes())
    app.add_routes(openapi.routes())
    dashboard.mount(app)  # /dashboard, unless [dashboard] enabled = false
    return app
