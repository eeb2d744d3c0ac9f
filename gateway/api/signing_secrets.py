"""`/api/v2/hooks/{id}/signing-secret`: the key receivers verify with, and rotation; and
`/v1/signing-keys/{tenant}/{id}`, a v1a hook's public keys published for its receivers.

A hook signs `v1` (HMAC, its `whsec_` secret is shown to the tenant: the receiver needs it) or
`v1a` (Ed25519: the tenant and the receivers see only the `whpk_` public key; the `whsk_`
private key is encrypted at rest and never leaves the gateway). After a rotation, or a switch
of scheme, the previous key keeps signing beside the new one for a grace period (default
24 h), so receivers can switch without dropping a delivery.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..context import Services, services
from ..errors import BadRequest, NotFound
from ..middleware import tenant_of
from ..registry import signing_context
from ..signing import SCHEME_ASYMMETRIC, SCHEME_SYMMETRIC, new_signing_key, public_key_of
from ..store.models import SigningSecret
from ..web import iso, json_response, read_json
from . import validate

MAX_GRACE_S = 7 * 86400
# How long receivers and proxies may cache the published public keys: a rotation's new key
# signs beside the old one for the grace period (hours), so minutes of staleness are harmless.
PUBLIC_KEYS_MAX_AGE_S = 300


def new_key(svc: Services, hook_id: str, scheme: str) -> tuple[str, str | None]:
    """A fresh signing key of `scheme` for the hook: sealed for the store, and its `whpk_` public
    key (None for v1)."""
    plain = new_signing_key(scheme)
    public = public_key_of(plain) if scheme == SCHEME_ASYMMETRIC else None
    return svc.cipher.encrypt(plain, signing_context(hook_id)), public


def _scheme(key: SigningSecret) -> str:
    return SCHEME_SYMMETRIC if key.public_key is None else SCHEME_ASYMMETRIC


async def describe(svc: Services, tenant: str, hook_id: str) -> dict[str, Any]:
    """What a receiver verifies the hook's requests with: its current key (a v1 `whsec_` secret
    in clear, or a v1a `whpk_` public key, in `secret` either way) and the previous ones still
    signing (their public keys for v1a; a previous v1 secret is not shown again)."""
    valid = await svc.store.signing_secrets(tenant, hook_id, svc.clock())
    current = next((s for s in valid if s.expires_at is None), None)
    if current is None:  # the store keeps one current secret per hook; this is corruption
        raise RuntimeError(f"hook {hook_id} has no current signing secret")
    out: dict[str, Any] = {"scheme": _scheme(current)}
    if current.public_key is None:
        out["secret"] = svc.cipher.decrypt(current.value, signing_context(hook_id))
    else:  # the private key is never decrypted for an answer
        out["secret"] = out["publicKey"] = current.public_key
    out["createdAt"] = iso(current.created_at)
    out["previous"] = [
        {"scheme": _scheme(s), "createdAt": iso(s.created_at), "expiresAt": iso(s.expires_at),
         **({} if s.public_key is None else {"publicKey": s.public_key})}
        for s in valid if s.expires_at is not None
    ]
    return out


async def rotate(
    svc: Services, tenant: str, hook_id: str, body: Any, *, scheme: str | None = None
) -> dict[str, Any]:
    """A new signing key, of `scheme` (default: the hook's); the current one keeps signing beside
    it for the grace period (`{"gracePeriodSeconds": n}` in `body`, else `[delivery]
    signing_grace`). The hook's scheme becomes the new key's in the same transaction."""
    grace: float = svc.settings.delivery.signing_grace
    if body is not None:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        validate.no_unknown(body, {"gracePeriodSeconds"})
        if "gracePeriodSeconds" in body:
            grace = validate.integer(body, "gracePeriodSeconds", minimum=0, maximum=MAX_GRACE_S)
    if scheme is None:
        hook = await svc.store.get_hook(tenant, hook_id)
        if hook is None:
            raise NotFound("hook not found")
        scheme = hook.signature_scheme
    now = svc.clock()
    sealed, public = new_key(svc, hook_id, scheme)
    await svc.store.rotate_signing_secret(
        tenant, hook_id, sealed, grace_until=now + grace, now=now, public_key=public
    )
    svc.registry.invalidate(tenant)
    return await describe(svc, tenant, hook_id)


async def get_signing_secret(request: web.Request) -> web.Response:
    tenant = tenant_of(request, SCOPE_READ)
    return json_response(await describe(services(request), tenant, request.match_info["id"]))


async def rotate_signing_secret(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes, required=False)
    return json_response(await rotate(svc, tenant, request.match_info["id"], body))


async def get_public_keys(request: web.Request) -> web.Response:
    """A v1a hook's public keys, for its receivers, without a token: the current key and those
    still signing, newest first. Public keys are not secrets, and the tenant and hook ids (80
    random bits) in the path scope the answer; anything else is one and the same `404`."""
    svc = services(request)
    try:
        valid = await svc.store.signing_secrets(request.match_info["tenant"], request.match_info["id"],
                                                svc.clock())
    except NotFound:
        valid = []
    keys = [
        {"publicKey": s.public_key, "createdAt": iso(s.created_at),
         "expiresAt": None if s.expires_at is None else iso(s.expires_at)}
        for s in valid if s.public_key is not None
    ]
    if not keys:
        raise NotFound("no public signing key for this hook")
    return json_response(
        {"scheme": SCHEME_ASYMMETRIC, "keys": keys},
        headers={"Cache-Control": f"public, max-age={PUBLIC_KEYS_MAX_AGE_S}"},
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/hooks/{id}/signing-secret", get_signing_secret, allow_head=False),
        web.post("/api/v2/hooks/{id}/signing-secret/rotate", rotate_signing_secret),
        web.get("/v1/signing-keys/{tenant}/{id}", get_public_keys, allow_head=False),
    ]
