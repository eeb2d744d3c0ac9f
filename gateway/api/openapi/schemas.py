"""The components' schemas: hooks, secrets, tenants, deliveries, events, envelopes."""

from __future__ import annotations

from ... import points, quotas
from ...delivery.ops_events import TYPES
from ...runtime import package_specs
from ...signing import SCHEMES
from ...store.models import MAX_SECRETS_PER_HOOK
from ...web import TIME_MAX_S, TIME_MIN_S
from .. import deliveries, hooks, secrets, signing_secrets, tenants
from .common import (
    BLOCKING,
    HOOK_NAME_PATTERN,
    SECRET_NAME_PATTERN,
    TENANT_ID_PATTERN,
    Schema,
    nullable,
    obj,
    schema,
    timestamp,
)

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
            "minimum": hooks.ORDER_MIN,
            "maximum": hooks.ORDER_MAX,
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
        "signatureScheme": {
            "type": "string",
            "enum": list(SCHEMES),
            "default": "v1",
            "description": "Standard Webhooks signatures: `v1` (HMAC-SHA256 with a `whsec_` secret) "
            "or `v1a` (Ed25519: receivers verify with the `whpk_` public key; the private key "
            "never leaves the gateway). A change is a rotation to a new key of that scheme; the "
            "old key keeps signing for [delivery] signing_grace.",
        },
        "script": {
            "type": "string",
            "minLength": 1,
            "maxLength": hooks.SCRIPT_MAX_CHARS,
            "description": "Auth0's field: the hook's Node.js code (`module.exports = function "
            "(...) {...}`), "
            "run by the gateway in a sandbox through Auth0's compiler of the point, instead of a call "
            "to a `url` (a hook has one or the other). At most 40,000 characters and 100 KiB of UTF-8; "
            "the hook's secrets "
            "are `context.webtask.secrets`. `400` where the gateway does not run scripts "
            "([runtime] off, or the host lacks what the sandbox needs: the message names it). "
            "`format` must be `auth0`.",
        },
        "dependencies": {
            "type": "object",
            "additionalProperties": {"type": "string", "minLength": 1,
                                     "maxLength": package_specs.VERSION_MAX_CHARS},
            "propertyNames": {"pattern": "^" + package_specs.NAME.pattern + "$",
                              "maxLength": package_specs.NAME_MAX_CHARS},
            "description": "Auth0's field: a script's npm packages, `{name: version}`; a version is an exact "
            "version, a semver range or a dist-tag (no URL, git, path, file: or npm: alias). At most "
            "[runtime] max_dependencies (32) entries. A save installs them (`npm install "
            "--ignore-scripts`, sandboxed, from [runtime] npm_registry) once per set, then reuses the "
            "install: a set that cannot be installed (unknown package or version, over the size or "
            "package bounds, the registry away) is a `400` naming why.",
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
            "url": {**fields["url"], "type": ["string", "null"],
                    "description": "Null for a hook with a `script`."},
            "script": {**fields["script"], "type": ["string", "null"],
                       "description": "Null for a hook with a `url`."},
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
    one_of_url_script: Schema = {"anyOf": [{"required": ["url"]}, {"required": ["script"]}],
                         "not": {"required": ["url", "script"]}}
    create = obj({"triggerId": trigger, **fields}, ["name", "triggerId"], **one_of_url_script, examples=[
        {"name": "welcome-email", "triggerId": "post-user-registration", "url": "https://hooks.example.com/welcome",
         "enabled": True},
    ])
    update = obj(
        {
            **fields,
            "triggerId": {**trigger, "description": "Accepted only when unchanged (`400` otherwise)."},
            "id": {"type": "string", "description": "Accepted only when unchanged (`400` otherwise)."},
        },
        minProperties=0,
        **{"not": one_of_url_script["not"]},
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
    scheme = {"type": "string", "enum": list(SCHEMES)}
    public_key = {
        "type": "string",
        "pattern": "^whpk_[A-Za-z0-9+/]{43}=$",
        "description": "A `v1a` key's Ed25519 public key: `whpk_` and the base64 of its 32 bytes.",
    }
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
                "scheme": scheme,
                "secret": {
                    "type": "string",
                    "pattern": "^(whsec_|whpk_)",
                    "description": "What a receiver verifies every request with: the `whsec_` "
                    "secret of a `v1` hook, the `whpk_` public key of a `v1a` hook (its `whsk_` "
                    "private key is never shown).",
                },
                "publicKey": public_key,
                "createdAt": timestamp("When this key was made."),
                "previous": {
                    "type": "array",
                    "description": "Older keys still signing during their grace period (a `v1` "
                    "secret is not shown again; a `v1a` key's public key is).",
                    "items": obj(
                        {
                            "scheme": scheme,
                            "publicKey": public_key,
                            "createdAt": timestamp("When it was made."),
                            "expiresAt": timestamp("When it stops signing."),
                        },
                        ["scheme", "createdAt", "expiresAt"],
                    ),
                },
            },
            ["scheme", "secret", "createdAt", "previous"],
        ),
        "PublicSigningKeys": obj(
            {
                "scheme": {"const": "v1a"},
                "keys": {
                    "type": "array",
                    "minItems": 1,
                    "description": "The current key (`expiresAt` null), then those still signing.",
                    "items": obj(
                        {
                            "publicKey": public_key,
                            "createdAt": timestamp("When it was made."),
                            "expiresAt": nullable("string", format="date-time",
                                                  description="When it stops signing; null: current."),
                        },
                        ["publicKey", "createdAt", "expiresAt"],
                    ),
                },
            },
            ["scheme", "keys"],
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


def _quota(description: str) -> Schema:
    return nullable("integer", minimum=1, maximum=quotas.MAX_OVERRIDE, description=description)


def _operational_event_schemas() -> dict[str, Schema]:
    url: Schema = {"type": "string", "format": "uri", "maxLength": hooks.URL_MAX,
                   "description": "Where operational events are POSTed (the egress rules of hook URLs)."}
    return {
        "OperationalEventsEndpoint": obj(
            {
                "url": url,
                "enabled": {"type": "boolean", "description": "False once the gateway disabled it."},
                "disabledReason": nullable("string", description="Why the gateway disabled it."),
                "types": {"type": "array", "items": {"enum": list(TYPES)}, "description": "What it is sent."},
                "createdAt": timestamp("When it was set first."),
                "updatedAt": timestamp("When it last changed."),
            },
            ["url", "enabled", "disabledReason", "types", "createdAt", "updatedAt"],
        ),
        "OperationalEventsEndpointSet": obj({"url": url}, ["url"]),
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
            "additionalProperties": {
                "type": "integer",
                "minimum": tenants.MIN_DEADLINE_MS,
                "maximum": tenants.MAX_DEADLINE_MS,
            },
            "description": "Per blocking point, the invocation deadline in milliseconds.",
        },
        "maxInFlight": nullable(
            "integer",
            minimum=1,
            maximum=tenants.MAX_IN_FLIGHT_MAX,
            description="Blocking invocations in flight at once (default [sync] max_in_flight).",
        ),
        "quotas": obj(
            {
                quotas.HOOKS_PER_POINT: _quota("Hooks on one point ([quotas] hooks_per_point)."),
                quotas.HOOKS: _quota("Hooks in all ([quotas] hooks_per_tenant)."),
                quotas.REPLAYS_PER_HOUR: _quota(
                    "Calls of POST /api/v2/hooks/{id}/replay in any hour ([quotas] replays_per_hour)."
                ),
            },
            description="Overrides of the [quotas] settings for this tenant; a key left out (or null) "
            "takes the setting. Replaces the tenant's overrides as a whole. Operators only.",
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
            ["id", "name", "allowedCidrs", "deadlines", "maxInFlight", "quotas", "createdAt", "updatedAt"],
        ),
        "TenantCreate": obj(
            {"id": tenant_id, **writable}, ["id"], examples=[{"id": "globex", "name": "Globex"}]
        ),
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
                "skipped": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Events of the window that matched but already have a pending "
                    "delivery to the hook: a replay never adds a second one.",
                },
            },
            ["count", "deliveries", "skipped"],
        ),
        "Time": {
            "oneOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "minimum": TIME_MIN_S, "maximum": TIME_MAX_S},
            ],
            "description": "ISO 8601 (`2026-12-01T10:00:00Z`) or unix seconds, from 1970 to the end of 9999.",
        },
    }


