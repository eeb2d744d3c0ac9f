"""What the auth server must send for each point, and a sample event of each (for the
"test this hook" runner). Extra fields pass through untouched."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from gateway.errors import BadRequest

from .triggers import (
    CREDENTIALS_EXCHANGE,
    POST_CHANGE_PASSWORD,
    POST_USER_REGISTRATION,
    PRE_USER_REGISTRATION,
    SEND_PHONE_MESSAGE,
    get_trigger,
)

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
