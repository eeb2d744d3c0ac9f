"""The extensibility points: body validation, answer rules, envelopes, chains, neutral answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.points import (
    MAX_CLAIMS_BYTES,
    PASS_THROUGH_ERRORS,
    RESERVED_APP_METADATA_KEYS,
    TRIGGER_IDS,
    TRIGGERS,
    Answer,
    AnswerError,
    Chain,
    error_envelope,
    filter_credentials_exchange,
    filter_pre_user_registration,
    is_blocking,
    neutral_answer,
    parse_receiver_answer,
    sample_event,
    server_error,
    standard_envelope,
    success_envelope,
    validate_event,
)

# --- the points ---------------------------------------------------------------------------------


def test_the_five_points_and_which_block() -> None:
    assert set(TRIGGER_IDS) == {
        "credentials-exchange",
        "pre-user-registration",
        "send-phone-message",
        "post-user-registration",
        "post-change-password",
    }
    assert {t for t in TRIGGER_IDS if is_blocking(t)} == {
        "credentials-exchange",
        "pre-user-registration",
        "send-phone-message",
    }
    assert TRIGGERS["post-change-password"].blocking is False


def test_unknown_point_is_not_found() -> None:
    with pytest.raises(NotFound):
        is_blocking("pre-login")
    with pytest.raises(NotFound):
        validate_event("pre-login", {})


# --- validate_event -----------------------------------------------------------------------------


@pytest.mark.parametrize("trigger_id", TRIGGER_IDS)
def test_sample_events_are_valid_and_fresh(trigger_id: str) -> None:
    event = sample_event(trigger_id)
    assert validate_event(trigger_id, event) is event
    event["mutated"] = True
    assert "mutated" not in sample_event(trigger_id)


@pytest.mark.parametrize("trigger_id", TRIGGER_IDS)
@pytest.mark.parametrize("body", [[], "x", 1, None])
def test_body_must_be_an_object(trigger_id: str, body: object) -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        validate_event(trigger_id, body)


def test_extra_fields_pass_through_unchanged() -> None:
    body = {"audience": "a", "client": {"id": "c", "extra": 1}, "scope": [], "more": {"x": [1]}}
    assert validate_event("credentials-exchange", body) == {
        "audience": "a",
        "client": {"id": "c", "extra": 1},
        "scope": [],
        "more": {"x": [1]},
    }


def _without(body: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    del target[last]
    return body


def _with(body: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = body
    for p in parents:
        target = target[p]
    target[last] = value
    return body


@pytest.mark.parametrize(
    ("trigger_id", "path"),
    [
        ("credentials-exchange", "audience"),
        ("credentials-exchange", "client"),
        ("credentials-exchange", "client.id"),
        ("credentials-exchange", "scope"),
        ("pre-user-registration", "user"),
        ("pre-user-registration", "context"),
        ("pre-user-registration", "context.connection"),
        ("send-phone-message", "recipient"),
        ("send-phone-message", "text"),
        ("send-phone-message", "context"),
        ("send-phone-message", "context.message_type"),
        ("send-phone-message", "context.action"),
        ("send-phone-message", "context.language"),
        ("send-phone-message", "context.code"),
        ("send-phone-message", "context.ip"),
        ("send-phone-message", "context.user_agent"),
        ("send-phone-message", "context.user"),
        ("send-phone-message", "context.client.client_id"),
        ("send-phone-message", "context.client.name"),
        ("post-user-registration", "user"),
        ("post-user-registration", "user.id"),
        ("post-change-password", "user"),
        ("post-change-password", "user.id"),
    ],
)
def test_missing_required_field_is_named(trigger_id: str, path: str) -> None:
    body = _without(sample_event(trigger_id), path)
    with pytest.raises(BadRequest) as info:
        validate_event(trigger_id, body)
    assert info.value.message == f'"{path}" is required'


@pytest.mark.parametrize(
    ("trigger_id", "path", "value", "message"),
    [
        ("credentials-exchange", "audience", 1, '"audience" must be a string'),
        ("credentials-exchange", "client", "c", '"client" must be an object'),
        ("credentials-exchange", "client.id", None, '"client.id" must be a string'),
        ("credentials-exchange", "scope", "read:a write:a", '"scope" must be an array of strings'),
        ("credentials-exchange", "scope", ["a", 1], '"scope" must be an array of strings'),
        ("pre-user-registration", "user", [], '"user" must be an object'),
        ("pre-user-registration", "context", "x", '"context" must be an object'),
        ("pre-user-registration", "user.email", 5, '"user.email" must be a string'),
        ("send-phone-message", "recipient", 15555550123, '"recipient" must be a string'),
        ("send-phone-message", "text", None, '"text" must be a string'),
        ("send-phone-message", "context", [], '"context" must be an object'),
        (
            "send-phone-message",
            "context.message_type",
            "email",
            '"context.message_type" must be one of "sms", "voice"',
        ),
        (
            "send-phone-message",
            "context.action",
            "login",
            '"context.action" must be one of "enrollment", "second-factor-authentication"',
        ),
        ("pre-user-registration", "context.connection", "c", '"context.connection" must be an object'),
        ("send-phone-message", "context.code", 123456, '"context.code" must be a string'),
        ("send-phone-message", "context.user", "u", '"context.user" must be an object'),
        ("send-phone-message", "context.client", "c", '"context.client" must be an object'),
        (
            "send-phone-message",
            "context.client.client_metadata",
            [],
            '"context.client.client_metadata" must be an object',
        ),
        ("post-user-registration", "user", "u", '"user" must be an object'),
        ("post-user-registration", "user.id", 7, '"user.id" must be a string'),
        ("post-change-password", "user.id", ["u"], '"user.id" must be a string'),
    ],
)
def test_wrong_type_is_named(trigger_id: str, path: str, value: object, message: str) -> None:
    body = _with(sample_event(trigger_id), path, value)
    with pytest.raises(BadRequest) as info:
        validate_event(trigger_id, body)
    assert info.value.message == message


@pytest.mark.parametrize("path", ["context.client", "context.client.client_metadata"])
def test_send_phone_message_client_and_its_metadata_are_optional(path: str) -> None:
    """As Auth0's send-phone-message compiler: `context.client` may be absent, not partial."""
    validate_event("send-phone-message", _without(sample_event("send-phone-message"), path))


