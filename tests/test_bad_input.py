"""Bad input is never a 500: every refusal is JSON `{statusCode, error, message}` with the
right status, on every route of the Management API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway

from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]

# (method, path) of every route that reads a JSON body; {hook} is a real hook of tenant acme.
BODY_ROUTES = [
    ("POST", "/api/v2/hooks"),
    ("PATCH", "/api/v2/hooks/{hook}"),
    ("POST", "/api/v2/hooks/{hook}/secrets"),
    ("PATCH", "/api/v2/hooks/{hook}/secrets"),
    ("DELETE", "/api/v2/hooks/{hook}/secrets"),
    ("POST", "/api/v2/hooks/{hook}/signing-secret/rotate"),
    ("POST", "/api/v2/hooks/{hook}/test"),
    ("POST", "/api/v2/hooks/{hook}/replay"),
    ("POST", "/api/v2/tenants"),
    ("PATCH", "/api/v2/tenants/acme"),
    ("POST", "/v1/tenants/acme/triggers/post-user-registration"),
    ("POST", "/v1/tenants/acme/triggers/credentials-exchange"),
]
# Routes where a JSON array is the wrong shape (DELETE secrets wants one).
OBJECT_ROUTES = [r for r in BODY_ROUTES if r != ("DELETE", "/api/v2/hooks/{hook}/secrets")]


def headers_for(gw: Gateway, path: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    auth = (
        {"Authorization": f"Bearer {gw.operator_token()}"}
        if "/tenants" in path and "/v1/" not in path
        else gw.auth()
    )
    return {**auth, **(extra or {})}


async def send(
    gw: Gateway, method: str, path: str, data: bytes, content_type: str = "application/json"
) -> Any:
    hook = gw.__dict__.setdefault("_hook", None) or (await gw.create_hook(name="target"))["id"]
    gw.__dict__["_hook"] = hook
    path = path.format(hook=hook)
    return await gw.client.request(
        method, path, data=data, headers=headers_for(gw, path, {"Content-Type": content_type})
    )


async def assert_json_error(resp: Any, *statuses: int) -> dict[str, Any]:
    assert resp.status in statuses, (resp.status, await resp.text())
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"statusCode", "error", "message"}
    assert body["statusCode"] == resp.status
    assert "Traceback" not in body["message"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"{'single': 'quotes'}",
        b"\xff\xfe\x00",
        b"[" * 100_000,
        b"1" * 5000,
        b'{"a": NaN',
        b'{"name": "\\ud800"}',
    ],
    ids=["truncated", "not-json", "binary", "deep-nesting", "huge-integer", "bad-nan", "lone-surrogate"],
)
async def test_malformed_json_is_400(gateway: Gateway, method: str, path: str, data: bytes) -> None:
    resp = await send(gateway, method, path, data)
    await assert_json_error(resp, 400)


@pytest.mark.parametrize(("method", "path"), OBJECT_ROUTES)
@pytest.mark.parametrize("data", [b"[]", b'[{"name": "x"}]', b'"text"', b"42", b"null", b"true"])
async def test_a_json_value_that_is_not_an_object_is_400(
    gateway: Gateway, method: str, path: str, data: bytes
) -> None:
    resp = await send(gateway, method, path, data)
    await assert_json_error(resp, 400)


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_wrong_content_type_is_refused_without_500(
    gateway: Gateway, method: str, path: str, content_type: str
) -> None:
    resp = await send(gateway, method, path, b'{"name": "x"}', content_type)
    await assert_json_error(resp, 400, 415)


@pytest.fixture
async def small(make_gateway: MakeGateway, make_settings: Callable[..., Settings]) -> Gateway:
    gw = await make_gateway(make_settings(server={"max_body_bytes": 1024}))
    await gw.create_tenant("acme")
    return gw


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
async def test_an_oversized_body_is_413(small: Gateway, method: str, path: str) -> None:
    data = b'{"name": "' + b"x" * 4096 + b'"}'
    resp = await send(small, method, path, data)
    body = await assert_json_error(resp, 413)
    assert body["error"] == "Payload Too Large"


async def test_an_oversized_chunked_body_is_413(small: Gateway) -> None:
    async def chunks() -> Any:
        yield b'{"name": "'
        for _ in range(8):
            yield b"x" * 512
        yield b'"}'

    resp = await small.client.post("/api/v2/hooks", data=chunks(), headers=small.auth())
    await assert_json_error(resp, 413)


async def test_a_body_just_under_the_limit_is_read(small: Gateway) -> None:
    body = (
        b'{"name": "ok", "triggerId": "post-user-registration", "url": "http://127.0.0.1:9/'
        + b"p" * 800
        + b'"}'
    )
    assert len(body) < 1024
    resp = await small.client.post(
        "/api/v2/hooks", data=body, headers={**small.auth(), "Content-Type": "application/json"}
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    "path", ["/api/v2/nothing", "/api/v2/hooks/x/y/z", "/v1/nothing", "/nothing", "/api/v2"]
)
async def test_unknown_routes_are_404_json(gateway: Gateway, path: str) -> None:
    resp = await gateway.client.get(path, headers=gateway.auth())
    await assert_json_error(resp, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/api/v2/hooks"),
        ("DELETE", "/api/v2/hooks"),
        ("PUT", "/api/v2/hooks/{hook}"),
        ("POST", "/api/v2/hooks/{hook}"),
        ("PUT", "/api/v2/hooks/{hook}/secrets"),
        ("GET", "/api/v2/hooks/{hook}/signing-secret/rotate"),
        ("PUT", "/api/v2/tenants"),
        ("GET", "/v1/tenants/acme/triggers/post-user-registration"),
        ("POST", "/healthz"),
    ],
)
async def test_a_wrong_method_is_405_json_with_allow(gateway: Gateway, method: str, path: str) -> None:
    resp = await send(gateway, method, path, b"")
    await assert_json_error(resp, 405)
    assert resp.headers.get("Allow")


@pytest.mark.parametrize(
    "query",
    [
        "page=1e3",
        "per_page=abc",
        "per_page=1000",
        "include_totals=2",
        "fields=id,secret",
        "enabled=",
        "page=99999999999999999999999",
    ],
)
async def test_bad_query_parameters_are_400_not_500(gateway: Gateway, query: str) -> None:
    resp = await gateway.client.get(f"/api/v2/hooks?{query}", headers=gateway.auth())
    assert resp.status in (200, 400)
    if resp.status == 400:
        await assert_json_error(resp, 400)


@pytest.mark.parametrize(
    "query",
    ["from=yesterday", "to=2026-13-01", "status=lost", "page=-2", "from=nan-ish"],
)
async def test_bad_delivery_queries_are_400(gateway: Gateway, query: str) -> None:
    resp = await gateway.client.get(f"/api/v2/deliveries?{query}", headers=gateway.auth())
    await assert_json_error(resp, 400)


@pytest.mark.parametrize(
    "body",
    [
        {"since": "yesterday"},
        {"since": 10, "until": 5},
        {"since": 0, "status": "lost"},
        {"until": 5},
        {"since": 0, "status": []},
        {"since": True},
        {"since": 0, "extra": 1},
    ],
)
async def test_bad_replay_bodies_are_400(gateway: Gateway, body: dict[str, Any]) -> None:
    hook = await gateway.create_hook()
    resp = await gateway.client.post(f"/api/v2/hooks/{hook['id']}/replay", json=body, headers=gateway.auth())
    await assert_json_error(resp, 400)


async def test_huge_and_odd_path_ids_are_404_not_500(gateway: Gateway) -> None:
    for hook_id in ("x" * 5000, "%00", "..", "%F0%9F%92%A9", "%ff"):
        resp = await gateway.client.get(f"/api/v2/hooks/{hook_id}", headers=gateway.auth())
        await assert_json_error(resp, 404)


async def test_odd_but_valid_strings_do_not_break_storage(gateway: Gateway) -> None:
    status, body = await _post_tenant(gateway, {"id": "odd", "name": "N\u00e4me \U0001f4a9 \x00 \u202e"})
    assert status in (201, 400), body
    if status == 400:
        assert body["statusCode"] == 400


async def _post_tenant(gw: Gateway, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await gw.client.post(
        "/api/v2/tenants", json=body, headers={"Authorization": f"Bearer {gw.operator_token()}"}
    )
    return resp.status, await resp.json()
