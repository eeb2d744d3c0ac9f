"""Hook code written for Auth0 runs unchanged behind the gateway.

`tests/node/hook_server.js` serves the scripts in `tests/node/hooks/` through Auth0's own
webtask compilers (`auth0-ext-compilers`). Hooks point at it with the secret
`auth0-extension-secret`, and the tests check what the gateway answers the auth server for
each blocking point, and what the harness received for the asynchronous ones.
Skipped only when `node` is not installed (`make node` installs the compilers).
"""

from __future__ import annotations

import asyncio
import json
import select
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import Gateway

from gateway.points import sample_event

NODE = shutil.which("node")
HARNESS_DIR = Path(__file__).parent / "node"
SECRET = "s3cr3t-for-the-compilers"
START_TIMEOUT_S = 15.0

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


@dataclass(frozen=True)
class Harness:
    base: str

    def url(self, point: str, script: str) -> str:
        return f"{self.base}/{point}/{script}"

    async def requests(self, point: str, script: str) -> list[dict[str, Any]]:
        """What the harness received at `/<point>/<script>` since the test began."""
        async with aiohttp.ClientSession() as s, s.get(f"{self.base}/_harness/requests") as resp:
            assert resp.status == 200
            listed = await resp.json()
        return [r for r in listed if r["url"].split("?")[0] == f"/{point}/{script}"]

    async def forget(self) -> None:
        async with aiohttp.ClientSession() as s, s.delete(f"{self.base}/_harness/requests") as resp:
            assert resp.status == 200


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    assert NODE is not None
    if not (HARNESS_DIR / "node_modules" / "auth0-ext-compilers").is_dir():
        pytest.fail(
            "Auth0's compilers are not installed: run `make node` (cd tests/node && npm ci --ignore-scripts)"
        )
    log = (tmp_path_factory.mktemp("node") / "hook_server.log").open("w")
    proc = subprocess.Popen(  # noqa: S603 - our own harness, fixed arguments
        [NODE, str(HARNESS_DIR / "hook_server.js"), "--port", "0", "--secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=HARNESS_DIR,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            pytest.fail("the node harness did not print its port in time")
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the node harness exited: {proc.wait(1)}")
        yield Harness(f"http://127.0.0.1:{json.loads(line)['port']}")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        log.close()


@pytest.fixture(autouse=True)
async def fresh_harness(harness: Harness) -> None:
    """Each test sees only the requests it caused."""
    await harness.forget()


MakeHook = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_hook(gateway: Gateway, harness: Harness) -> MakeHook:
    """A hook on the harness's `<point>/<script>`, enabled, with the compilers' secret."""

    async def make(point: str, script: str, *, secret: str = SECRET, **fields: Any) -> dict[str, Any]:
        fields.setdefault("name", script)
        hook = await gateway.create_hook(
            triggerId=point, url=harness.url(point, script), enabled=True, **fields
        )
        await gateway.add_secrets(hook["id"], {"auth0-extension-secret": secret})
        return hook

    return make


async def invoke(gateway: Gateway, trigger: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await gateway.forward(trigger, event if event is not None else sample_event(trigger))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def assert_server_error_naming(answer: dict[str, Any], hook_name: str) -> str:
    assert answer["status"] == "error", answer
    data = answer["data"]
    assert data["name"] == "ServerError"
    assert f"'{hook_name}'" in data["message"]
    assert set(data) == {"name", "message"}  # never the hook's stack, never a friendlyMessage
    assert "    at " not in data["message"]
    return str(data["message"])


# --- credentials-exchange -----------------------------------------------------------------------


async def test_claims_are_kept_or_dropped_and_scope_extended(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("credentials-exchange", "ce-add-claim")
    event = sample_event("credentials-exchange")
    answer = await invoke(gateway, "credentials-exchange", event)
    assert answer == {
        "status": "success",
        "data": {
            "scope": [*event["scope"], "extra"],
            "https://example.com/claim": "x",
            "https://example.com/client": event["client"]["id"],
            "https://example.com/audience": event["audience"],
        },
    }


async def test_a_hook_without_scope_resets_the_scopes(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("credentials-exchange", "ce-no-scope")
    answer = await invoke(gateway, "credentials-exchange")
    assert answer == {"status": "success", "data": {"scope": [], "https://example.com/claim": "no-scope"}}


async def test_the_hook_gets_the_event_and_the_bearer_secret(
    gateway: Gateway, make_hook: MakeHook, harness: Harness
) -> None:
    hook = await make_hook("credentials-exchange", "ce-echo")
    event = sample_event("credentials-exchange")
    data = (await invoke(gateway, "credentials-exchange", event))["data"]
    assert data["scope"] == event["scope"]
    assert data["https://example.com/client"] == event["client"]
    assert data["https://example.com/audience"] == event["audience"]
    assert data["https://example.com/context"] == event["context"]
    headers = data["https://example.com/headers"]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    (received,) = await harness.requests("credentials-exchange", "ce-echo")
    assert json.loads(received["body"]) == event
    records = await delivered_sync(gateway, hook["id"])
    assert received["headers"]["webhook-id"] == records[0]["id"]


async def test_a_chain_of_auth0_hooks_passes_the_scope_along(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("credentials-exchange", "ce-add-claim", order=1)
    await make_hook("credentials-exchange", "ce-echo", order=2)
    event = sample_event("credentials-exchange")
    data = (await invoke(gateway, "credentials-exchange", event))["data"]
    assert data["scope"] == [*event["scope"], "extra"]  # ce-echo saw what ce-add-claim left
    assert data["https://example.com/claim"] == "x"  # merged from the first hook


@pytest.mark.parametrize(
    ("script", "name", "message"),
    [
        ("ce-invalid-scope", "InvalidScopeError", 'scope "admin" is not allowed for '),
        ("ce-invalid-request", "InvalidRequestError", "missing required client metadata"),
    ],
)
async def test_credentials_exchange_denials_pass_without_the_stack(
    gateway: Gateway, make_hook: MakeHook, script: str, name: str, message: str
) -> None:
    await make_hook("credentials-exchange", script)
    event = sample_event("credentials-exchange")
    answer = await invoke(gateway, "credentials-exchange", event)
    expected = message + event["client"]["id"] if script == "ce-invalid-scope" else message
    assert answer == {"status": "error", "data": {"name": name, "message": expected}}


async def test_a_plain_error_is_a_server_error_naming_the_hook(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("credentials-exchange", "ce-error", name="plain error")
    message = assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "plain error")
    assert "something broke" in message


async def test_a_throwing_hook_is_a_server_error(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("credentials-exchange", "ce-throw", name="thrower")
    message = assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "thrower")
    assert "500" in message


async def test_a_hanging_hook_is_cut_by_the_deadline(gateway: Gateway, make_hook: MakeHook) -> None:
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme",
        json={"deadlines": {"credentials-exchange": 300}},
        headers={"Authorization": f"Bearer {gateway.operator_token()}"},
    )
    assert resp.status == 200
    await make_hook("credentials-exchange", "ce-hang", name="hang")
    answer = await asyncio.wait_for(invoke(gateway, "credentials-exchange"), 5.0)
    assert "deadline" in assert_server_error_naming(answer, "hang")


@pytest.mark.parametrize(
    ("point", "script"),
    [
        ("credentials-exchange", "ce-add-claim"),
        ("pre-user-registration", "pur-metadata"),
        ("send-phone-message", "spm-send"),
    ],
)
async def test_a_wrong_bearer_secret_fails_the_invocation(
    gateway: Gateway, make_hook: MakeHook, point: str, script: str
) -> None:
    await make_hook(point, script, name="misconfigured", secret="not-the-secret")
    message = assert_server_error_naming(await invoke(gateway, point), "misconfigured")
    assert "Unauthorized extensibility point" in message


# --- pre-user-registration ----------------------------------------------------------------------


async def test_metadata_set_by_an_auth0_hook(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("pre-user-registration", "pur-metadata")
    event = sample_event("pre-user-registration")
    assert await invoke(gateway, "pre-user-registration", event) == {
        "status": "success",
        "data": {
            "user": {
                "user_metadata": {
                    "favorite_color": "blue",
                    "signup_language": event["context"]["renderLanguage"],
                },
                "app_metadata": {
                    "plan": "free",
                    "vip": False,
                    "source_connection": event["context"]["connection"]["name"],
                },
            }
        },
    }


async def test_a_noop_hook_allows_with_empty_metadata(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("pre-user-registration", "pur-noop")
    assert await invoke(gateway, "pre-user-registration") == {
        "status": "success",
        "data": {"user": {"user_metadata": {}, "app_metadata": {}}},
    }


async def test_a_pre_user_registration_deny_keeps_its_friendly_message(
    gateway: Gateway, make_hook: MakeHook
) -> None:
    await make_hook("pre-user-registration", "pur-deny")
    event = sample_event("pre-user-registration")
    assert await invoke(gateway, "pre-user-registration", event) == {
        "status": "error",
        "data": {
            "name": "PreUserRegistrationError",
            "message": "Denied user registration in Pre User Registration Hook: " + event["user"]["email"],
            "friendlyMessage": "You are not allowed to sign up.",
        },
    }


# --- send-phone-message -------------------------------------------------------------------------


async def test_send_phone_message_success(gateway: Gateway, make_hook: MakeHook) -> None:
    await make_hook("send-phone-message", "spm-send")
    event = sample_event("send-phone-message")
    assert await invoke(gateway, "send-phone-message", event) == {
        "status": "success",
        "data": {"message_id": "msg_" + event["context"]["code"], "recipient": event["recipient"]},
    }


async def test_send_phone_message_error_keeps_its_friendly_message(
    gateway: Gateway, make_hook: MakeHook
) -> None:
    await make_hook("send-phone-message", "spm-fail")
    event = sample_event("send-phone-message")
    assert await invoke(gateway, "send-phone-message", event) == {
        "status": "error",
        "data": {
            "name": "SendPhoneMessageError",
            "message": "provider returned 503 for " + event["recipient"],
            "friendlyMessage": "Could not send the code, try again later.",
        },
    }


# --- what the gateway accepts, the compilers accept ----------------------------------------------

MINIMAL_EVENTS = {
    "credentials-exchange": (
        "ce-echo",
        {"audience": "https://api.example.com/", "client": {"id": "c1"}, "scope": []},
    ),
    "pre-user-registration": (
        "pur-noop",
        {"user": {"email": "a@example.com"}, "context": {"connection": {}}},
    ),
    "send-phone-message": (
        "spm-send",
        {
            "recipient": "+15555550100",
            "text": "code 1",
            "context": {
                "message_type": "voice",
                "action": "enrollment",
                "language": "en",
                "code": "1",
                "ip": "::1",
                "user_agent": "ua",
                "user": {},
            },
        },
    ),
}


@pytest.mark.parametrize("point", sorted(MINIMAL_EVENTS))
async def test_the_smallest_body_the_gateway_accepts_passes_the_compiler(
    gateway: Gateway, make_hook: MakeHook, point: str
) -> None:
    script, event = MINIMAL_EVENTS[point]
    await make_hook(point, script)
    answer = await invoke(gateway, point, event)
    assert answer["status"] == "success", answer


@pytest.mark.parametrize(
    ("point", "script"),
    [
        ("credentials-exchange", "ce-echo"),
        ("pre-user-registration", "pur-noop"),
        ("send-phone-message", "spm-send"),
        ("post-user-registration", "post-reg-noop"),
        ("post-change-password", "pcp-noop"),
    ],
)
async def test_the_test_endpoints_sample_event_passes_the_compiler(
    gateway: Gateway, make_hook: MakeHook, point: str, script: str
) -> None:
    hook = await make_hook(point, script)
    resp = await gateway.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gateway.auth())
    assert resp.status == 200
    result = await resp.json()
    assert result["statusCode"] == 200
    assert result["answer"]["status"] == "success", result


# --- asynchronous points ------------------------------------------------------------------------


async def delivered_sync(gateway: Gateway, hook_id: str) -> list[dict[str, Any]]:
    await gateway.invoker.drain()
    resp = await gateway.client.get("/api/v2/deliveries", params={"hookId": hook_id}, headers=gateway.auth())
    assert resp.status == 200
    return [d for d in await resp.json() if d["kind"] == "sync"]


@pytest.mark.parametrize(
    ("point", "script"),
    [("post-user-registration", "post-reg-noop"), ("post-change-password", "pcp-noop")],
)
async def test_asynchronous_points_are_delivered_to_auth0_hooks(
    gateway: Gateway, make_hook: MakeHook, harness: Harness, point: str, script: str
) -> None:
    await make_hook(point, script)
    event = sample_event(point)
    resp = await gateway.forward(point, event)
    assert resp.status == 202, await resp.text()
    (created,) = (await resp.json())["deliveries"]
    delivery = await gateway.wait_delivery(
        created["deliveryId"], status="succeeded", attempts=1, timeout=10.0
    )
    (attempt,) = delivery["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["error"] is None
    assert json.loads(attempt["responseBody"])["status"] == "success"
    (received,) = await harness.requests(point, script)
    assert received["method"] == "POST"
    assert json.loads(received["body"]) == event
    assert received["headers"]["authorization"] == f"Bearer {SECRET}"
    assert received["headers"]["webhook-id"] == created["deliveryId"]


async def test_an_asynchronous_hook_error_is_kept_in_the_attempt(
    gateway: Gateway, make_hook: MakeHook
) -> None:
    await make_hook("post-user-registration", "post-reg-fail")
    resp = await gateway.forward("post-user-registration", sample_event("post-user-registration"))
    assert resp.status == 202
    (created,) = (await resp.json())["deliveries"]
    delivery = await gateway.wait_delivery(
        created["deliveryId"], status="succeeded", attempts=1, timeout=10.0
    )
    assert "CRM unavailable" in delivery["attempts"][0]["error"]
