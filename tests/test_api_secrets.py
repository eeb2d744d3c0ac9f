"""`/api/v2/hooks/{id}/secrets` and `/signing-secret`: write-only credentials, masked answers,
encryption at rest, and no secret value in any answer or log line."""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import backends
import pytest
from conftest import Gateway, Receiver

from gateway.api.secrets import MASK

MakeReceiver = Callable[..., Awaitable[Receiver]]
SECRETS = "/api/v2/hooks/{id}/secrets"


async def secrets_call(gw: Gateway, method: str, hook_id: str, body: Any = None, tenant: str = "acme") -> Any:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    return await gw.client.request(method, SECRETS.format(id=hook_id), headers=gw.auth(tenant), **kwargs)


async def listed(gw: Gateway, hook_id: str) -> dict[str, str]:
    resp = await secrets_call(gw, "GET", hook_id)
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


@pytest.fixture
async def hook(gateway: Gateway) -> dict[str, Any]:
    return await gateway.create_hook()


# -- add, list, update, delete ------------------------------------------------------------


async def test_added_secrets_are_listed_masked(gateway: Gateway, hook: dict[str, Any]) -> None:
    resp = await secrets_call(
        gateway, "POST", hook["id"], {"X-Api-Key": "k-123", "auth0-extension-secret": "t"}
    )
    assert resp.status == 201
    answer = await resp.json()
    assert answer == {"X-Api-Key": MASK, "auth0-extension-secret": MASK}
    assert await listed(gateway, hook["id"]) == {
        "X-Api-Key": "_VALUE_NOT_SHOWN_",
        "auth0-extension-secret": MASK,
    }


async def test_a_hook_without_secrets_lists_an_empty_object(gateway: Gateway, hook: dict[str, Any]) -> None:
    assert await listed(gateway, hook["id"]) == {}


async def test_adding_an_existing_name_is_409_and_changes_nothing(
    gateway: Gateway, hook: dict[str, Any]
) -> None:
    await gateway.add_secrets(hook["id"], {"X-Api-Key": "one"})
    resp = await secrets_call(gateway, "POST", hook["id"], {"x-api-key": "two", "Other": "x"})
    assert resp.status == 409
    assert (await resp.json())["statusCode"] == 409
    assert await listed(gateway, hook["id"]) == {"X-Api-Key": MASK}


