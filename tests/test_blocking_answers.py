"""Blocking points end to end: the auth server's POST, real receivers, the envelope it gets back.

Each test registers hooks against real aiohttp receivers on 127.0.0.1 and checks what
`POST /v1/tenants/{tenant}/triggers/{triggerId}` answers under the point's rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver

from gateway.points import RESERVED_APP_METADATA_KEYS, sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]


def answering(body: Any, status: int = 200) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A responder that answers every request with `body` as JSON."""

    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return respond


def success(data: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "data": data}


def error(name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "data": {"name": name, "message": message, **extra}}


async def hook_answering(
    gateway: Gateway,
    make_receiver: MakeReceiver,
    trigger: str,
    body: Any,
    *,
    name: str = "hook",
    status: int = 200,
    **fields: Any,
) -> Receiver:
    receiver = await make_receiver(answering(body, status))
    await gateway.create_hook(name=name, triggerId=trigger, url=receiver.url(), enabled=True, **fields)
    return receiver


async def invoke(gateway: Gateway, trigger: str, event: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await gateway.forward(trigger, event if event is not None else sample_event(trigger))
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def assert_server_error_naming(answer: dict[str, Any], hook_name: str) -> None:
    assert answer["status"] == "error"
    assert answer["data"]["name"] == "ServerError"
    assert f"'{hook_name}'" in answer["data"]["message"]
    assert "friendlyMessage" not in answer["data"]
    assert "stack" not in answer["data"]


# --- with no enabled hook: the neutral answer ---------------------------------------------------


async def test_no_enabled_hook_answers_the_neutral_answer_at_once(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(answering(success({"scope": ["never"]})))
    await gateway.create_hook(triggerId="credentials-exchange", url=receiver.url(), enabled=False)
    event = sample_event("credentials-exchange")
    assert await invoke(gateway, "credentials-exchange", event) == success({"scope": event["scope"]})
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {}, "app_metadata": {}}}
    )
    assert await invoke(gateway, "send-phone-message") == error("SendPhoneMessageError", "no hook configured")
    assert receiver.requests == []


async def test_the_receiver_gets_the_event_unchanged_and_signed(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await hook_answering(gateway, make_receiver, "credentials-exchange", success({"scope": []}))
    event = {**sample_event("credentials-exchange"), "extra": {"kept": [1, 2]}}
    await invoke(gateway, "credentials-exchange", event)
    (got,) = receiver.requests
    assert got.json() == event
    assert got.headers["Content-Type"] == "application/json"
    assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= {k.lower() for k in got.headers}


# --- credentials-exchange -------------------------------------------------------------------------


async def test_only_namespaced_claims_and_scope_reach_the_auth_server(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    answer = {
        "scope": ["read:items", "extra"],
        "https://example.com/plan": "gold",
        "http://claims.example.org/roles": ["admin"],
        "plain": "not a URL",
        "urn:example:claim": "not http(s)",
        "https://auth0.com/claim": "reserved host",
        "https://tenant.auth0.com/claim": "reserved subdomain",
        "https://x.webtask.io/claim": "reserved",
        "https://webtask.run/claim": "reserved",
        "iss": "registered",
        "sub": "registered",
        "aud": "registered",
        "exp": 1,
        "gty": "registered",
        "azp": "registered",
    }
    await hook_answering(gateway, make_receiver, "credentials-exchange", success(answer))
    assert await invoke(gateway, "credentials-exchange") == success(
        {
            "scope": ["read:items", "extra"],
            "https://example.com/plan": "gold",
            "http://claims.example.org/roles": ["admin"],
        }
    )


async def test_an_answer_without_scope_resets_the_scopes(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"https://example.com/a": 1})
    )
    assert await invoke(gateway, "credentials-exchange") == success({"scope": [], "https://example.com/a": 1})


async def test_a_plain_json_object_is_taken_as_data(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await hook_answering(
        gateway, make_receiver, "credentials-exchange", {"scope": ["a"], "https://e.com/x": 1}
    )
    assert await invoke(gateway, "credentials-exchange") == success({"scope": ["a"], "https://e.com/x": 1})


async def test_scope_that_is_not_an_array_of_strings_is_a_server_error(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": "read write"}), name="scoper"
    )
    assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "scoper")


