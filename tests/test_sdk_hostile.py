"""The SDK against a hostile or broken peer: a gateway (a raw loopback server answering scripted
bytes) that stalls, trickles, floods, redirects or sends odd rate-limit headers, and requests to
the receiver helper's adapters with malformed signature headers or oversized bodies. Every
failure must be one of the SDK's typed errors (or the receiver's JSON refusal), never a stray
exception, a hang past the call's deadline, or a secret in a message."""

from __future__ import annotations

import asyncio
import json
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from sdk_live import SharedClock
from test_sdk_receiver import uvicorn_serving, werkzeug_serving

from gateway.client import (
    AsyncAuthServerClient,
    AuthServerClient,
    ClientError,
    DeadlineExceeded,
    Envelope,
    ManagementClient,
    PostUserRegistrationEvent,
    ProtocolError,
    RateLimitPolicy,
    TransportError,
    answers,
)
from gateway.client import Receiver as WebhookReceiver
from gateway.signing import new_signing_secret

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

EMITTED = json.dumps({"eventId": "evt_1", "deliveries": []}).encode()
CREATED = {"user": {"id": "u1", "email": "jane@example.com"}, "context": {"connection": {"id": "con_1"}}}
T0 = 1_900_000_000.0  # a whole second, so that HTTP dates built from it are exact

# A reply is raw bytes, or a coroutine that writes them (slowly) itself.
Reply = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]


def reply(status: int, body: bytes = EMITTED, *, reason: str = "Reply", headers: bytes = b"") -> bytes:
    """A whole HTTP/1.1 answer; `headers` are extra raw header lines, each ending in CRLF."""
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )


@dataclass
class Scripted:
    """A raw HTTP/1.1 server on loopback: each request gets the next scripted reply, then the
    connection closes. `requests` holds each request's head."""

    replies: list[Reply]
    requests: list[bytes] = field(default_factory=list)
    url: str = ""
    handlers: list[asyncio.Task[Any]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    await reader.readexactly(int(value))
            answer = self.replies.pop(0) if self.replies else reply(500, b"{}")
            if isinstance(answer, bytes):
                writer.write(answer)
                await writer.drain()
            else:
                await answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what a deadline does
        finally:
            writer.close()


@asynccontextmanager
async def scripted(*replies: Reply) -> AsyncIterator[Scripted]:
    server = Scripted(list(replies))
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    try:
        yield server
    finally:
        for handler in server.handlers:  # a trickle still going after the client gave up
            handler.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)
        listener.close()
        await listener.wait_closed()


async def emit(mode: str, url: str, token: str = "service-token", **options: Any) -> Any:  # noqa: S107
    """`emit` one post-user-registration event through the sync (in a thread) or async client."""
    deadline_s = options.pop("deadline_s", None)
    if mode == "async":
        async with AsyncAuthServerClient(url, token, **options) as sdk:
            return await sdk.emit("acme", "post-user-registration", CREATED, deadline_s=deadline_s)

    def run() -> Any:
        with AuthServerClient(url, token, **options) as sdk:
            return sdk.emit("acme", "post-user-registration", CREATED, deadline_s=deadline_s)

    return await asyncio.to_thread(run)


MODES = ["sync", "async"]


# --- the call's deadline holds against a gateway that stalls -----------------------------------


