"""Building blocks of the document: schema helpers, parameters, headers and answers."""

from __future__ import annotations

from typing import Any

from ... import points
from ...web import MAX_PAGE
from .. import deliveries, hooks

Schema = dict[str, Any]

JSON = "application/json"
BEARER = "bearerAuth"
HOOK_NAME_PATTERN = "^[a-zA-Z0-9]([ \\-a-zA-Z0-9]*[a-zA-Z0-9])?$"
TENANT_ID_PATTERN = "^[a-z0-9][a-z0-9-]{0,62}$"
SECRET_NAME_PATTERN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"  # noqa: S105 - an RFC 9110 token, not a secret
BLOCKING = tuple(t for t in points.TRIGGER_IDS if points.is_blocking(t))
ASYNC = tuple(t for t in points.TRIGGER_IDS if not points.is_blocking(t))


def ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema(name: str) -> Schema:
    return ref("schemas", name)


def nullable(type_: str, **extra: Any) -> Schema:
    return {"type": [type_, "null"], **extra}


def obj(
    properties: dict[str, Schema], required: list[str] | None = None, *, extra: bool = False, **more: Any
) -> Schema:
    out: Schema = {"type": "object", "properties": properties, "additionalProperties": extra, **more}
    if required:
        out["required"] = required
    return out


def timestamp(description: str) -> Schema:
    return {"type": "string", "format": "date-time", "description": description}


# --- parameters, headers, responses ----------------------------------------------------------


def query(name: str, schema_: Schema, description: str) -> Schema:
    # The handlers read an empty value (`?page=`) as no value: allowEmptyValue says so.
    return {"name": name, "in": "query", "required": False, "allowEmptyValue": True, "schema": schema_,
            "description": f"{description} Empty: as if absent."}


def path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


PARAMETERS: dict[str, Schema] = {
    "page": query(
        "page", {"type": "integer", "minimum": 0, "maximum": MAX_PAGE, "default": 0}, "Page number, 0-based."
    ),
    "per_page": query(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": hooks.MAX_PER_PAGE, "default": 50},
        "Items per page.",
    ),
    "include_totals": query(
        "include_totals",
        {"type": "boolean", "default": False},
        "Answer `{start, limit, total, <items>}` instead of an array.",
    ),
    "fields": query("fields", {"type": "string"}, "Comma-separated hook fields to include (or exclude)."),
    "include_fields": query(
        "include_fields",
        {"type": "boolean", "default": True},
        "Whether `fields` lists the fields to include (`true`) or to exclude.",
    ),
    "enabled": query("enabled", {"type": "boolean"}, "Only enabled (or disabled) hooks."),
    "triggerId": query("triggerId", schema("TriggerId"), "Only hooks of this extensibility point."),
    "hookId": query("hookId", {"type": "string"}, "Only deliveries of this hook."),
    "status": query("status", {"type": "string", "enum": list(deliveries.STATUSES)}, "Only this status."),
    "from": query("from", schema("Time"), "Created at or after this time."),
    "to": query("to", schema("Time"), "Created before this time."),
    "id": path_param("id", "The object's id."),
    "tenant": path_param("tenant", "The tenant the event belongs to."),
}

RATE_HEADERS: dict[str, Schema] = {
    "X-RateLimit-Limit": {"description": "Requests the bucket holds.", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests left now.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {
        "description": "Unix seconds when the bucket is full again.",
        "schema": {"type": "integer"},
    },
}
HEADERS: dict[str, Schema] = {
    **RATE_HEADERS,
    "Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
    "ETag": {"description": "A hash of the document.", "schema": {"type": "string"}},
    "Last-Modified": {
        "description": "When the ranges last changed, when the operator declared it.",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer of an earlier request "
        "with the same Idempotency-Key.",
        "schema": {"const": "true"},
    },
}

ERRORS: dict[str, tuple[int, str]] = {
    "BadRequest": (400, "Malformed JSON, a wrong type, an unknown field or a bad value; `message` names it."),
    "Unauthorized": (401, "Missing or invalid token."),
    "Forbidden": (
        403,
        "Missing scope, a token of the wrong kind, a caller address that is not allowed, or a "
        "tenant's hook quota reached.",
    ),
    "NotFound": (404, "Unknown id, or an object of another tenant."),
    "Conflict": (409, "Duplicate name or id, or a state that does not allow the change."),
    "RequestTimeout": (408, "The request's body did not arrive whole within [server] body_timeout; the "
                       "connection is closed."),
    "PayloadTooLarge": (413, "Request body over [server] max_body_bytes."),
    "UnsupportedMediaType": (415, "Content-Type is not JSON."),
    "TooManyRequests": (
        429,
        "Over the rate limit (or the tenant's blocking in-flight cap, or its replays-per-hour quota).",
    ),
    "ServiceUnavailable": (503, "The database is not reachable or cannot be written now, or the gateway is "
                           "shutting down: try again after `Retry-After`."),
}


def error_response(name: str, *, rate_limited: bool) -> Schema:
    status, description = ERRORS[name]
    response: Schema = {"description": description, "content": {JSON: {"schema": schema("Error")}}}
    headers = {h: ref("headers", h) for h in RATE_HEADERS} if rate_limited else {}
    if status in (429, 503):
        headers["Retry-After"] = ref("headers", "Retry-After")
    if headers:
        response["headers"] = headers
    return response


def json_body(schema_: Schema, description: str = "", *, required: bool = True) -> Schema:
    body: Schema = {"required": required, "content": {JSON: {"schema": schema_}}}
    if description:
        body["description"] = description
    return body


def answer(description: str, schema_: Schema | None = None, **headers: str) -> Schema:
    out: Schema = {"description": description}
    if schema_ is not None:
        out["content"] = {JSON: {"schema": schema_}}
    if headers:
        out["headers"] = {h: ref("headers", h) for h in headers.values()}
    return out


def page_of(item: str, page: str) -> Schema:
    return {
        "oneOf": [{"type": "array", "items": schema(item)}, schema(page)],
        "description": f"An array, or `{page}` with include_totals=true.",
    }