async def test_claims_over_100_kb_are_a_server_error(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    big = {"scope": [], "https://example.com/blob": "x" * 102_400}
    await hook_answering(gateway, make_receiver, "credentials-exchange", success(big), name="big claims")
    answer = await invoke(gateway, "credentials-exchange")
    assert_server_error_naming(answer, "big claims")
    assert "102400" in answer["data"]["message"]


async def test_claims_just_under_100_kb_are_kept(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    name = "https://example.com/blob"
    overhead = len('{"":""}') + len(name)
    claims = {"scope": [], name: "x" * (102_400 - overhead)}
    await hook_answering(gateway, make_receiver, "credentials-exchange", success(claims))
    assert await invoke(gateway, "credentials-exchange") == success(claims)


@pytest.mark.parametrize("name", ["InvalidScopeError", "InvalidRequestError"])
async def test_credentials_exchange_denials_pass_through(
    gateway: Gateway, make_receiver: MakeReceiver, name: str
) -> None:
    await hook_answering(
        gateway,
        make_receiver,
        "credentials-exchange",
        error(name, "scope admin is not allowed", stack="Error: at hook.js:1"),
    )
    assert await invoke(gateway, "credentials-exchange") == error(name, "scope admin is not allowed")


# --- pre-user-registration ------------------------------------------------------------------------


async def test_only_the_two_metadata_objects_are_kept(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    answer = {
        "user": {
            "user_metadata": {"color": "blue", "a": {"b": 1}},
            "app_metadata": {"plan": "free"},
            "email": "evil@example.com",
            "blocked": True,
        },
        "other": 1,
    }
    await hook_answering(gateway, make_receiver, "pre-user-registration", success(answer))
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {"color": "blue", "a": {"b": 1}}, "app_metadata": {"plan": "free"}}}
    )


async def test_an_empty_success_gives_empty_metadata(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await hook_answering(gateway, make_receiver, "pre-user-registration", {"status": "success"})
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {}, "app_metadata": {}}}
    )


@pytest.mark.parametrize(
    "metadata",
    [
        {"user_metadata": {"$set": 1}},
        {"user_metadata": {"a.b": 1}},
        {"app_metadata": {"nested": {"$where": "x"}}},
        {"app_metadata": {"list": [{"x.y": 1}]}},
    ],
    ids=["dollar", "dot", "nested-dollar", "dot-in-list"],
)
async def test_metadata_keys_with_dollar_or_dot_are_a_server_error(
    gateway: Gateway, make_receiver: MakeReceiver, metadata: dict[str, Any]
) -> None:
    await hook_answering(
        gateway, make_receiver, "pre-user-registration", success({"user": metadata}), name="meta"
    )
    assert_server_error_naming(await invoke(gateway, "pre-user-registration"), "meta")


@pytest.mark.parametrize("key", ["blocked", "email", "user_id", "identities"])
async def test_reserved_app_metadata_keys_are_a_server_error(
    gateway: Gateway, make_receiver: MakeReceiver, key: str
) -> None:
    assert key in RESERVED_APP_METADATA_KEYS
    await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        success({"user": {"app_metadata": {key: "x"}}}),
        name="meta",
    )
    answer = await invoke(gateway, "pre-user-registration")
    assert_server_error_naming(answer, "meta")
    assert key in answer["data"]["message"]


async def test_reserved_names_are_fine_in_user_metadata(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    data = {"user": {"user_metadata": {"email": "shown", "blocked": False}}}
    await hook_answering(gateway, make_receiver, "pre-user-registration", success(data))
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {"email": "shown", "blocked": False}, "app_metadata": {}}}
    )


