"""Error messages name what was wrong without repeating arbitrary request bytes: a value the
caller sent is quoted only when it is a short plain id."""

from __future__ import annotations

SECRETISH = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl-" * 3


async def test_a_long_or_odd_path_id_is_not_repeated_in_the_error(gateway) -> None:
    for bad in ("x" * 7000, SECRETISH, "dlv_\u00e9\u202e"):
        resp = await gateway.client.post(f"/api/v2/deliveries/{bad}/retry", headers=gateway.auth())
        body = await resp.json()
        assert resp.status == 404
        assert bad not in body["message"] and "xxxxxxxx" not in body["message"]
        assert len(body["message"]) <= 300


async def test_a_plain_id_is_still_named(gateway) -> None:
    resp = await gateway.client.post("/api/v2/deliveries/dlv_missing/retry", headers=gateway.auth())
    assert resp.status == 404
    assert "'dlv_missing'" in (await resp.json())["message"]


async def test_an_unknown_tenant_or_point_on_ingest_is_not_repeated(gateway) -> None:
    resp = await gateway.client.post(f"/v1/tenants/acme/triggers/{SECRETISH}", json={},
                                     headers=gateway.auth("acme", ("forward:events",)))
    body = await resp.json()
    assert resp.status == 404
    assert SECRETISH[:40] not in body["message"]


async def test_a_content_type_is_not_repeated(gateway) -> None:
    resp = await gateway.client.post("/api/v2/hooks", data=b"{}",
                                     headers={**gateway.auth(), "Content-Type": f"text/{SECRETISH[:60]}"})
    body = await resp.json()
    assert resp.status == 415
    assert SECRETISH[:40] not in body["message"]
