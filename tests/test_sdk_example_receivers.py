"""`examples/receivers/` is code that runs: each example is started as its own process, as
its docstring says, and gets a real signed delivery of its point through the gateway."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Gateway

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "receivers"
START_TIMEOUT_S = 20.0

CE = {
    "audience": "https://api.example.com",
    "client": {"id": "c1", "name": "App", "metadata": {"tier": "gold"}},
    "scope": ["read"],
}
SIGNUP = {
    "user": {"tenant": "acme", "email": "jane@example.com"},
    "context": {"connection": {"id": "con_1", "name": "Username-Password-Authentication"}},
}
PHONE = {
    "recipient": "+15555550123",
    "text": "Your code is 123456",
    "context": {
        "message_type": "sms",
        "action": "enrollment",
        "language": "en",
        "code": "123456",
        "ip": "203.0.113.7",
        "user_agent": "test",
        "user": {"user_id": "u1"},
    },
}
CREATED = {"user": {"id": "u1", "email": "jane@example.com"}, "context": {"connection": {"id": "con_1"}}}
PASSWORD = {
    "user": {"id": "u1", "last_password_reset": "2026-01-15T09:30:00.000Z"},
    "context": {"connection": {"id": "con_1"}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    output: Path

    def printed(self) -> str:
        return self.output.read_text()


@asynccontextmanager
async def example(name: str, secret: str, tmp_path: Path) -> AsyncIterator[Running]:
    """`python examples/receivers/<name>.py --port P` with `WEBHOOK_SECRET`, until it listens."""
    port = free_port()
    output = tmp_path / f"{name}.out"
    env = {**os.environ, "WEBHOOK_SECRET": secret, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    with open(output, "wb") as out:  # noqa: ASYNC230 - a local file, opened once
        proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own example, started once
            [sys.executable, str(EXAMPLES / f"{name}.py"), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        end = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"{name} exited: {output.read_text()[-2000:]}"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                await writer.wait_closed()
                break
            except OSError:
                if time.monotonic() > end:
                    raise AssertionError(f"{name} did not listen: {output.read_text()[-2000:]}") from None
                await asyncio.sleep(0.05)
        yield Running(url=f"http://127.0.0.1:{port}/{name.replace('_', '-')}", output=output)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def new_hook(gw: Gateway, name: str) -> Any:
    trigger = name.replace("_", "-")
    hook = await gw.create_hook(name=trigger, triggerId=trigger, url="http://127.0.0.1:9/")
    return hook["id"], await gw.signing_secret(hook["id"])


async def point(gw: Gateway, hook_id: str, url: str) -> None:
    resp = await gw.client.patch(
        f"/api/v2/hooks/{hook_id}", json={"url": url, "enabled": True}, headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()


async def refuses_unsigned(url: str, body: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as http:
        resp = await http.post(url, json=body)
    assert resp.status_code == 401


async def test_the_credentials_exchange_example_grants_scope_and_claims(
    gateway: Gateway, tmp_path: Path
) -> None:
    hook_id, secret = await new_hook(gateway, "credentials_exchange")
    async with example("credentials_exchange", secret, tmp_path) as running:
        await point(gateway, hook_id, running.url)
        granted = await (await gateway.forward("credentials-exchange", CE)).json()
        refused = await (await gateway.forward("credentials-exchange", {**CE, "scope": ["admin"]})).json()
        await refuses_unsigned(running.url, CE)

    assert granted == {
        "status": "success",
        "data": {
            "scope": ["read", "read:reports"],
            "https://example.com/client": "c1",
            "https://example.com/tier": "gold",
        },
    }
    assert refused["data"]["name"] == "InvalidScopeError"


async def test_the_pre_user_registration_example_adds_metadata_or_denies(
    gateway: Gateway, tmp_path: Path
) -> None:
    hook_id, secret = await new_hook(gateway, "pre_user_registration")
    async with example("pre_user_registration", secret, tmp_path) as running:
        await point(gateway, hook_id, running.url)
        allowed = await (await gateway.forward("pre-user-registration", SIGNUP)).json()
        blocked = {**SIGNUP, "user": {"email": "eve@blocked.example"}}
        denied = await (await gateway.forward("pre-user-registration", blocked)).json()
        await refuses_unsigned(running.url, SIGNUP)

    assert allowed == {
        "status": "success",
        "data": {
            "user": {
                "user_metadata": {"onboarding": "pending"},
                "app_metadata": {"plan": "trial", "connection": "Username-Password-Authentication"},
            }
        },
    }
    assert denied == {
        "status": "error",
        "data": {
            "name": "PreUserRegistrationError",
            "message": "signup refused: domain blocked.example is blocked",
            "friendlyMessage": "Signups from this email domain are not accepted.",
        },
    }


async def test_the_send_phone_message_example_sends_the_code(gateway: Gateway, tmp_path: Path) -> None:
    hook_id, secret = await new_hook(gateway, "send_phone_message")
    async with example("send_phone_message", secret, tmp_path) as running:
        await point(gateway, hook_id, running.url)
        sent = await (await gateway.forward("send-phone-message", PHONE)).json()
        await refuses_unsigned(running.url, PHONE)

    assert sent == {"status": "success", "data": {"messageId": "console-1"}}
    assert "sms to +15555550123: Your code is 123456" in running.printed()


@pytest.mark.parametrize(
    ("name", "body", "line"),
    [
        ("post_user_registration", CREATED, "welcome mail to jane@example.com (user u1)"),
        (
            "post_change_password",
            PASSWORD,
            "revoke sessions of user u1 (password changed 2026-01-15T09:30:00.000Z)",
        ),
    ],
)
async def test_the_non_blocking_examples_take_a_durable_delivery(
    gateway: Gateway, tmp_path: Path, name: str, body: dict[str, Any], line: str
) -> None:
    hook_id, secret = await new_hook(gateway, name)
    async with example(name, secret, tmp_path) as running:
        await point(gateway, hook_id, running.url)
        accepted = await (await gateway.forward(name.replace("_", "-"), body)).json()
        [delivery] = accepted["deliveries"]
        done = await gateway.wait_delivery(delivery["deliveryId"], status="succeeded")
        await refuses_unsigned(running.url, body)

    assert done["attempts"][0]["statusCode"] == 200
    assert running.printed().count(line) == 1


def test_every_point_has_an_example() -> None:
    names = {p.stem.replace("_", "-") for p in EXAMPLES.glob("*.py")}
    assert names == {
        "credentials-exchange",
        "pre-user-registration",
        "send-phone-message",
        "post-user-registration",
        "post-change-password",
    }
