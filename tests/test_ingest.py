"""Ingest of asynchronous points: `POST /v1/tenants/{tenant}/triggers/{triggerId}` answers 202
only once the event and its deliveries are committed, validates the body, and honours
`Idempotency-Key`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import backends
import pytest

from gateway.auth import SCOPE_FORWARD, SCOPE_READ, mint

PUR = "post-user-registration"
DAY_S = 86400.0


def event(user_id: str = "u1") -> dict[str, Any]:
    return {
        "user": {"id": user_id, "email": f"{user_id}@example.com"},
        "context": {"connection": {"id": "con_1", "name": "db"}},
    }


class Clock:
    """A wall clock that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def db_rows(settings: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return backends.db_rows(settings.database.url, sql, *args)


async def test_202_names_the_event_and_one_delivery_per_enabled_hook(gateway, make_receiver) -> None:
    rx = await make_receiver()
    first = await gateway.create_hook(name="one", url=rx.url("/a"), enabled=True)
    second = await gateway.create_hook(name="two", url=rx.url("/b"), enabled=True)
    await gateway.create_hook(name="off", url=rx.url("/c"), enabled=False)
    await gateway.create_hook(name="other", triggerId="post-change-password", url=rx.url("/d"), enabled=True)

    resp = await gateway.forward(PUR, event())

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert set(body) == {"eventId", "deliveries"}
    assert body["eventId"].startswith("evt_")
    assert {d["hookId"] for d in body["deliveries"]} == {first["id"], second["id"]}
    # Committed before the answer: the rows are in the database file already.
    stored = db_rows(gateway.settings, "SELECT hook_id, event_id FROM deliveries")
    assert {(h, e) for h, e in stored} == {(d["hookId"], body["eventId"]) for d in body["deliveries"]}


async def test_the_body_reaches_the_receiver_byte_for_byte(gateway, make_receiver) -> None:
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    raw = (
        b'{"user": {"id": "u1", "email": "\\u00e9@example.com", "x": 1.50},'
        b' "context": {"connection": {"id": "con_1", "name": "db"}}}'
    )
    resp = await gateway.client.post(
        f"/v1/tenants/acme/triggers/{PUR}",
        data=raw,
        headers={**gateway.auth("acme", (SCOPE_FORWARD,)), "Content-Type": "application/json"},
    )
    assert resp.status == 202, await resp.text()
    (received,) = await rx.wait_for(1)
    assert received.body == raw


async def test_no_enabled_hook_still_answers_202_with_no_deliveries(gateway) -> None:
    resp = await gateway.forward(PUR, event())
    assert resp.status == 202
    assert (await resp.json())["deliveries"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"context": {"connection": {"id": "con_1", "name": "db"}}}, "user"),
        (
            {"user": {"email": "a@example.com"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
            "user.id",
        ),
        ({"user": {"id": 5}, "context": {"connection": {"id": "con_1", "name": "db"}}}, "user.id"),
        ({"user": {"id": "u1"}}, "context"),
        ({"user": {"id": "u1"}, "context": {}}, "context.connection"),
    ],
)
async def test_a_missing_required_field_is_400_naming_it(gateway, body, field) -> None:
    resp = await gateway.forward(PUR, body)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["statusCode"] == 400
    assert field in answer["message"]
    assert db_rows(gateway.settings, "SELECT COUNT(*) FROM events") == [(0,)]