def test_empty_scope_is_valid() -> None:
    validate_event("credentials-exchange", {"audience": "a", "client": {"id": "c"}, "scope": []})


@pytest.mark.parametrize("identifier", ["email", "username", "phoneNumber"])
def test_pre_user_registration_needs_one_identifier(identifier: str) -> None:
    body = {"user": {identifier: "x"}, "context": {"connection": {}}}
    validate_event("pre-user-registration", body)


def test_pre_user_registration_without_identifier_is_refused() -> None:
    body = {"user": {"email": None, "tenant": "acme"}, "context": {"connection": {}}}
    with pytest.raises(BadRequest) as info:
        validate_event("pre-user-registration", body)
    assert info.value.message == '"user.email", "user.username" or "user.phoneNumber" is required'


# --- credentials-exchange answer rules -----------------------------------------------------------


def test_namespaced_claims_are_kept() -> None:
    kept, dropped = filter_credentials_exchange(
        {
            "scope": ["read:a"],
            "https://example.com/roles": ["admin"],
            "http://example.com/plan": "gold",
            "https://api.example.org": {"nested": True},
            "https://auth0.com.example.net/x": 1,
        }
    )
    assert kept == {
        "scope": ["read:a"],
        "https://example.com/roles": ["admin"],
        "http://example.com/plan": "gold",
        "https://api.example.org": {"nested": True},
        "https://auth0.com.example.net/x": 1,
    }
    assert dropped == []


@pytest.mark.parametrize(
    "name",
    [
        "roles",  # not a URL
        "example.com/roles",  # no scheme
        "ftp://example.com/roles",
        "urn:example:roles",
        "https://",  # no host
        "https://auth0.com/roles",
        "https://AUTH0.COM/roles",
        "https://tenant.auth0.com/roles",
        "https://a.b.auth0.com./roles",
        "https://webtask.io/x",
        "https://x.webtask.io/x",
        "https://webtask.run/x",
        "https://sandbox.webtask.run/x",
        "https://[::1/x",  # not parseable
        "iss",
        "sub",
        "aud",
        "exp",
        "gty",
        "azp",
        "permissions",
    ],
)
def test_other_claims_are_dropped(name: str) -> None:
    kept, dropped = filter_credentials_exchange({"scope": [], name: "v"})
    assert kept == {"scope": []}
    assert dropped == [name]


