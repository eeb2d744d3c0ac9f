"""`GET /api/v2/openapi.json`: the OpenAPI 3.1 document of every route of the gateway.

Built as Python data from the same constants the handlers use (scopes, limits, patterns,
trigger ids), so a changed limit changes the document too. `tests/test_openapi.py` fails when a
route of the app is missing here or a documented path is not served, and validates the
document against the OpenAPI 3.1 schema.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__, points
from ..auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE
from ..ingest import IDEMPOTENCY_HEADER
from ..store.models import MAX_SECRETS_PER_HOOK
from ..web import json_response
from . import deliveries, hooks, secrets, signing_secrets, tenants

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


# --- schemas ------------------------------------------------------------------------------


def _hook_fields() -> dict[str, Schema]:
    """The writable fields of a hook, with the limits `api/hooks.py` enforces."""
    return {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": hooks.NAME_MAX,
            "pattern": HOOK_NAME_PATTERN,
            "description": "Unique per tenant.",
        },
        "url": {
            "type": "string",
            "format": "uri",
            "minLength": 1,
            "maxLength": hooks.URL_MAX,
            "description": "The receiver: `https` (plain `http` only where the operator allows it), no "
            "user-info. A literal refused address (loopback, private, link-local, ...) "
            "is `400`; hostnames are checked at delivery time.",
        },
        "enabled": {"type": "boolean", "default": False},
        "order": {
            "type": "integer",
            "minimum": -1_000_000,
            "maximum": 1_000_000,
            "default": 0,
            "description": "Hooks of one blocking point run in ascending order.",
        },
        "timeoutMs": {
            "type": "integer",
            "minimum": hooks.TIMEOUT_MS_MIN,
            "maximum": hooks.TIMEOUT_MS_MAX,
            "description": "Per-attempt timeout (default: [sync] default_timeout for blocking "
            "points, [delivery] timeout for the others).",
        },
        "failurePolicy": {
            "type": "string",
            "enum": list(hooks.FAILURE_POLICIES),
            "default": "fail",
            "description": "Blocking points only: `fail` answers a ServerError, `skip` goes on "
            "as if the hook were absent.",
        },
        "maxConcurrency": {
            "type": "integer",
            "minimum": 1,
            "maximum": hooks.MAX_CONCURRENCY_MAX,
            "description": "Concurrent requests to this hook (default [delivery] default_max_concurrency).",
        },
        "rateLimitPerSecond": nullable(
            "number",
            minimum=0.01,
            maximum=hooks.RATE_MAX,
            default=None,
            description="Optional cap on requests per second.",
        ),
        "format": {
            "type": "string",
            "enum": list(hooks.FORMATS),
            "default": "auth0",
            "description": "`auth0`: the point's body unchanged; `standard`: Standard Webhooks' "
            "`{type, timestamp, data}` envelope.",
        },
    }


def _hook_schemas() -> dict[str, Schema]:
    fields = _hook_fields()
    trigger = {"type": "string", "enum": list(points.TRIGGER_IDS)}
    hook = obj(
        {
            "id": {"type": "string", "examples": ["hk_01m8rdsa9fcprd95nqrsay34n5"]},
            "triggerId": trigger,
            **fields,
            "disabledReason": nullable(
                "string",
                description="Why the gateway disabled the hook (e.g. the "
                "receiver answered 410 Gone); cleared on enable.",
            ),
            "createdAt": timestamp("When the hook was created."),
            "updatedAt": timestamp("When the hook last changed."),
        },
        sorted(hooks.HOOK_FIELDS),
        description="With `fields`, only the chosen fields (or all but them).",
    )
    create = obj({"triggerId": trigger, **fields}, ["name", "triggerId", "url"])
    update = obj(
        {
            **fields,
            "triggerId": {**trigger, "description": "Accepted only when unchanged (`400` otherwise)."},
            "id": {"type": "string", "description": "Accepted only when unchanged (`400` otherwise)."},
        },
        minProperties=0,
    )
    return {
        "TriggerId": trigger,
        "Hook": hook,
        "HookCreate": create,
        "HookUpdate": update,
        "HookPage": obj(
            {
                "start": {"type": "integer"},
                "limit": {"type": "integer"},
                "total": {"type": "integer"},
                "hooks": {"type": "array", "items": schema("Hook")},
            },
            ["start", "limit", "total", "hooks"],
        ),
    }


def _secret_schemas() -> dict[str, Schema]:
    name = {"type": "string", "maxLength": secrets.NAME_MAX, "pattern": SECRET_NAME_PATTERN}
    return {
        "SecretValues": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_SECRETS_PER_HOOK,
            "propertyNames": name,
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": secrets.VALUE_MAX},
            "description": "Secret names (HTTP header tokens; reserved headers such as Host, "
            "Content-Type, webhook-* are refused) to values. `auth0-extension-secret` is "
            "sent as `Authorization: Bearer <value>`, any other as a header of its name.",
            "examples": [{"auth0-extension-secret": "s3cr3t", "X-Api-Key": "abc123"}],
        },
        "SecretNames": {
            "type": "object",
            "propertyNames": name,
            "additionalProperties": {"const": secrets.MASK},
            "description": "Values are never shown.",
            "examples": [{"auth0-extension-secret": secrets.MASK}],
        },
        "SecretNameList": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "SigningSecret": obj(
            {
                "secret": {
                    "type": "string",
                    "pattern": "^whsec_",
                    "description": "The Standard Webhooks key that signs every request.",
                },
                "createdAt": timestamp("When this secret was made."),
                "previous": {
                    "type": "array",
                    "description": "Older secrets still signing during their grace period.",
                    "items": obj(
                        {
                            "createdAt": timestamp("When it was made."),
                            "expiresAt": timestamp("When it stops signing."),
                        },
                        ["createdAt", "expiresAt"],
                    ),
                },
            },
            ["secret", "createdAt", "previous"],
        ),
        "SigningSecretRotate": obj(
            {
                "gracePeriodSeconds": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": signing_secrets.MAX_GRACE_S,
                    "description": "How long the old secret keeps signing (default [delivery] "
                    "signing_grace, 24 h).",
                }
            },
        ),
    }


def _tenant_schemas() -> dict[str, Schema]:
    writable: dict[str, Schema] = {
        "name": {"type": "string", "minLength": 1, "maxLength": 256},
        "allowedCidrs": {
            "type": "array",
            "items": {"type": "string", "examples": ["203.0.113.0/24"]},
            "description": "When not empty, the tenant's Management API answers only callers "
            "from these networks (`403` otherwise).",
        },
        "deadlines": {
            "type": "object",
            "propertyNames": {"enum": list(BLOCKING)},
            "additionalProperties": {"type": "integer", "minimum": 100, "maximum": tenants.MAX_DEADLINE_MS},
            "description": "Per blocking point, the invocation deadline in milliseconds.",
        },
        "maxInFlight": nullable(
            "integer",
            minimum=1,
            maximum=100_000,
            description="Blocking invocations in flight at once (default [sync] max_in_flight).",
        ),
    }
    tenant_id = {"type": "string", "pattern": TENANT_ID_PATTERN}
    return {
        "Tenant": obj(
            {
                "id": tenant_id,
                **writable,
                "createdAt": timestamp("When it was created."),
                "updatedAt": timestamp("When it last changed."),
            },
            ["id", "name", "allowedCidrs", "deadlines", "maxInFlight", "createdAt", "updatedAt"],
        ),
        "TenantCreate": obj({"id": tenant_id, **writable}, ["id"]),
        "TenantUpdate": obj(
            {"id": {**tenant_id, "description": "Accepted only when unchanged."}, **writable}
        ),
        "TenantPage": obj(
            {
                "start": {"type": "integer"},
                "limit": {"type": "integer"},
                "total": {"type": "integer"},
                "tenants": {"type": "array", "items": schema("Tenant")},
            },
            ["start", "limit", "total", "tenants"],
        ),
    }


def _delivery_schemas() -> dict[str, Schema]:
    delivery_props: dict[str, Schema] = {
        "id": {"type": "string"},
        "eventId": {"type": "string"},
        "hookId": {"type": "string"},
        "triggerId": schema("TriggerId"),
        "kind": {
            "type": "string",
            "enum": ["async", "sync"],
            "description": "`sync`: a record of a blocking invocation.",
        },
        "status": {"type": "string", "enum": list(deliveries.STATUSES)},
        "attemptCount": {"type": "integer", "minimum": 0},
        "nextAttemptAt": nullable(
            "string",
            format="date-time",
            description="When the next attempt is due (pending deliveries only).",
        ),
        "lastError": nullable("string"),
        "createdAt": timestamp("When the event was stored."),
        "updatedAt": timestamp("When the delivery last changed."),
    }
    attempt = obj(
        {
            "number": {"type": "integer", "minimum": 1},
            "startedAt": timestamp("When the request was sent."),
            "durationMs": {"type": "number"},
            "statusCode": nullable(
                "integer", description="None when no answer came (refused, timeout, connection error)."
            ),
            "error": nullable(
                "string",
                description="Why the attempt failed, e.g. `destination refused: "
                "127.0.0.1 (127.0.0.0/8)`, or the error of a `200` "
                "error envelope.",
            ),
            "responseBody": nullable(
                "string", maxLength=4096, description="The first 4 KiB of the answer, as text."
            ),
            "rateLimit": obj(
                {
                    "limit": nullable("integer"),
                    "remaining": nullable("integer"),
                    "reset": nullable("integer", description="Unix seconds."),
                },
                ["limit", "remaining", "reset"],
                description="The receiver's X-RateLimit-* headers.",
            ),
            "retryAfter": nullable("number", description="The receiver's Retry-After, as unix seconds."),
        },
        [
            "number",
            "startedAt",
            "durationMs",
            "statusCode",
            "error",
            "responseBody",
            "rateLimit",
            "retryAfter",
        ],
    )
    return {
        "Delivery": obj(delivery_props, list(delivery_props)),
        "DeliveryWithAttempts": obj(
            {**delivery_props, "attempts": {"type": "array", "items": schema("Attempt")}},
            [*delivery_props, "attempts"],
        ),
        "Attempt": attempt,
        "DeliveryPage": obj(
            {
                "start": {"type": "integer"},
                "limit": {"type": "integer"},
                "total": {"type": "integer"},
                "deliveries": {"type": "array", "items": schema("Delivery")},
            },
            ["start", "limit", "total", "deliveries"],
        ),
        "Replay": obj(
            {
                "since": schema("Time"),
                "until": {**schema("Time"), "description": "Default: now."},
                "status": {
                    "oneOf": [
                        {"type": "string", "enum": list(deliveries.STATUSES)},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "enum": list(deliveries.STATUSES)},
                        },
                    ],
                    "default": ["failed"],
                },
            },
            ["since"],
        ),
        "ReplayResult": obj(
            {
                "count": {"type": "integer"},
                "deliveries": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The ids of the new deliveries.",
                },
            },
            ["count", "deliveries"],
        ),
        "Time": {
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "description": "ISO 8601 (`2026-12-01T10:00:00Z`) or unix seconds.",
        },
    }


def _event_schemas() -> dict[str, Schema]:
    """What the auth server sends; only the fields the gateway requires are listed as required."""
    any_obj: Schema = {"type": "object"}
    return {
        "CredentialsExchangeEvent": obj(
            {
                "audience": {"type": "string"},
                "client": obj(
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "tenant": {"type": "string"},
                        "metadata": any_obj,
                    },
                    ["id"],
                    extra=True,
                ),
                "scope": {"type": "array", "items": {"type": "string"}},
                "context": any_obj,
            },
            ["audience", "client", "scope"],
            extra=True,
            examples=[points.sample_event(points.CREDENTIALS_EXCHANGE)],
        ),
        "PreUserRegistrationEvent": obj(
            {
                "user": obj(
                    {
                        "tenant": {"type": "string"},
                        "username": nullable("string"),
                        "email": nullable("string"),
                        "emailVerified": {"type": "boolean"},
                        "phoneNumber": nullable("string"),
                        "phoneNumberVerified": {"type": "boolean"},
                        "user_metadata": any_obj,
                        "app_metadata": any_obj,
                    },
                    extra=True,
                    description="One of `email`, `username`, `phoneNumber` is required.",
                ),
                "context": any_obj,
            },
            ["user", "context"],
            extra=True,
            examples=[points.sample_event(points.PRE_USER_REGISTRATION)],
        ),
        "SendPhoneMessageEvent": obj(
            {
                "recipient": {"type": "string"},
                "text": {"type": "string"},
                "context": obj(
                    {
                        "message_type": {"enum": ["sms", "voice"]},
                        "action": {"enum": ["enrollment", "second-factor-authentication"]},
                    },
                    ["message_type", "action"],
                    extra=True,
                ),
            },
            ["recipient", "text", "context"],
            extra=True,
            examples=[points.sample_event(points.SEND_PHONE_MESSAGE)],
        ),
        "PostUserRegistrationEvent": obj(
            {"user": obj({"id": {"type": "string"}}, ["id"], extra=True), "context": any_obj},
            ["user"],
            extra=True,
            examples=[points.sample_event(points.POST_USER_REGISTRATION)],
        ),
        "PostChangePasswordEvent": obj(
            {"user": obj({"id": {"type": "string"}}, ["id"], extra=True), "context": any_obj},
            ["user"],
            extra=True,
            examples=[points.sample_event(points.POST_CHANGE_PASSWORD)],
        ),
    }


def _envelope_schemas() -> dict[str, Schema]:
    error_data = obj(
        {"name": {"type": "string"}, "message": {"type": "string"}, "friendlyMessage": {"type": "string"}},
        ["name", "message"],
    )
    return {
        "SuccessEnvelope": obj(
            {"status": {"const": "success"}, "data": {"type": "object"}}, ["status", "data"]
        ),
        "ErrorEnvelope": obj(
            {"status": {"const": "error"}, "data": error_data},
            ["status", "data"],
            description="`ServerError` names the failed hook; `InvalidScopeError`, "
            "`InvalidRequestError`, `PreUserRegistrationError` and "
            "`SendPhoneMessageError` pass through from the receiver.",
        ),
        "CredentialsExchangeAnswer": obj(
            {
                "status": {"const": "success"},
                "data": obj(
                    {"scope": {"type": "array", "items": {"type": "string"}}},
                    ["scope"],
                    extra=True,
                    description="Plus namespaced custom claims (http(s) URL names).",
                ),
            },
            ["status", "data"],
        ),
        "PreUserRegistrationAnswer": obj(
            {
                "status": {"const": "success"},
                "data": obj(
                    {
                        "user": obj(
                            {"user_metadata": {"type": "object"}, "app_metadata": {"type": "object"}},
                            ["user_metadata", "app_metadata"],
                        )
                    },
                    ["user"],
                ),
            },
            ["status", "data"],
        ),
        "Accepted": obj(
            {
                "eventId": {"type": "string"},
                "deliveries": {
                    "type": "array",
                    "items": obj(
                        {"hookId": {"type": "string"}, "deliveryId": {"type": "string"}},
                        ["hookId", "deliveryId"],
                    ),
                },
            },
            ["eventId", "deliveries"],
        ),
        "TestResult": obj(
            {
                "hookId": {"type": "string"},
                "triggerId": schema("TriggerId"),
                "request": {"type": "object", "description": "The event that was sent."},
                "statusCode": nullable("integer"),
                "durationMs": {"type": "number"},
                "error": nullable("string"),
                "responseBody": nullable("string", maxLength=4096),
                "answer": {
                    "oneOf": [schema("SuccessEnvelope"), schema("ErrorEnvelope"), {"type": "null"}],
                    "description": "The receiver's answer as the gateway read it.",
                },
            },
            ["hookId", "triggerId", "request", "statusCode", "durationMs", "error", "responseBody", "answer"],
        ),
        "TestRequest": obj(
            {"event": {"type": "object", "description": "Default: a sample event of the point."}}
        ),
    }


def _other_schemas() -> dict[str, Schema]:
    return {
        "Error": obj(
            {"statusCode": {"type": "integer"}, "error": {"type": "string"}, "message": {"type": "string"}},
            ["statusCode", "error", "message"],
            examples=[{"statusCode": 404, "error": "Not Found", "message": "hook not found"}],
        ),
        "IpRanges": obj(
            {
                "last_updated_at": {"type": "string"},
                "regions": {
                    "type": "object",
                    "additionalProperties": obj(
                        {
                            "ipv4_cidrs": {"type": "array", "items": {"type": "string"}},
                            "ipv6_cidrs": {"type": "array", "items": {"type": "string"}},
                        },
                        ["ipv4_cidrs", "ipv6_cidrs"],
                    ),
                },
                "changelog": {
                    "type": "array",
                    "items": obj(
                        {
                            "date": {"type": "string"},
                            "change": {"type": "string"},
                            "regions": {"type": "array", "items": {"type": "string"}},
                        },
                        extra=True,
                    ),
                },
            },
            ["last_updated_at", "regions", "changelog"],
            examples=[
                {
                    "last_updated_at": "2026-12-01T00:00:00Z",
                    "regions": {"us": {"ipv4_cidrs": ["203.0.113.10/32"], "ipv6_cidrs": []}},
                    "changelog": [
                        {"date": "2026-12-01T00:00:00Z", "change": "current egress ranges", "regions": ["us"]}
                    ],
                }
            ],
        ),
        "Status": obj({"status": {"type": "string"}}, ["status"]),
    }


# --- parameters, headers, responses ----------------------------------------------------------


def query(name: str, schema_: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema_, "description": description}


def path_param(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


PARAMETERS: dict[str, Schema] = {
    "page": query("page", {"type": "integer", "minimum": 0, "default": 0}, "Page number, 0-based."),
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
    "Forbidden": (403, "Missing scope, a token of the wrong kind, or a caller address that is not allowed."),
    "NotFound": (404, "Unknown id, or an object of another tenant."),
    "Conflict": (409, "Duplicate name or id, or a state that does not allow the change."),
    "PayloadTooLarge": (413, "Request body over [server] max_body_bytes."),
    "UnsupportedMediaType": (415, "Content-Type is not JSON."),
    "TooManyRequests": (429, "Over the rate limit (or the tenant's blocking in-flight cap)."),
    "ServiceUnavailable": (503, "Not ready: the database is not reachable."),
}


def error_response(name: str, *, rate_limited: bool) -> Schema:
    status, description = ERRORS[name]
    response: Schema = {"description": description, "content": {JSON: {"schema": schema("Error")}}}
    headers = {h: ref("headers", h) for h in RATE_HEADERS} if rate_limited else {}
    if status == 429:
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


# --- operations -----------------------------------------------------------------------------


class Op:
    """One documented operation; `scope=None` is an operation without authentication."""

    def __init__(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        *,
        tag: str,
        scope: str | None,
        responses: dict[str, Schema],
        errors: tuple[str, ...] = (),
        params: tuple[str, ...] = (),
        body: Schema | None = None,
        description: str = "",
        rate_limited: bool = True,
        extra_params: tuple[Schema, ...] = (),
    ) -> None:
        self.method, self.path = method, path
        self.operation_id, self.summary, self.tag = operation_id, summary, tag
        self.scope, self.responses, self.errors = scope, responses, errors
        self.params, self.body, self.description = params, body, description
        self.rate_limited, self.extra_params = rate_limited, extra_params

    def all_errors(self) -> tuple[str, ...]:
        errors = self.errors
        if self.scope is not None:
            errors = ("BadRequest", "Unauthorized", "Forbidden", *errors, "TooManyRequests")
        return tuple(dict.fromkeys(errors))

    def render(self) -> Schema:
        params = [ref("parameters", p) for p in self.params] + list(self.extra_params)
        responses: dict[str, Schema] = {}
        for code, response in self.responses.items():
            if self.rate_limited:
                headers = {**response.get("headers", {}), **{h: ref("headers", h) for h in RATE_HEADERS}}
                response = {**response, "headers": headers}
            responses[code] = response
        for name in self.all_errors():
            # Answers of /api/v2 and /v1/tenants use the shared responses, which carry X-RateLimit-*.
            responses[str(ERRORS[name][0])] = (
                ref("responses", name) if self.rate_limited else error_response(name, rate_limited=False)
            )
        op: Schema = {
            "operationId": self.operation_id,
            "summary": self.summary,
            "tags": [self.tag],
            "security": [{BEARER: [self.scope]}] if self.scope is not None else [],
            "responses": responses,
        }
        description = self.description
        if self.scope is not None:
            description = f"{description}\n\nScope: `{self.scope}`.".strip()
        if description:
            op["description"] = description
        if params:
            op["parameters"] = params
        if self.body is not None:
            op["requestBody"] = self.body
        return op


def _hook_ops() -> list[Op]:
    tag = "hooks"
    return [
        Op(
            "get",
            "/api/v2/hooks",
            "listHooks",
            "List the tenant's hooks",
            tag=tag,
            scope=SCOPE_READ,
            params=("page", "per_page", "include_totals", "enabled", "triggerId", "fields", "include_fields"),
            responses={"200": answer("The hooks.", page_of("Hook", "HookPage"))},
        ),
        Op(
            "post",
            "/api/v2/hooks",
            "createHook",
            "Create a hook",
            tag=tag,
            scope=SCOPE_CREATE,
            body=json_body(schema("HookCreate")),
            errors=("Conflict", "PayloadTooLarge", "UnsupportedMediaType"),
            description="`409` when the tenant already has a hook of that name, or when enabling a second "
            "`send-phone-message` hook.",
            responses={"201": answer("The new hook.", schema("Hook"))},
        ),
        Op(
            "get",
            "/api/v2/hooks/{id}",
            "getHook",
            "Get a hook",
            tag=tag,
            scope=SCOPE_READ,
            params=("id", "fields", "include_fields"),
            errors=("NotFound",),
            responses={"200": answer("The hook (or its `fields`).", schema("Hook"))},
        ),
        Op(
            "patch",
            "/api/v2/hooks/{id}",
            "updateHook",
            "Update a hook",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("HookUpdate")),
            errors=("NotFound", "Conflict", "PayloadTooLarge", "UnsupportedMediaType"),
            description="`triggerId` cannot change (`400`).",
            responses={"200": answer("The updated hook.", schema("Hook"))},
        ),
        Op(
            "delete",
            "/api/v2/hooks/{id}",
            "deleteHook",
            "Delete a hook",
            tag=tag,
            scope=SCOPE_DELETE,
            params=("id",),
            errors=("NotFound",),
            description="Pending deliveries of the hook are cancelled.",
            responses={"204": answer("Deleted.")},
        ),
        Op(
            "post",
            "/api/v2/hooks/{id}/test",
            "testHook",
            "Send a test event now",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("TestRequest"), required=False),
            errors=("NotFound", "PayloadTooLarge", "UnsupportedMediaType"),
            description="Sends the given event (or a sample of the hook's point) to the hook at once and "
            "answers with the attempt, as Auth0's dashboard runner did. A failed attempt is a "
            "`200` whose `error` says why.",
            responses={"200": answer("The attempt.", schema("TestResult"))},
        ),
    ]


def _secret_ops() -> list[Op]:
    tag, masked = "secrets", schema("SecretNames")
    writes = ("NotFound", "PayloadTooLarge", "UnsupportedMediaType")
    return [
        Op(
            "get",
            "/api/v2/hooks/{id}/secrets",
            "listSecrets",
            "List a hook's secret names",
            tag=tag,
            scope=SCOPE_READ,
            params=("id",),
            errors=("NotFound",),
            responses={"200": answer("Names, values masked.", masked)},
        ),
        Op(
            "post",
            "/api/v2/hooks/{id}/secrets",
            "addSecrets",
            "Add secrets",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("SecretValues")),
            errors=(*writes, "Conflict"),
            description=f"`409` when a name exists; at most {MAX_SECRETS_PER_HOOK} per hook.",
            responses={"201": answer("The added names, values masked.", masked)},
        ),
        Op(
            "patch",
            "/api/v2/hooks/{id}/secrets",
            "updateSecrets",
            "Change secret values",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("SecretValues")),
            errors=writes,
            description="`404` when a name does not exist.",
            responses={"200": answer("The updated names, values masked.", masked)},
        ),
        Op(
            "delete",
            "/api/v2/hooks/{id}/secrets",
            "deleteSecrets",
            "Delete secrets",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("SecretNameList"), "Names to delete."),
            errors=writes,
            responses={"204": answer("Deleted.")},
        ),
        Op(
            "get",
            "/api/v2/hooks/{id}/signing-secret",
            "getSigningSecret",
            "Get the signing secret",
            tag=tag,
            scope=SCOPE_READ,
            params=("id",),
            errors=("NotFound",),
            responses={
                "200": answer(
                    "The current `whsec_` secret and those still in their grace period.",
                    schema("SigningSecret"),
                )
            },
        ),
        Op(
            "post",
            "/api/v2/hooks/{id}/signing-secret/rotate",
            "rotateSigningSecret",
            "Rotate the signing secret",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("SigningSecretRotate"), required=False),
            errors=writes,
            description="The old secret keeps signing beside the new one for the grace period.",
            responses={"200": answer("The new secret.", schema("SigningSecret"))},
        ),
    ]


def _delivery_ops() -> list[Op]:
    tag = "deliveries"
    return [
        Op(
            "get",
            "/api/v2/deliveries",
            "listDeliveries",
            "List deliveries",
            tag=tag,
            scope=SCOPE_READ,
            params=("page", "per_page", "include_totals", "hookId", "status", "from", "to"),
            responses={"200": answer("Deliveries, newest first.", page_of("Delivery", "DeliveryPage"))},
        ),
        Op(
            "get",
            "/api/v2/deliveries/{id}",
            "getDelivery",
            "Get a delivery with its attempts",
            tag=tag,
            scope=SCOPE_READ,
            params=("id",),
            errors=("NotFound",),
            responses={"200": answer("The delivery.", schema("DeliveryWithAttempts"))},
        ),
        Op(
            "post",
            "/api/v2/deliveries/{id}/retry",
            "retryDelivery",
            "Deliver again now",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            errors=("NotFound", "Conflict"),
            description="Only deliveries of non-blocking points (`400` otherwise); `409` when the hook was "
            "deleted.",
            responses={"202": answer("The delivery, due now.", schema("Delivery"))},
        ),
        Op(
            "post",
            "/api/v2/hooks/{id}/replay",
            "replayHook",
            "Deliver past events again",
            tag=tag,
            scope=SCOPE_UPDATE,
            params=("id",),
            body=json_body(schema("Replay")),
            errors=("NotFound", "PayloadTooLarge", "UnsupportedMediaType"),
            description="A new delivery for each event sent to the hook between `since` and `until` whose "
            "delivery has one of `status`.",
            responses={"202": answer("The new deliveries.", schema("ReplayResult"))},
        ),
    ]


def _tenant_ops() -> list[Op]:
    tag = "tenants"
    note = "Needs an operator token (no `tenant` claim)."
    return [
        Op(
            "post",
            "/api/v2/tenants",
            "createTenant",
            "Create a tenant",
            tag=tag,
            scope=SCOPE_ADMIN,
            body=json_body(schema("TenantCreate")),
            errors=("Conflict", "PayloadTooLarge", "UnsupportedMediaType"),
            description=f"{note} `409` on a duplicate id.",
            responses={"201": answer("The tenant.", schema("Tenant"))},
        ),
        Op(
            "get",
            "/api/v2/tenants",
            "listTenants",
            "List tenants",
            tag=tag,
            scope=SCOPE_ADMIN,
            params=("page", "per_page", "include_totals"),
            description=note,
            responses={"200": answer("The tenants.", page_of("Tenant", "TenantPage"))},
        ),
        Op(
            "get",
            "/api/v2/tenants/{id}",
            "getTenant",
            "Get a tenant",
            tag=tag,
            scope=SCOPE_ADMIN,
            params=("id",),
            errors=("NotFound",),
            description=note,
            responses={"200": answer("The tenant.", schema("Tenant"))},
        ),
        Op(
            "patch",
            "/api/v2/tenants/{id}",
            "updateTenant",
            "Update a tenant",
            tag=tag,
            scope=SCOPE_ADMIN,
            params=("id",),
            body=json_body(schema("TenantUpdate")),
            errors=("NotFound", "PayloadTooLarge", "UnsupportedMediaType"),
            description=note,
            responses={"200": answer("The tenant.", schema("Tenant"))},
        ),
        Op(
            "delete",
            "/api/v2/tenants/{id}",
            "deleteTenant",
            "Delete a tenant and all its objects",
            tag=tag,
            scope=SCOPE_ADMIN,
            params=("id",),
            errors=("NotFound",),
            description=note,
            responses={"204": answer("Deleted.")},
        ),
    ]


def _ingest_ops() -> list[Op]:
    # anyOf, not oneOf: the bodies of the points overlap (both post-* points need only user.id).
    events = {
        "anyOf": [
            schema(n)
            for n in (
                "CredentialsExchangeEvent",
                "PreUserRegistrationEvent",
                "SendPhoneMessageEvent",
                "PostUserRegistrationEvent",
                "PostChangePasswordEvent",
            )
        ],
        "description": "The body of the point named by `triggerId`, passed on unchanged.",
    }
    trigger = {"name": "triggerId", "in": "path", "required": True, "schema": schema("TriggerId")}
    idempotency = {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
        "description": "Non-blocking points: a repeat with the same key (same tenant) answers the "
        "first answer instead of storing a second event.",
    }
    blocking = {
        "oneOf": [
            schema("CredentialsExchangeAnswer"),
            schema("PreUserRegistrationAnswer"),
            schema("SuccessEnvelope"),
            schema("ErrorEnvelope"),
        ]
    }
    return [
        Op(
            "post",
            "/v1/tenants/{tenant}/triggers/{triggerId}",
            "forwardEvent",
            "Forward an event",
            tag="ingest",
            scope=SCOPE_FORWARD,
            params=("tenant",),
            extra_params=(trigger, idempotency),
            body=json_body(events),
            errors=("NotFound", "PayloadTooLarge"),
            description=(
                f"Blocking points ({', '.join(BLOCKING)}) are invoked now and answered `200` with the "
                f"Auth0 envelope. The others ({', '.join(ASYNC)}) are stored durably with one delivery "
                "per enabled hook and answered `202`. Callers must be in [ingest] allowed_cidrs "
                "(`403`, before authentication). `404` for an unknown tenant or point; `429` also "
                "when the tenant has too many blocking invocations in flight."
            ),
            responses={
                "200": answer("Blocking points: the answer for the auth server.", blocking),
                "202": answer(
                    "Non-blocking points: stored.", schema("Accepted"), replayed="Idempotent-Replayed"
                ),
            },
        ),
    ]


def _public_ops() -> list[Op]:
    tag = "operations"
    return [
        Op(
            "get",
            "/v1/ip-ranges",
            "getIpRanges",
            "The gateway's egress addresses",
            tag="egress",
            scope=None,
            rate_limited=False,
            extra_params=(
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"}},
                {
                    "name": "If-Modified-Since",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ),
            description="For receivers' firewalls, from [egress.regions]. Polling with If-None-Match (or "
            "If-Modified-Since, when the operator declared regions_updated_at) answers `304` "
            "while nothing changed.",
            responses={
                "200": answer("The ranges.", schema("IpRanges"), etag="ETag", modified="Last-Modified"),
                "304": answer("Not modified.", etag="ETag", modified="Last-Modified"),
            },
        ),
        Op(
            "get",
            "/api/v2/openapi.json",
            "getOpenApi",
            "This document",
            tag=tag,
            scope=None,
            rate_limited=False,
            responses={"200": answer("The OpenAPI 3.1 document.", {"type": "object"})},
        ),
        Op(
            "get",
            "/healthz",
            "healthz",
            "Liveness",
            tag=tag,
            scope=None,
            rate_limited=False,
            responses={"200": answer("The process is up.", schema("Status"))},
        ),
        Op(
            "get",
            "/readyz",
            "readyz",
            "Readiness",
            tag=tag,
            scope=None,
            rate_limited=False,
            errors=("ServiceUnavailable",),
            responses={"200": answer("The database is reachable.", schema("Status"))},
        ),
        Op(
            "get",
            "/metrics",
            "metrics",
            "Prometheus metrics",
            tag=tag,
            scope=None,
            rate_limited=False,
            errors=("Forbidden",),
            description="Served only to [server] metrics_allowed_cidrs.",
            responses={
                "200": {
                    "description": "Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
    ]


def shared_errors(ops: list[Op]) -> list[str]:
    """The error answers that operations of /api/v2 and /v1/tenants refer to."""
    return [name for name in ERRORS if any(name in op.all_errors() for op in ops if op.rate_limited)]


def operations() -> list[Op]:
    return [*_hook_ops(), *_secret_ops(), *_delivery_ops(), *_tenant_ops(), *_ingest_ops(), *_public_ops()]


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, fresh on each call."""
    ops = operations()
    paths: dict[str, dict[str, Schema]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method] = op.render()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Hooks gateway",
            "version": __version__,
            "summary": "Auth0-compatible Hooks as signed webhooks.",
            "description": "The Management API (`/api/v2`, Auth0-compatible), the ingest API the auth server "
            "forwards events to (`/v1/tenants/...`), and the gateway's public endpoints. Every "
            "answer of `/api/v2` and `/v1/tenants` carries `X-RateLimit-Limit`, "
            "`X-RateLimit-Remaining` and `X-RateLimit-Reset`; errors are "
            "`{statusCode, error, message}`.",
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": n}
            for n in ("hooks", "secrets", "deliveries", "tenants", "ingest", "egress", "operations")
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT (HS256, RS256 or ES256 as configured) with `iss`, `aud`, `exp`; "
                    "claim `scope` (space-separated) and, for tenant calls, `tenant`.",
                },
            },
            "schemas": {
                **_hook_schemas(),
                **_secret_schemas(),
                **_tenant_schemas(),
                **_delivery_schemas(),
                **_event_schemas(),
                **_envelope_schemas(),
                **_other_schemas(),
            },
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "responses": {name: error_response(name, rate_limited=True) for name in shared_errors(ops)},
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return json_response(document())


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v2/openapi.json", openapi, allow_head=False)]
