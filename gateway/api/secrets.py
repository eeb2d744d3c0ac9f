"""`/api/v2/hooks/{id}/secrets`: write-only credentials the gateway presents to the receiver.

Names are HTTP header tokens (each is sent as a header of that name; `auth0-extension-secret`
as `Authorization: Bearer`), values are encrypted at rest and never answered.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..context import Services, services
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
            f"secret name {shown(name)} must be an HTTP header token of at most {NAME_MAX} characters",
            field="name",
        )
    lowered = name.lower()
    if lowered in RESERVED or lowered.startswith(RESERVED_PREFIXES):
        raise BadRequest(f"secret name {name!r} is a reserved header", field="name")


def _values(body: Any) -> dict[str, str]:
    if not isinstance(body, dict) or not body:
        raise BadRequest("body must be a non-empty object of secret names to values")
    out = {}
    for name, value in body.items():
        _check_name(name)
        if not isinstance(value, str) or not value:
            raise BadRequest(f"the value of secret {name!r} must be a non-empty string", field="value")
        if len(value) > VALUE_MAX or not VALUE_OK.fullmatch(value):
            raise BadRequest(
                f"the value of secret {name!r} must be a header value of at most {VALUE_MAX} characters:"
                " printable ASCII, no line breaks or control characters, no spaces at either end",
                field="value",
            )
        out[name] = value
    lowered = [n.lower() for n in out]
    if len(set(lowered)) != len(lowered):
        raise BadRequest("secret names are case-insensitive and must be distinct")
    return out


# -- the operations, shared by the Management API and the dashboard ---------------------------


async def names(svc: Services, tenant: str, hook_id: str) -> list[str]:
    """The names of the hook's secrets (`NotFound` for a hook that is not the tenant's)."""
    return await svc.store.secret_names(tenant, hook_id)


async def add(svc: Services, tenant: str, hook_id: str, body: Any) -> list[str]:
    """Add the secrets of `body` (`{NAME: value}`); `Conflict` when one exists."""
    values = _values(body)
    sealed = {n: svc.cipher.encrypt(v, secret_context(hook_id, n)) for n, v in values.items()}
    await svc.store.add_secrets(tenant, hook_id, sealed, svc.clock())
    svc.registry.invalidate(tenant)
    return list(values)


async def _stored_names(svc: Services, tenant: str, hook_id: str, given: list[str]) -> list[str]:
    """`given` spelled as stored: header names, so secret names, are case-insensitive."""
    stored = {n.lower(): n for n in await svc.store.secret_names(tenant, hook_id)}
    return [stored.get(n.lower(), n) for n in given]


async def update(svc: Services, tenant: str, hook_id: str, body: Any) -> list[str]:
    """Replace the values of the secrets of `body`; `NotFound` when one is missing."""
    given = _values(body)
    stored = await _stored_names(svc, tenant, hook_id, list(given))
    values = dict(zip(stored, given.values(), strict=True))
    sealed = {n: svc.cipher.encrypt(v, secret_context(hook_id, n)) for n, v in values.items()}
    await svc.store.update_secrets(tenant, hook_id, sealed, svc.clock())
    svc.registry.invalidate(tenant)
    return list(values)


async def remove(svc: Services, tenant: str, hook_id: str, body: Any) -> None:
    """Delete the secrets named in `body` (a non-empty array of names)."""
    if not isinstance(body, list) or not body or not all(isinstance(n, str) for n in body):
        raise BadRequest("body must be a non-empty array of secret names")
    stored = await _stored_names(svc, tenant, hook_id, body)
    await svc.store.delete_secrets(tenant, hook_id, list(dict.fromkeys(stored)), svc.clock())
    svc.registry.invalidate(tenant)


# -- the Management API's handlers ------------------------------------------------------------


async def list_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    return json_response({n: MASK for n in await names(svc, tenant, request.match_info["id"])})


async def add_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes)
    added = await add(svc, tenant, request.match_info["id"], body)
    return json_response({n: MASK for n in added}, status=201)


async def update_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes)
    updated = await update(svc, tenant, request.match_info["id"], body)
    return json_response({n: MASK for n in updated})


async def delete_secrets(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes)
    await remove(svc, tenant, request.match_info["id"], body)
    return no_content()


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/hooks/{id}/secrets", list_secrets, allow_head=False),
        web.post("/api/v2/hooks/{id}/secrets", add_secrets),
        web.patch("/api/v2/hooks/{id}/secrets", update_secrets),
        web.delete("/api/v2/hooks/{id}/secrets", delete_secrets),
    ]