def test_missing_scope_is_absent_from_kept() -> None:
    kept, dropped = filter_credentials_exchange({"https://example.com/a": 1})
    assert kept == {"https://example.com/a": 1}
    assert "scope" not in kept


@pytest.mark.parametrize("scope", ["read:a", None, [1], {"a": 1}])
def test_malformed_scope_is_an_answer_error(scope: object) -> None:
    with pytest.raises(AnswerError, match='"scope"'):
        filter_credentials_exchange({"scope": scope})


def test_claims_up_to_100_kb_are_kept() -> None:
    name = "https://example.com/blob"
    overhead = len(json.dumps({name: ""}, separators=(",", ":")))
    value = "x" * (MAX_CLAIMS_BYTES - overhead)
    kept, _ = filter_credentials_exchange({name: value})
    assert kept[name] == value


def test_claims_over_100_kb_are_an_answer_error() -> None:
    name = "https://example.com/blob"
    overhead = len(json.dumps({name: ""}, separators=(",", ":")))
    with pytest.raises(AnswerError, match="limit"):
        filter_credentials_exchange({name: "x" * (MAX_CLAIMS_BYTES - overhead + 1)})


def test_dropped_claims_do_not_count_toward_the_limit() -> None:
    kept, dropped = filter_credentials_exchange({"big": "x" * (MAX_CLAIMS_BYTES + 1)})
    assert kept == {} and dropped == ["big"]


# --- pre-user-registration answer rules ----------------------------------------------------------


def test_only_the_two_metadata_objects_are_kept() -> None:
    kept = filter_pre_user_registration(
        {
            "user": {
                "user_metadata": {"plan": "trial", "prefs": {"lang": "en"}},
                "app_metadata": {"roles": ["reader"]},
                "email": "evil@example.com",
                "blocked": True,
            },
            "other": 1,
        }
    )
    assert kept == {
        "user": {
            "user_metadata": {"plan": "trial", "prefs": {"lang": "en"}},
            "app_metadata": {"roles": ["reader"]},
        }
    }


def test_absent_metadata_is_empty() -> None:
    empty: dict[str, Any] = {"user": {"user_metadata": {}, "app_metadata": {}}}
    assert filter_pre_user_registration({}) == empty
    assert filter_pre_user_registration({"user": {}}) == empty
    assert filter_pre_user_registration({"user": {"user_metadata": {"a": 1}}}) == {
        "user": {"user_metadata": {"a": 1}, "app_metadata": {}}
    }


@pytest.mark.parametrize(
    "data",
    [
        {"user": []},
        {"user": {"user_metadata": "x"}},
        {"user": {"app_metadata": ["x"]}},
        {"user": {"user_metadata": None}},
    ],
)
def test_metadata_must_be_objects(data: dict[str, Any]) -> None:
    with pytest.raises(AnswerError, match="must be an object"):
        filter_pre_user_registration(data)


@pytest.mark.parametrize("where", ["user_metadata", "app_metadata"])
@pytest.mark.parametrize(
    "metadata",
    [
        {"$set": 1},
        {"a.b": 1},
        {"ok": {"$inc": 1}},
        {"ok": {"deep": {"x.y": 1}}},
        {"ok": [{"fine": 1}, {"$bad": 2}]},
    ],
)
def test_keys_with_dollar_or_dot_are_refused(where: str, metadata: dict[str, Any]) -> None:
    with pytest.raises(AnswerError, match="may not start with"):
        filter_pre_user_registration({"user": {where: metadata}})


def test_dollar_and_dot_in_values_are_fine() -> None:
    kept = filter_pre_user_registration({"user": {"user_metadata": {"price": "$1.50"}}})
    assert kept["user"]["user_metadata"] == {"price": "$1.50"}


@pytest.mark.parametrize("key", sorted(RESERVED_APP_METADATA_KEYS))
def test_reserved_app_metadata_keys_are_refused(key: str) -> None:
    with pytest.raises(AnswerError, match="reserved"):
        filter_pre_user_registration({"user": {"app_metadata": {key: 1}}})


