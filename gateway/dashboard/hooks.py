"""The hooks pages, shaped like Auth0's: the five extensibility points with their hooks;
create, edit, enable and disable, order a blocking chain, delete after a confirmation. Every
change goes through the Management API's own operations (gateway/api/hooks.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import points
from ..api import deliveries as api_deliveries
from ..api import hooks as api_hooks
from ..auth import SCOPE_CREATE, SCOPE_DELETE, SCOPE_READ, SCOPE_UPDATE
from ..errors import ApiError, BadRequest, Conflict
from ..store.models import Hook
from . import chart, forms, health
from .pages import PREFIX, done, engine_of, form_of, page, svc_of, tenant_of

MAX_LISTED = 1000  # hooks a tenant's page lists (quotas keep tenants far below)
FORM_FIELDS = ("name", "url", "script", "dependencies", "triggerId", "enabled", *forms.HOOK_OPTION_FIELDS)


def chain_key(h: Hook) -> tuple[int, float, str]:
    """The order a blocking chain runs in (gateway/registry.py sorts the same way)."""
    return (h.order, h.created_at, h.id)


async def _hooks_of(request: web.Request, tenant: str) -> list[Hook]:
    result = await svc_of(request).store.list_hooks(tenant, limit=MAX_LISTED)
    return sorted(result.items, key=chain_key)


async def _list_page(request: web.Request, tenant: str, *, row_errors: dict[str, str] | None = None,
                     status: int = 200) -> web.Response:
    hooks = await _hooks_of(request, tenant)
    groups = [
        {"trigger": t, "blocking": t.blocking, "hooks": [h for h in hooks if h.trigger_id == t.id]}
        for t in points.TRIGGERS.values()
    ]
    return page(request, "hooks.html", {"groups": groups, "row_errors": row_errors or {}}, status=status)


async def list_page(request: web.Request) -> web.StreamResponse:
    return await _list_page(request, tenant_of(request, SCOPE_READ))


def _form_page(request: web.Request, *, hook: Hook | None, values: dict[str, Any], errors: dict[str, str],
               status: int = 200) -> web.Response:
    trigger = hook.trigger_id if hook is not None else values.get("triggerId", "")
    blocking = points.TRIGGERS[trigger].blocking if trigger in points.TRIGGERS else True
    context = {"hook": hook, "values": values, "errors": errors, "blocking": blocking,
               "triggers": list(points.TRIGGERS.values()), "formats": api_hooks.FORMATS,
               "policies": api_hooks.FAILURE_POLICIES, "scripts_refused": _scripts_refused(request)}
    return page(request, "hook_form.html", context, status=status)


def _scripts_refused(request: web.Request) -> str | None:
    """Why this gateway cannot run hooks' scripts now (the form says so up front); None: it can."""
    return svc_of(request).registry.hosting.refusal


async def new_page(request: web.Request) -> web.StreamResponse:
    tenant_of(request, SCOPE_CREATE)
    point = request.query.get("point", "")
    values = {"triggerId": point if point in points.TRIGGERS else points.TRIGGER_IDS[0]}
    return _form_page(request, hook=None, values=values, errors={})


async def create(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_CREATE)
    form = form_of(request)
    trigger = forms.text(form, "triggerId")
    blocking = points.TRIGGERS[trigger].blocking if trigger in points.TRIGGERS else True
    try:
        hook = await api_hooks.create(svc_of(request), tenant, forms.hook_body(form, creating=True,
                                                                                blocking=blocking))
    except ApiError as exc:
        return _form_page(request, hook=None, values=forms.hook_values(form),
                          errors=forms.errors_of(exc, FORM_FIELDS), status=exc.status)
    done(f"{PREFIX}/hooks/{hook.id}", "created")


def _values(hook: Hook) -> dict[str, Any]:
    return {
        "name": hook.name, "url": hook.url, "script": hook.script or "",
        "dependencies": forms.dependencies_text(hook.dependencies), "triggerId": hook.trigger_id,
        "order": str(hook.order),
        "timeoutMs": str(hook.timeout_ms), "failurePolicy": hook.failure_policy,
        "maxConcurrency": str(hook.max_concurrency),
        "rateLimitPerSecond": "" if hook.rate_limit_per_second is None else f"{hook.rate_limit_per_second:g}",
        "format": hook.format, "enabled": "on" if hook.enabled else "",
    }


