"""`GET /api/v2/openapi.json`: the OpenAPI 3.1 document of every route (being written)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__
from ..web import json_response


def document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "Hooks gateway", "version": __version__}, "paths": {}}


async def openapi(request: web.Request) -> web.Response:
    return json_response(document())


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v2/openapi.json", openapi, allow_head=False)]