def trickled(phase: str) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """An answer sent one byte every 0.2 s (6 s in all): each byte well within a read timeout
    of the whole deadline, the whole answer far past it."""
    whole = reply(202)
    head_end = whole.index(b"\r\n\r\n") + 4
    start = len(b"HTTP/1.1 ") if phase == "head" else head_end

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(whole[:start])
        await writer.drain()
        for i in range(start, len(whole), max(1, (len(whole) - start) // 30)):
            await asyncio.sleep(0.2)
            writer.write(whole[i : i + max(1, (len(whole) - start) // 30)])
            await writer.drain()

    return write


@pytest.mark.parametrize("phase", ["head", "body"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_trickled_answer_ends_at_the_calls_deadline(mode: str, phase: str) -> None:
    async with scripted(trickled(phase)) as gw:
        with pytest.raises(DeadlineExceeded):
            await emit(mode, gw.url, deadline_s=1.0)


# --- answers too large or too odd to read ------------------------------------------------------


def flood(megabytes: int) -> Callable[[asyncio.StreamWriter], Awaitable[None]]:
    """A chunked 200 whose body is `megabytes` MiB of JSON whitespace, then a valid answer."""

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        mib = b" " * 1_048_576
        for _ in range(megabytes):
            writer.write(b"%x\r\n%s\r\n" % (len(mib), mib))
            await writer.drain()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(EMITTED), EMITTED))
        await writer.drain()

    return write


@pytest.mark.parametrize("mode", MODES)
async def test_a_huge_answer_is_a_protocol_error_not_read_whole(mode: str) -> None:
    async with scripted(flood(40)) as gw:
        with pytest.raises(ProtocolError, match="larger than"):
            await emit(mode, gw.url)


async def test_deeply_nested_json_is_a_protocol_error() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    async with scripted(reply(202, nested), reply(400, nested)) as gw:
        with pytest.raises(ProtocolError):
            await emit("async", gw.url)
        with pytest.raises(ClientError):  # an error answer whose body cannot be read is still typed
            await emit("async", gw.url)


async def test_deliveries_that_are_not_an_array_are_a_protocol_error() -> None:
    async with scripted(reply(202, b'{"eventId": "evt_1", "deliveries": 5}')) as gw:
        with pytest.raises(ProtocolError):
            await emit("async", gw.url)


async def test_a_redirect_is_not_taken_for_success() -> None:
    moved = reply(301, b"<html>moved</html>", reason="Moved Permanently",
                  headers=b"Location: https://gateway.invalid/api/v2/hooks/h1\r\n")
    envelope = json.dumps({"status": "success", "data": {"scope": ["admin"]}}).encode()
    ce = {"audience": "https://api.example.com", "client": {"id": "c1"}, "scope": ["read"]}
    async with scripted(moved, reply(307, envelope, headers=b"Location: /elsewhere\r\n")) as gw:

        def delete() -> None:
            with ManagementClient(gw.url, "tenant-token") as sdk:
                sdk.delete_hook("h1")

        with pytest.raises(ProtocolError):
            await asyncio.to_thread(delete)  # the hook was not deleted: it must not look so
        async with AsyncAuthServerClient(gw.url, "service-token") as client:
            with pytest.raises(ProtocolError):
                await client.invoke("acme", "credentials-exchange", ce)


async def test_a_time_without_its_zone_is_a_protocol_error_not_a_naive_datetime() -> None:
    # Hook times are aware datetimes (docs/SDK.md): a naive one would fail later, in the
    # caller's own comparison with an aware time, far from its cause.
    hook = {
        "id": "h1", "name": "welcome", "triggerId": "post-user-registration", "url": "https://x.example/",
        "enabled": True, "order": 0, "timeoutMs": 5000, "failurePolicy": "fail", "maxConcurrency": 10,
        "rateLimitPerSecond": None, "format": "auth0", "disabledReason": None,
        "createdAt": "2026-01-15T09:30:00", "updatedAt": "2026-01-15T09:30:00",
    }
    async with scripted(reply(200, json.dumps(hook).encode())) as gw:

        def get() -> Any:
            with ManagementClient(gw.url, "tenant-token") as sdk:
                return sdk.get_hook("h1")

        with pytest.raises(ProtocolError, match="createdAt"):
            await asyncio.to_thread(get)


# --- rate-limit headers that are odd or hostile ------------------------------------------------


async def test_an_out_of_range_retry_after_date_is_ignored() -> None:
    odd = b"Retry-After: Mon, 01 Jan 99999999999 00:00:00 GMT\r\n"
    async with scripted(reply(202, headers=odd)) as gw:
        emitted = await emit("async", gw.url)
    assert emitted.event_id == "evt_1"


@pytest.fixture
def tokyo_local_time() -> Iterator[None]:
    """The process's local time zone is UTC+9 for the test (a POSIX TZ rule: no tzdata needed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "JST-9")
        time.tzset()
        yield
    time.tzset()


@pytest.mark.usefixtures("tokyo_local_time")
async def test_an_asctime_retry_after_is_gmt_whatever_the_local_zone() -> None:
    # asctime is one of the three HTTP-date formats (RFC 9110, 5.6.7), and is GMT like the others.
    when = time.asctime(time.gmtime(T0 + 30)).encode()
    clock = SharedClock(t=T0)
    async with scripted(reply(429, b"{}", headers=b"Retry-After: " + when + b"\r\n"), reply(202)) as gw:
        emitted = await emit(
            "async", gw.url, clock=clock.now, sleep=clock.asleep, deadline_s=120.0,
            rate_limit=RateLimitPolicy(max_tries=2, max_wait_s=60),
        )
    assert emitted.event_id == "evt_1"
    [(_, waited)] = clock.waits
    assert waited >= 30


@pytest.mark.parametrize("mode", MODES)
async def test_a_reset_far_away_does_not_stop_the_client_pacing_on_later_answers(mode: str) -> None:
    # The first answer's reset is an hour away (a proxy's, or the gateway's before its limit was
    # raised); the next answer says the bucket fills in 5 s: the third call waits for that.
    def limits(reset: float) -> bytes:
        return b"X-RateLimit-Limit: 3\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Reset: %d\r\n" % reset

    clock = SharedClock(t=T0)
    async with scripted(reply(202, headers=limits(T0 + 3600)), reply(202, headers=limits(T0 + 5)),
                        reply(202)) as gw:
        if mode == "async":
            async with AsyncAuthServerClient(gw.url, "t", clock=clock.now, sleep=clock.asleep) as sdk:
                for _ in range(3):
                    await sdk.emit("acme", "post-user-registration", CREATED)
        else:

            def run() -> None:
                with AuthServerClient(gw.url, "t", clock=clock.now, sleep=clock.sleep) as sdk:
                    for _ in range(3):
                        sdk.emit("acme", "post-user-registration", CREATED)

            await asyncio.to_thread(run)

    assert clock.waits == [(T0, 5.0)]


# --- secrets stay out of errors ----------------------------------------------------------------


@pytest.mark.parametrize("token", ["eyJsecret.token.value\n", "eyJsécret.token.value"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_token_that_is_no_header_value_is_a_client_error_without_the_token(
    mode: str, token: str
) -> None:
    async with scripted(reply(202)) as gw:
        with pytest.raises(ClientError) as raised:
            await emit(mode, gw.url, token=token)
    assert isinstance(raised.value, TransportError)
    logged = "".join(traceback.format_exception(raised.value))  # what logging.exception writes
    shown = f"{raised.value!s} {raised.value!r} {raised.value.args!r} {logged}"
    assert "secret" not in shown and "sécret" not in shown
    assert gw.requests == []


# --- the receiver's adapters refuse malformed requests with their JSON, never a 500 -------------


async def on_created(event: PostUserRegistrationEvent) -> Envelope:
    return answers.success()


def on_created_sync(event: PostUserRegistrationEvent) -> Envelope:
    return answers.success()


@asynccontextmanager
async def adapter(kind: str, receiver: WebhookReceiver[PostUserRegistrationEvent]) -> AsyncIterator[str]:
    """The receiver's `kind` adapter served on loopback at the returned URL."""
    if kind == "aiohttp":
        app = web.Application()
        app.router.add_post("/hook", receiver.aiohttp(on_created))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        finally:
            await runner.cleanup()
    elif kind == "starlette":
        pytest.importorskip("starlette")
        from starlette.applications import Starlette

        starlette_app = Starlette()
        starlette_app.add_route("/hook", receiver.starlette(on_created), methods=["POST"])
        async with uvicorn_serving(starlette_app) as base:
            yield f"{base}/hook"
    else:
        flask = pytest.importorskip("flask")
        flask_app = flask.Flask("hostile")
        flask_app.add_url_rule("/hook", view_func=receiver.flask(on_created_sync), methods=["POST"])
        with werkzeug_serving(flask_app) as base:
            yield f"{base}/hook"


ADAPTERS = ["aiohttp", "starlette", "flask"]


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_timestamp_of_thousands_of_digits_is_refused_with_401(kind: str) -> None:
    receiver = WebhookReceiver(PostUserRegistrationEvent, new_signing_secret())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "9" * 5000, "webhook-signature": "v1,AAAA"}
    async with adapter(kind, receiver) as url, httpx.AsyncClient() as http:
        answer = await http.post(url, content=json.dumps(CREATED), headers=headers)
    assert answer.status_code == 401
    assert answer.json()["statusCode"] == 401
    assert "9999" not in answer.text


async def test_a_webhook_id_that_is_not_utf8_is_refused_with_401() -> None:
    receiver = WebhookReceiver(PostUserRegistrationEvent, new_signing_secret())
    body = json.dumps(CREATED).encode()
    async with adapter("aiohttp", receiver) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /hook HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            b"webhook-id: msg_\xff\xfe\r\nwebhook-timestamp: %d\r\nwebhook-signature: v1,AAAA\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (int(time.time()), len(body), body)
        )
        await writer.drain()
        answer = await reader.read()
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert json.loads(payload)["statusCode"] == 401


@pytest.mark.parametrize("kind", ADAPTERS)
async def test_a_chunked_body_over_the_limit_gets_the_json_413(kind: str) -> None:
    receiver = WebhookReceiver(PostUserRegistrationEvent, new_signing_secret(), max_body_bytes=4096)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is learnt by reading
        for _ in range(40):
            yield b" " * 65_536

    async with adapter(kind, receiver) as url, httpx.AsyncClient() as http:
        try:
            answer = await http.post(url, content=chunks())
        except httpx.TransportError:
            pytest.fail("the adapter hung up instead of answering 413")
    assert answer.status_code == 413
    assert answer.json() == {
        "statusCode": 413, "error": "Payload Too Large", "message": "the body is over 4096 bytes"
    }