async def test_pre_user_registration_deny_passes_with_its_friendly_message(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    deny = error(
        "PreUserRegistrationError",
        "denied: jane@example.com",
        friendlyMessage="Signups are closed.",
        stack="PreUserRegistrationError: denied\n    at hook.js:3",
    )
    await hook_answering(gateway, make_receiver, "pre-user-registration", deny)
    assert await invoke(gateway, "pre-user-registration") == error(
        "PreUserRegistrationError", "denied: jane@example.com", friendlyMessage="Signups are closed."
    )


# --- send-phone-message ---------------------------------------------------------------------------


async def test_send_phone_message_success_passes_through(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await hook_answering(
        gateway, make_receiver, "send-phone-message", success({"message_id": "m1"})
    )
    assert await invoke(gateway, "send-phone-message") == success({"message_id": "m1"})
    assert receiver.requests[0].json() == sample_event("send-phone-message")


async def test_send_phone_message_error_passes_through(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await hook_answering(
        gateway,
        make_receiver,
        "send-phone-message",
        error("SendPhoneMessageError", "provider down", friendlyMessage="Try again later."),
    )
    assert await invoke(gateway, "send-phone-message") == error(
        "SendPhoneMessageError", "provider down", friendlyMessage="Try again later."
    )


async def test_a_second_enabled_send_phone_message_hook_is_a_conflict(gateway: Gateway) -> None:
    await gateway.create_hook(
        name="sms-1", triggerId="send-phone-message", url="http://127.0.0.1:9/", enabled=True
    )
    resp = await gateway.client.post(
        "/api/v2/hooks",
        headers=gateway.auth(),
        json={
            "name": "sms-2",
            "triggerId": "send-phone-message",
            "url": "http://127.0.0.1:9/",
            "enabled": True,
        },
    )
    assert resp.status == 409


# --- errors that may not pass, and malformed answers ---------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "name"),
    [
        ("credentials-exchange", "PreUserRegistrationError"),
        ("credentials-exchange", "ServerError"),
        ("pre-user-registration", "InvalidScopeError"),
        ("pre-user-registration", "Error"),
        ("send-phone-message", "PreUserRegistrationError"),
    ],
)
async def test_other_error_names_become_a_server_error_naming_the_hook(
    gateway: Gateway, make_receiver: MakeReceiver, trigger: str, name: str
) -> None:
    await hook_answering(
        gateway,
        make_receiver,
        trigger,
        error(name, "boom", friendlyMessage="not for users", stack="Error: boom\n at x"),
        name="audit hook",
    )
    answer = await invoke(gateway, trigger)
    assert_server_error_naming(answer, "audit hook")
    assert "not for users" not in answer["data"]["message"]


async def test_an_error_without_a_name_is_a_server_error_without_its_stack(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    body = {
        "status": "error",
        "data": {"message": "something broke", "stack": "Error: something broke\n at /x.js"},
    }
    await hook_answering(gateway, make_receiver, "credentials-exchange", body, name="plain")
    answer = await invoke(gateway, "credentials-exchange")
    assert_server_error_naming(answer, "plain")
    assert "/x.js" not in answer["data"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("not json at all", 200),
        (["a", "list"], 200),
        ({"status": "maybe"}, 200),
        ({"status": "success", "data": "text"}, 200),
        ({"status": "error", "data": {"name": 5}}, 200),
        (success({"scope": []}), 400),
    ],
    ids=["not-json", "list", "bad-status", "bad-data", "bad-name", "http-400"],
)
async def test_a_malformed_answer_is_a_server_error_naming_the_hook(
    gateway: Gateway, make_receiver: MakeReceiver, body: Any, status: int
) -> None:
    if isinstance(body, str):

        async def respond(
            request: web.Request, received: Received, state: dict[str, Any]
        ) -> web.StreamResponse:
            return web.Response(text=body, status=status)

        receiver = await make_receiver(respond)
        await gateway.create_hook(
            name="broken", triggerId="credentials-exchange", url=receiver.url(), enabled=True
        )
    else:
        await hook_answering(
            gateway, make_receiver, "credentials-exchange", body, status=status, name="broken"
        )
    assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "broken")


async def test_an_answer_over_the_size_cap_is_a_server_error(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    huge = success({"scope": [], "https://example.com/x": "y" * 2_000_000})
    await hook_answering(gateway, make_receiver, "credentials-exchange", huge, name="huge")
    assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "huge")


# --- chains of hooks ------------------------------------------------------------------------------


async def test_chain_runs_in_ascending_order_and_each_sees_the_previous_scope(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    calls: list[str] = []

    def adding(tag: str, claims: dict[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
        async def respond(
            request: web.Request, received: Received, state: dict[str, Any]
        ) -> web.StreamResponse:
            calls.append(tag)
            scope = received.json()["scope"]
            return web.json_response(success({"scope": [*scope, tag], **claims}))

        return respond

    second = await make_receiver(
        adding("second", {"https://example.com/shared": 2, "https://example.com/b": 2})
    )
    first = await make_receiver(
        adding("first", {"https://example.com/shared": 1, "https://example.com/a": 1})
    )
    # Created in the reverse order of their `order`: the order field decides, not creation.
    await gateway.create_hook(
        name="second", triggerId="credentials-exchange", url=second.url(), enabled=True, order=5
    )
    await gateway.create_hook(
        name="first", triggerId="credentials-exchange", url=first.url(), enabled=True, order=-1
    )
    event = {**sample_event("credentials-exchange"), "scope": ["base"]}
    answer = await invoke(gateway, "credentials-exchange", event)
    assert calls == ["first", "second"]
    assert first.requests[0].json()["scope"] == ["base"]
    assert second.requests[0].json()["scope"] == ["base", "first"]
    assert answer == success(
        {
            "scope": ["base", "first", "second"],
            "https://example.com/shared": 2,
            "https://example.com/a": 1,
            "https://example.com/b": 2,
        }
    )


async def test_a_scope_reset_by_the_first_hook_is_what_the_second_sees(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    first = await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"https://e.com/a": 1}), name="first", order=1
    )
    second = await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": ["again"]}), name="second", order=2
    )
    answer = await invoke(gateway, "credentials-exchange")
    assert first.requests[0].json()["scope"] == sample_event("credentials-exchange")["scope"]
    assert second.requests[0].json()["scope"] == []
    assert answer == success({"scope": ["again"], "https://e.com/a": 1})


async def test_metadata_of_a_chain_merges_later_wins(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        success({"user": {"user_metadata": {"a": 1, "both": "first"}, "app_metadata": {"x": 1}}}),
        name="first",
        order=1,
    )
    await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        success({"user": {"user_metadata": {"b": 2, "both": "second"}}}),
        name="second",
        order=2,
    )
    assert await invoke(gateway, "pre-user-registration") == success(
        {"user": {"user_metadata": {"a": 1, "b": 2, "both": "second"}, "app_metadata": {"x": 1}}}
    )


