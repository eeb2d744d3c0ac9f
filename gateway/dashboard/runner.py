"""The test runner, as Auth0's dashboard had it: edit a sample body of the hook's point, send
it to the hook once, and see the status, the duration, the headers each way and the parsed
answer. It is the Management API's `POST /api/v2/hooks/{id}/test` (gateway/api/hook_test.py)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .. import points
from ..api import hook_test
from ..api import hooks as api_hooks
from ..auth import SCOPE_READ, SCOPE_UPDATE
from ..errors import ApiError, BadRequest
from ..web import parse_json
from .pages import form_of, page, svc_of, tenant_of

MAX_EVENT_CHARS = 64 * 1024


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


async def runner_page(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_READ)
    hook = await api_hooks.find(svc_of(request), tenant, request.match_info["id"])
    return page(request, "runner.html", {"hook": hook, "event": _pretty(points.sample_event(hook.trigger_id)),
                                         "run": None, "errors": {}})


async def run(request: web.Request) -> web.StreamResponse:
    tenant = tenant_of(request, SCOPE_UPDATE)
    svc = svc_of(request)
    hook = await api_hooks.find(svc, tenant, request.match_info["id"])
    text = str(form_of(request).get("event", ""))
    try:
        if len(text) > MAX_EVENT_CHARS:
            raise BadRequest(f"the event must be at most {MAX_EVENT_CHARS} characters", field="event")
        try:
            event = parse_json(text.encode())
        except BadRequest as exc:
            raise BadRequest(exc.message, field="event") from None
        result = await hook_test.run(svc, tenant, hook.id, {"event": event})
    except ApiError as exc:
        return page(request, "runner.html", {"hook": hook, "event": text, "run": None,
                                             "errors": {"event": exc.message}}, status=exc.status)
    answer = result.answer
    context = {
        "hook": hook,
        "event": text,
        "errors": {},
        "run": result,
        "status": answer["statusCode"],
        "duration": answer["durationMs"],
        "error": answer["error"],
        "response_body": answer["responseBody"],
        "parsed": None if answer["answer"] is None else _pretty(answer["answer"]),
        "result": None if answer["result"] is None else _pretty(answer["result"]),
    }
    return page(request, "runner.html", context)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/hooks/{id}/test", runner_page, allow_head=False),
        web.post("/hooks/{id}/test", run),
    ]
