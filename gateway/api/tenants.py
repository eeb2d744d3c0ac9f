"""`/api/v2/tenants`: operators (scope `admin:tenants`, no `tenant` claim) manage tenants."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from .. import points, quotas
from ..auth import SCOPE_ADMIN
from ..context import Services, services
from ..delivery.ops_endpoints import OPS_TENANT, delete_tenant_endpoint
from ..errors import BadRequest, Forbidden, NotFound
from ..middleware import principal
from ..peers import networks
from ..store.base import Store
from ..store.models import Tenant
from ..web import MAX_PAGE, iso, json_response, no_content, query_bool, query_int, read_json, require_object
from . import validate

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
WRITABLE = {"name", "allowedCidrs", "deadlines", "maxInFlight", "quotas"}
MIN_DEADLINE_MS, MAX_DEADLINE_MS = 100, 60_000
MAX_IN_FLIGHT_MAX = 100_000


def render(t: Tenant) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "allowedCidrs": list(t.allowed_cidrs),
        "deadlines": dict(t.deadlines),
        "maxInFlight": t.max_in_flight,
        "quotas": dict(t.quotas),
        "createdAt": iso(t.created_at),
        "updatedAt": iso(t.updated_at),
    }


def _operator(request: web.Request) -> None:
    p = principal(request, SCOPE_ADMIN)
    if p.tenant is not None:
        raise Forbidden("tenant management needs an operator token (no 'tenant' claim)")


def _fields(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in body:
        out["name"] = validate.string(body, "name", max_len=256)
    if "allowedCidrs" in body:
        cidrs = body["allowedCidrs"]
        if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
            raise BadRequest("'allowedCidrs' must be an array of CIDR strings", field="allowedCidrs")
        try:
            networks(cidrs)
        except ValueError as exc:
            raise BadRequest(f"'allowedCidrs': {exc}", field="allowedCidrs") from None
        out["allowed_cidrs"] = tuple(cidrs)
    if "deadlines" in body:
        deadlines = body["deadlines"]
        if not isinstance(deadlines, dict):
            raise BadRequest("'deadlines' must be an object of triggerId to milliseconds", field="deadlines")
        for trigger in deadlines:
            if trigger not in points.TRIGGER_IDS or not points.is_blocking(trigger):
                raise BadRequest(f"'deadlines': {trigger!r} is not a blocking point", field="deadlines")
            value = deadlines[trigger]
            if isinstance(value, bool) or not isinstance(value, int) or not (
                MIN_DEADLINE_MS <= value <= MAX_DEADLINE_MS
            ):
                raise BadRequest(f"'deadlines.{trigger}' must be an integer between {MIN_DEADLINE_MS} "
                                 f"and {MAX_DEADLINE_MS} (milliseconds)", field="deadlines")
        out["deadlines"] = dict(deadlines)
    if "maxInFlight" in body:
        out["max_in_flight"] = None if body["maxInFlight"] is None else validate.integer(
            body, "maxInFlight", minimum=1, maximum=MAX_IN_FLIGHT_MAX)
    if "quotas" in body:
        out["quotas"] = _quotas(body["quotas"])
    return out


def _quotas(value: Any) -> dict[str, int]:
    """A tenant's quota overrides: each key optional, a positive integer; null leaves it out
    (the setting applies). The object replaces the tenant's overrides as a whole."""
    if not isinstance(value, dict) or any(key not in quotas.KEYS for key in value):
        raise BadRequest(f"'quotas' must be an object with any of {', '.join(quotas.KEYS)}", field="quotas")
    return {
        key: validate.integer(value, key, minimum=1, maximum=quotas.MAX_OVERRIDE)
        for key in quotas.KEYS
        if value.get(key) is not None
    }