async def test_the_first_error_stops_the_chain(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        success({"user": {"user_metadata": {"a": 1}}}),
        name="first",
        order=1,
    )
    await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        error("PreUserRegistrationError", "no", friendlyMessage="No signups."),
        name="deny",
        order=2,
    )
    third = await hook_answering(
        gateway,
        make_receiver,
        "pre-user-registration",
        success({"user": {"user_metadata": {"c": 3}}}),
        name="third",
        order=3,
    )
    assert await invoke(gateway, "pre-user-registration") == error(
        "PreUserRegistrationError", "no", friendlyMessage="No signups."
    )
    assert third.requests == []


async def test_a_malformed_answer_in_a_chain_stops_it_with_a_server_error(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": 1}), name="bad", order=1
    )
    later = await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": []}), name="later", order=2
    )
    assert_server_error_naming(await invoke(gateway, "credentials-exchange"), "bad")
    assert later.requests == []


async def test_a_disabled_hook_in_the_middle_is_not_called(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": ["one"]}), name="one", order=1
    )
    off = await make_receiver(answering(success({"scope": ["off"]})))
    hook = await gateway.create_hook(
        name="off", triggerId="credentials-exchange", url=off.url(), enabled=True, order=2
    )
    resp = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gateway.auth()
    )
    assert resp.status == 200
    assert await invoke(gateway, "credentials-exchange") == success({"scope": ["one"]})
    assert off.requests == []


# --- the request itself ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "drop", "field"),
    [
        ("credentials-exchange", "audience", "audience"),
        ("pre-user-registration", "context", "context"),
        ("send-phone-message", "recipient", "recipient"),
    ],
)
async def test_a_body_missing_a_required_field_is_400_naming_it(
    gateway: Gateway, make_receiver: MakeReceiver, trigger: str, drop: str, field: str
) -> None:
    receiver = await hook_answering(gateway, make_receiver, trigger, success({}))
    event = sample_event(trigger)
    del event[drop]
    resp = await gateway.forward(trigger, event)
    assert resp.status == 400
    assert field in (await resp.json())["message"]
    assert receiver.requests == []


async def test_an_unknown_tenant_is_404(gateway: Gateway) -> None:
    resp = await gateway.forward(
        "credentials-exchange", sample_event("credentials-exchange"), tenant="nobody"
    )
    assert resp.status == 404


async def test_a_standard_format_hook_gets_the_envelope_and_its_answer_counts(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await hook_answering(
        gateway, make_receiver, "credentials-exchange", success({"scope": ["std"]}), format="standard"
    )
    event = sample_event("credentials-exchange")
    assert await invoke(gateway, "credentials-exchange", event) == success({"scope": ["std"]})
    body = receiver.requests[0].json()
    assert body["type"] == "credentials-exchange"
    assert body["data"] == event
    assert body["timestamp"].endswith("Z")
