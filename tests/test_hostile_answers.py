"""Hostile receivers on loopback, written byte by byte on raw sockets: odd `Retry-After` and
`X-RateLimit-*` values, non-ASCII header bytes, and bodies that are not strict JSON (`NaN`,
`Infinity`, `1e400`, huge integers, deep nesting). A blocking point still answers the auth
server an Auth0 envelope (its `failurePolicy` decides), the attempt is recorded and readable
through `GET /api/v2/deliveries`, and the test endpoint answers the attempt, never a 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import Gateway
from sockets import read_request

from gateway.delivery.schedule import RATE_LIMIT_INT_MAX, RESET_AHEAD_MAX_S, RETRY_AFTER_MAX_S
from gateway.invoke import Invoker
from gateway.points import sample_event

CLAIM = "https://example.com/n"
GOOD_BODY = json.dumps({"scope": ["read:items"], CLAIM: "ok"}).encode()


def raw_answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: application/json\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n"
        + head
        + b"\r\n"
        + body
    )


@dataclass
class RawReceiver:
    """A raw asyncio server on 127.0.0.1 that answers every request with the same bytes."""

    port: int = 0
    requests: int = 0

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


RawFactory = Callable[[bytes], Awaitable[RawReceiver]]


@pytest.fixture
async def raw_receiver() -> AsyncIterator[RawFactory]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[Any]] = set()

    async def make(answer: bytes) -> RawReceiver:
        peer = RawReceiver()

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                for _ in range(1000):  # requests on one connection, bounded
                    if not await read_request(reader, peer):  # counts it in peer.requests
                        break
                    writer.write(answer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
                pass  # the client closed, or the teardown below
            finally:
                writer.close()

        server = await asyncio.start_server(connected, "127.0.0.1", 0)
        servers.append(server)
        peer.port = server.sockets[0].getsockname()[1]
        return peer

    yield make
    for server in servers:
        server.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


def strict_json(text: str) -> Any:
    """The auth server's view: JSON with no NaN/Infinity and integers a JavaScript peer keeps."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} reached the auth server")

    def integer(digits: str) -> int:
        value = int(digits)
        assert abs(value) <= 2**53 - 1, "an integer beyond 2**53 reached the auth server"
        return value

    return json.loads(text, parse_constant=refuse, parse_int=integer)


async def forward_credentials_exchange(gateway: Gateway) -> dict[str, Any]:
    resp = await gateway.forward("credentials-exchange", sample_event("credentials-exchange"))
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "application/json"
    return strict_json(text)  # type: ignore[no-any-return]


def assert_attempt_bounded(attempt: dict[str, Any]) -> None:
    rate = attempt["rateLimit"]
    for count in (rate["limit"], rate["remaining"]):
        assert count is None or 0 <= count <= RATE_LIMIT_INT_MAX
    assert rate["reset"] is None or rate["reset"] <= attempt_time(attempt) + RESET_AHEAD_MAX_S + 1
    assert attempt["retryAfter"] is None or 0 <= attempt["retryAfter"] <= RETRY_AFTER_MAX_S