async def test_patch_updates_existing_names(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(name="live", url=rx.url(), enabled=True)
    await gateway.add_secrets(hook["id"], {"X-Api-Key": "old-value"})
    resp = await secrets_call(gateway, "PATCH", hook["id"], {"X-Api-Key": "new-value"})
    assert resp.status == 200
    assert await resp.json() == {"X-Api-Key": MASK}
    # The receiver gets the new value.
    sent = await gateway.forward(
        "post-user-registration",
        {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert sent.status == 202
    (received,) = await rx.wait_for(1)
    assert received.headers["X-Api-Key"] == "new-value"


async def test_patch_names_are_case_insensitive_like_headers(gateway: Gateway, hook: dict[str, Any]) -> None:
    await gateway.add_secrets(hook["id"], {"X-Api-Key": "one"})
    resp = await secrets_call(gateway, "PATCH", hook["id"], {"x-api-key": "two"})
    assert resp.status == 200
    assert await listed(gateway, hook["id"]) == {"X-Api-Key": MASK}
    resp = await secrets_call(gateway, "DELETE", hook["id"], ["X-API-KEY"])
    assert resp.status == 204
    assert await listed(gateway, hook["id"]) == {}


async def test_patch_of_a_missing_name_is_404_and_changes_nothing(
    gateway: Gateway, hook: dict[str, Any]
) -> None:
    await gateway.add_secrets(hook["id"], {"A": "1"})
    resp = await secrets_call(gateway, "PATCH", hook["id"], {"A": "2", "Missing": "x"})
    assert resp.status == 404
    body = await resp.json()
    assert body["statusCode"] == 404 and "Missing" in body["message"]
    assert await listed(gateway, hook["id"]) == {"A": MASK}


async def test_delete_takes_an_array_of_names_and_answers_204(gateway: Gateway, hook: dict[str, Any]) -> None:
    await gateway.add_secrets(hook["id"], {"A": "1", "B": "2", "C": "3"})
    resp = await secrets_call(gateway, "DELETE", hook["id"], ["A", "C"])
    assert resp.status == 204
    assert await listed(gateway, hook["id"]) == {"B": MASK}
    resp = await secrets_call(gateway, "DELETE", hook["id"], ["A"])
    assert resp.status == 404


@pytest.mark.parametrize("body", [{"A": "1"}, [], [1], "A", None])
async def test_delete_refuses_anything_but_an_array_of_names(
    gateway: Gateway, hook: dict[str, Any], body: Any
) -> None:
    await gateway.add_secrets(hook["id"], {"A": "1"})
    resp = await secrets_call(gateway, "DELETE", hook["id"], body)
    assert resp.status == 400
    assert (await resp.json())["statusCode"] == 400
    assert await listed(gateway, hook["id"]) == {"A": MASK}


async def test_at_most_20_secrets_per_hook(gateway: Gateway, hook: dict[str, Any]) -> None:
    await gateway.add_secrets(hook["id"], {f"S{i}": f"v{i}" for i in range(20)})
    resp = await secrets_call(gateway, "POST", hook["id"], {"S20": "v"})
    assert resp.status == 400
    assert "20" in (await resp.json())["message"]
    assert len(await listed(gateway, hook["id"])) == 20
    resp = await secrets_call(gateway, "POST", hook["id"], {f"T{i}": "v" for i in range(21)})
    assert resp.status == 400


@pytest.mark.parametrize("name", ["has space", "colon:", "semi;", 'quote"', "", "(paren)", "ü", "x" * 65])
async def test_secret_names_must_be_http_header_tokens(
    gateway: Gateway, hook: dict[str, Any], name: str
) -> None:
    resp = await secrets_call(gateway, "POST", hook["id"], {name: "v"})
    assert resp.status == 400
    assert (await resp.json())["statusCode"] == 400


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "content-type",
        "Content-Length",
        "webhook-id",
        "Webhook-Signature",
        "webhook-timestamp",
        "Transfer-Encoding",
        "Authorization",
        "Connection",
        "X-Forwarded-For",
    ],
)
async def test_reserved_header_names_are_refused(gateway: Gateway, hook: dict[str, Any], name: str) -> None:
    resp = await secrets_call(gateway, "POST", hook["id"], {name: "v"})
    assert resp.status == 400
    assert "reserved" in (await resp.json())["message"]


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Evil: 1", "line\nbreak", "cr\r", "nul\x00", "", " padded", "tab\t", "del\x7f", 5, None, ["x"]],
)
async def test_secret_values_must_be_safe_header_values(
    gateway: Gateway, hook: dict[str, Any], value: Any
) -> None:
    for method in ("POST", "PATCH"):
        resp = await secrets_call(gateway, method, hook["id"], {"X-Key": value})
        assert resp.status == 400, method
        assert (await resp.json())["statusCode"] == 400


@pytest.mark.parametrize("body", [[], {}, "text", 3, [{"A": "1"}]])
async def test_add_refuses_anything_but_an_object_of_names(
    gateway: Gateway, hook: dict[str, Any], body: Any
) -> None:
    resp = await secrets_call(gateway, "POST", hook["id"], body)
    assert resp.status == 400


async def test_secrets_of_an_unknown_hook_are_404(gateway: Gateway) -> None:
    for method, body in (("GET", None), ("POST", {"A": "1"}), ("PATCH", {"A": "1"}), ("DELETE", ["A"])):
        resp = await secrets_call(gateway, method, "hk_unknown", body)
        assert resp.status == 404, method


# -- never shown, encrypted at rest -------------------------------------------------------

SECRET_VALUES = ("plain-secret-value-123", "bearer-token-value-456", "rotated-secret-value-789")


