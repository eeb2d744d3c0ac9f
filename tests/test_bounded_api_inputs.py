"""Numbers the APIs take are bounded, and bodies are strict JSON: a value too large for the
database, out of range, of the wrong type, `NaN`/`Infinity`, or nested too deep is a JSON
`400` that names the field or parameter, never a `500` and never stored or forwarded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import Gateway, Receiver

from gateway.points import sample_event

HUGE_VALUES = [10**30, -(10**30), 2**63, 10**400, 1e308, -1e308, True, False]
HUGE_IDS = ["1e30-int", "-1e30-int", "2**63", "1e400-int", "1e308", "-1e308", "true", "false"]


async def assert_400_naming(resp: Any, name: str) -> str:
    text = await resp.text()
    assert resp.status == 400, text
    assert resp.content_type == "application/json"
    body = json.loads(text)
    assert set(body) == {"statusCode", "error", "message"} and body["statusCode"] == 400
    assert name in body["message"], body["message"]
    return str(body["message"])


async def post_raw(gw: Gateway, method: str, path: str, data: bytes, headers: dict[str, str]) -> Any:
    return await gw.client.request(
        method, path, data=data, headers={**headers, "Content-Type": "application/json"}
    )


@pytest.mark.parametrize("value", HUGE_VALUES, ids=HUGE_IDS)
@pytest.mark.parametrize("field", ["order", "timeoutMs", "maxConcurrency", "rateLimitPerSecond"])
async def test_a_hook_number_out_of_range_is_400_naming_it(gateway: Gateway, field: str, value: Any) -> None:
    if field == "rateLimitPerSecond" and isinstance(value, bool):
        value = 1e308  # booleans are covered by the integer fields
    body = {"name": "h", "triggerId": "credentials-exchange", "url": "http://127.0.0.1:9/", field: value}
    resp = await post_raw(gateway, "POST", "/api/v2/hooks", json.dumps(body).encode(), gateway.auth())
    await assert_400_naming(resp, repr(field))
    hook = await gateway.create_hook(name="ok")
    resp = await post_raw(
        gateway, "PATCH", f"/api/v2/hooks/{hook['id']}", json.dumps({field: value}).encode(), gateway.auth()
    )
    await assert_400_naming(resp, repr(field))


@pytest.mark.parametrize("value", HUGE_VALUES, ids=HUGE_IDS)
async def test_a_tenant_number_out_of_range_is_400_naming_it(gateway: Gateway, value: Any) -> None:
    operator = {"Authorization": f"Bearer {gateway.operator_token()}"}
    for body, name in (
        ({"maxInFlight": value}, "'maxInFlight'"),
        ({"deadlines": {"credentials-exchange": value}}, "deadlines.credentials-exchange"),
    ):
        resp = await post_raw(gateway, "PATCH", "/api/v2/tenants/acme", json.dumps(body).encode(), operator)
        await assert_400_naming(resp, name)
        resp = await post_raw(
            gateway, "POST", "/api/v2/tenants", json.dumps({"id": "t2", **body}).encode(), operator
        )
        await assert_400_naming(resp, name)


@pytest.mark.parametrize("value", HUGE_VALUES, ids=HUGE_IDS)
async def test_a_grace_period_out_of_range_is_400_naming_it(gateway: Gateway, value: Any) -> None:
    hook = await gateway.create_hook()
    resp = await post_raw(
        gateway,
        "POST",
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate",
        json.dumps({"gracePeriodSeconds": value}).encode(),
        gateway.auth(),
    )
    await assert_400_naming(resp, "gracePeriodSeconds")


@pytest.mark.parametrize(
    "value",
    [*HUGE_VALUES, -1, "1e400", "nan", "inf", "-1", "99999999999999999999999", "0001-01-01T00:00:00+23:59"],
    ids=[*HUGE_IDS, "-1", "1e400-text", "nan", "inf", "-1-text", "huge-text", "year-1"],
)
@pytest.mark.parametrize("field", ["since", "until"])
async def test_a_replay_time_out_of_range_is_400_naming_it(gateway: Gateway, field: str, value: Any) -> None:
    hook = await gateway.create_hook()
    body = {"since": 0, field: value}
    resp = await post_raw(
        gateway, "POST", f"/api/v2/hooks/{hook['id']}/replay", json.dumps(body).encode(), gateway.auth()
    )
    await assert_400_naming(resp, repr(field))


@pytest.mark.parametrize(
    "query",
    [
        "from=1e400", "to=nan", "from=inf", "from=-1", "to=99999999999999999999999", "from=-1e308",
        "to=0001-01-01T00:00:00%2B23:59", "page=1000000000000000000000000000000", "page=%D9%A1",
        "per_page=-1000000000000000000000000000000", "page=1_0", "page=%201",
    ],
)  # fmt: skip
async def test_a_delivery_query_number_out_of_range_is_400_naming_it(gateway: Gateway, query: str) -> None:
    resp = await gateway.client.get(f"/api/v2/deliveries?{query}", headers=gateway.auth())
    await assert_400_naming(resp, repr(query.split("=")[0]))


@pytest.mark.parametrize("path", ["/api/v2/hooks", "/api/v2/tenants"])
@pytest.mark.parametrize(
    "query", ["page=1000000000000000000000000000000", "per_page=9223372036854775808", "page=%D9%A1"]
)
async def test_a_page_out_of_range_is_400_naming_it(gateway: Gateway, path: str, query: str) -> None:
    headers = {"Authorization": f"Bearer {gateway.operator_token()}"} if "tenants" in path else gateway.auth()
    resp = await gateway.client.get(f"{path}?{query}", headers=headers)
    await assert_400_naming(resp, repr(query.split("=")[0]))


# --- strict JSON bodies ----------------------------------------------------------------------------

NOT_STRICT = {
    "nan": b"NaN",
    "infinity": b"Infinity",
    "minus-infinity": b"-Infinity",
    "1e400": b"1e400",
    "huge-integer": b"100000000000000000000000000000",
    "beyond-2**53": b"9007199254740993",
    "deep": b"[" * 100 + b"]" * 100,
}


def event_with(trigger: str, extra: bytes) -> bytes:
    """The point's sample event with one extra member whose value is `extra`, as raw JSON."""
    body = json.dumps(sample_event(trigger)).encode()
    return body[:-1] + b', "extra": ' + extra + b"}"


