"""A hook's secrets (write-only: a value is never shown after it is saved) and its signing
secret (shown only on request, by a POST; rotated with a grace period). Through the
Management API's operations (gateway/api/secrets.py, gateway/api/signing_secrets.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api import hooks as api_hooks
from ..api import secrets as api_secrets
from ..api import signing_secrets as api_signing
from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..errors import ApiError, Conflict
from ..web import parse_time
from . import forms
from .pages import PREFIX, done, form_of, page, svc_of, tenant_of


async def _page(request: web.Request, tenant: str, hook_id: str, *, errors: dict[str, str] | None = None,
                values: dict[str, str] | None = None, revealed: str | None = None,
                status: int = 200) -> web.Response:
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, hook_id)
    signing = await api_signing.describe(svc, tenant, hook_id)
    previous = [
        {"created": parse_time(p["createdAt"], "createdAt"),
         "expires": parse_time(p["expiresAt"], "expiresAt")}
        for p in signing["previous"]
    ]
    context: dict[str, Any] = {
        "hook": hook,
        "names": await api_secrets.names(svc, tenant, hook_id),
        "errors": errors or {},
        "values": values or {},
        "revealed": revealed,
        "signing_created": parse_time(signing["createdAt"], "createdAt"),
        "previous": previous,
        "grace_hours": round(svc.settings.delivery.signing_grace / 3600, 2),
        "max_grace_hours": api_signing.MAX_GRACE_S // 3600,
    }
    return page(request, "secrets.html", context, status=status)


async def secrets_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    return await _page(request, tenant, request.match_info["id"])


def _back(hook_id: str) -> str:
    return f"{PREFIX}/hooks/{hook_id}/secrets"


async def add(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    form = form_of(request)
    name, value = forms.text(form, "name"), str(form.get("value", ""))
    await api_hooks.find(svc_of(request), tenant, hook_id)
    try:
        await api_secrets.add(svc_of(request), tenant, hook_id, {name: value})
    except Conflict as exc:
        return await _page(request, tenant, hook_id, errors={"add-name": exc.message}, values={"name": name},
                           status=exc.status)
    except ApiError as exc:
        field = {"value": "add-value", "name": "add-name"}.get(exc.field or "", forms.FORM_ERROR)
        return await _page(request, tenant, hook_id, errors={field: exc.message}, values={"name": name},
                           status=exc.status)
    done(_back(hook_id), "secret-added")


async def update(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    form = form_of(request)
    name, value = forms.text(form, "name"), str(form.get("value", ""))
    await api_hooks.find(svc_of(request), tenant, hook_id)
    try:
        await api_secrets.update(svc_of(request), tenant, hook_id, {name: value})
    except ApiError as exc:
        return await _page(request, tenant, hook_id, errors={f"value-{name}": exc.message}, status=exc.status)
    done(_back(hook_id), "secret-updated")


async def delete(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    name = forms.text(form_of(request), "name")
    await api_hooks.find(svc_of(request), tenant, hook_id)
    try:
        await api_secrets.remove(svc_of(request), tenant, hook_id, [name])
    except ApiError as exc:
        return await _page(request, tenant, hook_id, errors={forms.FORM_ERROR: exc.message},
                           status=exc.status)
    done(_back(hook_id), "secret-deleted")


async def reveal(request: web.Request) -> web.StreamResponse:
    """The signing secret in clear, on this one answer (a POST: never in a URL, history or cache)."""
    tenant = tenant_of(request, SCOPE_READ)
    hook_id = request.match_info["id"]
    signing = await api_signing.describe(svc_of(request), tenant, hook_id)
    return await _page(request, tenant, hook_id, revealed=signing["secret"])


async def rotate(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    hours = forms.text(form_of(request), "graceHours")
    body: dict[str, Any] = {}
    if hours:
        try:
            body["gracePeriodSeconds"] = round(float(hours) * 3600)
        except (ValueError, OverflowError):
            body["gracePeriodSeconds"] = hours  # refused by the API's own check, naming the field
    await api_hooks.find(svc_of(request), tenant, hook_id)
    try:
        await api_signing.rotate(svc_of(request), tenant, hook_id, body)
    except ApiError as exc:
        return await _page(request, tenant, hook_id, errors={"graceHours": exc.message}, status=exc.status)
    done(_back(hook_id), "rotated")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/hooks/{id}/secrets", secrets_page, allow_head=False),
        web.post("/hooks/{id}/secrets", add),
        web.post("/hooks/{id}/secrets/update", update),
        web.post("/hooks/{id}/secrets/delete", delete),
        web.post("/hooks/{id}/signing-secret/reveal", reveal),
        web.post("/hooks/{id}/signing-secret/rotate", rotate),
    ]
