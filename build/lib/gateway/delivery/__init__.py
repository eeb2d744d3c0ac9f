"""Delivery: the outbound client, the workers, and one attempt's send and classification."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from ..context import SERVICES
from ..egress import MAX_FIELD_SIZE, MAX_LINE_SIZE, make_connector
from .worker import DeliveryEngine

ENGINE: web.AppKey[DeliveryEngine] = web.AppKey("delivery_engine", DeliveryEngine)


async def client_context(app: web.Application) -> AsyncIterator[None]:
    """The one outbound `ClientSession` of the process, behind the egress guard."""
    svc = app[SERVICES]
    egress = svc.settings.egress
    connector = make_connector(
        allow_cidrs=svc.egress_allow,
        source_address=egress.source_address,
        resolver=svc.extras.get("resolver"),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
    )
    svc.session = session
    yield
    svc.session = None
    await session.close()


async def workers_context(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]

    def session() -> aiohttp.ClientSession:
        assert svc.session is not None, "the client session is closed"
        return svc.session

    engine = DeliveryEngine(
        svc.settings, svc.store, svc.registry, session, clock=svc.clock,
        rng=svc.extras.get("rng"), allow_cidrs=svc.egress_allow, metrics=svc.metrics,
    )
    app[ENGINE] = engine
    if svc.extras.get("start_workers", True):
        engine.start()
    yield
    await engine.stop(svc.settings.server.shutdown_timeout)


__all__ = ["ENGINE", "DeliveryEngine", "client_context", "workers_context"]
