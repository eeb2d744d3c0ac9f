"""Blocking points and time: the invocation's deadline, retries inside it, failure policies,
and the cap on invocations in flight per tenant."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from conftest import Gateway, Received, Receiver

from gateway.points import sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]
Responder = Callable[..., Awaitable[web.StreamResponse]]
OPERATOR_WAIT_S = 5.0  # bound on every wait of these tests


def success(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": data}


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connections are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def set_tenant(gateway: Gateway, **fields: Any) -> None:
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme", json=fields, headers={"Authorization": f"Bearer {gateway.operator_token()}"}
    )
    assert resp.status == 200, await resp.text()


async def invoke(gateway: Gateway, trigger: str = "credentials-exchange") -> dict[str, Any]:
    resp = await gateway.forward(trigger, sample_event(trigger))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def answering(body: dict[str, Any]) -> Responder:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body)

    return respond


# --- failure policy on a dead receiver --------------------------------------------------------


async def test_a_dead_receiver_with_policy_fail_answers_a_server_error(gateway: Gateway) -> None:
    await gateway.create_hook(
        name="dead", triggerId="credentials-exchange", url=closed_port_url(), enabled=True
    )
    answer = await invoke(gateway)
    assert answer["status"] == "error"
    assert answer["data"]["name"] == "ServerError"
    assert "'dead'" in answer["data"]["message"]
    assert "connection failed" in answer["data"]["message"]


async def test_a_dead_receiver_with_policy_skip_is_as_if_absent(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await gateway.create_hook(
        name="dead",
        triggerId="credentials-exchange",
        url=closed_port_url(),
        enabled=True,
        failurePolicy="skip",
        order=1,
    )
    alive = await make_receiver(answering(success({"scope": ["alive"], "https://example.com/a": 1})))
    await gateway.create_hook(
        name="alive", triggerId="credentials-exchange", url=alive.url(), enabled=True, order=2
    )
    assert await invoke(gateway) == success({"scope": ["alive"], "https://example.com/a": 1})
    # The next hook sees the request's own scope: the skipped hook changed nothing.
    assert alive.requests[0].json()["scope"] == sample_event("credentials-exchange")["scope"]


async def test_a_lone_skipped_hook_gives_the_neutral_answer(gateway: Gateway) -> None:
    await gateway.create_hook(
        name="dead",
        triggerId="pre-user-registration",
        url=closed_port_url(),
        enabled=True,
        failurePolicy="skip",
    )
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {}, "app_metadata": {}}}
    )


async def test_a_skipped_send_phone_message_hook_fails_the_send(gateway: Gateway) -> None:
    await gateway.create_hook(
        name="sms", triggerId="send-phone-message", url=closed_port_url(), enabled=True, failurePolicy="skip"
    )
    answer = await invoke(gateway, "send-phone-message")
    assert answer["status"] == "error"
    assert answer["data"]["name"] == "SendPhoneMessageError"


async def test_a_malformed_answer_of_a_skip_hook_is_skipped(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    bad = await make_receiver(answering(success({"scope": "not-a-list"})))
    await gateway.create_hook(
        name="bad", triggerId="credentials-exchange", url=bad.url(), enabled=True, failurePolicy="skip"
    )
    event_scope = sample_event("credentials-exchange")["scope"]
    assert await invoke(gateway) == success({"scope": event_scope})


async def test_a_dead_skip_hook_leaves_time_for_the_next_hooks(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    """Retries of a refused connection are bounded: they do not eat the whole deadline."""
    await set_tenant(gateway, deadlines={"credentials-exchange": 60_000})
    await gateway.create_hook(
        name="dead",
        triggerId="credentials-exchange",
        url=closed_port_url(),
        enabled=True,
        failurePolicy="skip",
        order=1,
    )
    alive = await make_receiver(answering(success({"scope": ["alive"]})))
    await gateway.create_hook(
        name="alive", triggerId="credentials-exchange", url=alive.url(), enabled=True, order=2
    )
    answer = await asyncio.wait_for(invoke(gateway), OPERATOR_WAIT_S)
    assert answer == success({"scope": ["alive"]})


# --- the deadline -------------------------------------------------------------------------------


def held(release: asyncio.Event, hold_s: float, answer: dict[str, Any]) -> Responder:
    """Waits for `release` (at most `hold_s`), then answers; records whether it waited in full."""

    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        state.setdefault("entered", asyncio.Event()).set()
        try:
            await asyncio.wait_for(release.wait(), hold_s)
        except TimeoutError:
            state["slept_in_full"] = True
        return web.json_response(answer)

    return respond


async def test_the_tenant_deadline_cuts_a_slow_receiver(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await set_tenant(gateway, deadlines={"credentials-exchange": 300})
    release = asyncio.Event()
    slow = await make_receiver(held(release, 5.0, success({"scope": ["late"]})))
    await gateway.create_hook(
        name="slow", triggerId="credentials-exchange", url=slow.url(), enabled=True, timeoutMs=10_000
    )
    try:
        answer = await asyncio.wait_for(invoke(gateway), 4.0)
        assert answer["status"] == "error"
        assert answer["data"]["name"] == "ServerError"
        assert "'slow'" in answer["data"]["message"]
        assert "deadline" in answer["data"]["message"]
        assert "slept_in_full" not in slow.state
    finally:
        release.set()


async def test_the_hook_timeout_cuts_a_slow_receiver_then_the_policy_decides(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    release = asyncio.Event()
    slow = await make_receiver(held(release, 5.0, success({"scope": ["late"]})))
    await gateway.create_hook(
        name="slow",
        triggerId="credentials-exchange",
        url=slow.url(),
        enabled=True,
        timeoutMs=200,
        failurePolicy="skip",
        order=1,
    )
    fast = await make_receiver(answering(success({"scope": ["fast"]})))
    await gateway.create_hook(
        name="fast", triggerId="credentials-exchange", url=fast.url(), enabled=True, order=2
    )
    try:
        assert await asyncio.wait_for(invoke(gateway), 4.0) == success({"scope": ["fast"]})
        assert "slept_in_full" not in slow.state
    finally:
        release.set()


async def test_a_tenant_deadline_applies_to_its_point_only(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await set_tenant(gateway, deadlines={"pre-user-registration": 200})
    release = asyncio.Event()
    slow = await make_receiver(held(release, 5.0, success({"scope": ["slow but in time"]})))
    await gateway.create_hook(name="slow", triggerId="credentials-exchange", url=slow.url(), enabled=True)

    async def answer_soon() -> None:
        await slow.wait_for(1, timeout=OPERATOR_WAIT_S)
        await asyncio.sleep(0.4)  # past the other point's 200 ms deadline
        release.set()

    helper = asyncio.create_task(answer_soon())
    try:
        assert await asyncio.wait_for(invoke(gateway), OPERATOR_WAIT_S) == success(
            {"scope": ["slow but in time"]}
        )
    finally:
        release.set()
        await helper


async def test_tenant_deadlines_are_validated(gateway: Gateway) -> None:
    headers = {"Authorization": f"Bearer {gateway.operator_token()}"}
    for bad in (
        {"post-user-registration": 1000},
        {"credentials-exchange": 5},
        {"credentials-exchange": "1s"},
        {"nope": 1000},
        [],
    ):
        resp = await gateway.client.patch("/api/v2/tenants/acme", json={"deadlines": bad}, headers=headers)
        assert resp.status == 400, bad


# --- retries inside the deadline -----------------------------------------------------------------


def failing_then(
    statuses: list[int], answer: dict[str, Any], headers: dict[str, str] | None = None
) -> Responder:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        n = state.setdefault("calls", 0)
        state["calls"] = n + 1
        if n < len(statuses):
            return web.json_response({"error": "busy"}, status=statuses[n], headers=headers)
        return web.json_response(answer)

    return respond


async def test_a_503_is_retried_and_the_success_is_answered(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(failing_then([503], success({"scope": ["second try"]})))
    await gateway.create_hook(
        name="flaky", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    assert await invoke(gateway) == success({"scope": ["second try"]})
    assert len(receiver.requests) == 2
    # A retry is the same message: the same webhook-id, signed again.
    assert receiver.requests[0].headers["webhook-id"] == receiver.requests[1].headers["webhook-id"]


async def test_a_429_whose_retry_after_fits_is_retried(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(
        failing_then([429], success({"scope": ["after 429"]}), {"Retry-After": "0"})
    )
    await gateway.create_hook(
        name="limited", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    assert await invoke(gateway) == success({"scope": ["after 429"]})
    assert len(receiver.requests) == 2


async def test_a_429_whose_retry_after_does_not_fit_fails_at_once(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(failing_then([429], success({"scope": []}), {"Retry-After": "120"}))
    await gateway.create_hook(
        name="limited", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    answer = await asyncio.wait_for(invoke(gateway), OPERATOR_WAIT_S)
    assert answer["data"]["name"] == "ServerError"
    assert "429" in answer["data"]["message"]
    assert len(receiver.requests) == 1


async def test_a_4xx_is_not_retried(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(failing_then([400], success({"scope": []})))
    await gateway.create_hook(
        name="picky", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    answer = await invoke(gateway)
    assert answer["data"]["name"] == "ServerError"
    assert "400" in answer["data"]["message"]
    assert len(receiver.requests) == 1


async def test_an_error_envelope_is_not_retried(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(answering({"status": "error", "data": {"name": "Error", "message": "no"}}))
    await gateway.create_hook(
        name="erring", triggerId="credentials-exchange", url=receiver.url(), enabled=True
    )
    assert (await invoke(gateway))["data"]["name"] == "ServerError"
    assert len(receiver.requests) == 1


async def test_5xx_retries_stop_at_the_deadline(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await set_tenant(gateway, deadlines={"credentials-exchange": 400})
    receiver = await make_receiver(failing_then([503] * 1000, success({"scope": []})))
    await gateway.create_hook(name="down", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    answer = await asyncio.wait_for(invoke(gateway), OPERATOR_WAIT_S)
    assert answer["data"]["name"] == "ServerError"
    assert "503" in answer["data"]["message"]
    assert len(receiver.requests) >= 2


# --- invocations in flight per tenant --------------------------------------------------------------


async def test_past_max_in_flight_an_invocation_gets_429(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await set_tenant(gateway, maxInFlight=2)
    release = asyncio.Event()
    receiver = await make_receiver(held(release, OPERATOR_WAIT_S, success({"scope": ["held"]})))
    await gateway.create_hook(name="held", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    event = sample_event("credentials-exchange")
    first = asyncio.create_task(gateway.forward("credentials-exchange", event))
    second = asyncio.create_task(gateway.forward("credentials-exchange", event))
    try:
        await receiver.wait_for(2, timeout=OPERATOR_WAIT_S)
        third = await gateway.forward("credentials-exchange", event)
        assert third.status == 429
        assert "Retry-After" in third.headers
        assert (await third.json())["statusCode"] == 429
        # Another tenant is not held back by acme's invocations.
        await gateway.create_tenant("other")
        other = await gateway.forward("credentials-exchange", event, tenant="other")
        assert other.status == 200
    finally:
        release.set()
    for task in (first, second):
        resp = await asyncio.wait_for(task, OPERATOR_WAIT_S)
        assert resp.status == 200
        assert await resp.json() == success({"scope": ["held"]})
    # Once they are answered there is room again.
    assert (await gateway.forward("credentials-exchange", event)).status == 200
    assert gateway.invoker.in_flight("acme") == 0


async def test_the_in_flight_default_comes_from_settings(
    make_gateway: Callable[..., Awaitable[Gateway]],
    make_settings: Callable[..., Any],
    make_receiver: MakeReceiver,
) -> None:
    gateway = await make_gateway(make_settings(sync={"max_in_flight": 1}))
    await gateway.create_tenant("acme")
    release = asyncio.Event()
    receiver = await make_receiver(held(release, OPERATOR_WAIT_S, success({"scope": []})))
    await gateway.create_hook(name="held", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    event = sample_event("credentials-exchange")
    first = asyncio.create_task(gateway.forward("credentials-exchange", event))
    try:
        await receiver.wait_for(1, timeout=OPERATOR_WAIT_S)
        assert (await gateway.forward("credentials-exchange", event)).status == 429
    finally:
        release.set()
    assert (await asyncio.wait_for(first, OPERATOR_WAIT_S)).status == 200


async def test_the_in_flight_count_is_released_when_the_auth_server_hangs_up(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await set_tenant(gateway, maxInFlight=1)
    release = asyncio.Event()
    receiver = await make_receiver(held(release, OPERATOR_WAIT_S, success({"scope": []})))
    await gateway.create_hook(name="held", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    event = sample_event("credentials-exchange")
    first = asyncio.create_task(gateway.forward("credentials-exchange", event))
    await receiver.wait_for(1, timeout=OPERATOR_WAIT_S)
    first.cancel()
    release.set()
    for _ in range(int(OPERATOR_WAIT_S / 0.01)):  # bounded wait for the abandoned invocation
        if gateway.invoker.in_flight("acme") == 0:
            break
        await asyncio.sleep(0.01)
    assert gateway.invoker.in_flight("acme") == 0
    assert (await gateway.forward("credentials-exchange", event)).status == 200


async def test_the_default_deadline_comes_from_settings(
    make_gateway: Callable[..., Awaitable[Gateway]],
    make_settings: Callable[..., Any],
    make_receiver: MakeReceiver,
) -> None:
    gateway = await make_gateway(make_settings(sync={"deadline": "300ms"}))
    await gateway.create_tenant("acme")
    release = asyncio.Event()
    slow = await make_receiver(held(release, 5.0, success({"scope": ["late"]})))
    await gateway.create_hook(name="slow", triggerId="pre-user-registration", url=slow.url(), enabled=True)
    try:
        answer = await asyncio.wait_for(invoke(gateway, "pre-user-registration"), 4.0)
        assert answer["data"]["name"] == "ServerError"
        assert "deadline" in answer["data"]["message"]
        assert "slept_in_full" not in slow.state
    finally:
        release.set()
