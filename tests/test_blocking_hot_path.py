"""The hot path of blocking invocations: the tenant's hooks come from memory (loaded once per
change, secrets decrypted once), and each invocation is recorded afterwards as `sync`
deliveries with their attempts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver

from gateway.points import sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]
INVOCATIONS = 20


def success(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": data}


def answering(body: dict[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body)

    return respond


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> list[Any]:
    """Wrap `obj.name` (sync or async) so each call is appended to the returned list."""
    calls: list[Any] = []
    original = getattr(obj, name)
    if asyncio.iscoroutinefunction(original):

        async def wrapper_async(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return await original(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapper_async)
    else:

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, wrapper)
    return calls


async def invoke(gateway: Gateway, trigger: str = "credentials-exchange") -> dict[str, Any]:
    resp = await gateway.forward(trigger, sample_event(trigger))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def sync_deliveries(gateway: Gateway, **query: str) -> list[dict[str, Any]]:
    await gateway.invoker.drain()  # records are written after the answer
    resp = await gateway.client.get("/api/v2/deliveries", params=query, headers=gateway.auth())
    assert resp.status == 200, await resp.text()
    return [d for d in await resp.json() if d["kind"] == "sync"]


# --- no database read per invocation ---------------------------------------------------------------


async def test_twenty_invocations_load_the_tenant_once(
    gateway: Gateway, make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = await make_receiver(answering(success({"scope": ["ok"]})))
    hook = await gateway.create_hook(
        name="h", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    await gateway.add_secrets(hook["id"], {"auth0-extension-secret": "s3cret", "X-Api-Key": "k"})
    materials = count_calls(monkeypatch, gateway.svc.store, "hook_materials")
    tenants = count_calls(monkeypatch, gateway.svc.store, "get_tenant")
    decrypts = count_calls(monkeypatch, gateway.svc.cipher, "decrypt")

    answers = await asyncio.gather(*(invoke(gateway) for _ in range(INVOCATIONS)))
    assert answers == [success({"scope": ["ok"]})] * INVOCATIONS
    assert len(receiver.requests) == INVOCATIONS
    assert len(materials) == 1
    assert len(tenants) == 1
    assert len(decrypts) == 3  # the signing secret and the two hook secrets, once each
    assert {r.headers["Authorization"] for r in receiver.requests} == {"Bearer s3cret"}
    assert {r.headers["X-Api-Key"] for r in receiver.requests} == {"k"}

    for _ in range(INVOCATIONS):
        await invoke(gateway)
    assert (len(materials), len(tenants), len(decrypts)) == (1, 1, 3)


async def test_a_hook_change_is_seen_by_the_next_invocation(
    gateway: Gateway, make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = await make_receiver(answering(success({"scope": ["old"]})))
    new = await make_receiver(answering(success({"scope": ["new"]})))
    hook = await gateway.create_hook(name="h", triggerId="credentials-exchange", url=old.url(), enabled=True)
    assert await invoke(gateway) == success({"scope": ["old"]})
    materials = count_calls(monkeypatch, gateway.svc.store, "hook_materials")

    resp = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}", json={"url": new.url()}, headers=gateway.auth()
    )
    assert resp.status == 200
    for _ in range(3):
        assert await invoke(gateway) == success({"scope": ["new"]})
    assert len(materials) == 1

    await gateway.add_secrets(hook["id"], {"X-Api-Key": "after"})
    assert await invoke(gateway) == success({"scope": ["new"]})
    assert new.requests[-1].headers["X-Api-Key"] == "after"
    assert len(materials) == 2

    resp = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gateway.auth()
    )
    assert resp.status == 200
    event_scope = sample_event("credentials-exchange")["scope"]
    assert await invoke(gateway) == success({"scope": event_scope})
    assert len(materials) == 3


async def test_a_tenant_patch_is_seen_by_the_next_invocation(
    gateway: Gateway, make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()

    async def held(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), 5.0)
        return web.json_response(success({"scope": []}))

    receiver = await make_receiver(held)
    await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    release.set()
    await invoke(gateway)
    tenants = count_calls(monkeypatch, gateway.svc.store, "get_tenant")
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme",
        json={"maxInFlight": 1},
        headers={"Authorization": f"Bearer {gateway.operator_token()}"},
    )
    assert resp.status == 200
    release.clear()
    first = asyncio.create_task(gateway.forward("credentials-exchange", sample_event("credentials-exchange")))
    try:
        await receiver.wait_for(2, timeout=5.0)
        second = await gateway.forward("credentials-exchange", sample_event("credentials-exchange"))
        assert second.status == 429
    finally:
        release.set()
    assert (await asyncio.wait_for(first, 5.0)).status == 200
    assert len([t for t in tenants if t == ("acme",)]) == 1


# --- sync delivery records ---------------------------------------------------------------------------


async def test_a_blocking_invocation_is_recorded_as_sync_deliveries(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    first = await make_receiver(answering(success({"scope": ["a"], "https://example.com/x": 1})))
    second = await make_receiver(answering(success({"scope": ["b"]})))
    h1 = await gateway.create_hook(
        name="first", triggerId="credentials-exchange", url=first.url(), enabled=True, order=1
    )
    h2 = await gateway.create_hook(
        name="second", triggerId="credentials-exchange", url=second.url(), enabled=True, order=2
    )
    await invoke(gateway)
    records = await sync_deliveries(gateway)
    assert {d["hookId"] for d in records} == {h1["id"], h2["id"]}
    assert len({d["eventId"] for d in records}) == 1
    for d in records:
        assert d["triggerId"] == "credentials-exchange"
        assert d["status"] == "succeeded"
        assert d["attemptCount"] == 1
        assert d["nextAttemptAt"] is None
        full = await gateway.delivery(d["id"])
        (attempt,) = full["attempts"]
        assert attempt["number"] == 1
        assert attempt["statusCode"] == 200
        assert attempt["error"] is None
        assert attempt["durationMs"] >= 0
    d1 = next(d for d in records if d["hookId"] == h1["id"])
    body = (await gateway.delivery(d1["id"]))["attempts"][0]["responseBody"]
    assert "https://example.com/x" in body
    # The receiver saw the delivery's id as the message id.
    assert first.requests[0].headers["webhook-id"] == d1["id"]
    only_h2 = await sync_deliveries(gateway, hookId=h2["id"])
    assert [d["hookId"] for d in only_h2] == [h2["id"]]


async def test_a_retried_invocation_records_every_attempt(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    async def flaky(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        if state["n"] == 1:
            return web.Response(status=503, text="busy")
        return web.json_response(success({"scope": []}))

    receiver = await make_receiver(flaky)
    await gateway.create_hook(
        name="flaky", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    await invoke(gateway)
    (record,) = await sync_deliveries(gateway)
    assert record["status"] == "succeeded"
    assert record["attemptCount"] == 2
    attempts = (await gateway.delivery(record["id"]))["attempts"]
    assert [(a["number"], a["statusCode"]) for a in attempts] == [(1, 503), (2, 200)]
    assert "503" in attempts[0]["error"]
    assert attempts[0]["responseBody"] == "busy"


async def test_failed_and_skipped_hooks_are_recorded_as_failed(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    dead = await gateway.create_hook(
        name="dead",
        triggerId="pre-user-registration",
        url=dead_url,
        enabled=True,
        failurePolicy="skip",
        order=1,
    )
    bad_receiver = await make_receiver(answering(success({"user": {"app_metadata": {"blocked": True}}})))
    bad = await gateway.create_hook(
        name="bad", triggerId="pre-user-registration", url=bad_receiver.url(), enabled=True, order=2
    )
    answer = await invoke(gateway, "pre-user-registration")
    assert answer["data"]["name"] == "ServerError"
    records = {d["hookId"]: d for d in await sync_deliveries(gateway, status="failed")}
    assert set(records) == {dead["id"], bad["id"]}
    assert "connection failed" in records[dead["id"]]["lastError"]
    assert records[dead["id"]]["attemptCount"] >= 2  # a refused connection is retried
    assert "blocked" in records[bad["id"]]["lastError"]
    bad_attempts = (await gateway.delivery(records[bad["id"]]["id"]))["attempts"]
    assert bad_attempts[-1]["statusCode"] == 200
    assert "blocked" in bad_attempts[-1]["error"]


async def test_hooks_after_a_deny_are_not_recorded(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    deny = await make_receiver(
        answering({"status": "error", "data": {"name": "PreUserRegistrationError", "message": "no"}})
    )
    later = await make_receiver(answering(success({})))
    h1 = await gateway.create_hook(
        name="deny", triggerId="pre-user-registration", url=deny.url(), enabled=True, order=1
    )
    await gateway.create_hook(
        name="later", triggerId="pre-user-registration", url=later.url(), enabled=True, order=2
    )
    await invoke(gateway, "pre-user-registration")
    records = await sync_deliveries(gateway)
    assert [d["hookId"] for d in records] == [h1["id"]]
    # The hook answered: the delivery succeeded even though its answer denied the signup.
    assert records[0]["status"] == "succeeded"
    assert records[0]["lastError"] is None
    (attempt,) = (await gateway.delivery(records[0]["id"]))["attempts"]
    assert attempt["error"] == "receiver answered an error: PreUserRegistrationError: no"
    assert later.requests == []


async def test_an_invocation_without_hooks_records_nothing(gateway: Gateway) -> None:
    await invoke(gateway, "pre-user-registration")
    assert await sync_deliveries(gateway) == []


async def test_the_answer_does_not_wait_for_the_record(
    gateway: Gateway, make_receiver: MakeReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = await make_receiver(answering(success({"scope": ["fast"]})))
    await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    store = gateway.svc.store
    original = store.record_sync
    unblock = asyncio.Event()

    async def slow_record(*args: Any, **kwargs: Any) -> None:
        await asyncio.wait_for(unblock.wait(), 5.0)
        await original(*args, **kwargs)

    monkeypatch.setattr(store, "record_sync", slow_record)
    assert await asyncio.wait_for(invoke(gateway), 5.0) == success({"scope": ["fast"]})
    resp = await gateway.client.get("/api/v2/deliveries", headers=gateway.auth())
    assert await resp.json() == []
    unblock.set()
    (record,) = await sync_deliveries(gateway)
    assert record["status"] == "succeeded"


async def test_a_sync_delivery_cannot_be_retried(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(answering(success({"scope": []})))
    await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    await invoke(gateway)
    (record,) = await sync_deliveries(gateway)
    resp = await gateway.client.post(f"/api/v2/deliveries/{record['id']}/retry", headers=gateway.auth())
    assert resp.status == 400
    assert len(receiver.requests) == 1
