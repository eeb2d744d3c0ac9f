"""No secret in the logs: a realistic flow at debug, every line the gateway writes read back.

The flow: an operator creates a tenant; the tenant creates hooks with secrets, reads and rotates
signing secrets (v1 `whsec_`, v1a `whsk_`), tests a hook; the auth server forwards events that
are delivered after a failure and blocking calls that are answered, denied and failed; callers
present tokens that are refused (bad signature, expired, another tenant's). Neither the lines the
gateway's handler writes nor the records themselves (message, fields, exception) may hold a
secret value, a token, the HS256 or encryption key, or any `whsec_`/`whsk_` key.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from conftest import HS256_SECRET, Gateway, Receiver

from gateway import logs

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeReceiver = Callable[..., Awaitable[Receiver]]

SECRETS = {"auth0-extension-secret": "ext-secret-value-3141", "X-Api-Key": "api-key-value-2718"}
ROTATED = {"X-Api-Key": "api-key-rotated-1618"}
EVENT = {"user": {"id": "u1", "email": "a@example.com"}, "context": {"connection": {"id": "c", "name": "db"}}}
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}


class Captured(logging.Handler):
    """Every record as it was logged: message, fields and exception text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = f"{record.getMessage()} {record.__dict__}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        self.texts.append(text)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, Captured]]:
    stream, raw = io.StringIO(), Captured()
    json_handler = logs.handler(stream)
    root, gateway_logger = logging.getLogger(), logging.getLogger("gateway")
    levels = root.level, gateway_logger.level
    root.addHandler(json_handler)
    root.addHandler(raw)
    root.setLevel(logging.DEBUG)  # aiohttp's and every library's lines too
    try:
        yield stream, raw
    finally:
        root.removeHandler(json_handler)
        root.removeHandler(raw)
        root.setLevel(levels[0])
        gateway_logger.setLevel(levels[1])


async def test_a_realistic_flow_logs_no_secret(
    make_gateway: MakeGateway, make_receiver: MakeReceiver, captured: tuple[io.StringIO, Captured]
) -> None:
    stream, raw = captured
    tokens: list[str] = []
    gw = await make_gateway()

    async def call(method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
        token = token or gw.token()
        tokens.append(token)
        kwargs = {} if body is None else {"json": body}
        return await gw.client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    operator = gw.operator_token()
    tokens.append(operator)
    assert (await call("POST", "/api/v2/tenants", {"id": "acme"}, token=operator)).status == 201

    def flaky() -> Any:
        async def respond(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
            state["n"] = state.get("n", 0) + 1
            if state["n"] == 1:
                return web.json_response({"status": "error"}, status=500)
            return web.json_response({"status": "success", "data": {}})
        return respond

    async def deny(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({"status": "error", "data": {
            "name": "PreUserRegistrationError", "message": "blocked", "friendlyMessage": "No."}})

    async def broken(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.Response(status=502, text="upstream down")

    rx, denier, failing = await make_receiver(flaky()), await make_receiver(deny), await make_receiver(broken)
    hooks: dict[str, str] = {}
    for name, trigger, url, scheme in (
        ("async", "post-user-registration", rx.url(), "v1"),
        ("ed", "post-user-registration", rx.url(), "v1a"),
        ("ce", "credentials-exchange", rx.url(), "v1"),
        ("pur", "pre-user-registration", denier.url(), "v1"),
        ("pcp", "post-change-password", failing.url(), "v1"),
    ):
        resp = await call("POST", "/api/v2/hooks", {"name": name, "triggerId": trigger, "url": url,
                                                     "enabled": True, "signatureScheme": scheme})
        assert resp.status == 201, await resp.text()
        hooks[name] = (await resp.json())["id"]
        assert (await call("POST", f"/api/v2/hooks/{hooks[name]}/secrets", SECRETS)).status == 201
    assert (await call("PATCH", f"/api/v2/hooks/{hooks['async']}/secrets", ROTATED)).status == 200

    signing: list[str] = []
    for name in ("async", "ce"):
        path = f"/api/v2/hooks/{hooks[name]}/signing-secret"
        signing.append((await (await call("GET", path)).json())["secret"])
        assert (await call("POST", f"{path}/rotate")).status in (200, 201)
        signing.append((await (await call("GET", path)).json())["secret"])
    assert all(s.startswith("whsec_") for s in signing)
    assert (await call("POST", f"/api/v2/hooks/{hooks['ce']}/test")).status == 200

    service = gw.token(scopes=("forward:events",))
    tokens.append(service)
    sent = await (await call("POST", "/v1/tenants/acme/triggers/post-user-registration", EVENT,
                             token=service)).json()
    for d in sent["deliveries"]:
        await gw.wait_delivery(d["deliveryId"], status="succeeded", timeout=30)
    failed_one = await (await call("POST", "/v1/tenants/acme/triggers/post-change-password",
                                   {"user": {"id": "u1"}, "context": {"connection": {"id": "c"}}},
                                   token=service)).json()
    await gw.wait_delivery(failed_one["deliveries"][0]["deliveryId"], attempts=1)
    ce = await (await call("POST", "/v1/tenants/acme/triggers/credentials-exchange", CE,
                           token=service)).json()
    assert ce["status"] == "success"
    denied = await (await call("POST", "/v1/tenants/acme/triggers/pre-user-registration", EVENT,
                               token=service)).json()
    assert denied["status"] == "error"
    assert (await call("GET", "/api/v2/deliveries")).status == 200

    # Tokens the gateway refuses are not logged either.
    forged = jwt.encode({"tenant": "acme", "scope": "read:hooks", "sub": "x"},
                        "another-secret-of-32-bytes-at-least!", algorithm="HS256")
    expired = gw.token(ttl=-3600)
    other = gw.token("globex")
    for bad in (forged, expired, other, "not-a-jwt-but-a-secret-looking-value"):
        assert (await call("GET", "/api/v2/hooks", token=bad)).status in (401, 403, 404)
    await gw.invoker.drain()

    written = stream.getvalue()
    assert "delivery attempt" in written and "hook call attempt" in written  # the flow was logged
    assert len(raw.texts) > 20
    everything = [written, *raw.texts]
    forbidden = [*SECRETS.values(), *ROTATED.values(), *signing, *tokens, HS256_SECRET,
                 gw.settings.security.encryption_key.get() if gw.settings.security.encryption_key else ""]
    forbidden += [s.removeprefix("whsec_") for s in signing]
    for text in everything:
        for value in filter(None, forbidden):
            assert value not in text
        assert "whsec_" not in text and "whsk_" not in text


def test_a_line_that_would_carry_a_credential_is_redacted() -> None:
    stream = io.StringIO()
    log = logging.getLogger("gateway.test.redaction")
    handler = logs.handler(stream)
    log.addHandler(handler)
    log.propagate = False
    token = jwt.encode({"sub": "x"}, HS256_SECRET, algorithm="HS256")
    try:
        log.warning("oops %s and whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw and %s", f"Bearer {token}",
                    "whsk_c2VjcmV0LWtleS1tYXRlcmlhbA==", extra={"header": f"bearer {token}"})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    line = stream.getvalue()
    assert token not in line and "MfKQ9r8GKYqr" not in line and "c2VjcmV0" not in line
    assert line.count("[redacted]") == 4