@pytest.mark.parametrize("extra", list(NOT_STRICT.values()), ids=list(NOT_STRICT))
@pytest.mark.parametrize("trigger", ["credentials-exchange", "post-user-registration"])
async def test_an_event_that_is_not_strict_json_is_400_and_not_forwarded(
    gateway: Gateway, make_receiver: Any, trigger: str, extra: bytes
) -> None:
    receiver: Receiver = await make_receiver()
    await gateway.create_hook(triggerId=trigger, url=receiver.url(), enabled=True)
    resp = await post_raw(
        gateway,
        "POST",
        f"/v1/tenants/acme/triggers/{trigger}",
        event_with(trigger, extra),
        gateway.auth("acme", ("forward:events",)),
    )
    message = await assert_400_naming(resp, "JSON")
    if extra != NOT_STRICT["deep"]:
        assert "'extra'" in message  # where the refused number is
    resp = await gateway.client.get("/api/v2/deliveries", headers=gateway.auth())
    assert await resp.json() == []
    assert receiver.requests == []


async def test_the_largest_safe_integers_pass_through(gateway: Gateway, make_receiver: Any) -> None:
    receiver: Receiver = await make_receiver()
    await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    raw = event_with("credentials-exchange", b"[9007199254740991, -9007199254740991, 1e308]")
    resp = await post_raw(
        gateway,
        "POST",
        "/v1/tenants/acme/triggers/credentials-exchange",
        raw,
        gateway.auth("acme", ("forward:events",)),
    )
    assert resp.status == 200, await resp.text()
    assert receiver.requests[0].body == raw


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 200_000,
        b'{"name": ' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"name": "x", "order": NaN}',
        b'{"name": "x", "order": 1e400}',
        b'{"name": "x", "order": 100000000000000000000000000000}',
    ],
    ids=["256k-of-brackets", "deep", "nan", "1e400", "huge-integer"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v2/hooks"),
        ("POST", "/api/v2/tenants"),
        ("POST", "/v1/tenants/acme/triggers/send-phone-message"),
    ],
)
async def test_a_body_that_is_not_strict_json_is_a_clean_400(
    gateway: Gateway, method: str, path: str, data: bytes
) -> None:
    if "/tenants" in path and "/v1/" not in path:
        headers = {"Authorization": f"Bearer {gateway.operator_token()}"}
    else:
        headers = gateway.auth()
    resp = await post_raw(gateway, method, path, data, headers)
    await assert_400_naming(resp, "JSON")
