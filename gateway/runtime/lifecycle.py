"""The hosted hooks' part of the app's life: probe and start the supervisor with the app, stop
every runtime process with it (after the delivery workers and blocking calls are done)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..context import SERVICES
from .hosting import Hosting, start_hosting


async def hosting_context(app: web.Application) -> AsyncIterator[None]:
    svc = app[SERVICES]
    hosting = await start_hosting(svc.settings.runtime)
    svc.registry.hosting = hosting
    svc.registry.invalidate_all()  # views built before hold the hosting of before
    yield
    svc.registry.hosting = Hosting(None, "the gateway is shutting down")
    svc.registry.invalidate_all()
    await hosting.close()
