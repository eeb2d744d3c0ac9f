"""`/v1/tenants/{tenant}/triggers/{triggerId}`: the auth server forwards an event.

Blocking points are invoked now and answered with the Auth0 envelope (`invoke.py`); the
others are stored with one delivery per enabled hook and answered `202` once committed.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from . import ids, logs, points, tracing
from .auth import SCOPE_FORWARD
from .context import services
from .delivery import ENGINE
from .errors import BadRequest, Forbidden, NotFound, shown
from .invoke import INVOKER, envelope_response
from .middleware import principal
from .web import dumps, json_response, parse_json, read_body

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


async def forward(request: web.Request) -> web.Response:
    """In a span that continues the caller's `traceparent` when tracing is on (gateway/tracing.py)."""
    with tracing.ingest(request.headers):
        response = await _forward(request)
        tracing.answered(response.status)
        return response


async def _forward(request: web.Request) -> web.Response:
    svc = services(request)
    caller = principal(request, SCOPE_FORWARD)
    tenant_id = request.match_info["tenant"]
    trigger_id = request.match_info["triggerId"]
    if caller.tenant is not None and caller.tenant != tenant_id:
        raise Forbidden("this token forwards events for another tenant")
    if trigger_id not in points.TRIGGERS:
        raise NotFound(f"unknown extensibility point {shown(trigger_id)}")
    raw = await read_body(request, svc.settings.server.max_body_bytes)
    event = points.validate_event(trigger_id, parse_json(raw))
    view = await svc.registry.view(tenant_id)
    if view is None:
        raise NotFound(f"tenant {shown(tenant_id)} not found")
    tracing.annotate(tenant_id=tenant_id, trigger_id=trigger_id)
    logs.bind(tenant_id=tenant_id)
    if points.is_blocking(trigger_id):
        answer = await request.app[INVOKER].invoke(view, trigger_id, event, raw)
        return envelope_response(answer)

    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters")
    now = svc.clock()
    event_id = ids.new_id(ids.EVENT, now=now)
    logs.bind(event_id=event_id)
    hooks = view.enabled.get(trigger_id, [])
    deliveries = [(ids.new_id(ids.DELIVERY, now=now), live.hook.id) for live in hooks]
    answer = {"eventId": event_id, "deliveries": [{"hookId": h, "deliveryId": d} for d, h in deliveries]}
    text = dumps(answer)
    stored = await svc.store.ingest(
        tenant_id=tenant_id,
        trigger_id=trigger_id,
        event_id=event_id,
        body=raw,
        deliveries=deliveries,
        kind="async",
        now=now,
        idempotency_key=key,
        idempotency_ttl_s=svc.settings.delivery.idempotency_ttl,
        response=text,
        traceparent=tracing.traceparent(),  # the deliveries' attempts continue this trace
    )
    if stored is not None:
        return json_response(json.loads(stored), status=202, headers={"Idempotent-Replayed": "true"})
    tracing.ingested(event_id, deliveries)
    svc.metrics.ingested(trigger_id)
    if deliveries:
        request.app[ENGINE].notify()
    return json_response(answer, status=202)


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/tenants/{tenant}/triggers/{triggerId}", forward)]