async def _hook_page(request: web.Request, tenant: str, hook: Hook, *, values: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None, replay: dict[str, Any] | None = None,
                     replay_errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    state = await health.of_hook(svc_of(request), tenant, hook)
    context = {
        "hook": hook, "health": state, "chart": chart.draw(state.buckets),
        "values": values or _values(hook), "errors": errors or {},
        "blocking": points.TRIGGERS[hook.trigger_id].blocking,
        "formats": api_hooks.FORMATS, "policies": api_hooks.FAILURE_POLICIES,
        "statuses": ("failed", "succeeded", "cancelled", "pending"),
        "replay": replay or {"status": ["failed"]}, "replay_errors": replay_errors or {},
        "scripts_refused": _scripts_refused(request),
    }
    return page(request, "hook.html", context, status=status)


async def hook_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    hook = await api_hooks.find(svc_of(request), tenant, request.match_info["id"])
    return await _hook_page(request, tenant, hook)


async def update(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    form = form_of(request)
    body = forms.hook_body(form, creating=False, blocking=points.TRIGGERS[hook.trigger_id].blocking)
    try:
        await api_hooks.update(svc, tenant, hook.id, body)
    except ApiError as exc:
        values = {**forms.hook_values(form), "triggerId": hook.trigger_id}
        return await _hook_page(request, tenant, hook, values=values,
                                errors=forms.errors_of(exc, FORM_FIELDS), status=exc.status)
    done(f"{PREFIX}/hooks/{hook.id}", "saved")


async def _switch(request: web.Request, enabled: bool) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    back = forms.text(form_of(request), "back")
    try:
        await api_hooks.update(svc, tenant, hook.id, {"enabled": enabled})
    except (Conflict, BadRequest) as exc:
        if back == "list":
            return await _list_page(request, tenant, row_errors={hook.id: exc.message}, status=exc.status)
        return await _hook_page(request, tenant, hook, errors={"enabled": exc.message}, status=exc.status)
    done(f"{PREFIX}/hooks" if back == "list" else f"{PREFIX}/hooks/{hook.id}",
         "enabled" if enabled else "disabled")


async def enable(request: web.Request) -> web.StreamResponse:
    return await _switch(request, True)


async def disable(request: web.Request) -> web.StreamResponse:
    return await _switch(request, False)


async def move(request: web.Request) -> web.StreamResponse:
    """Move a hook one place up or down its point's chain. Equal `order` values are spread out
    first, so the move is visible in the order the chain runs."""
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    direction = forms.text(form_of(request), "direction")
    if direction not in ("up", "down"):
        raise BadRequest("direction must be up or down")
    chain = [h for h in await _hooks_of(request, tenant) if h.trigger_id == hook.trigger_id]
    i = next(n for n, h in enumerate(chain) if h.id == hook.id)
    j = i - 1 if direction == "up" else i + 1
    if 0 <= j < len(chain):
        chain[i], chain[j] = chain[j], chain[i]
        orders = [h.order for h in chain]
        if len(set(orders)) != len(orders) or orders != sorted(orders):
            spaced = sorted(orders)
            if len(set(spaced)) != len(spaced):
                spaced = [n * 10 for n in range(len(chain))]
            for h, order in zip(chain, spaced, strict=True):
                if h.order != order:
                    await api_hooks.update(svc, tenant, h.id, {"order": order})
    done(f"{PREFIX}/hooks", "moved")


async def replay(request: web.Request) -> web.StreamResponse:
    """Deliver again the hook's events of a time range whose last delivery has the chosen statuses
    (`POST /api/v2/hooks/{id}/replay`, under the same quota)."""
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    form = form_of(request)
    values = {"since": forms.text(form, "since"), "until": forms.text(form, "until"),
              "status": [s for s in form.getall("status", []) if isinstance(s, str)]}
    body: dict[str, Any] = {"status": values["status"]}
    for key in ("since", "until"):
        if values[key]:
            body[key] = values[key]
    try:
        await api_deliveries.replay_range(svc, engine_of(request).notify, tenant, hook.id, body)
    except ApiError as exc:
        return await _hook_page(request, tenant, hook, replay=values, status=exc.status,
                                replay_errors=forms.errors_of(exc, ("since", "until", "status")))
    done(f"{PREFIX}/deliveries?hook={hook.id}", "replayed")


async def delete_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_DELETE)
    hook = await api_hooks.find(svc_of(request), tenant, request.match_info["id"])
    return page(request, "hook_delete.html", {"hook": hook})


async def delete(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_DELETE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    await api_hooks.delete(svc, tenant, hook.id)
    done(f"{PREFIX}/hooks", "deleted")


async def health_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    svc = svc_of(request)
    rows = []
    for hook in await _hooks_of(request, tenant):
        state = await health.of_hook(svc, tenant, hook)
        rows.append({"health": state, "chart": chart.draw(state.buckets)})
    return page(request, "health.html", {"rows": rows})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/hooks", list_page, allow_head=False),
        web.get("/hooks/new", new_page, allow_head=False),
        web.post("/hooks", create),
        web.get("/hooks/{id}", hook_page, allow_head=False),
        web.post("/hooks/{id}", update),
        web.post("/hooks/{id}/enable", enable),
        web.post("/hooks/{id}/disable", disable),
        web.post("/hooks/{id}/move", move),
        web.post("/hooks/{id}/replay", replay),
        web.get("/hooks/{id}/delete", delete_page, allow_head=False),
        web.post("/hooks/{id}/delete", delete),
        web.get("/health", health_page, allow_head=False),
    ]
