"""`/v1/tenants/{tenant}/triggers/{triggerId}`: the auth server forwards an event.

Blocking points are invoked now and answered with the Auth0 envelope (`invoke.py`); the
others are stored with one delivery per enabled hook and answered `202` once committed.
`Intake` is the door: a shutdown closes it (new forwards are answered `503`) and waits for the
forwards already inside.
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from . import ids, logs, points, tracing
from .auth import SCOPE_FORWARD
from .context import services
from .delivery import ENGINE
from .errors import BadRequest, Forbidden, NotFound, ServiceUnavailable, database_unavailable, shown
from .invoke import INVOKER, envelope_response
from .middleware import error_response, principal
from .web import dumps, json_response, json_text_response, parse_json, read_body

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
# What a caller refused by a shutting-down instance is told to wait: behind a load balancer the
# retry reaches another instance at once; a lone instance is back after its restart.
DRAINING_RETRY_AFTER_S = 1


class Intake:
    """Whether forwards are taken in, and how many are being handled now (a blocking call for
    as long as its hooks take)."""

    def __init__(self) -> None:
        self.open = True
        self._inside = 0
        self._empty = asyncio.Event()
        self._empty.set()

    def refusal(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "the gateway is shutting down; retry, another instance will take it",
            headers={"Retry-After": str(DRAINING_RETRY_AFTER_S)},
        )

    def __enter__(self) -> None:
        """`with intake:` counts a forward in while it is handled; refused (`503`) once the
        intake is closed. (A plain context manager: a generator-based one cost every forward
        a few microseconds.)"""
        if not self.open:
            raise self.refusal()
        self._inside += 1
        self._empty.clear()

    def __exit__(self, *_exc: object) -> None:
        self._inside -= 1
        if not self._inside:
            self._empty.set()

    def close(self) -> None:
        self.open = False

    async def wait_empty(self, timeout_s: float, cut_short: asyncio.Event) -> int:
        """Wait until no forward is being handled, for at most `timeout_s` or until `cut_short`
        is set; return how many are still being handled."""
        waiters = {asyncio.ensure_future(self._empty.wait()), asyncio.ensure_future(cut_short.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return self._inside


INTAKE: web.AppKey[Intake] = web.AppKey("intake", Intake)


async def forward(request: web.Request) -> web.Response:
    """In a span that continues the caller's `traceparent` when tracing is on (gateway/tracing.py)."""
    intake = request.app[INTAKE]
    if not intake.open:  # shutting down: the connection is closed too, so the retry goes elsewhere
        response = error_response(intake.refusal())
        response.force_close()
        return response
    with intake, tracing.ingest(request.headers):
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
    key = request.headers.get(IDEMPOTENCY_HEADER)  # checked on every point, used by the others
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be 1 to 255 visible ASCII characters")
    if points.is_blocking(trigger_id):
        answer = await request.app[INVOKER].invoke(view, trigger_id, event, raw)
        return envelope_response(answer)

    now = svc.clock()
    event_id = ids.new_id(ids.EVENT, now=now)
    logs.bind(event_id=event_id)
    hooks = view.enabled.get(trigger_id, [])
    deliveries = [(ids.new_id(ids.DELIVERY, now=now), live.hook.id) for live in hooks]
    answer = {"eventId": event_id, "deliveries": [{"hookId": h, "deliveryId": d} for d, h in deliveries]}
    text = dumps(answer)
    try:
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
    except Exception as exc:  # not stored: never a 202 that was not kept
        unavailable = database_unavailable(exc)  # disk full, locked, read-only, away: 503
        if unavailable is None:
            raise
        raise unavailable from None
    if stored is not None:
        return json_response(json.loads(stored), status=202, headers={"Idempotent-Replayed": "true"})
    tracing.ingested(event_id, deliveries)
    svc.metrics.ingested(trigger_id)
    if deliveries:
        request.app[ENGINE].notify()
    return json_text_response(text, status=202)  # `answer`, dumped above


def routes() -> list[web.RouteDef]:
    return [web.post("/v1/tenants/{tenant}/triggers/{triggerId}", forward)]
