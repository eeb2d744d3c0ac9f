"""The hosted hooks' part of the app's life: probe and start the supervisor with the app, stop
every runtime process with it (after the delivery workers and blocking calls are done)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..context import SERVICES
from .dependencies import settled_dir
from .hosting import Hosting, dependencies_in_use, start_hosting


async def hosting_context(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    hosting = await start_hosting(svc.settings.runtime, allow_cidrs=svc.egress_allow,
                                  connect_timeout_s=svc.settings.egress.connect_timeout,
                                  dependencies_dir=settled_dir(svc.settings))
    svc.registry.hosting = hosting
    svc.registry.invalidate_all()  # views built before hold the hosting of before
    hosting.start_sweeps(lambda: dependencies_in_use(svc.store))  # installed sets no hook uses go
    yield
    svc.registry.hosting = Hosting(None, "the gateway is shutting down")
    svc.registry.invalidate_all()
    await hosting.close()