async def test_secret_values_never_appear_in_answers_or_logs(
    gateway: Gateway, make_receiver: MakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rx = await make_receiver()
    hook = await gateway.create_hook(name="live", url=rx.url(), enabled=True)
    answers: list[str] = []

    async def call(method: str, path: str, body: Any = None) -> None:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        resp = await gateway.client.request(method, path, headers=gateway.auth(), **kwargs)
        answers.append(await resp.text())
        answers.append(str(dict(resp.headers)))

    path = SECRETS.format(id=hook["id"])
    await call("POST", path, {"X-Api-Key": SECRET_VALUES[0], "auth0-extension-secret": SECRET_VALUES[1]})
    await call("GET", path)
    await call("PATCH", path, {"X-Api-Key": SECRET_VALUES[2]})
    await call("GET", f"/api/v2/hooks/{hook['id']}")
    await call("GET", "/api/v2/hooks")
    sent = await gateway.forward(
        "post-user-registration",
        {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    delivery_id = (await sent.json())["deliveries"][0]["deliveryId"]
    (received,) = await rx.wait_for(1)
    assert received.headers["X-Api-Key"] == SECRET_VALUES[2]
    assert received.headers["Authorization"] == f"Bearer {SECRET_VALUES[1]}"
    await gateway.wait_delivery(delivery_id, status="succeeded")
    await call("GET", f"/api/v2/deliveries/{delivery_id}")
    await call("GET", "/api/v2/deliveries")
    await call("POST", f"/api/v2/hooks/{hook['id']}/test")
    await call("DELETE", path, ["X-Api-Key"])
    logs = caplog.text + "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for value in SECRET_VALUES:
        for text in answers:
            assert value not in text
        assert value not in logs


async def test_secret_values_are_encrypted_at_rest(gateway: Gateway, hook: dict[str, Any]) -> None:
    await gateway.add_secrets(hook["id"], {"X-Api-Key": SECRET_VALUES[0]})
    signing = await gateway.signing_secret(hook["id"])
    url = gateway.settings.database.url
    key_part = signing.removeprefix("whsec_")
    if url.startswith("sqlite://"):
        db = Path(url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))  # the file and its WAL
        for needle in (SECRET_VALUES[0], key_part, signing):
            assert needle.encode() not in raw
    ((stored,),) = backends.db_rows(url, "SELECT value FROM hook_secrets")
    signing_rows = [r[0] for r in backends.db_rows(url, "SELECT value FROM signing_secrets")]
    assert stored.startswith("v1:") and SECRET_VALUES[0] not in stored
    assert signing_rows and all(v.startswith("v1:") and key_part not in v for v in signing_rows)


# -- signing secret -----------------------------------------------------------------------


def _key_bytes(secret: str) -> bytes:
    assert secret.startswith("whsec_")
    return base64.b64decode(secret.removeprefix("whsec_"), validate=True)


async def test_signing_secret_is_whsec_and_base64_of_32_bytes(gateway: Gateway, hook: dict[str, Any]) -> None:
    resp = await gateway.client.get(f"/api/v2/hooks/{hook['id']}/signing-secret", headers=gateway.auth())
    assert resp.status == 200
    body = await resp.json()
    assert len(_key_bytes(body["secret"])) == 32
    assert body["previous"] == []
    other = await gateway.create_hook(name="other")
    assert await gateway.signing_secret(other["id"]) != body["secret"]


async def test_rotation_gives_a_new_secret_and_lists_the_previous_with_its_expiry(
    gateway: Gateway, hook: dict[str, Any]
) -> None:
    before = await gateway.signing_secret(hook["id"])
    resp = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate", headers=gateway.auth()
    )
    assert resp.status == 200
    rotated = await resp.json()
    assert rotated["secret"] != before
    assert len(_key_bytes(rotated["secret"])) == 32
    resp = await gateway.client.get(f"/api/v2/hooks/{hook['id']}/signing-secret", headers=gateway.auth())
    body = await resp.json()
    assert body["secret"] == rotated["secret"]
    (previous,) = body["previous"]
    assert set(previous) == {"scheme", "createdAt", "expiresAt"} and previous["scheme"] == "v1"
    assert previous["expiresAt"] > body["createdAt"]  # ISO-8601 UTC strings sort as times
    assert before not in await resp.text()  # the old key is not shown again


async def test_rotation_with_no_grace_drops_the_previous_secret(
    gateway: Gateway, hook: dict[str, Any]
) -> None:
    resp = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate",
        json={"gracePeriodSeconds": 0},
        headers=gateway.auth(),
    )
    assert resp.status == 200
    assert (await resp.json())["previous"] == []


@pytest.mark.parametrize(
    "body", [{"gracePeriodSeconds": -1}, {"gracePeriodSeconds": "1h"}, {"other": 1}, [1]]
)
async def test_rotation_refuses_a_bad_body(gateway: Gateway, hook: dict[str, Any], body: Any) -> None:
    before = await gateway.signing_secret(hook["id"])
    resp = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate", json=body, headers=gateway.auth()
    )
    assert resp.status == 400
    assert await gateway.signing_secret(hook["id"]) == before


async def test_signing_secret_of_an_unknown_hook_is_404(gateway: Gateway) -> None:
    for method, path in (("GET", "signing-secret"), ("POST", "signing-secret/rotate")):
        resp = await gateway.client.request(method, f"/api/v2/hooks/hk_nope/{path}", headers=gateway.auth())
        assert resp.status == 404
