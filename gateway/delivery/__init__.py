"""Delivery: the outbound client, the workers, and one attempt's send and classification."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..context import SERVICES
from ..coordination import RESET, WORK
from ..tls import client_context
from ..transport import Transport
from .worker import DeliveryEngine

ENGINE: web.AppKey[DeliveryEngine] = web.AppKey("delivery_engine", DeliveryEngine)


async def transport_context(app: web.Application) -> AsyncIterator[None]:
    """The one outbound client of the process, behind the egress guard. Seams: `resolver` (an
    aiohttp `AbstractResolver`) and `ssl_context` (the CAs a test trusts)."""
    svc = app[SERVICES]
    egress = svc.settings.egress
    transport = Transport(
        allow_http=egress.allow_http,
        allow_cidrs=svc.egress_allow,
        resolver=svc.extras.get("resolver"),
        source_address=egress.source_address,
        connect_timeout_s=egress.connect_timeout,
        ssl_context=svc.extras.get("ssl_context") or client_context(egress.ca_file),
        metrics=svc.metrics,
    )
    svc.metrics.idle.set_function(lambda: transport.idle_connections)
    svc.transport = transport
    yield
    svc.transport = None
    await transport.close()


async def workers_context(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]

    def transport() -> Transport:
        assert svc.transport is not None, "the outbound client is closed"
        return svc.transport

    engine = DeliveryEngine(
        svc.settings, svc.store, svc.registry, transport, clock=svc.clock,
        rng=svc.extras.get("rng"), metrics=svc.metrics, announce=lambda: svc.bus.publish(WORK),
        cipher=svc.cipher,
    )
    app[ENGINE] = engine
    # An `api` instance only takes events in; its notify still wakes the `worker` instances.
    runs_workers = svc.settings.server.role != "api" and svc.extras.get("start_workers", True)
    await engine.ops.prepare()  # the operator's operational events endpoint, as [events] says
    if runs_workers:
        svc.bus.subscribe(WORK, lambda _payload: engine.notify(announce=False))
        svc.bus.subscribe(RESET, lambda _payload: engine.notify(announce=False))
        engine.start()
    yield
    await engine.stop(svc.settings.server.shutdown_timeout)


__all__ = ["ENGINE", "DeliveryEngine", "transport_context", "workers_context"]
