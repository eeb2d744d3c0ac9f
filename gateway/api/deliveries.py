"""`/api/v2/deliveries`: what was sent, each attempt, retry and replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import ids, quotas
from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..context import Services, services
from ..delivery import ENGINE
from ..errors import BadRequest, NotFound
from ..middleware import tenant_of
from ..store.models import PARKED_AT, Attempt, Delivery
from ..web import (
    MAX_PAGE,
    finite,
    iso,
    json_response,
    parse_time,
    query_bool,
    query_int,
    query_time,
    read_json,
    require_object,
)
from . import validate

STATUSES = ("pending", "succeeded", "failed", "cancelled")
MAX_REPLAY = 10_000


def render(d: Delivery) -> dict[str, Any]:
    # A parked delivery (its hook is disabled) has no next attempt until the hook is enabled.
    parked = d.next_attempt_at is None or d.next_attempt_at >= PARKED_AT
    due = d.next_attempt_at if d.status == "pending" and not parked else None
    return {
        "id": d.id,
        "eventId": d.event_id,
        "hookId": d.hook_id,
        "triggerId": d.trigger_id,
        "kind": d.kind,
        "status": d.status,
        "attemptCount": d.attempt_count,
        "nextAttemptAt": iso(due),
        "lastError": d.last_error,
        "createdAt": iso(d.created_at),
        "updatedAt": iso(d.updated_at),
    }


def render_attempt(a: Attempt) -> dict[str, Any]:
    return {
        "number": a.number,
        "startedAt": iso(a.started_at),
        "durationMs": a.duration_ms,
        "statusCode": a.status_code,
        "error": a.error,
        "responseBody": a.response_body,
        "rateLimit": {
            "limit": a.rl_limit,
            "remaining": a.rl_remaining,
            "reset": None if (reset := finite(a.rl_reset)) is None else int(reset),
        },
        "retryAfter": finite(a.retry_after),
    }


async def list_deliveries(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    page = query_int(request, "page", default=0, minimum=0, maximum=MAX_PAGE)
    per_page = query_int(request, "per_page", default=50, minimum=1, maximum=100)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"'status' must be one of {', '.join(STATUSES)}")
    result = await svc.store.list_deliveries(
        tenant,
        hook_id=request.query.get("hookId") or None,
        status=status,
        since=query_time(request, "from"),
        until=query_time(request, "to"),
        offset=page * per_page,
        limit=per_page,
    )
    items = [render(d) for d in result.items]
    if query_bool(request, "include_totals"):
        return json_response(
            {"start": page * per_page, "limit": per_page, "total": result.total, "deliveries": items}
        )
    return json_response(items)


# -- the operations, shared by the Management API and the dashboard ---------------------------


async def find(svc: Services, tenant: str, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
    """The tenant's delivery with its attempts, or `NotFound`."""
    found = await svc.store.get_delivery(tenant, delivery_id)
    if found is None:
        raise NotFound("delivery not found")
    return found


async def retry(svc: Services, notify: Callable[[], None], tenant: str, delivery_id: str) -> Delivery:
    """Make the tenant's delivery due now; `notify` wakes the delivery workers."""
    delivery = await svc.store.retry_delivery(tenant, delivery_id, svc.clock())
    notify()
    return delivery


async def replay_range(
    svc: Services, notify: Callable[[], None], tenant: str, hook_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """New deliveries to the hook for its events in `[since, until)` whose last delivery has one of
    `status` (default failed), under the tenant's replay quota."""
    validate.no_unknown(body, {"since", "until", "status"})
    if "since" not in body:
        raise BadRequest("'since' is required", field="since")
    now = svc.clock()
    since = _time_field(body, "since")
    until = _time_field(body, "until") if "until" in body else now + 1
    if until <= since:
        raise BadRequest("'until' must be after 'since'", field="until")
    raw_status = body.get("status", ["failed"])
    statuses = [raw_status] if isinstance(raw_status, str) else raw_status
    if not isinstance(statuses, list) or not statuses or any(s not in STATUSES for s in statuses):
        raise BadRequest(f"'status' must be one or more of {', '.join(STATUSES)}", field="status")
    quota = await quotas.of_tenant(svc.store, svc.settings.quotas, tenant)
    created, skipped = await svc.store.replay(
        tenant,
        hook_id,
        since=since,
        until=until,
        statuses=statuses,
        new_id=lambda: ids.new_id(ids.DELIVERY, now=now),
        limit=MAX_REPLAY,
        now=now,
        per_hour=quota.replays_per_hour,
    )
    notify()
    return {"count": len(created), "deliveries": created, "skipped": skipped}


def _time_field(body: dict[str, Any], key: str) -> float:
    try:
        return parse_time(body[key], f"{key!r}")
    except BadRequest as exc:
        raise BadRequest(exc.message, field=key) from None


# -- the Management API's handlers ------------------------------------------------------------


async def get_delivery(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_READ)
    delivery, attempts = await find(svc, tenant, request.match_info["id"])
    body = render(delivery)
    body["attempts"] = [render_attempt(a) for a in attempts]
    return json_response(body)


async def retry_delivery(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    delivery = await retry(svc, request.app[ENGINE].notify, tenant, request.match_info["id"])
    return json_response(render(delivery), status=202)


async def replay(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = require_object(await read_json(request, svc.settings.server.max_body_bytes))
    answer = await replay_range(svc, request.app[ENGINE].notify, tenant, request.match_info["id"], body)
    return json_response(answer, status=202)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/v2/deliveries", list_deliveries, allow_head=False),
        web.get("/api/v2/deliveries/{id}", get_delivery, allow_head=False),
        web.post("/api/v2/deliveries/{id}/retry", retry_delivery),
        web.post("/api/v2/hooks/{id}/replay", replay),
    ]
