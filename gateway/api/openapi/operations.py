"""Every operation of the app: path, method, scope, parameters, bodies and answers."""

from __future__ import annotations

from ...auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE
from ...ingest import IDEMPOTENCY_HEADER
from ...store.models import MAX_SECRETS_PER_HOOK
from .. import deliveries
from .common import (
    ASYNC,
    BEARER,
    BLOCKING,
    ERRORS,
    RATE_HEADERS,
    Schema,
    answer,
    error_response,
    json_body,
    page_of,
    ref,
    schema,
)

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
        links: dict[str, Schema] | None = None,
        link_codes: tuple[str, ...] | None = None,
    ) -> None:
        self.method, self.path = method, path
        self.operation_id, self.summary, self.tag = operation_id, summary, tag
        self.scope, self.responses, self.errors = scope, responses, errors
        self.params, self.body, self.description = params, body, description
        self.rate_limited, self.extra_params = rate_limited, extra_params
        # OpenAPI links of the success answers (all, or `link_codes`): what can be called next.
        self.links, self.link_codes = links or {}, link_codes

    def all_errors(self) -> tuple[str, ...]:
        errors = self.errors
        if self.scope is not None:
            # Any call with a body can be too slow to send it (408); any call can meet a database
            # that is away or cannot be written, or a gateway shutting down (503).
            slow = ("RequestTimeout",) if self.body is not None else ()
            errors = ("BadRequest", "Unauthorized", "Forbidden", *errors, *slow, "TooManyRequests",
                      "ServiceUnavailable")
        return tuple(dict.fromkeys(errors))

    def render(self) -> Schema:
        params = [ref("parameters", p) for p in self.params] + list(self.extra_params)
        responses: dict[str, Schema] = {}
        for code, response in self.responses.items():
            if self.rate_limited:
                headers = {**response.get("headers", {}), **{h: ref("headers", h) for h in RATE_HEADERS}}
                response = {**response, "headers": headers}
            if self.links and code in (self.link_codes or [c for c in self.responses if c[0] == "2"]):
                response = {**response, "links": self.links}
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


def link(operation_id: str, description: str, **parameters: str) -> Schema:
    out: Schema = {"operationId": operation_id, "description": description}
    if parameters:
        out["parameters"] = parameters
    return out


def _hook_links(hook_id: str) -> dict[str, Schema]:
    """What can be done with a hook, its id taken from `hook_id` (a runtime expression)."""
    ops = {
        "GetHook": "getHook", "UpdateHook": "updateHook", "DeleteHook": "deleteHook", "TestHook": "testHook",
        "ListSecrets": "listSecrets", "AddSecrets": "addSecrets", "GetSigningSecret": "getSigningSecret",
        "RotateSigningSecret": "rotateSigningSecret", "ReplayHook": "replayHook",
    }
    links = {name: link(op, f"`{op}` of this hook.", id=hook_id) for name, op in ops.items()}
    links["ListDeliveries"] = link("listDeliveries", "The hook's deliveries.", **{"query.hookId": hook_id})
    return links


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
            "`send-phone-message` hook. `403` when the tenant's quota of hooks on the point "
            "(`hooksPerPoint`) or in all (`hooks`) is reached; the message names the quota and its "
            "value (a tenant's `quotas`, else [quotas] settings).",
            responses={"201": answer("The new hook.", schema("Hook"))},
            links=_hook_links("$response.body#/id"),
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
            links=_hook_links("$response.body#/id"),
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
            # Not to updateSecrets/deleteSecrets: with names of their own they answer 404 by design.
            links={"ListSecrets": link("listSecrets", "The hook's secret names.", id="$request.path.id")},
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
            links={"RetryDelivery": link("retryDelivery", "Deliver it again.", id="$response.body#/id"),
                   "GetHook": link("getHook", "Its hook.", id="$response.body#/hookId")},
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
            "deleted, or when another delivery of the same event to the hook is pending.",
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
            "last finished delivery has one of `status`, at most "
            f"{deliveries.MAX_REPLAY} per call. An event that already has a pending delivery to the "
            "hook gets no second one: it is counted in `skipped`. `429` with `Retry-After` past the "
            "tenant's `replaysPerHour` quota (counted over the last hour, refused calls excluded).",
            responses={"202": answer("The new deliveries.", schema("ReplayResult"))},
        ),
    ]