def test_reserved_names_are_fine_in_user_metadata_and_nested() -> None:
    kept = filter_pre_user_registration(
        {"user": {"user_metadata": {"email": "x"}, "app_metadata": {"profile": {"email": "x"}}}}
    )
    assert kept["user"] == {"user_metadata": {"email": "x"}, "app_metadata": {"profile": {"email": "x"}}}


# --- parsing the receiver's answer ---------------------------------------------------------------


def _parse(body: object, status: int = 200) -> Answer:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_receiver_answer(status, "application/json", raw)


def test_success_envelope_gives_its_data() -> None:
    answer = _parse({"status": "success", "data": {"scope": ["a"]}})
    assert answer == Answer(ok=True, data={"scope": ["a"]})


def test_success_envelope_without_data_gives_empty_data() -> None:
    assert _parse({"status": "success"}) == Answer(ok=True, data={})
    assert _parse({"status": "success", "data": None}) == Answer(ok=True, data={})


def test_error_envelope_without_name_is_a_plain_error() -> None:
    answer = _parse({"status": "error", "data": {"message": "no name", "stack": "Error: no name"}})
    assert answer.error_name == "Error"
    assert answer.error_message == "no name"


def test_error_envelope_gives_name_and_messages() -> None:
    answer = _parse(
        {
            "status": "error",
            "data": {"name": "PreUserRegistrationError", "message": "log this", "friendlyMessage": "Sorry"},
        }
    )
    assert not answer.ok
    assert answer.error_name == "PreUserRegistrationError"
    assert answer.error_message == "log this"
    assert answer.friendly_message == "Sorry"


def test_error_without_message_has_empty_message() -> None:
    answer = _parse({"status": "error", "data": {"name": "InvalidScopeError"}})
    assert answer.error_name == "InvalidScopeError"
    assert answer.error_message == ""
    assert answer.friendly_message is None


def test_plain_object_with_2xx_is_data() -> None:
    assert _parse({"scope": ["a"]}, status=201) == Answer(ok=True, data={"scope": ["a"]})


@pytest.mark.parametrize("body", [b"", b"  \n"])
def test_empty_body_with_2xx_is_success_without_data(body: bytes) -> None:
    assert parse_receiver_answer(204, None, body) == Answer(ok=True, data={})


@pytest.mark.parametrize("status", [199, 301, 400, 404, 429, 500, 503])
def test_non_2xx_is_an_answer_error(status: int) -> None:
    with pytest.raises(AnswerError, match=str(status)):
        _parse({"status": "success", "data": {}}, status=status)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>ok</html>",
        b'{"status": "success"',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
    ],
)
def test_not_json_is_an_answer_error(body: bytes) -> None:
    with pytest.raises(AnswerError, match="not (strict )?JSON"):
        parse_receiver_answer(200, "text/html", body)


@pytest.mark.parametrize("body", [[], "ok", 1, None, True])
def test_non_object_is_an_answer_error(body: object) -> None:
    with pytest.raises(AnswerError, match="not a JSON object"):
        _parse(body)


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "data": {"name": 3}},
        {"status": "error", "data": {"name": ""}},
        {"status": "error"},
        {"status": "error", "data": "Denied"},
        {"status": "error", "data": {"name": "X", "message": 1}},
        {"status": "error", "data": {"name": "X", "friendlyMessage": {}}},
        {"status": "success", "data": ["a"]},
        {"status": "ok", "data": {}},
        {"status": 200},
    ],
)
def test_malformed_envelope_is_an_answer_error(body: dict[str, Any]) -> None:
    with pytest.raises(AnswerError):
        _parse(body)


def test_answer_error_is_a_gateway_error() -> None:
    assert issubclass(AnswerError, GatewayError)


# --- envelopes -----------------------------------------------------------------------------------


def test_envelopes() -> None:
    assert success_envelope({"a": 1}) == {"status": "success", "data": {"a": 1}}
    assert error_envelope("X", "m") == {"status": "error", "data": {"name": "X", "message": "m"}}
    assert error_envelope("X", "m", "f") == {
        "status": "error",
        "data": {"name": "X", "message": "m", "friendlyMessage": "f"},
    }
    envelope = server_error("my hook", "timed out")
    assert envelope["status"] == "error"
    assert envelope["data"]["name"] == "ServerError"
    assert "'my hook'" in envelope["data"]["message"] and "timed out" in envelope["data"]["message"]


