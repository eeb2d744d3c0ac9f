"""The Node client (integrations/node-client) follows the seed's advice on rate limits, as the
Python SDK does, against a running gateway with low limits and against loopback servers that
answer 429; and it returns the typed results and errors of the gateway's points.

Each test runs tests/node_client_driver.mjs: one client makes the planned calls and reports
every request it sent (time sent, status, rate-limit headers) as its real fetch saw them.
These tests run on the real clock with limits of a few requests a second: a wait is checked
against the reset or Retry-After the gateway announced, never against a duration."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from node_integrations import envelope, error_envelope, require_integrations

from gateway.auth import SCOPE_FORWARD
from gateway.settings import Settings

pytestmark = pytest.mark.sqlite_only  # the client, not the database, is under test

DRIVER = Path(__file__).resolve().parent / "node_client_driver.mjs"
DRIVER_TIMEOUT_S = 60.0
CE = {"audience": "https://api.example.test/", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
SIGNUP = {"user": {"email": "jane@example.com"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
WELCOME = {"user": {"id": "u1", "email": "jane@example.com"}, "context": {"connection": {"id": "con_1"}}}

MakeReceiver = Callable[..., Awaitable[Receiver]]


async def drive(client: dict[str, Any], calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the planned calls with one Node client; its results and the requests it sent."""
    require_integrations()
    proc = await asyncio.create_subprocess_exec(
        "node", str(DRIVER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    plan = json.dumps({"client": client, "calls": calls}).encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(plan), DRIVER_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")
    return json.loads(out)  # type: ignore[no-any-return]


def invoke(trigger: str, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"op": "invoke", "tenant": "acme", "trigger": trigger, "body": body, "options": options}


def emit(trigger: str, body: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {"op": "emit", "tenant": "acme", "trigger": trigger, "body": body, "options": options}


async def low_gateway(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings], *, rate: float,
    burst: int,
) -> Gateway:
    gw = await make_gateway(make_settings(ratelimit={"ingest_rate": rate, "ingest_burst": burst}))
    await gw.create_tenant("acme")
    return gw


def client_of(gw: Gateway, **options: Any) -> dict[str, Any]:
    return {"baseUrl": str(gw.client.make_url("/")), "token": gw.token("acme", (SCOPE_FORWARD,)), **options}


def always_429(headers: dict[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        body = {"statusCode": 429, "error": "Too Many Requests", "message": "slow down"}
        return web.json_response(body, status=429, headers=headers)

    return respond


async def test_the_client_waits_for_the_reset_when_remaining_reaches_zero(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings]
) -> None:
    gw = await low_gateway(make_gateway, make_settings, rate=2.0, burst=2)
    run = await drive(client_of(gw), [invoke("credentials-exchange", CE) for _ in range(4)])

    assert [r["ok"] for r in run["results"]] == [True] * 4
    assert run["results"][0]["value"]["scope"] == ["read"]
    requests = run["requests"]
    assert [r["status"] for r in requests] == [200] * 4  # paced: the limit was never met
    paced = 0
    for before, after in zip(requests, requests[1:], strict=False):
        if before["remaining"] == "0":
            assert after["sentAt"] >= int(before["reset"]) * 1000  # not one millisecond early
            paced += 1
    assert paced >= 1


async def test_a_429_is_retried_no_earlier_than_retry_after(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings]
) -> None:
    gw = await low_gateway(make_gateway, make_settings, rate=1.0, burst=1)
    # One client spends the bucket; another, which has not seen the limit yet, meets a 429.
    calls = [invoke("credentials-exchange", CE), {**invoke("credentials-exchange", CE), "fresh": True}]
    run = await drive(client_of(gw, ratelimit={"maxTries": 3, "backoffBaseMs": 100}), calls)

    assert [r["ok"] for r in run["results"]] == [True, True], run["results"]
    spent, limited, retried = run["requests"]
    assert (spent["status"], limited["status"], retried["status"]) == (200, 429, 200)
    assert retried["sentAt"] >= limited["answeredAt"] + int(limited["retryAfter"]) * 1000


async def test_the_client_gives_up_after_max_tries_with_the_reset_time(make_receiver: MakeReceiver) -> None:
    reset_at = int(time.time()) + 3600
    limited = await make_receiver(always_429({
        "Retry-After": "0", "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset_at),
    }))

    policy = {"maxTries": 3, "backoffBaseMs": 20}
    run = await drive({"baseUrl": limited.url("/"), "token": "t", "ratelimit": policy},
                      [invoke("credentials-exchange", CE)])

    [result] = run["results"]
    assert not result["ok"]
    assert result["error"]["class"] == "RateLimited"
    assert result["error"]["status"] == 429
    assert result["error"]["attempts"] == 3
    assert result["error"]["resetAt"] == reset_at
    assert len(limited.requests) == 3  # exactly the tries it was given, then no more


async def test_a_wait_longer_than_allowed_gives_up_at_once(make_receiver: MakeReceiver) -> None:
    hour = await make_receiver(always_429({"Retry-After": "3600"}))
    five_seconds = await make_receiver(always_429({"Retry-After": "5"}))

    over_max_wait = await drive({"baseUrl": hour.url("/"), "token": "t"},
                                [invoke("credentials-exchange", CE)])
    over_deadline = await drive({"baseUrl": five_seconds.url("/"), "token": "t", "deadlineMs": 2000},
                                [invoke("credentials-exchange", CE)])

    for run, server in ((over_max_wait, hour), (over_deadline, five_seconds)):
        [result] = run["results"]
        assert result["error"]["class"] == "RateLimited"
        assert result["error"]["attempts"] == 1
        assert len(server.requests) == 1
    assert over_max_wait["results"][0]["error"]["retryAfter"] == 3600


async def test_a_call_ends_at_its_deadline_when_the_gateway_does_not_answer(unaccepted_port: int) -> None:
    run = await drive({"baseUrl": f"http://127.0.0.1:{unaccepted_port}", "token": "t", "deadlineMs": 500},
                      [invoke("credentials-exchange", CE)])

    assert run["results"][0]["error"]["class"] == "DeadlineExceeded"


async def test_results_and_typed_errors_of_the_points(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    grant = await make_receiver(lambda r, rec, s: _json(envelope(
        {"scope": ["read", "extra"], "https://x.test/c": 1})))
    deny = await make_receiver(lambda r, rec, s: _json(error_envelope(
        "PreUserRegistrationError", "blocked", "Sign-ups are closed.")))
    await gateway.create_hook(name="grant", triggerId="credentials-exchange", url=grant.url(), enabled=True)
    await gateway.create_hook(name="deny", triggerId="pre-user-registration", url=deny.url(), enabled=True)

    run = await drive(client_of(gateway), [
        invoke("credentials-exchange", CE),
        invoke("pre-user-registration", SIGNUP),
        emit("post-user-registration", WELCOME, idempotencyKey="signup-u1"),
        emit("post-user-registration", WELCOME, idempotencyKey="signup-u1"),
    ])

    granted, denied, first, repeat = run["results"]
    assert granted["value"]["scope"] == ["read", "extra"]
    assert granted["value"]["claims"] == {"https://x.test/c": 1}
    assert denied["error"]["class"] == "HookDenied"
    assert denied["error"]["name"] == "PreUserRegistrationError"
    assert denied["error"]["message"] == "blocked"
    assert denied["error"]["friendlyMessage"] == "Sign-ups are closed."
    assert denied["error"]["oauthError"] == "access_denied"
    assert first["value"]["eventId"] == repeat["value"]["eventId"]
    assert (first["value"]["replayed"], repeat["value"]["replayed"]) == (False, True)


async def _json(body: dict[str, Any]) -> web.StreamResponse:
    return web.json_response(body)