def _operational_event_ops() -> list[Op]:
    tag, path = "operational-events", "/api/v2/operational-events"
    writes = ("PayloadTooLarge", "UnsupportedMediaType")
    about = ("The tenant's endpoint for operational events (`delivery.failing`, `delivery.exhausted`, "
             "`delivery.recovered`, `hook.disabled`, `destination.paused`, `destination.resumed`), each "
             "`{type, timestamp, data}` signed with Standard Webhooks and delivered durably.")
    return [
        Op(
            "get", path, "getOperationalEventsEndpoint", "Get the operational events endpoint",
            tag=tag, scope=SCOPE_READ, errors=("NotFound",), description=about,
            responses={"200": answer("The endpoint.", schema("OperationalEventsEndpoint"))},
        ),
        Op(
            "put", path, "setOperationalEventsEndpoint", "Set the operational events endpoint",
            tag=tag, scope=SCOPE_UPDATE, errors=writes,
            body=json_body(schema("OperationalEventsEndpointSet")),
            description=f"{about} The URL passes the egress rules of a hook's URL; a new endpoint gets a "
            "new signing secret, and setting it again enables it (the gateway disables it as a hook).",
            responses={
                "200": answer("The endpoint, changed.", schema("OperationalEventsEndpoint")),
                "201": answer("The endpoint, new.", schema("OperationalEventsEndpoint")),
            },
            links={
                "GetEndpoint": link("getOperationalEventsEndpoint", "The endpoint."),
                "GetSigningSecret": link("getOperationalEventsSigningSecret", "Its signing secret."),
                "RotateSigningSecret": link("rotateOperationalEventsSigningSecret", "Rotate it."),
                "DeleteEndpoint": link("deleteOperationalEventsEndpoint", "Remove it."),
            },
        ),
        Op(
            "delete", path, "deleteOperationalEventsEndpoint", "Remove the operational events endpoint",
            tag=tag, scope=SCOPE_UPDATE, errors=("NotFound",),
            description="Its events not yet delivered are cancelled.",
            responses={"204": answer("Removed.")},
        ),
        Op(
            "get", f"{path}/signing-secret", "getOperationalEventsSigningSecret",
            "Get the operational events signing secret", tag=tag, scope=SCOPE_READ, errors=("NotFound",),
            responses={"200": answer("The `whsec_` secret and those still in their grace period.",
                                     schema("SigningSecret"))},
        ),
        Op(
            "post", f"{path}/signing-secret/rotate", "rotateOperationalEventsSigningSecret",
            "Rotate the operational events signing secret", tag=tag, scope=SCOPE_UPDATE,
            body=json_body(schema("SigningSecretRotate"), required=False), errors=("NotFound", *writes),
            description="The old secret keeps signing beside the new one for the grace period.",
            responses={"200": answer("The new secret.", schema("SigningSecret"))},
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
            links={
                "GetTenant": link("getTenant", "The tenant.", id="$response.body#/id"),
                "UpdateTenant": link("updateTenant", "Change it.", id="$response.body#/id"),
                "DeleteTenant": link("deleteTenant", "Delete it.", id="$response.body#/id"),
            },
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
        "first answer instead of storing a second event. Checked on every point (`400`), used by "
        "the non-blocking ones.",
    }
    blocking = {  # anyOf: a credentials-exchange answer is a success envelope too
        "anyOf": [
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
            errors=("NotFound", "Conflict", "PayloadTooLarge", "ServiceUnavailable"),
            description=(
                f"Blocking points ({', '.join(BLOCKING)}) are invoked now and answered `200` with the "
                f"Auth0 envelope. The others ({', '.join(ASYNC)}) are stored durably with one delivery "
                "per enabled hook and answered `202`. Callers must be in [ingest] allowed_cidrs "
                "(`403`, before authentication). `404` for an unknown tenant or point; `409` when an "
                "Idempotency-Key comes again with another body; `429` also when the tenant has too many "
                "blocking invocations in flight; `503` with `Retry-After` when the event cannot be "
                "stored now, or the gateway is shutting down."
            ),
            responses={
                "200": answer("Blocking points: the answer for the auth server.", blocking),
                "202": answer(
                    "Non-blocking points: stored.", schema("Accepted"), replayed="Idempotent-Replayed"
                ),
            },
            links={
                "GetDelivery": link("getDelivery", "The first delivery of the event (non-blocking points).",
                                    id="$response.body#/deliveries/0/deliveryId"),
            },
            link_codes=("202",),
        ),
    ]


def _public_ops() -> list[Op]:
    tag = "operations"
    return [
        Op(
            "get",
            "/v1/signing-keys/{tenant}/{id}",
            "getPublicSigningKeys",
            "A v1a hook's public signing keys",
            tag="hooks",
            scope=None,
            params=("tenant", "id"),
            errors=("NotFound", "TooManyRequests"),
            description="For the hook's receivers, without a token: the `whpk_` keys that verify its "
            "`v1a` signatures. `404` alike for an unknown tenant or hook, another tenant's hook, "
            "and a hook with no v1a key. Cacheable for a few minutes.",
            responses={"200": answer("The public keys.", schema("PublicSigningKeys"))},
        ),
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
            errors=("ServiceUnavailable",),
            description="`503` with `Retry-After` once a SIGTERM has closed the intake (the drain): "
            "balancers stop sending blocking calls here while those in flight finish.",
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
    return [*_hook_ops(), *_secret_ops(), *_delivery_ops(), *_operational_event_ops(), *_tenant_ops(),
            *_ingest_ops(), *_public_ops()]