def attempt_time(attempt: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(attempt["startedAt"].replace("Z", "+00:00")).timestamp()


# Header lines a friendly library would never send; each once broke the attempt.
HOSTILE_HEADERS = [
    b"Retry-After: \xb2",  # "²" in latin-1: str.isdigit() says yes, float() says no
    b"Retry-After: \xd9\xa1",  # "١" (Arabic-Indic one) in UTF-8
    b"Retry-After: inf",
    b"Retry-After: 1e400",
    b"Retry-After: " + b"9" * 400,
    b"Retry-After: -5",
    b"X-RateLimit-Limit: inf",
    b"X-RateLimit-Limit: \xb2",
    b"X-RateLimit-Remaining: 99999999999999999999999",
    b"X-RateLimit-Remaining: -1",
    b"X-RateLimit-Reset: 1e400",
    b"X-RateLimit-Reset: " + b"9" * 400,
    b"X-RateLimit-Reset: nan",
    b"X-RateLimit-Reset: \xc2\xb2\xff",  # obs-text: bytes past ASCII
]
HEADER_IDS = [
    h.split(b":")[0].decode() + "=" + repr(h.split(b": ", 1)[1])[2:-1][:12] for h in HOSTILE_HEADERS
]

# Bodies that are JSON to a lenient parser but not strict JSON, and one that is not JSON at all.
HOSTILE_BODIES = {
    "nan": b'{"scope": ["read:items"], "https://example.com/n": NaN}',
    "infinity": b'{"scope": ["read:items"], "https://example.com/n": Infinity}',
    "minus-infinity": b'{"scope": ["read:items"], "https://example.com/n": -Infinity}',
    "1e400": b'{"scope": ["read:items"], "https://example.com/n": 1e400}',
    "huge-integer": b'{"scope": ["read:items"], "https://example.com/n": 100000000000000000000000000000}',
    "deep": b'{"scope": ["read:items"], "https://example.com/n": ' + b"[" * 200 + b"]" * 200 + b"}",
    "very-deep": b"[" * 200_000,
    "lone-surrogate": b'{"scope": ["read:items"], "https://example.com/n": "\\ud800"}',
}


# --- odd headers on a good answer: the answer counts, the attempt is recorded ---------------------


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=HEADER_IDS)
async def test_odd_rate_limit_headers_do_not_break_a_blocking_call(
    gateway: Gateway, raw_receiver: RawFactory, header: bytes
) -> None:
    receiver = await raw_receiver(raw_answer(GOOD_BODY, header))
    hook = await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    answer = await forward_credentials_exchange(gateway)
    assert answer == {"status": "success", "data": {"scope": ["read:items"], CLAIM: "ok"}}
    delivery = await gateway.only_delivery(hook["id"])
    assert delivery["status"] == "succeeded"
    assert len(delivery["attempts"]) == 1
    assert_attempt_bounded(delivery["attempts"][0])


@pytest.mark.parametrize("header", HOSTILE_HEADERS, ids=HEADER_IDS)
async def test_odd_rate_limit_headers_do_not_break_the_test_endpoint(
    gateway: Gateway, raw_receiver: RawFactory, header: bytes
) -> None:
    receiver = await raw_receiver(raw_answer(GOOD_BODY, header))
    hook = await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url())
    resp = await gateway.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gateway.auth())
    assert resp.status == 200, await resp.text()
    result = strict_json(await resp.text())
    assert result["statusCode"] == 200 and result["error"] is None
    assert result["result"]["status"] == "success"


async def test_a_429_with_an_odd_retry_after_is_a_recorded_failure(
    gateway: Gateway, raw_receiver: RawFactory
) -> None:
    receiver = await raw_receiver(raw_answer(b"{}", b"Retry-After: \xb2", status=b"429 Too Many Requests"))
    hook = await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    answer = await forward_credentials_exchange(gateway)
    assert answer["status"] == "error" and answer["data"]["name"] == "ServerError"
    assert "429" in answer["data"]["message"]
    delivery = await gateway.only_delivery(hook["id"])
    assert delivery["status"] == "failed"
    assert [a["statusCode"] for a in delivery["attempts"]] == [429]  # no usable Retry-After: not retried


# --- answers that are not strict JSON ------------------------------------------------------------


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
async def test_an_answer_that_is_not_strict_json_fails_the_hook_with_policy_fail(
    gateway: Gateway, raw_receiver: RawFactory, body: bytes
) -> None:
    receiver = await raw_receiver(raw_answer(body))
    hook = await gateway.create_hook(
        name="strict",
        triggerId="credentials-exchange",
        url=receiver.url(),
        enabled=True,
        failurePolicy="fail",
    )
    answer = await forward_credentials_exchange(gateway)
    assert answer["status"] == "error"
    assert answer["data"]["name"] == "ServerError"
    assert "'strict'" in answer["data"]["message"] and "JSON" in answer["data"]["message"]
    delivery = await gateway.only_delivery(hook["id"])
    assert delivery["status"] == "failed"
    assert "JSON" in delivery["lastError"]
    assert "JSON" in delivery["attempts"][-1]["error"]


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
async def test_an_answer_that_is_not_strict_json_is_skipped_with_policy_skip(
    gateway: Gateway, raw_receiver: RawFactory, body: bytes
) -> None:
    receiver = await raw_receiver(raw_answer(body))
    hook = await gateway.create_hook(
        triggerId="credentials-exchange", url=receiver.url(), enabled=True, failurePolicy="skip"
    )
    answer = await forward_credentials_exchange(gateway)
    event = sample_event("credentials-exchange")
    assert answer == {"status": "success", "data": {"scope": event["scope"]}}  # as if the hook were absent
    delivery = await gateway.only_delivery(hook["id"])
    assert delivery["status"] == "failed"
    assert "JSON" in delivery["attempts"][-1]["error"]


@pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
async def test_the_test_endpoint_reports_an_answer_that_is_not_strict_json(
    gateway: Gateway, raw_receiver: RawFactory, body: bytes
) -> None:
    receiver = await raw_receiver(raw_answer(body))
    hook = await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url())
    resp = await gateway.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gateway.auth())
    assert resp.status == 200, await resp.text()
    result = strict_json(await resp.text())
    assert result["statusCode"] == 200
    assert "JSON" in result["error"]
    assert result["answer"] is None
    assert result["result"]["data"]["name"] == "ServerError"


async def test_a_strict_answer_after_a_skipped_bad_one_still_counts(
    gateway: Gateway, raw_receiver: RawFactory
) -> None:
    bad = await raw_receiver(raw_answer(HOSTILE_BODIES["nan"], b"Retry-After: \xb2"))
    good = await raw_receiver(raw_answer(GOOD_BODY))
    await gateway.create_hook(
        name="bad",
        triggerId="credentials-exchange",
        url=bad.url(),
        enabled=True,
        order=1,
        failurePolicy="skip",
    )
    await gateway.create_hook(
        name="good", triggerId="credentials-exchange", url=good.url(), enabled=True, order=2
    )
    answer = await forward_credentials_exchange(gateway)
    assert answer == {"status": "success", "data": {"scope": ["read:items"], CLAIM: "ok"}}


# --- an error inside the gateway during one hook's call ------------------------------------------


class BrokenTransport:
    """A transport whose send fails with an error no receiver can cause: a stand-in for a bug
    in the gateway met during one hook's call (there is no real peer that makes one)."""

    def target(self, url: str) -> str:
        return url

    async def post(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")


@pytest.mark.parametrize(("policy", "expected"), [("fail", "error"), ("skip", "success")])
async def test_an_internal_error_in_a_hook_call_is_its_recorded_failed_attempt(
    gateway: Gateway, policy: str, expected: str
) -> None:
    hook = await gateway.create_hook(
        name="broken",
        triggerId="credentials-exchange",
        url="http://127.0.0.1:9/",
        enabled=True,
        failurePolicy=policy,
    )
    invoker = Invoker(gateway.settings, gateway.svc.store, BrokenTransport)  # type: ignore[arg-type]
    view = await gateway.svc.registry.view("acme")
    assert view is not None
    event = sample_event("credentials-exchange")
    answer = await invoker.invoke(view, "credentials-exchange", event, json.dumps(event).encode())
    assert answer["status"] == expected
    if policy == "fail":
        assert answer["data"]["name"] == "ServerError"
        assert answer["data"]["message"] == "hook 'broken': internal error: RuntimeError"
    else:
        assert answer["data"] == {"scope": event["scope"]}
    await invoker.drain()
    delivery = await gateway.only_delivery(hook["id"])
    assert delivery["status"] == "failed"
    assert delivery["lastError"] == "internal error: RuntimeError"
    assert [a["error"] for a in delivery["attempts"]] == ["internal error: RuntimeError"]


async def test_an_internal_error_in_the_test_endpoint_is_the_attempts_error(gateway: Gateway) -> None:
    hook = await gateway.create_hook(triggerId="credentials-exchange", url="http://127.0.0.1:9/")
    real = gateway.svc.transport
    gateway.svc.transport = BrokenTransport()  # type: ignore[assignment]
    try:
        resp = await gateway.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gateway.auth())
    finally:
        gateway.svc.transport = real
    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert result["error"] == "internal error: RuntimeError"
    assert result["statusCode"] is None
    assert result["result"]["data"]["name"] == "ServerError"
