"""The extensibility points: which exist, what the auth server must send, what an answer may do.

Everything here is pure: bodies in, bodies out. The flow of a blocking invocation is

    validate_event(trigger_id, body)            the auth server's body, checked (400 otherwise)
    chain = Chain(trigger_id, event)            one per invocation
    for each enabled hook, in order:
        chain.next_request()                    the body that hook is sent
        parse_receiver_answer(status, ct, raw)  its HTTP answer, as an `Answer`
        chain.apply(answer, hook_name=...)      folded in by the point's rules
        (or chain.fail(hook_name, reason) / skip, per the hook's failure policy)
        stop when chain.done
    chain.result()                              the envelope the auth server gets

`AnswerError` means "the receiver's answer is malformed": the caller treats it as a failed
attempt of that hook and lets the hook's failure policy decide.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.errors import BadRequest, GatewayError, NotFound

__all__ = [
    "CREDENTIALS_EXCHANGE",
    "MAX_CLAIMS_BYTES",
    "PASS_THROUGH_ERRORS",
    "POST_CHANGE_PASSWORD",
    "POST_USER_REGISTRATION",
    "PRE_USER_REGISTRATION",
    "RESERVED_APP_METADATA_KEYS",
    "RESERVED_CLAIM_HOSTS",
    "REGISTERED_CLAIMS",
    "SEND_PHONE_MESSAGE",
    "TRIGGERS",
    "TRIGGER_IDS",
    "Answer",
    "AnswerError",
    "Chain",
    "Trigger",
    "error_envelope",
    "filter_credentials_exchange",
    "filter_pre_user_registration",
    "get_trigger",
    "is_blocking",
    "neutral_answer",
    "parse_receiver_answer",
    "sample_event",
    "server_error",
    "standard_envelope",
    "success_envelope",
    "validate_event",
]

CREDENTIALS_EXCHANGE: Final = "credentials-exchange"
PRE_USER_REGISTRATION: Final = "pre-user-registration"
SEND_PHONE_MESSAGE: Final = "send-phone-message"
POST_USER_REGISTRATION: Final = "post-user-registration"
POST_CHANGE_PASSWORD: Final = "post-change-password"  # noqa: S105 (a trigger name, not a password)


class AnswerError(GatewayError):
    """The receiver's answer is malformed (bad envelope, bad types, refused keys, too large)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Trigger:
    """One extensibility point: blocking ones wait for the receiver's answer."""

    id: str
    blocking: bool


TRIGGERS: Final[Mapping[str, Trigger]] = MappingProxyType(
    {
        t.id: t
        for t in (
            Trigger(CREDENTIALS_EXCHANGE, blocking=True),
            Trigger(PRE_USER_REGISTRATION, blocking=True),
            Trigger(SEND_PHONE_MESSAGE, blocking=True),
            Trigger(POST_USER_REGISTRATION, blocking=False),
            Trigger(POST_CHANGE_PASSWORD, blocking=False),
        )
    }
)
TRIGGER_IDS: Final[tuple[str, ...]] = tuple(TRIGGERS)


def get_trigger(trigger_id: str) -> Trigger:
    """The point named `trigger_id`; `NotFound` for a name that is not one."""
    try:
        return TRIGGERS[trigger_id]
    except KeyError:
        raise NotFound(f"unknown triggerId {trigger_id!r}") from None


def is_blocking(trigger_id: str) -> bool:
    """Whether the auth server waits for the answer (`NotFound` for an unknown point)."""
    return get_trigger(trigger_id).blocking


# --- validation of what the auth server sends ------------------------------------------------

_MISSING: Final = object()


def _get(obj: Mapping[str, Any], key: str, path: str) -> Any:
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        raise BadRequest(f'"{path}" is required')
    return value


