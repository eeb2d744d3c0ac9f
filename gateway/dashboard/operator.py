"""The operator view, for sessions with `admin:tenants`: tenants (create, edit allowlists,
limits and quota overrides), and across tenants the backlog and the paused destinations.
Through the Management API's operations (gateway/api/tenants.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import points, quotas
from ..api import tenants as api_tenants
from ..auth import SCOPE_ADMIN
from ..errors import ApiError, Forbidden, NotFound
from ..store.models import Tenant
from . import forms
from .pages import PREFIX, done, form_of, page, require, session_of, svc_of

PER_PAGE = 50
QUOTA_LABELS = {
    quotas.HOOKS_PER_POINT: "Hooks per extensibility point",
    quotas.HOOKS: "Hooks in all",
    quotas.REPLAYS_PER_HOUR: "Replays per hour",
}
BLOCKING = [t.id for t in points.TRIGGERS.values() if t.blocking]
FIELDS = ("id", "name", "allowedCidrs", "maxInFlight", "quotas", "deadlines", *quotas.KEYS)


def _operator(request: web.Request) -> None:
    """As the Management API's tenant endpoints: `admin:tenants`, held by a sign-in that names no
    tenant (a tenant's user never manages tenants, whatever its identity provider grants)."""
    require(request, SCOPE_ADMIN)
    if session_of(request).tenant_id is not None:
        raise Forbidden("the operator view needs an operator's sign-in (one that names no tenant)")


def _body(form: Any, *, creating: bool) -> dict[str, Any]:
    """The API body of the tenant form; an empty limit takes the setting (no override)."""
    body: dict[str, Any] = {}
    if creating:
        body["id"] = forms.text(form, "id")
    name = forms.text(form, "name")
    if name or not creating:
        body["name"] = name or body.get("id", "")
    body["allowedCidrs"] = forms.lines(str(form.get("allowedCidrs", "")))
    max_in_flight = forms.text(form, "maxInFlight")
    body["maxInFlight"] = forms.integer(max_in_flight) if max_in_flight else None
    body["quotas"] = {k: forms.integer(forms.text(form, k)) for k in quotas.KEYS if forms.text(form, k)}
    body["deadlines"] = {t: forms.integer(forms.text(form, f"deadline-{t}")) for t in BLOCKING
                         if forms.text(form, f"deadline-{t}")}
    return body


def _values(form: Any) -> dict[str, str]:
    keys = ("id", "name", "allowedCidrs", "maxInFlight", *quotas.KEYS, *(f"deadline-{t}" for t in BLOCKING))
    return {k: str(form.get(k, "")) for k in keys}


def _tenant_values(t: Tenant) -> dict[str, str]:
    values = {
        "id": t.id, "name": t.name, "allowedCidrs": "\n".join(t.allowed_cidrs),
        "maxInFlight": "" if t.max_in_flight is None else str(t.max_in_flight),
    }
    values.update({k: str(t.quotas[k]) for k in quotas.KEYS if k in t.quotas})
    values.update({f"deadline-{k}": str(v) for k, v in t.deadlines.items()})
    return values


async def _overview(request: web.Request, *, values: dict[str, str] | None = None,
                    errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    svc = svc_of(request)
    number = request.query.get("page", "0")
    index = int(number) if number.isascii() and number.isdigit() and len(number) < 8 else 0
    tenants, total = await api_tenants.page_of_tenants(svc.store, index * PER_PAGE, PER_PAGE)  # no `_ops`
    backlogs = {b.tenant_id: b.pending for b in await svc.store.backlog_by_tenant(limit=1000)}
    context = {
        "tenants": tenants, "total": total, "page": index, "per_page": PER_PAGE,
        "backlogs": backlogs, "backlog": await svc.store.backlog(),
        "busiest": sorted(backlogs.items(), key=lambda kv: -kv[1])[:10],
        "pauses": await svc.store.list_pauses(svc.clock(), limit=100),
        "values": values or {}, "errors": errors or {}, "quota_labels": QUOTA_LABELS, "blocking": BLOCKING,
        "settings_quotas": quotas.effective(svc.settings.quotas, {}),
    }
    return page(request, "operator.html", context, status=status)


async def overview(request: web.Request) -> web.StreamResponse:
    _operator(request)
    return await _overview(request)


async def create(request: web.Request) -> web.StreamResponse:
    _operator(request)
    form = form_of(request)
    try:
        tenant = await api_tenants.create(svc_of(request), _body(form, creating=True))
    except ApiError as exc:
        return await _overview(request, values=_values(form), errors=_errors(exc), status=exc.status)
    done(f"{PREFIX}/operator/tenants/{tenant.id}", "tenant-created")


def _errors(exc: ApiError) -> dict[str, str]:
    """The API's error beside its field (a quota's own check names its key, such as "hooks")."""
    return forms.errors_of(exc, FIELDS)


async def _tenant_page(request: web.Request, tenant: Tenant, *, values: dict[str, str] | None = None,
                       errors: dict[str, str] | None = None, status: int = 200) -> web.Response:
    svc = svc_of(request)
    context = {
        "tenant": tenant, "values": values or _tenant_values(tenant), "errors": errors or {},
        "quota_labels": QUOTA_LABELS, "blocking": BLOCKING,
        "settings_quotas": quotas.effective(svc.settings.quotas, {}),
        "pauses": await svc.store.list_pauses(svc.clock(), tenant_id=tenant.id, limit=100),
    }
    return page(request, "tenant.html", context, status=status)


async def _find(request: web.Request) -> Tenant:
    tenant = await svc_of(request).store.get_tenant(api_tenants.tenant_id_of(request))
    if tenant is None:
        raise NotFound("tenant not found")
    return tenant


async def tenant_page(request: web.Request) -> web.StreamResponse:
    _operator(request)
    return await _tenant_page(request, await _find(request))


async def update(request: web.Request) -> web.StreamResponse:
    _operator(request)
    tenant = await _find(request)
    form = form_of(request)
    try:
        await api_tenants.update(svc_of(request), tenant.id, _body(form, creating=False))
    except ApiError as exc:
        values = {**_values(form), "id": tenant.id}
        return await _tenant_page(request, tenant, values=values, errors=_errors(exc), status=exc.status)
    done(f"{PREFIX}/operator/tenants/{tenant.id}", "tenant-saved")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/operator", overview, allow_head=False),
        web.post("/operator/tenants", create),
        web.get("/operator/tenants/{id}", tenant_page, allow_head=False),
        web.post("/operator/tenants/{id}", update),
    ]
