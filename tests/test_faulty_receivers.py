"""Faulty receivers on loopback, at the gateway's level: an event goes in, and whatever the
receiver does (refuse, reset, stay silent, trickle, fail, answer junk, answer 50 MB, redirect to
itself, send a huge header, stall a TLS handshake) comes out as recorded failed attempts, read
through `GET /api/v2/deliveries/{id}`: with the reason and status, ended by the hook's timeout
at the latest, retried by the schedule (a durable delivery) or within the deadline (a blocking
call), and for a blocking point handled by the hook's `failurePolicy`.

The receivers are raw sockets (tests/sockets.py) that write what no HTTP library would. The
hooks' timeout is 1 s; a fault that the timeout must end would otherwise last a minute.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from conftest import Gateway
from sockets import (
    RawPeer,
    RawServers,
    answering,
    endless_body,
    http_answer,
    never_answering,
    redirecting_to_itself,
    refusing_port,
    reset_mid_body,
    silent,
    trickling,
)

from gateway import points
from gateway.delivery.worker import ANSWER_MAX_BYTES
from gateway.egress import MAX_STORED_BODY_BYTES
from gateway.invoke import MAX_ATTEMPTS, RETRY_BASE_S
from gateway.points import sample_event

PUR = "post-user-registration"
CE = "credentials-exchange"
PRE = "pre-user-registration"
TIMEOUT_S = 1.0  # [delivery] timeout, and the blocking hooks' timeoutMs
FIRST_RETRY_S = 0.3  # the schedule's first step; the second is long, so the test can read it
SECOND_RETRY_S = 3600.0
RENDER_S = 0.001  # startedAt is rendered to the millisecond
# An attempt that a timeout ends is recorded a moment after the timeout: this much later at most
# on a loaded machine. The faults it ends would otherwise last a minute (trickle: 120 bytes, one
# every 0.5 s) or for ever (silence).
TIMEOUT_LATE_S = 2.0


@dataclass(frozen=True)
class Fault:
    error: str  # a regular expression the recorded error matches from its start
    status: int | None  # the recorded status code
    retried: bool  # a blocking call tries it again within its deadline (connection failed, 5xx)
    times_out: bool  # the hook's timeout is what ends it
    handler: Callable[..., Any] | None  # the raw receiver; None: a port that refuses
    tls: bool = False  # the hook's URL is https

    def sends_requests(self) -> bool:
        """The receiver reads whole requests (so it can count them)."""
        return self.handler is not None and not self.tls


FIFTY_MB = 50 * 1024 * 1024

FAULTS: dict[str, Fault] = {
    "connection-refused": Fault(r"connection failed: cannot connect to 127\.0\.0\.1:\d+ \(", None,
                                retried=True, times_out=False, handler=None),
    "reset-mid-body": Fault(r"connection failed: connection closed by the receiver in the middle of the"
                            r" answer", None, retried=True, times_out=False, handler=reset_mid_body()),
    "headers-never-come": Fault(r"timed out after 1s$", None, retried=False, times_out=True,
                                handler=never_answering),
    "body-trickles": Fault(r"timed out after 1s$", None, retried=False, times_out=True,
                           handler=trickling(0.5, 120)),
    "http-500": Fault(r"receiver answered HTTP 500$", 500, retried=True, times_out=False,
                      handler=answering(http_answer(b'{"error":"boom"}', status=b"500 Server Error"))),
    "invalid-json": Fault(r"receiver's answer is not (strict )?JSON", 200, retried=False, times_out=False,
                          handler=answering(http_answer(b'{"scope": ["read:items"], oops'))),
    "answer-of-50-mb": Fault(rf"answer larger than {ANSWER_MAX_BYTES} bytes$", 200, retried=False,
                             times_out=False, handler=endless_body(FIFTY_MB)),
    "redirect-loop": Fault(r"receiver answered HTTP 302 \(redirects are not followed\)$", 302, retried=False,
                           times_out=False, handler=redirecting_to_itself()),
    "huge-header": Fault(r"connection failed: answer head(er line)? longer than \d+ bytes$", None,
                         retried=True, times_out=False,
                         handler=answering(http_answer(b"{}", b"X-Huge: " + b"h" * (1024 * 1024)))),
    "tls-handshake-stalls": Fault(r"timed out connecting after 1s$", None, retried=False, times_out=True,
                                  handler=silent, tls=True),
}


# --- the receivers --------------------------------------------------------------------------

FaultyFactory = Callable[[str], Awaitable[tuple[str, RawPeer | None]]]


@pytest.fixture
async def faulty() -> AsyncIterator[FaultyFactory]:
    """`await faulty(name)`: the URL of a new receiver with that fault, and its peer (None for a
    port that refuses)."""
    servers = RawServers()
    with ExitStack() as ports:

        async def make(name: str) -> tuple[str, RawPeer | None]:
            fault = FAULTS[name]
            if fault.handler is None:
                return f"http://127.0.0.1:{ports.enter_context(refusing_port())}/hook", None
            peer = await servers.start(fault.handler)
            return peer.url("https" if fault.tls else "http"), peer

        try:
            yield make
        finally:
            await servers.close()


# --- helpers --------------------------------------------------------------------------------


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def ended(attempt: dict[str, Any]) -> float:
    return ts(attempt["startedAt"]) + float(attempt["durationMs"]) / 1000.0


def assert_attempt_shows(attempt: dict[str, Any], fault: Fault, name: str) -> None:
    """The recorded attempt names the fault, and it ended by the timeout at the latest."""
    assert re.match(fault.error, attempt["error"] or ""), (name, attempt)
    assert attempt["statusCode"] == fault.status, (name, attempt)
    if fault.times_out:
        late_ms = (TIMEOUT_S + TIMEOUT_LATE_S) * 1000
        assert TIMEOUT_S * 1000 * 0.99 <= attempt["durationMs"] <= late_ms, (name, attempt)
    else:  # ended by the fault itself, well before the timeout would have
        assert attempt["durationMs"] < TIMEOUT_S * 1000, (name, attempt)
    if name == "answer-of-50-mb":  # the first 4 KiB are kept, as of any answer
        assert attempt["responseBody"] == " " * MAX_STORED_BODY_BYTES


def assert_one_request_per_attempt(fault: Fault, peer: RawPeer | None, attempts: int) -> None:
    """Nothing is sent again silently, and a redirect is not followed: the receiver saw one
    connection (TLS) or one request per recorded attempt."""
    if peer is None:
        return
    if fault.sends_requests():
        assert peer.requests == attempts, (peer, attempts)
    else:
        assert peer.accepted == attempts, (peer, attempts)


async def wait_attempts(gateway: Gateway, delivery_id: str, count: int) -> dict[str, Any]:
    """The delivery once `count` attempts are recorded (bounded in time)."""
    d: dict[str, Any] = {}
    for _ in range(1500):  # 30 s
        d = await gateway.delivery(delivery_id)
        # Both, as the delivery's row and its attempts are two reads that may see two moments.
        if d["attemptCount"] >= count and len(d["attempts"]) >= count:
            return d
        await asyncio.sleep(0.02)
    raise AssertionError(f"delivery did not reach {count} attempts: {d}")


# --- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FAULTS))
async def test_a_faulty_receiver_ends_as_recorded_failed_attempts(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Any],
    faulty: FaultyFactory, name: str,
) -> None:
    """Three hooks on three receivers with the fault: a durable one, a blocking one whose
    policy is `fail` and a blocking one whose policy is `skip`; each is called at once."""
    fault = FAULTS[name]
    settings = make_settings(delivery={"timeout": f"{TIMEOUT_S}s",
                                       "retry_schedule": [f"{FIRST_RETRY_S}s", f"{SECOND_RETRY_S}s"]})
    gw = await make_gateway(settings)
    await gw.create_tenant("acme")
    (durable_url, durable_peer), (fail_url, fail_peer), (skip_url, skip_peer) = [
        await faulty(name) for _ in range(3)
    ]
    durable = await gw.create_hook(name="durable", url=durable_url, enabled=True)
    assert durable["timeoutMs"] == TIMEOUT_S * 1000  # [delivery] timeout
    timeout_ms = int(TIMEOUT_S * 1000)
    failing = await gw.create_hook(name="failing", triggerId=CE, url=fail_url, enabled=True,
                                   failurePolicy="fail", timeoutMs=timeout_ms)
    skipped = await gw.create_hook(name="skipped", triggerId=PRE, url=skip_url, enabled=True,
                                   failurePolicy="skip", timeoutMs=timeout_ms)

    sent, fail_answer, skip_answer = await asyncio.gather(
        gw.forward(PUR, sample_event(PUR)), call(gw, CE), call(gw, PRE))

    # A durable delivery: recorded failed attempts, retried by the schedule.
    assert sent.status == 202, await sent.text()
    d = await wait_attempts(gw, (await sent.json())["deliveries"][0]["deliveryId"], 2)
    first, second = d["attempts"][:2]
    for attempt in (first, second):
        assert_attempt_shows(attempt, fault, name)
    assert [first["number"], second["number"]] == [1, 2]
    assert d["status"] == "pending" and d["attemptCount"] == 2
    assert d["lastError"] == second["error"]
    # On schedule: the second attempt no sooner than the first step after the first one ended,
    # and the third due the second step after the second one ended (the schedule has no jitter).
    assert ts(second["startedAt"]) >= ended(first) + FIRST_RETRY_S - RENDER_S
    assert d["nextAttemptAt"] is not None
    assert -RENDER_S <= ts(d["nextAttemptAt"]) - (ended(second) + SECOND_RETRY_S) < TIMEOUT_LATE_S
    assert_one_request_per_attempt(fault, durable_peer, 2)

    # A blocking call: the hook's failure, by its failure policy; recorded with its attempts.
    assert fail_answer["status"] == "error" and fail_answer["data"]["name"] == "ServerError", fail_answer
    assert re.match("hook 'failing': " + fault.error, fail_answer["data"]["message"]), fail_answer
    await assert_blocking_record(gw, failing["id"], fault, name, fail_peer)
    assert skip_answer == points.neutral_answer(PRE, sample_event(PRE))  # as if the hook were absent
    await assert_blocking_record(gw, skipped["id"], fault, name, skip_peer)


async def call(gateway: Gateway, trigger_id: str) -> dict[str, Any]:
    """A blocking call; the auth server always gets `200` and an Auth0 envelope."""
    resp = await gateway.forward(trigger_id, sample_event(trigger_id))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def assert_blocking_record(gateway: Gateway, hook_id: str, fault: Fault, name: str,
                                 peer: RawPeer | None) -> None:
    d = await gateway.only_delivery(hook_id)
    assert d["kind"] == "sync" and d["status"] == "failed" and d["nextAttemptAt"] is None, d
    attempts = d["attempts"]
    # Within the deadline, a connection failure or a 5xx is tried again after a short backoff;
    # anything else is final at once.
    assert len(attempts) == (MAX_ATTEMPTS if fault.retried else 1), attempts
    for n, attempt in enumerate(attempts):
        assert_attempt_shows(attempt, fault, name)
        if n:
            backoff = RETRY_BASE_S * 2 ** (n - 1)
            assert ts(attempt["startedAt"]) >= ended(attempts[n - 1]) + backoff - RENDER_S
    assert d["lastError"] == attempts[-1]["error"]
    assert_one_request_per_attempt(fault, peer, len(attempts))
