"""A token claim of the wrong type is a 401, never read as if the claim were absent: a tenant's
token with `"tenant": null` or `"tenant": 5` must not act as an operator's token."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from conftest import HS256_SECRET, Gateway

from gateway.auth import SCOPE_ADMIN, SCOPE_READ


def token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "https://auth.example.com/",
        "aud": "hooks-gateway",
        "sub": "tester",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": SCOPE_READ,
        "tenant": "acme",
    }
    claims.update(changes)
    return jwt.encode(claims, HS256_SECRET, algorithm="HS256")


WRONG_TYPES: dict[str, dict[str, Any]] = {
    "tenant a number": {"tenant": 5},
    "tenant a list": {"tenant": ["acme"]},
    "tenant an object": {"tenant": {"id": "acme"}},
    "tenant true": {"tenant": True},
    "tenant empty": {"tenant": ""},
    "tenant null": {"tenant": None},
    "scope a number": {"scope": 5},
    "scope an object": {"scope": {"read:hooks": True}},
    "scope null": {"scope": None},
    "scope a list holding a number": {"scope": [SCOPE_READ, 5]},
    "exp a string": {"exp": str(int(time.time()) + 600)},
    "exp true": {"exp": True},
    "exp a list": {"exp": [int(time.time()) + 600]},
    "nbf a string": {"nbf": "0"},
    "nbf an object": {"nbf": {}},
    "nbf null": {"nbf": None},
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
async def test_a_claim_of_the_wrong_type_is_401(gateway: Gateway, case: str) -> None:
    resp = await gateway.client.get(
        "/api/v2/hooks", headers={"Authorization": f"Bearer {token(**WRONG_TYPES[case])}"}
    )
    body = await resp.json()
    assert resp.status == 401, body
    assert body["statusCode"] == 401 and body["error"] == "Unauthorized"
    assert list(WRONG_TYPES[case])[0] in body["message"]  # it names the claim


@pytest.mark.parametrize("tenant", [None, 0, False, ""], ids=["null", "zero", "false", "empty"])
async def test_a_tenant_claim_that_reads_as_absent_does_not_make_an_operator(
    gateway: Gateway, tenant: Any
) -> None:
    resp = await gateway.client.post(
        "/api/v2/tenants",
        json={"id": "globex"},
        headers={"Authorization": f"Bearer {token(tenant=tenant, scope=SCOPE_ADMIN)}"},
    )
    assert resp.status == 401, await resp.text()
    operator = await gateway.client.get(
        "/api/v2/tenants/globex", headers={"Authorization": f"Bearer {gateway.operator_token()}"}
    )
    assert operator.status == 404  # nothing was created


async def test_claims_of_the_right_types_are_accepted(gateway: Gateway) -> None:
    for changes in ({}, {"scope": [SCOPE_READ]}, {"exp": time.time() + 600.5}):
        headers = {"Authorization": f"Bearer {token(**changes)}"}
        resp = await gateway.client.get("/api/v2/hooks", headers=headers)
        assert resp.status == 200, await resp.text()