def test_standard_envelope() -> None:
    event = sample_event("post-user-registration")
    assert standard_envelope("post-user-registration", event, timestamp="2026-01-15T09:30:00Z") == {
        "type": "post-user-registration",
        "timestamp": "2026-01-15T09:30:00Z",
        "data": event,
    }


# --- chains and pass-through of denials ----------------------------------------------------------

CE_EVENT: dict[str, Any] = {"audience": "https://api", "client": {"id": "c1"}, "scope": ["read:a"], "x": 1}
PUR_EVENT: dict[str, Any] = {
    "user": {"email": "a@example.com"},
    "context": {"connection": {"id": "con_1", "name": "db"}},
}
SPM_EVENT: dict[str, Any] = sample_event("send-phone-message")

EVENTS = {
    "credentials-exchange": CE_EVENT,
    "pre-user-registration": PUR_EVENT,
    "send-phone-message": SPM_EVENT,
}

PASS_THROUGH_CASES = [(t, name) for t, names in sorted(PASS_THROUGH_ERRORS.items()) for name in sorted(names)]


def test_pass_through_names() -> None:
    assert PASS_THROUGH_ERRORS == {
        "credentials-exchange": {"InvalidScopeError", "InvalidRequestError"},
        "pre-user-registration": {"PreUserRegistrationError"},
        "send-phone-message": {"SendPhoneMessageError"},
    }


@pytest.mark.parametrize(("trigger_id", "name"), PASS_THROUGH_CASES)
def test_pass_through_error_keeps_its_envelope(trigger_id: str, name: str) -> None:
    chain = Chain(trigger_id, EVENTS[trigger_id])
    chain.apply(Answer.error(name, "log message", "friendly"), hook_name="h1")
    assert chain.done
    assert chain.result() == {
        "status": "error",
        "data": {"name": name, "message": "log message", "friendlyMessage": "friendly"},
    }


@pytest.mark.parametrize("trigger_id", sorted(EVENTS))
@pytest.mark.parametrize("name", ["Error", "UnauthorizedError", "ServerError"])
def test_unknown_error_name_becomes_server_error_naming_the_hook(trigger_id: str, name: str) -> None:
    chain = Chain(trigger_id, EVENTS[trigger_id])
    chain.apply(Answer.error(name, "boom", "not for users"), hook_name="audit hook")
    result = chain.result()
    assert result["status"] == "error"
    assert result["data"]["name"] == "ServerError"
    assert "'audit hook'" in result["data"]["message"]
    assert "friendlyMessage" not in result["data"]


def test_a_deny_name_of_another_point_does_not_pass() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(Answer.error("PreUserRegistrationError", "no"), hook_name="h")
    assert chain.result()["data"]["name"] == "ServerError"


def test_first_hook_sees_the_request_scope() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    assert chain.next_request() == CE_EVENT


def test_second_hook_sees_the_scope_the_first_left() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(Answer.success({"scope": ["read:a", "write:a"]}), hook_name="h1")
    assert chain.next_request() == {**CE_EVENT, "scope": ["read:a", "write:a"]}
    assert CE_EVENT["scope"] == ["read:a"]  # the event itself is not changed


def test_missing_scope_resets_the_scopes() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(Answer.success({"https://example.com/a": 1}), hook_name="h1")
    assert chain.next_request()["scope"] == []
    assert chain.result() == success_envelope({"scope": [], "https://example.com/a": 1})


def test_empty_answer_resets_the_scopes() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(parse_receiver_answer(200, None, b""), hook_name="h1")
    assert chain.result() == success_envelope({"scope": []})


def test_claims_merge_later_wins_and_scope_is_the_last() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(
        Answer.success({"scope": ["a"], "https://example.com/x": 1, "https://example.com/y": 1, "bad": 0}),
        hook_name="h1",
    )
    chain.apply(Answer.success({"scope": ["a", "b"], "https://example.com/y": 2}), hook_name="h2")
    assert chain.result() == success_envelope(
        {"scope": ["a", "b"], "https://example.com/x": 1, "https://example.com/y": 2}
    )
    assert chain.dropped == ["bad"]