def _string(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = _get(obj, key, path)
    if not isinstance(value, str):
        raise BadRequest(f'"{path}" must be a string')
    return value


def _object(obj: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
    value = _get(obj, key, path)
    if not isinstance(value, dict):
        raise BadRequest(f'"{path}" must be an object')
    return value


def _string_array(obj: Mapping[str, Any], key: str, path: str) -> list[str]:
    value = _get(obj, key, path)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'"{path}" must be an array of strings')
    return value


def _one_of(obj: Mapping[str, Any], key: str, path: str, allowed: tuple[str, ...]) -> str:
    value = _get(obj, key, path)
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(f'"{a}"' for a in allowed)
        raise BadRequest(f'"{path}" must be one of {choices}')
    return value


_USER_IDENTIFIERS: Final = ("email", "username", "phoneNumber")
_MESSAGE_TYPES: Final = ("sms", "voice")
_PHONE_ACTIONS: Final = ("enrollment", "second-factor-authentication")


def _validate_credentials_exchange(body: dict[str, Any]) -> None:
    _string(body, "audience", "audience")
    client = _object(body, "client", "client")
    _string(client, "id", "client.id")
    _string_array(body, "scope", "scope")


def _validate_pre_user_registration(body: dict[str, Any]) -> None:
    user = _object(body, "user", "user")
    present = False
    for key in _USER_IDENTIFIERS:
        value = user.get(key)
        if value is None:  # absent or null: a phone signup has no email, and so on
            continue
        if not isinstance(value, str):
            raise BadRequest(f'"user.{key}" must be a string')
        present = True
    if not present:
        raise BadRequest('"user.email", "user.username" or "user.phoneNumber" is required')
    _validate_connection_context(body)


def _validate_connection_context(body: dict[str, Any]) -> None:
    """`context.connection` must be an object: Auth0's user compilers refuse the body otherwise."""
    context = _object(body, "context", "context")
    _object(context, "connection", "context.connection")


def _validate_send_phone_message(body: dict[str, Any]) -> None:
    """What Auth0's send-phone-message compiler checks before it calls the hook."""
    _string(body, "recipient", "recipient")
    _string(body, "text", "text")
    context = _object(body, "context", "context")
    _one_of(context, "message_type", "context.message_type", _MESSAGE_TYPES)
    _one_of(context, "action", "context.action", _PHONE_ACTIONS)
    for key in ("language", "code", "ip", "user_agent"):
        _string(context, key, f"context.{key}")
    _object(context, "user", "context.user")
    if "client" in context:  # optional, but whole when present
        client = _object(context, "client", "context.client")
        _string(client, "client_id", "context.client.client_id")
        _string(client, "name", "context.client.name")
        if "client_metadata" in client:
            _object(client, "client_metadata", "context.client.client_metadata")


def _validate_user_with_id(body: dict[str, Any]) -> None:
    user = _object(body, "user", "user")
    _string(user, "id", "user.id")
    # Auth0's compilers refuse these points' bodies without a connection object.
    context = _object(body, "context", "context")
    _object(context, "connection", "context.connection")


_VALIDATORS: Final = MappingProxyType(
    {
        CREDENTIALS_EXCHANGE: _validate_credentials_exchange,
        PRE_USER_REGISTRATION: _validate_pre_user_registration,
        SEND_PHONE_MESSAGE: _validate_send_phone_message,
        POST_USER_REGISTRATION: _validate_user_with_id,
        POST_CHANGE_PASSWORD: _validate_user_with_id,
    }
)


def validate_event(trigger_id: str, body: object) -> dict[str, Any]:
    """Check the point's required fields; return `body` itself (extra fields pass through).

    Raises `BadRequest` naming the field path, or `NotFound` for an unknown point.
    """
    get_trigger(trigger_id)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    _VALIDATORS[trigger_id](body)
    return body


# --- envelopes ---------------------------------------------------------------------------------


def success_envelope(data: Mapping[str, Any]) -> dict[str, Any]:
    """`{"status": "success", "data": {...}}`."""
    return {"status": "success", "data": dict(data)}


def error_envelope(name: str, message: str, friendly_message: str | None = None) -> dict[str, Any]:
    """`{"status": "error", "data": {name, message[, friendlyMessage]}}`."""
    data: dict[str, Any] = {"name": name, "message": message}
    if friendly_message is not None:
        data["friendlyMessage"] = friendly_message
    return {"status": "error", "data": data}


def server_error(hook_name: str, reason: str) -> dict[str, Any]:
    """The `ServerError` envelope for a hook that failed or answered an error that may not pass."""
    return error_envelope("ServerError", f"hook {hook_name!r}: {reason}")


def standard_envelope(trigger_id: str, event: Mapping[str, Any], *, timestamp: str) -> dict[str, Any]:
    """Standard Webhooks' `{type, timestamp, data}` body, for hooks with format "standard"."""
    return {"type": trigger_id, "timestamp": timestamp, "data": dict(event)}


# --- the receiver's answer ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One receiver's answer: success with `data`, or an error with its name and messages."""

    ok: bool
    data: dict[str, Any] = field(default_factory=dict)
    error_name: str | None = None
    error_message: str | None = None
    friendly_message: str | None = None

    @classmethod
    def success(cls, data: Mapping[str, Any] | None = None) -> Answer:
        return cls(ok=True, data=dict(data or {}))

    @classmethod
    def error(cls, name: str, message: str = "", friendly_message: str | None = None) -> Answer:
        data: dict[str, Any] = {"name": name, "message": message}
        if friendly_message is not None:
            data["friendlyMessage"] = friendly_message
        return cls(
            ok=False, data=data, error_name=name, error_message=message, friendly_message=friendly_message
        )


def parse_receiver_answer(status: int, content_type: str | None, body: bytes) -> Answer:
    """Read a receiver's HTTP answer as Auth0's envelope; `AnswerError` when it is not one.

    A 2xx with an empty body is a success without data (Auth0's `callback(null)`); a plain
    JSON object without `status` is taken as `data`.
    """
    if not 200 <= status <= 299:
        raise AnswerError(f"receiver answered HTTP {status}")
    if not body.strip():
        return Answer.success()
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AnswerError(f"receiver's answer is not JSON (content type {content_type or 'none'})") from None
    if not isinstance(parsed, dict):
        raise AnswerError("receiver's answer is not a JSON object")
    if "status" not in parsed:
        return Answer.success(parsed)

    kind = parsed["status"]
    data = parsed.get("data")
    if kind == "success":
        if data is None:
            return Answer.success()
        if not isinstance(data, dict):
            raise AnswerError('"data" of a success answer must be an object')
        return Answer.success(data)
    if kind == "error":
        if not isinstance(data, dict):
            raise AnswerError('"data" of an error answer must be an object')
        name = data.get("name")
        if name is None:
            # Auth0's compilers send a plain `new Error(...)` without a name.
            name = "Error"
        if not isinstance(name, str) or not name:
            raise AnswerError('"data.name" of an error answer must be a string')
        message = data.get("message")
        if message is None:
            message = ""
        if not isinstance(message, str):
            raise AnswerError('"data.message" of an error answer must be a string')
        friendly = data.get("friendlyMessage")
        if friendly is not None and not isinstance(friendly, str):
            raise AnswerError('"data.friendlyMessage" of an error answer must be a string')
        return Answer.error(name, message, friendly)
    raise AnswerError('"status" of the answer must be "success" or "error"')


# --- answer rules of the blocking points ---------------------------------------------------------

MAX_CLAIMS_BYTES: Final = 102_400  # bytes of the kept claims serialized as compact UTF-8 JSON

RESERVED_CLAIM_HOSTS: Final = frozenset({"auth0.com", "webtask.io", "webtask.run"})

REGISTERED_CLAIMS: Final = frozenset(
    {
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "azp", "scope", "gty", "amr", "acr",
        "auth_time", "nonce", "at_hash", "c_hash", "cnf", "sid", "org_id", "org_name",
        "permissions", "client_id",
    }
)  # fmt: skip

RESERVED_APP_METADATA_KEYS: Final = frozenset(
    {
        "blocked", "clientID", "created_at", "email", "email_verified", "globalClientID",
        "global_client_id", "identities", "lastIP", "lastLogin", "loginsCount", "metadata",
        "multifactor", "name", "nickname", "picture", "updated_at", "user_id", "user_metadata",
        "app_metadata", "given_name", "family_name", "last_password_reset", "phone_number",
        "phone_verified", "username",
    }
)  # fmt: skip

PASS_THROUGH_ERRORS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        CREDENTIALS_EXCHANGE: frozenset({"InvalidScopeError", "InvalidRequestError"}),
        PRE_USER_REGISTRATION: frozenset({"PreUserRegistrationError"}),
        SEND_PHONE_MESSAGE: frozenset({"SendPhoneMessageError"}),
    }
)


