"""`GET /api/v2/openapi.json`: the OpenAPI 3.1 document of every route of the gateway.

Built as Python data from the same constants the handlers use (scopes, limits, patterns,
trigger ids), so a changed limit changes the document too. `tests/test_openapi.py` fails when a
route of the app is missing here or a documented path is not served, and validates the
document against the OpenAPI 3.1 schema.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ... import __version__
from ...web import json_response
from .common import BEARER, HEADERS, PARAMETERS, Schema, error_response
from .operations import operations, shared_errors
from .schemas import components


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, fresh on each call."""
    ops = operations()
    paths: dict[str, dict[str, Schema]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = op.render()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hooks gateway",
            "version": __version__,
            "summary": "Auth0-compatible Hooks as signed webhooks.",
            "description": "The Management API (`/api/v2`, Auth0-compatible), the ingest API the auth server "
            "forwards events to (`/v1/tenants/...`), and the gateway's public endpoints. Every "
            "answer of `/api/v2` and `/v1/tenants` carries `X-RateLimit-Limit`, "
            "`X-RateLimit-Remaining` and `X-RateLimit-Reset`; errors are "
            "`{statusCode, error, message}`.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": n}
            for n in ("hooks", "secrets", "deliveries", "operational-events", "tenants", "ingest", "egress",
                      "operations")
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT (HS256, RS256 or ES256 as configured) with `iss`, `aud`, `exp`; "
                    "claim `scope` (space-separated) and, for tenant calls, `tenant`.",
                },
            },
            "schemas": components(),
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": {name: error_response(name, rate_limited=True) for name in shared_errors(ops)},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return json_response(document())


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v2/openapi.json", openapi, allow_head=False)]
