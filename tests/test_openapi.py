"""The OpenAPI 3.1 document: valid, in step with the app's routes, and true about scopes,
status codes and rate-limit headers (checked by calling every documented operation)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import ALL_SCOPES, Gateway
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from gateway.api.openapi import document
from gateway.auth import SCOPE_ADMIN, mint
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in doc["paths"].items() for method in item if method in METHODS
    }


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def served_operations(gw: Gateway) -> set[tuple[str, str]]:
    """The app's API operations (the dashboard's HTML pages under /dashboard are not an API)."""
    return {
        (r.method, r.resource.canonical)
        for r in gw.app.router.routes()
        if r.method != "HEAD" and r.resource is not None and not r.resource.canonical.startswith("/dashboard")
    }


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_validator_would_catch_a_broken_document() -> None:
    broken = document()
    del broken["paths"]["/api/v2/hooks"]["get"]["responses"]["200"]["description"]  # required by 3.1
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [r for v in value.values() for r in refs(v)] + ([value["$ref"]] if "$ref" in value else [])
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def test_every_reference_resolves_and_every_component_is_used() -> None:
    doc = document()
    used = set(refs(doc))
    defined = {
        f"#/components/{kind}/{name}"
        for kind, items in doc["components"].items()
        for name in items
        if kind != "securitySchemes"
    }
    assert used - defined == set()
    assert defined - used == set()


async def test_every_route_of_the_app_is_documented(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    missing = served_operations(gw) - documented_operations(document())
    assert not missing, f"routes served but not in gateway/api/openapi.py: {sorted(missing)}"


async def test_every_documented_operation_is_served(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    extra = documented_operations(document()) - served_operations(gw)
    assert not extra, f"documented in gateway/api/openapi.py but not served: {sorted(extra)}"


def test_every_path_template_variable_is_a_required_path_parameter() -> None:
    doc = document()
    shared = doc["components"]["parameters"]
    for method, path, op in operations(doc):
        params = [shared[p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p for p in op.get("parameters", [])]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), (method, path)
        assert all(p["required"] for p in params if p["in"] == "path")


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations(document())]
    assert len(ids) == len(set(ids))


def test_management_list_parameters_are_documented() -> None:
    paths = document()["paths"]

    def names(path: str) -> set[str]:
        return {p["$ref"].rsplit("/", 1)[1] for p in paths[path]["get"]["parameters"]}

    assert names("/api/v2/hooks") == {
        "page",
        "per_page",
        "include_totals",
        "enabled",
        "triggerId",
        "fields",
        "include_fields",
    }
    assert names("/api/v2/deliveries") == {
        "page",
        "per_page",
        "include_totals",
        "hookId",
        "status",
        "from",
        "to",
    }


def test_bearer_jwt_scheme_and_public_endpoints() -> None:
    doc = document()
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    public = {(m, p) for m, p, op in operations(doc) if op["security"] == []}
    assert public == {
        ("GET", "/v1/ip-ranges"),
        ("GET", "/v1/signing-keys/{tenant}/{id}"),
        ("GET", "/api/v2/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    }


def test_error_schema_and_blocking_envelopes_are_described() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["Error"]["required"] == ["statusCode", "error", "message"]
    assert schemas["ErrorEnvelope"]["properties"]["status"] == {"const": "error"}
    assert set(schemas["Accepted"]["required"]) == {"eventId", "deliveries"}
    forward = document()["paths"]["/v1/tenants/{tenant}/triggers/{triggerId}"]["post"]["responses"]
    assert {"200", "202", "403", "404", "429"} <= set(forward)


async def test_served_document_is_the_document_and_needs_no_token(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/api/v2/openapi.json")
    assert resp.status == 200
    assert await resp.json() == document()


# --- the document is true about each operation -----------------------------------------------


def concrete(path: str) -> str:
    return (
        path.replace("{tenant}", "acme")
        .replace("{triggerId}", "post-user-registration")
        .replace("{id}", "does-not-exist")
    )


def scope_of(op: dict[str, Any]) -> str | None:
    security = op["security"]
    return security[0]["bearerAuth"][0] if security else None


async def call(gw: Gateway, method: str, path: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await gw.client.request(method, concrete(path), headers=headers, json={})


SCOPED = [(m, p) for m, p, op in operations(document()) if scope_of(op) is not None]


@pytest.fixture
async def documented_gateway(make_gateway: MakeGateway) -> Gateway:
    gw = await make_gateway()
    await gw.create_tenant("acme")
    return gw


@pytest.mark.parametrize(("method", "path"), SCOPED, ids=[f"{m} {p}" for m, p in SCOPED])
async def test_documented_scope_is_the_one_the_route_needs(
    documented_gateway: Gateway, method: str, path: str
) -> None:
    gw = documented_gateway
    op = document()["paths"][path][method.lower()]
    scope = scope_of(op)
    assert scope is not None
    everything = (*ALL_SCOPES, SCOPE_ADMIN)
    tenant = None if scope == SCOPE_ADMIN else "acme"
    without = mint(gw.settings, tenant=tenant, scopes=tuple(s for s in everything if s != scope), ttl_s=60)
    with_it = mint(gw.settings, tenant=tenant, scopes=(scope,), ttl_s=60)

    refused = await call(gw, method, path, without)
    allowed = await call(gw, method, path, with_it)
    anonymous = await call(gw, method, path, None)

    assert refused.status == 403 and scope in (await refused.json())["message"]
    assert anonymous.status == 401
    assert allowed.status not in (401, 403), await allowed.text()
    for resp in (refused, allowed, anonymous):
        assert str(resp.status) in op["responses"], f"{method} {path} answered an undocumented {resp.status}"
        assert all(h in resp.headers for h in RATE_HEADERS)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/v1/ip-ranges", "/api/v2/openapi.json"])
async def test_public_endpoints_answer_a_documented_status_without_a_token(
    documented_gateway: Gateway, path: str
) -> None:
    resp = await documented_gateway.client.get(path)
    assert resp.status == 200
    assert "200" in document()["paths"][path]["get"]["responses"]