def test_claims_of_a_chain_over_100_kb_together_are_an_answer_error() -> None:
    half = "x" * (MAX_CLAIMS_BYTES // 2)
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(Answer.success({"scope": ["a"], "https://example.com/one": half}), hook_name="h1")
    with pytest.raises(AnswerError, match="chain"):
        chain.apply(Answer.success({"scope": ["b"], "https://example.com/two": half}), hook_name="h2")
    assert chain.result() == success_envelope({"scope": ["a"], "https://example.com/one": half})
    chain.apply(Answer.success({"scope": ["c"], "https://example.com/one": "small"}), hook_name="h3")
    assert chain.result() == success_envelope({"scope": ["c"], "https://example.com/one": "small"})


def test_first_error_stops_the_chain() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    chain.apply(Answer.success({"scope": ["a"], "https://example.com/x": 1}), hook_name="h1")
    chain.apply(Answer.error("InvalidScopeError", "no write"), hook_name="h2")
    assert chain.done
    assert chain.result() == error_envelope("InvalidScopeError", "no write")
    with pytest.raises(RuntimeError):
        chain.apply(Answer.success({"scope": ["b"]}), hook_name="h3")


def test_malformed_answer_leaves_the_chain_unchanged() -> None:
    chain = Chain("credentials-exchange", CE_EVENT)
    with pytest.raises(AnswerError):
        chain.apply(Answer.success({"scope": "a b"}), hook_name="h1")
    assert not chain.done
    assert chain.result() == success_envelope({"scope": ["read:a"]})


def test_fail_stops_with_a_server_error() -> None:
    chain = Chain("pre-user-registration", PUR_EVENT)
    chain.fail("h1", "timed out after 5000 ms")
    assert chain.done
    assert chain.result() == server_error("h1", "timed out after 5000 ms")


def test_metadata_merges_per_key_later_wins() -> None:
    chain = Chain("pre-user-registration", PUR_EVENT)
    chain.apply(
        Answer.success({"user": {"user_metadata": {"a": 1, "p": {"x": 1}}, "app_metadata": {"r": ["x"]}}}),
        hook_name="h1",
    )
    assert chain.next_request() == PUR_EVENT
    chain.apply(Answer.success({"user": {"user_metadata": {"b": 2, "p": {"y": 2}}}}), hook_name="h2")
    assert chain.result() == success_envelope(
        {"user": {"user_metadata": {"a": 1, "b": 2, "p": {"y": 2}}, "app_metadata": {"r": ["x"]}}}
    )


def test_deny_after_metadata_drops_the_metadata() -> None:
    chain = Chain("pre-user-registration", PUR_EVENT)
    chain.apply(Answer.success({"user": {"user_metadata": {"a": 1}}}), hook_name="h1")
    chain.apply(Answer.error("PreUserRegistrationError", "blocked", "Signups are closed"), hook_name="h2")
    assert chain.result() == error_envelope("PreUserRegistrationError", "blocked", "Signups are closed")


def test_send_phone_message_success_passes_through() -> None:
    chain = Chain("send-phone-message", SPM_EVENT)
    assert chain.next_request() == SPM_EVENT
    chain.apply(Answer.success({"messageId": "m1"}), hook_name="sms")
    assert chain.result() == success_envelope({"messageId": "m1"})


def test_non_blocking_point_has_no_chain() -> None:
    with pytest.raises(ValueError):
        Chain("post-user-registration", sample_event("post-user-registration"))


# --- neutral answers -----------------------------------------------------------------------------


def test_neutral_credentials_exchange_keeps_the_request_scope() -> None:
    assert neutral_answer("credentials-exchange", CE_EVENT) == success_envelope({"scope": ["read:a"]})


def test_neutral_pre_user_registration_is_empty_metadata() -> None:
    assert neutral_answer("pre-user-registration", PUR_EVENT) == success_envelope(
        {"user": {"user_metadata": {}, "app_metadata": {}}}
    )


def test_neutral_send_phone_message_is_an_error() -> None:
    assert neutral_answer("send-phone-message", SPM_EVENT) == {
        "status": "error",
        "data": {"name": "SendPhoneMessageError", "message": "no hook configured"},
    }


def test_chain_with_every_hook_skipped_is_neutral() -> None:
    for trigger_id, event in EVENTS.items():
        assert Chain.start(trigger_id, event).result() == neutral_answer(trigger_id, event)
