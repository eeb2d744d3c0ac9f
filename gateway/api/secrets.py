"""`/api/v2/hooks/{id}/secrets`: write-only credentials the gateway presents to the receiver.

Names are HTTP header tokens (each is sent as a header of that name; `auth0-extension-secret`
as `Authorization: Bearer`), values are encrypted at rest and never answered.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..context import services
from ..errors import BadRequest, shown
from ..middleware import tenant_of
from ..registry import secret_context
from ..web import json_response, no_content, read_json

MASK = "_VALUE_NOT_SHOWN_"
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
NAME_MAX = 64
VALUE_MAX = 4096
# A header value that arrives as it was stored: visible ASCII with inner spaces or tabs; no CR,
# LF or other controls, and no whitespace at either end (receivers strip it).
VALUE_OK = re.compile(r"[\x21-\x7e]([\t\x20-\x7e]*[\x21-\x7e])?")
RESERVED = frozenset({
    "host", "content-type", "content-length", "content-encoding", "connection", "keep-alive",
    "transfer-encoding", "te", "trailer", "upgrade", "expect", "proxy-authorization",
    "proxy-connection", "authorization", "user-agent", "accept-encoding", "cookie", "date",
    "forwarded", "via",
})
RESERVED_PREFIXES = ("webhook-", "x-forwarded-", "x-gateway-")


def _check_name(name: str) -> None:
    if not name or len(name) > NAME_MAX or not TOKEN.fullmatch(name):
        raise BadRequest(
            f"secret name {shown(name)} must be an HTTP header token of at most {NAME_MAX} characters"
        )
    lowered = name.lower()
    if lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES):
        raise BadRequest(f"secret name {name!r} is a reserved header")


def _values(body: Any) -> dict[str, str]:
    if not isinstance(body, dict) or not body:
        raise BadRequest("body must be a non-empty object of secret names to values")
    out = {}
    for name, value in body.items():
        _check_name(name)
        if not isinstance(value, str) or not value:
            raise BadRequest(f"the value of secret {name!r} must be a non-empty string")
        if len(value) > VALUE_MAX or not VALUE_OK.fullmatch(value):
            raise BadRequest(
                f"the value of secret {name!r} must be a header value of at most {VALUE_MAX} characters:"
                " printable ASCII, no line breaks or control characters, no spaces at either end"
            )
        out[name] = value
    lowered = [n.lower() for n in out]
    if len(set(lowered)) != len(lowered):
        raise BadRequest("secret names are case-insensitive and must be distinct")
    return out


async def list_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    names = await svc.store.secret_names(tenant, request.match_info["id"])
    return json_response({n: MASK for n in names})


async def add_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    values = _values(await read_json(request, svc.settings.server.max_body_bytes))
    sealed = {n: svc.cipher.encrypt(v, secret_context(hook_id, n)) for n, v in values.items()}
    await svc.store.add_secrets(tenant, hook_id, sealed, svc.clock())
    svc.registry.invalidate(tenant)
    return json_response({n: MASK for n in values}, status=201)


async def _stored_names(request: web.Request, tenant: str, hook_id: str, names: list[str]) -> list[str]:
    """`names` spelled as stored: header names, so secret names, are case-insensitive."""
    stored = {n.lower(): n for n in await services(request).store.secret_names(tenant, hook_id)}
    return [stored.get(n.lower(), n) for n in names]


async def update_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    given = _values(await read_json(request, svc.settings.server.max_body_bytes))
    names = await _stored_names(request, tenant, hook_id, list(given))
    values = dict(zip(names, given.values(), strict=True))
    sealed = {n: svc.cipher.encrypt(v, secret_context(hook_id, n)) for n, v in values.items()}
    await svc.store.update_secrets(tenant, hook_id, sealed, svc.clock())
    svc.registry.invalidate(tenant)
    return json_response({n: MASK for n in values})


async def delete_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes)
    if not isinstance(body, list) or not body or not all(isinstance(n, str) for n in body):
        raise BadRequest("body must be a non-empty array of secret names")
    hook_id = request.match_info["id"]
    names = await _stored_names(request, tenant, hook_id, body)
    await svc.store.delete_secrets(tenant, hook_id, list(dict.fromkeys(names)), svc.clock())
    svc.registry.invalidate(tenant)
    return no_content()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/hooks/{id}/secrets", list_secrets, allow_head=False),
        web.post("/api/v2/hooks/{id}/secrets", add_secrets),
        web.patch("/api/v2/hooks/{id}/secrets", update_secrets),
        web.delete("/api/v2/hooks/{id}/secrets", delete_secrets),
    ]