async def test_malformed_json_is_400(gateway) -> None:
    resp = await gateway.client.post(
        f"/v1/tenants/acme/triggers/{PUR}",
        data=b"{not json",
        headers={**gateway.auth("acme", (SCOPE_FORWARD,)), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["error"]


async def test_ingest_needs_a_forward_token(gateway) -> None:
    url = f"/v1/tenants/acme/triggers/{PUR}"
    assert (await gateway.client.post(url, json=event())).status == 401
    wrong_scope = await gateway.client.post(url, json=event(), headers=gateway.auth("acme", (SCOPE_READ,)))
    assert wrong_scope.status == 403
    other_tenant = await gateway.client.post(
        url, json=event(), headers=gateway.auth("globex", (SCOPE_FORWARD,))
    )
    assert other_tenant.status == 403


async def test_unknown_tenant_is_404(gateway) -> None:
    resp = await gateway.forward(PUR, event(), tenant="nobody")
    assert resp.status == 404


async def test_idempotent_repeat_returns_the_first_answer_and_delivers_once(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    headers = {"Idempotency-Key": "signup-u1"}

    first = await gateway.forward(PUR, event(), headers=headers)
    again = await gateway.forward(PUR, event(), headers=headers)

    assert first.status == again.status == 202
    assert await again.json() == await first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    delivery_id = (await first.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, status="succeeded")
    resp = await gateway.client.get(
        f"/api/v2/deliveries?hookId={hook['id']}&include_totals=true", headers=gateway.auth()
    )
    assert (await resp.json())["total"] == 1
    assert len(rx.requests) == 1


async def test_concurrent_repeats_of_one_key_store_one_event(gateway) -> None:
    await gateway.create_hook(url="http://127.0.0.1:9/", enabled=True)
    answers = await asyncio.gather(
        *(gateway.forward(PUR, event(), headers={"Idempotency-Key": "k"}) for _ in range(20))
    )
    bodies = {json.dumps(await r.json(), sort_keys=True) for r in answers}
    assert len(bodies) == 1
    assert db_rows(gateway.settings, "SELECT COUNT(*) FROM events") == [(1,)]


async def test_an_idempotency_key_answers_for_24_hours_then_expires(make_gateway) -> None:
    clock = Clock()
    gw = await make_gateway(clock=clock, start_workers=False)
    await gw.create_tenant("acme")
    await gw.create_hook(url="http://127.0.0.1:9/", enabled=True)
    token = mint(gw.settings, tenant="acme", scopes=(SCOPE_FORWARD,), ttl_s=10 * DAY_S)
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"}
    url = f"/v1/tenants/acme/triggers/{PUR}"

    first = await (await gw.client.post(url, json=event(), headers=headers)).json()
    clock.offset = DAY_S - 60
    within = await (await gw.client.post(url, json=event(), headers=headers)).json()
    clock.offset = DAY_S + 60
    after = await (await gw.client.post(url, json=event(), headers=headers)).json()

    assert within == first
    assert after["eventId"] != first["eventId"]


async def test_an_idempotency_key_reused_for_another_point_is_409(gateway) -> None:
    headers = {"Idempotency-Key": "k1"}
    assert (await gateway.forward(PUR, event(), headers=headers)).status == 202
    resp = await gateway.forward("post-change-password", event(), headers=headers)
    assert resp.status == 409


async def test_an_idempotency_key_reused_with_another_body_is_409_and_stores_nothing(gateway) -> None:
    headers = {"Idempotency-Key": "k1"}
    assert (await gateway.forward(PUR, event("u1"), headers=headers)).status == 202
    resp = await gateway.forward(PUR, event("u2"), headers=headers)
    assert resp.status == 409
    assert "different request body" in (await resp.json())["message"]
    assert db_rows(gateway.settings, "SELECT COUNT(*) FROM events") == [(1,)]


async def test_a_malformed_idempotency_key_is_400(gateway) -> None:
    resp = await gateway.forward(PUR, event(), headers={"Idempotency-Key": "has space"})
    assert resp.status == 400
    assert "Idempotency-Key" in (await resp.json())["message"]


async def test_concurrent_ingests_are_group_committed(make_gateway) -> None:
    gw = await make_gateway(start_workers=False)
    await gw.create_tenant("acme")
    await gw.create_hook(url="http://127.0.0.1:9/", enabled=True)
    db = gw.svc.store.db  # type: ignore[attr-defined]
    before = db.batches

    answers = await asyncio.gather(*(gw.forward(PUR, event(f"u{i}")) for i in range(200)))

    assert [r.status for r in answers] == [202] * 200
    transactions = db.batches - before
    print(f"200 ingests committed in {transactions} transactions")
    assert transactions < 50
    assert db_rows(gw.settings, "SELECT COUNT(*) FROM deliveries") == [(200,)]
