"""Deliveries: a filtered list (hook, status, time), and each delivery's timeline of attempts
with its next attempt and the reason for its time (the retry schedule, the receiver's
Retry-After, a paused destination, a disabled hook); retry one. Through the Management API's
operations (gateway/api/deliveries.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from ..api import deliveries as api_deliveries
from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..delivery.throttle import destination
from ..errors import ApiError, BadRequest
from ..settings import Settings
from ..store.models import PARKED_AT, Attempt, Delivery, Hook
from ..web import MAX_PAGE, parse_time
from .pages import PREFIX, done, engine_of, page, svc_of, tenant_of

PER_PAGE = 50
STATUSES = api_deliveries.STATUSES


@dataclass(frozen=True, slots=True)
class NextAttempt:
    at: float | None
    why: str


def next_attempt(d: Delivery, attempts: list[Attempt], hook: Hook | None, paused_until: float | None,
                 settings: Settings) -> NextAttempt | None:
    """When the delivery's next attempt is due, and why then (None: it is finished)."""
    if d.status != "pending":
        return None
    due = d.next_attempt_at
    if hook is None:
        return NextAttempt(None, "the hook was deleted")
    if due is None or due >= PARKED_AT or not hook.enabled:
        return NextAttempt(None, "waits while the hook is disabled; it goes on when the hook is enabled")
    if paused_until is not None and paused_until >= due - 1:
        why = (f"the destination {destination(hook.url)} is paused by its receiver's rate-limit headers"
               " (X-RateLimit-Remaining / X-RateLimit-Reset)")
        return NextAttempt(paused_until, why)
    last = attempts[-1] if attempts else None
    if last is None:
        return NextAttempt(due, "first attempt")
    if last.retry_after is not None:
        return NextAttempt(due, f"the receiver asked to wait (Retry-After: {last.retry_after:g} s)")
    if last.status_code == 429:
        return NextAttempt(due, "the receiver answered 429: backing off")
    total = len(settings.delivery.retry_schedule) + 1
    return NextAttempt(due, f"retry schedule: attempt {d.attempt_count + 1} of {total}")


def _time(query: Any, key: str, errors: dict[str, str]) -> float | None:
    text = str(query.get(key, "")).strip()
    if not text:
        return None
    try:
        return parse_time(text, f"'{key}'")
    except BadRequest as exc:
        errors[key] = exc.message
        return None


async def list_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    svc = svc_of(request)
    q = request.query
    errors: dict[str, str] = {}
    hook_id = q.get("hook", "").strip() or None
    status = q.get("status", "").strip() or None
    if status is not None and status not in STATUSES:
        errors["status"] = f"status must be one of {', '.join(STATUSES)}"
        status = None
    since, until = _time(q, "from", errors), _time(q, "to", errors)
    number = q.get("page", "0")
    index = int(number) if number.isascii() and number.isdigit() and len(number) < 8 else 0
    index = min(index, MAX_PAGE)
    hooks = (await svc.store.list_hooks(tenant, limit=1000)).items
    result = await svc.store.list_deliveries(tenant, hook_id=hook_id, status=status, since=since, until=until,
                                             offset=index * PER_PAGE, limit=PER_PAGE)
    names = {h.id: h.name for h in hooks}
    filters = {k: q.get(k, "").strip() for k in ("hook", "status", "from", "to")}
    context = {
        "deliveries": result.items, "total": result.total, "page": index, "per_page": PER_PAGE,
        "hook_options": [(h.id, h.name) for h in sorted(hooks, key=lambda h: h.name)], "names": names,
        "statuses": STATUSES,
        "filters": filters, "errors": errors,
        "query": urlencode({k: v for k, v in filters.items() if v and k not in errors}),
    }
    return page(request, "deliveries.html", context, status=400 if errors else 200)


async def _delivery_page(request: web.Request, tenant: str, delivery_id: str, *, error: str | None = None,
                         status: int = 200) -> web.Response:
    svc = svc_of(request)
    delivery, attempts = await api_deliveries.find(svc, tenant, delivery_id)
    hook = await svc.store.get_hook(tenant, delivery.hook_id)
    paused = await svc.store.get_pause(tenant, destination(hook.url), svc.clock()) if hook else None
    context = {
        "delivery": delivery, "attempts": attempts, "hook": hook, "error": error,
        "next": next_attempt(delivery, attempts, hook, paused, svc.settings),
        "rendered": api_deliveries.render(delivery),
    }
    return page(request, "delivery.html", context, status=status)


async def delivery_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    return await _delivery_page(request, tenant, request.match_info["id"])


async def retry(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    delivery_id = request.match_info["id"]
    await api_deliveries.find(svc, tenant, delivery_id)  # another tenant's delivery: 404
    try:
        await api_deliveries.retry(svc, engine_of(request).notify, tenant, delivery_id)
    except ApiError as exc:
        return await _delivery_page(request, tenant, delivery_id, error=exc.message, status=exc.status)
    done(f"{PREFIX}/deliveries/{delivery_id}", "retried")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/deliveries", list_page, allow_head=False),
        web.get("/deliveries/{id}", delivery_page, allow_head=False),
        web.post("/deliveries/{id}/retry", retry),
    ]
