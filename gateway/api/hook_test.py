"""`POST /api/v2/hooks/{id}/test`: send a sample event to one hook now, as Auth0's dashboard
runner did, and answer with the attempt (status, duration, the receiver's parsed answer)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import ids, points
from ..auth import SCOPE_UPDATE
from ..context import services
from ..delivery.attempt import render_body, request_headers, send
from ..egress import MAX_STORED_BODY_BYTES, MAX_SYNC_BODY_BYTES
from ..errors import BadRequest, NotFound
from ..middleware import tenant_of
from ..web import json_response, read_json
from . import validate


async def test_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    hook_id = request.match_info["id"]
    body = await read_json(request, svc.settings.server.max_body_bytes, required=False)
    view = await svc.registry.view(tenant)
    live = view.hooks.get(hook_id) if view else None
    if live is None:
        raise NotFound("hook not found")
    trigger = live.hook.trigger_id
    if body is not None:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        validate.no_unknown(body, {"event"})
    event = points.validate_event(trigger, body["event"]) if body and "event" in body else points.sample_event(trigger)
    now = svc.clock()
    payload = render_body(live.hook.format, trigger, event, now)
    assert svc.session is not None
    result = await send(
        svc.session,
        live.hook.url,
        payload,
        request_headers(live, ids.new_id("test", now=now), payload, now),
        timeout_s=live.hook.timeout_ms / 1000.0,
        connect_timeout_s=svc.settings.egress.connect_timeout,
        body_cap=MAX_SYNC_BODY_BYTES,
        allow_http=svc.settings.egress.allow_http,
        allow_cidrs=svc.egress_allow,
        clock=svc.clock,
    )
    answer: dict[str, Any] | None = None
    error = result.error
    if result.ok:
        try:
            parsed = points.parse_receiver_answer(result.status_code or 0, result.content_type, result.body)
        except points.AnswerError as exc:
            error = exc.message
        else:
            answer = ({"status": "success", "data": parsed.data} if parsed.ok else
                      points.error_envelope(parsed.error_name or "Error", parsed.error_message or "",
                                            parsed.friendly_message))
    return json_response({
        "hookId": hook_id,
        "triggerId": trigger,
        "request": event,
        "statusCode": result.status_code,
        "durationMs": round(result.duration_ms, 3),
        "error": error,
        "responseBody": result.body[:MAX_STORED_BODY_BYTES].decode("utf-8", "replace") if result.body else None,
        "answer": answer,
    })


def routes() -> list[web.RouteDef]:
    return [web.post("/api/v2/hooks/{id}/test", test_hook)]