def _event_schemas() -> dict[str, Schema]:
    """What the auth server sends: exactly what `points/events.py` checks; every other field is
    passed on unchanged, whatever its type (`extra`: any)."""
    any_obj: Schema = {"type": "object"}
    string: Schema = {"type": "string"}
    connection_context = obj({"connection": any_obj}, ["connection"], extra=True)
    user_with_id = {
        "properties": {
            "user": obj({"id": string}, ["id"], extra=True),
            "context": connection_context,
        },
        "required": ["user", "context"],
    }
    identifier = nullable("string")
    return {
        "CredentialsExchangeEvent": obj(
            {
                "audience": string,
                "client": obj({"id": string}, ["id"], extra=True),
                "scope": {"type": "array", "items": string},
            },
            ["audience", "client", "scope"],
            extra=True,
            examples=[points.sample_event(points.CREDENTIALS_EXCHANGE)],
        ),
        "PreUserRegistrationEvent": obj(
            {
                "user": obj(
                    {"username": identifier, "email": identifier, "phoneNumber": identifier},
                    extra=True,
                    anyOf=[{"required": [k], "properties": {k: string}}
                           for k in ("email", "username", "phoneNumber")],
                    description="One of `email`, `username`, `phoneNumber` is a string (the others "
                    "absent or null).",
                ),
                "context": connection_context,
            },
            ["user", "context"],
            extra=True,
            examples=[points.sample_event(points.PRE_USER_REGISTRATION)],
        ),
        "SendPhoneMessageEvent": obj(
            {
                "recipient": string,
                "text": string,
                "context": obj(
                    {
                        "message_type": {"enum": ["sms", "voice"]},
                        "action": {"enum": ["enrollment", "second-factor-authentication"]},
                        "language": string,
                        "code": string,
                        "ip": string,
                        "user_agent": string,
                        "user": any_obj,
                        "client": obj(
                            {"client_id": string, "name": string, "client_metadata": any_obj},
                            ["client_id", "name"],
                            extra=True,
                        ),
                    },
                    ["message_type", "action", "language", "code", "ip", "user_agent", "user"],
                    extra=True,
                ),
            },
            ["recipient", "text", "context"],
            extra=True,
            examples=[points.sample_event(points.SEND_PHONE_MESSAGE)],
        ),
        "PostUserRegistrationEvent": {
            "type": "object", **user_with_id,
            "examples": [points.sample_event(points.POST_USER_REGISTRATION)],
        },
        "PostChangePasswordEvent": {
            "type": "object", **user_with_id,
            "examples": [points.sample_event(points.POST_CHANGE_PASSWORD)],
        },
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
                "result": {
                    "oneOf": [schema("SuccessEnvelope"), schema("ErrorEnvelope"), {"type": "null"}],
                    "description": "Blocking points: what the auth server would get if this hook were "
                    "the only one (with `failurePolicy` fail), after the point's answer rules; null "
                    "for the others.",
                },
            },
            ["hookId", "triggerId", "request", "statusCode", "durationMs", "error", "responseBody", "answer",
             "result"],
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


def components() -> dict[str, Schema]:
    return {
        **_hook_schemas(),
        **_secret_schemas(),
        **_tenant_schemas(),
        **_operational_event_schemas(),
        **_delivery_schemas(),
        **_event_schemas(),
        **_envelope_schemas(),
        **_other_schemas(),
    }