def _is_allowed_claim(name: str) -> bool:
    if name in REGISTERED_CLAIMS:
        return False
    try:
        parts = urlsplit(name)
        host = parts.hostname
    except ValueError:  # e.g. an unbalanced "[" in the netloc
        return False
    if parts.scheme not in ("http", "https") or not host:
        return False
    host = host.rstrip(".")
    return not any(host == h or host.endswith("." + h) for h in RESERVED_CLAIM_HOSTS)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def filter_credentials_exchange(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Keep `scope` and the namespaced claims of a credentials-exchange answer.

    Returns `(kept, dropped)`: `kept` has `scope` only when the answer had one (absent means
    the scopes are reset) and the allowed claims; `dropped` names the other keys.
    """
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    if "scope" in data:
        scope = data["scope"]
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise AnswerError('"scope" must be an array of strings')
        kept["scope"] = list(scope)
    claims: dict[str, Any] = {}
    for name, value in data.items():
        if name == "scope":
            continue
        if _is_allowed_claim(name):
            claims[name] = value
        else:
            dropped.append(name)
    size = _json_size(claims)
    if size > MAX_CLAIMS_BYTES:
        raise AnswerError(f"custom claims are {size} bytes, over the limit of {MAX_CLAIMS_BYTES}")
    kept.update(claims)
    return kept, dropped


def _check_metadata_keys(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.startswith("$") or "." in key:
                raise AnswerError(f'"{path}" has key {key!r}: keys may not start with "$" or contain "."')
            _check_metadata_keys(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_metadata_keys(inner, f"{path}[{index}]")


def filter_pre_user_registration(data: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only `user.user_metadata` and `user.app_metadata`: `{"user": {both, {} if absent}}`."""
    user = data.get("user", _MISSING)
    kept: dict[str, dict[str, Any]] = {"user_metadata": {}, "app_metadata": {}}
    if user is _MISSING:
        return {"user": kept}
    if not isinstance(user, dict):
        raise AnswerError('"user" must be an object')
    for key in ("user_metadata", "app_metadata"):
        if key not in user:
            continue
        metadata = user[key]
        if not isinstance(metadata, dict):
            raise AnswerError(f'"user.{key}" must be an object')
        _check_metadata_keys(metadata, f"user.{key}")
        kept[key] = dict(metadata)
    reserved = sorted(RESERVED_APP_METADATA_KEYS.intersection(kept["app_metadata"]))
    if reserved:
        raise AnswerError(f'"user.app_metadata" may not set reserved keys: {", ".join(reserved)}')
    return {"user": kept}


# --- chains of hooks on one blocking point -------------------------------------------------------


class Chain:
    """Folds the answers of the hooks of one blocking invocation, in order.

    credentials-exchange: each hook is sent the event with `scope` as the previous hook left it;
    an answer without `scope` resets it to `[]`; claims merge, later wins.
    pre-user-registration: `user_metadata` and `app_metadata` merge per top-level key, later wins.
    send-phone-message: success data passes through (merged, later wins).
    The first error stops the chain: a pass-through name keeps its envelope, any other name
    becomes a `ServerError` naming the hook. If no hook succeeded (none enabled, or all skipped
    by their failure policy) the result is the neutral answer.
    """

    def __init__(self, trigger_id: str, event: Mapping[str, Any]) -> None:
        if not get_trigger(trigger_id).blocking:
            raise ValueError(f"{trigger_id!r} is not a blocking point")
        self.trigger_id = trigger_id
        self.event: dict[str, Any] = dict(event)
        scope = event.get("scope")
        self.scope: list[str] = list(scope) if isinstance(scope, list) else []
        self.claims: dict[str, Any] = {}
        self.user_metadata: dict[str, Any] = {}
        self.app_metadata: dict[str, Any] = {}
        self.data: dict[str, Any] = {}
        self.dropped: list[str] = []  # claim names dropped so far, for the invocation's log
        self.applied = 0  # successful answers folded in
        self._stopped: dict[str, Any] | None = None

    @classmethod
    def start(cls, trigger_id: str, event: Mapping[str, Any]) -> Chain:
        return cls(trigger_id, event)

    @property
    def done(self) -> bool:
        """Whether an error stopped the chain (the remaining hooks are not called)."""
        return self._stopped is not None

    def next_request(self) -> dict[str, Any]:
        """The body the next hook is sent."""
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            return {**self.event, "scope": list(self.scope)}
        return dict(self.event)

    def apply(self, answer: Answer, *, hook_name: str) -> None:
        """Fold one hook's answer in. `AnswerError` (state unchanged) if its data is malformed."""
        if self._stopped is not None:
            raise RuntimeError("the chain was stopped by an error")
        if not answer.ok:
            name = answer.error_name or ""
            message = answer.error_message or ""
            if name in PASS_THROUGH_ERRORS[self.trigger_id]:
                self._stopped = error_envelope(name, message, answer.friendly_message)
            else:
                reason = f"answered {name}: {message}" if message else f"answered {name}"
                self._stopped = server_error(hook_name, reason)
            return
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            kept, dropped = filter_credentials_exchange(answer.data)
            scope = kept.pop("scope", [])  # a missing scope resets the scopes (Auth0's rule)
            merged = {**self.claims, **kept}
            size = _json_size(merged)
            if size > MAX_CLAIMS_BYTES:  # each answer fits, but the chain's claims together do not
                raise AnswerError(
                    f"custom claims of the chain are {size} bytes, over the limit of {MAX_CLAIMS_BYTES}"
                )
            self.scope = scope
            self.claims = merged
            self.dropped.extend(dropped)
        elif self.trigger_id == PRE_USER_REGISTRATION:
            user = filter_pre_user_registration(answer.data)["user"]
            self.user_metadata.update(user["user_metadata"])
            self.app_metadata.update(user["app_metadata"])
        else:
            self.data.update(answer.data)
        self.applied += 1

    def fail(self, hook_name: str, reason: str) -> None:
        """Stop with a `ServerError` (a hook failed and its failure policy is `fail`)."""
        if self._stopped is None:
            self._stopped = server_error(hook_name, reason)

    def result(self) -> dict[str, Any]:
        """The envelope the auth server gets. It shares the chain's objects: a chain is used for
        one invocation and dropped, so copying them would only cost time on the hot path."""
        if self._stopped is not None:
            return self._stopped
        if self.trigger_id == CREDENTIALS_EXCHANGE:
            return success_envelope({"scope": list(self.scope), **self.claims})
        if self.trigger_id == PRE_USER_REGISTRATION:
            return success_envelope(
                {"user": {"user_metadata": self.user_metadata, "app_metadata": self.app_metadata}}
            )
        if self.applied == 0:
            return error_envelope("SendPhoneMessageError", "no hook configured")
        return success_envelope(self.data)


def neutral_answer(trigger_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """The answer of a blocking point with no enabled hook."""
    return Chain(trigger_id, event).result()


# --- sample events (the "test this hook" runner) -----------------------------------------------

_TENANT = "acme"
_CONNECTION = {"id": "con_4t9aTLZrnGbwb8gL", "name": "Username-Password-Authentication", "tenant": _TENANT}

_SAMPLES: Final[Mapping[str, dict[str, Any]]] = MappingProxyType(
    {
        CREDENTIALS_EXCHANGE: {
            "audience": "https://api.example.com/",
            "client": {
                "id": "sxXxcnBKhHRaSSjJ5ss6QhvVSMk42FCF",
                "name": "Inventory Service",
                "tenant": _TENANT,
                "metadata": {"tier": "gold"},
            },
            "scope": ["read:items", "write:items"],
            "context": {"ip": "203.0.113.7", "userAgent": "inventory-service/2.1"},
        },
        PRE_USER_REGISTRATION: {
            "user": {
                "tenant": _TENANT,
                "username": "jdoe",
                "email": "jane.doe@example.com",
                "emailVerified": False,
                "phoneNumber": "+15555550123",
                "phoneNumberVerified": False,
                "user_metadata": {"plan": "trial"},
                "app_metadata": {},
            },
            "context": {
                "connection": dict(_CONNECTION),
                "request": {"ip": "203.0.113.7", "language": "en-US"},
                "renderLanguage": "en",
            },
        },
        SEND_PHONE_MESSAGE: {
            "recipient": "+15555550123",
            "text": "Your verification code is: 123456",
            "context": {
                "message_type": "sms",
                "action": "second-factor-authentication",
                "language": "en",
                "code": "123456",
                "ip": "203.0.113.7",
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/124.0",
                "client": {
                    "client_id": "m0P2hFQmX4LM5G8mGc1G0bT1sTfBLm3w",
                    "name": "Acme Web",
                    "client_metadata": {},
                },
                "user": {
                    "user_id": "auth0|5f7c8ec7c33c6c004bbafe82",
                    "name": "Jane Doe",
                    "email": "jane.doe@example.com",
                    "app_metadata": {},
                    "user_metadata": {"plan": "trial"},
                },
            },
        },
        POST_USER_REGISTRATION: {
            "user": {
                "id": "5f7c8ec7c33c6c004bbafe82",
                "tenant": _TENANT,
                "username": "jdoe",
                "email": "jane.doe@example.com",
                "emailVerified": False,
                "phoneNumber": "+15555550123",
                "phoneNumberVerified": False,
                "user_metadata": {"plan": "trial"},
                "app_metadata": {},
            },
            "context": {"requestLanguage": "en-US", "connection": dict(_CONNECTION)},
        },
        POST_CHANGE_PASSWORD: {
            "user": {
                "id": "5f7c8ec7c33c6c004bbafe82",
                "username": "jdoe",
                "email": "jane.doe@example.com",
                "last_password_reset": "2026-01-15T09:30:00.000Z",
            },
            "context": {"connection": dict(_CONNECTION)},
        },
    }
)


def sample_event(trigger_id: str) -> dict[str, Any]:
    """A realistic body of the point, fresh on every call (the dashboard's test runner sends it)."""
    get_trigger(trigger_id)
    return copy.deepcopy(_SAMPLES[trigger_id])