async def create(svc: Services, body: dict[str, Any]) -> Tenant:
    """Validate `body` (API field names) and store a new tenant (`Conflict` on a used id)."""
    validate.no_unknown(body, WRITABLE | {"id"})
    if "id" not in body:
        raise BadRequest("'id' is required", field="id")
    tenant_id = validate.string(body, "id", max_len=63, pattern=ID_PATTERN, hint="^[a-z0-9][a-z0-9-]{0,62}$")
    fields = _fields(body)
    now = svc.clock()
    tenant = Tenant(id=tenant_id, name=fields.get("name", tenant_id),
                    allowed_cidrs=fields.get("allowed_cidrs", ()), deadlines=fields.get("deadlines", {}),
                    max_in_flight=fields.get("max_in_flight"), created_at=now, updated_at=now,
                    quotas=fields.get("quotas", {}))
    await svc.store.create_tenant(tenant)
    svc.registry.invalidate(tenant_id)
    return tenant


async def update(svc: Services, tenant_id: str, body: dict[str, Any]) -> Tenant:
    """Apply `body` (API field names) to a tenant."""
    validate.no_unknown(body, WRITABLE | {"id"})
    if "id" in body and body["id"] != tenant_id:
        raise BadRequest("'id' cannot be changed", field="id")
    tenant = await svc.store.update_tenant(tenant_id, _fields(body), svc.clock())
    svc.registry.invalidate(tenant_id)
    return tenant


def tenant_id_of(request: web.Request) -> str:
    """The path's tenant id. The gateway's internal tenant (`_ops`, outside ID_PATTERN) is no
    tenant of this API: an operator cannot read, change or delete it."""
    tenant_id = request.match_info["id"]
    if not ID_PATTERN.fullmatch(tenant_id):
        raise NotFound("tenant not found")
    return tenant_id


async def page_of_tenants(store: Store, offset: int, limit: int) -> tuple[list[Tenant], int]:
    """A page of the tenants without `_ops`, which sorts (byte order, both stores) after the ids
    that start with a digit and before those that start with a letter."""
    if await store.get_tenant(OPS_TENANT) is None:
        result = await store.list_tenants(offset=offset, limit=limit)
        return list(result.items), result.total
    result = await store.list_tenants(offset=offset, limit=limit + 1)
    items = [t for t in result.items if t.id != OPS_TENANT]
    if len(items) == len(result.items) and items and items[0].id > OPS_TENANT:
        # `_ops` came before this page: every row of the page is one further on.
        items = list((await store.list_tenants(offset=offset + 1, limit=limit)).items)
    return items[:limit], result.total - 1


async def create_tenant(request: web.Request) -> web.Response:
    svc = services(request)
    _operator(request)
    body = require_object(await read_json(request, svc.settings.server.max_body_bytes))
    return json_response(render(await create(svc, body)), status=201)


async def list_tenants(request: web.Request) -> web.Response:
    svc = services(request)
    _operator(request)
    page = query_int(request, "page", default=0, minimum=0, maximum=MAX_PAGE)
    per_page = query_int(request, "per_page", default=50, minimum=1, maximum=100)
    items, total = await page_of_tenants(svc.store, page * per_page, per_page)
    tenants = [render(t) for t in items]
    if query_bool(request, "include_totals"):
        return json_response(
            {"start": page * per_page, "limit": per_page, "total": total, "tenants": tenants}
        )
    return json_response(tenants)


async def get_tenant(request: web.Request) -> web.Response:
    svc = services(request)
    _operator(request)
    tenant = await svc.store.get_tenant(tenant_id_of(request))
    if tenant is None:
        raise NotFound("tenant not found")
    return json_response(render(tenant))


async def update_tenant(request: web.Request) -> web.Response:
    svc = services(request)
    _operator(request)
    body = require_object(await read_json(request, svc.settings.server.max_body_bytes))
    return json_response(render(await update(svc, tenant_id_of(request), body)))


async def delete_tenant(request: web.Request) -> web.Response:
    svc = services(request)
    _operator(request)
    tenant_id = tenant_id_of(request)
    await svc.store.delete_tenant(tenant_id)
    svc.registry.invalidate(tenant_id)
    await delete_tenant_endpoint(svc.store, svc.registry, tenant_id, svc.clock())  # its operational events'
    return no_content()


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v2/tenants", create_tenant),
        web.get("/api/v2/tenants", list_tenants, allow_head=False),
        web.get("/api/v2/tenants/{id}", get_tenant, allow_head=False),
        web.patch("/api/v2/tenants/{id}", update_tenant),
        web.delete("/api/v2/tenants/{id}", delete_tenant),
    ]
