"""`/api/v2/hooks/{id}/signing-secret`: the `whsec_` key receivers verify with, and rotation.

After a rotation the previous key keeps signing beside the new one for a grace period
(default 24 h), so receivers can switch without dropping a delivery.
"""

from __future__ import annotations

from aiohttp import web

from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..context import services
from ..errors import BadRequest
from ..middleware import tenant_of
from ..registry import signing_context
from ..signing import new_signing_secret
from ..web import iso, json_response, read_json
from . import validate

MAX_GRACE_S = 7 * 86400


async def _render(request: web.Request, tenant: str, hook_id: str) -> web.Response:
    svc = services(request)
    valid = await svc.store.signing_secrets(tenant, hook_id, svc.clock())
    current = next((s for s in valid if s.expires_at is None), None)
    if current is None:  # the store keeps one current secret per hook; this is corruption
        raise RuntimeError(f"hook {hook_id} has no current signing secret")
    return json_response({
        "secret": svc.cipher.decrypt(current.value, signing_context(hook_id)),
        "createdAt": iso(current.created_at),
        "previous": [
            {"createdAt": iso(s.created_at), "expiresAt": iso(s.expires_at)}
            for s in valid if s.expires_at is not None
        ],
    })


async def get_signing_secret(request: web.Request) -> web.Response:
    tenant = tenant_of(request, SCOPE_READ)
    return await _render(request, tenant, request.match_info["id"])


async def rotate_signing_secret(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    body = await read_json(request, svc.settings.server.max_body_bytes, required=False)
    grace: float = svc.settings.delivery.signing_grace
    if body is not None:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        validate.no_unknown(body, {"gracePeriodSeconds"})
        if "gracePeriodSeconds" in body:
            grace = validate.integer(body, "gracePeriodSeconds", minimum=0, maximum=MAX_GRACE_S)
    now = svc.clock()
    sealed = svc.cipher.encrypt(new_signing_secret(), signing_context(hook_id))
    await svc.store.rotate_signing_secret(tenant, hook_id, sealed, grace_until=now + grace, now=now)
    svc.registry.invalidate(tenant)
    return await _render(request, tenant, hook_id)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/hooks/{id}/signing-secret", get_signing_secret, allow_head=False),
        web.post("/api/v2/hooks/{id}/signing-secret/rotate", rotate_signing_secret),
    ]
