"""`POST /api/v2/hooks/{id}/test`: send a sample event to one hook now, as Auth0's dashboard
runner did, and answer with the attempt (status, duration, the receiver's parsed answer) and,
for a blocking point, the envelope the auth server would get from it.

Optional body: `{"event": {...}}` (validated like the point's forwarded bodies) instead of
the sample event. The test is not retried and not recorded as a delivery."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .. import ids, points
from ..auth import SCOPE_UPDATE
from ..context import Services, services
from ..delivery.attempt import deliver, render_body, request_headers
from ..egress import MAX_STORED_BODY_BYTES, MAX_SYNC_BODY_BYTES
from ..errors import BadRequest, NotFound
from ..middleware import tenant_of
from ..registry import LiveHook
from ..web import json_response, read_json
from . import validate

log = logging.getLogger("gateway.api.hook_test")


# Request headers the runner shows as sent; any other (a hook secret, Authorization) is masked.
SHOWN_REQUEST_HEADERS = frozenset({
    "content-type", "user-agent", "accept-encoding", "webhook-id", "webhook-timestamp", "webhook-signature",
})
MASK = "_VALUE_NOT_SHOWN_"


@dataclass(frozen=True, slots=True)
class TestRun:
    """One test send: the API's answer, and the headers each way for the dashboard's runner
    (the request's secret headers masked)."""

    __test__ = False  # a result, not a test case (pytest collects names starting with Test)

    answer: dict[str, Any]
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    response_headers: list[tuple[str, str]] = field(default_factory=list)


async def run(svc: Services, tenant: str, hook_id: str, body: Any) -> TestRun:
    """Send the point's sample event (or `body["event"]`) to the tenant's hook once."""
    view = await svc.registry.view(tenant)
    live = view.hooks.get(hook_id) if view else None
    if live is None:
        raise NotFound("hook not found")
    trigger = live.hook.trigger_id
    if body is not None:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        validate.no_unknown(body, {"event"})
    if body and "event" in body:
        try:
            event = points.validate_event(trigger, body["event"])
        except BadRequest as exc:
            raise BadRequest(exc.message, field="event") from None
    else:
        event = points.sample_event(trigger)
    now = svc.clock()
    try:
        return await _attempt(svc, live, hook_id, trigger, event, now)
    except Exception as exc:  # whatever the receiver did, the caller gets the attempt, not a 500
        log.exception("test of hook %s failed inside the gateway", hook_id)
        reason = f"internal error: {type(exc).__name__}"
        return TestRun({
            "hookId": hook_id,
            "triggerId": trigger,
            "request": event,
            "statusCode": None,
            "durationMs": 0.0,
            "error": reason,
            "responseBody": None,
            "answer": None,
            "result": _auth_server_result(trigger, event, live.hook.name, None, reason),
        })


async def test_hook(request: web.Request) -> web.Response:
    svc = services(request)
    tenant = tenant_of(request, SCOPE_UPDATE)
    body = await read_json(request, svc.settings.server.max_body_bytes, required=False)
    return json_response((await run(svc, tenant, request.match_info["id"], body)).answer)


async def _attempt(svc: Services, live: LiveHook, hook_id: str, trigger: str, event: dict[str, Any],
                   now: float) -> TestRun:
    """Send the event once and describe the attempt."""
    payload = render_body(live.hook.format, trigger, event, now)
    assert svc.transport is not None
    head = request_headers(live, ids.new_id("test", now=now), payload, now)
    result = await deliver(
        live,
        svc.transport,
        payload,
        head,
        timeout_s=live.hook.timeout_ms / 1000.0,
        body_cap=MAX_SYNC_BODY_BYTES,
        clock=svc.clock,
    )
    parsed, error = _read_answer(result.ok, result.status_code, result.content_type, result.body)
    answer = {
        "hookId": hook_id,
        "triggerId": trigger,
        "request": event,
        "statusCode": result.status_code,
        "durationMs": round(result.duration_ms, 3),
        "error": result.error or error,
        "responseBody": result.body[:MAX_STORED_BODY_BYTES].decode("utf-8", "replace") or None,
        "answer": None if parsed is None else _envelope(parsed),
        "result": _auth_server_result(trigger, event, live.hook.name, parsed, result.error or error),
    }
    return TestRun(answer, _shown_request_headers(head), sorted(result.headers.items()))


def _shown_request_headers(head: bytes) -> list[tuple[str, str]]:
    """The header lines sent, each value masked unless it is one of `SHOWN_REQUEST_HEADERS`."""
    out = []
    for line in head.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        out.append((name, value.strip() if name.lower() in SHOWN_REQUEST_HEADERS else MASK))
    return out


def _read_answer(ok: bool, status: int | None, content_type: str | None,
                 body: bytes) -> tuple[points.Answer | None, str | None]:
    """The receiver's answer, or why it is not an Auth0 answer."""
    if not ok:
        return None, None
    try:
        return points.parse_receiver_answer(status or 0, content_type, body), None
    except points.AnswerError as exc:
        return None, exc.message


def _envelope(answer: points.Answer) -> dict[str, Any]:
    """The answer as an Auth0 envelope, without what the receiver added (a stack, ...)."""
    if answer.ok:
        return points.success_envelope(answer.data)
    name = answer.error_name or "Error"
    return points.error_envelope(name, answer.error_message or "", answer.friendly_message)


def _auth_server_result(trigger: str, event: dict[str, Any], hook_name: str, answer: points.Answer | None,
                        error: str | None) -> dict[str, Any] | None:
    """For a blocking point: what the auth server would get if this hook were the only one
    (with `failurePolicy` fail), after the point's answer rules. None for the other points."""
    if not points.is_blocking(trigger):
        return None
    chain = points.Chain(trigger, event)
    if answer is None:
        chain.fail(hook_name, error or "failed")
        return chain.result()
    try:
        chain.apply(answer, hook_name=hook_name)
    except points.AnswerError as exc:
        chain.fail(hook_name, exc.message)
    return chain.result()


def routes() -> list[web.RouteDef]:
    return [web.post("/api/v2/hooks/{id}/test", test_hook)]
