"""Envelopes, the receiver's answer as an `Answer`, and the answer rules of the blocking points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from gateway import strictjson
from gateway.errors import GatewayError

from .triggers import CREDENTIALS_EXCHANGE, PRE_USER_REGISTRATION, SEND_PHONE_MESSAGE

_MISSING: Final = object()


class AnswerError(GatewayError):
    """The receiver's answer is malformed (bad envelope, bad types, refused keys, too large)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
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
        parsed = strictjson.loads(body)
    except strictjson.StrictJSONError as exc:
        if exc.syntax:
            ctype = content_type or "none"
            raise AnswerError(f"receiver's answer is not JSON (content type {ctype})") from None
        raise AnswerError(f"receiver's answer is not strict JSON: {exc.message}") from None
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
    return len(strictjson.dumps(value).encode())


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
