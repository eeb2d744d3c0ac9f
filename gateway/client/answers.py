"""A receiver's answers, as Auth0's envelope (SPEC "The wire protocol towards receivers").

    return answers.grant(["read:reports"], {"https://example.com/plan": "gold"})
    return answers.add_metadata(app_metadata={"plan": "trial"})
    return answers.deny("Signups from this domain are closed.", message="domain blocked")
    return answers.success()

What the gateway keeps of them (namespaced claims only, no reserved metadata keys, which
error names pass through to the auth server) is the gateway's rule, not the receiver's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict


class Envelope(TypedDict):
    """`{"status": "success"|"error", "data": {...}}`."""

    status: Literal["success", "error"]
    data: dict[str, Any]


def success(data: Mapping[str, Any] | None = None) -> Envelope:
    """Success, with `data` for the point (empty for the non-blocking points)."""
    return {"status": "success", "data": dict(data or {})}


def error(name: str, message: str, friendly_message: str | None = None) -> Envelope:
    """An error named `name`; `friendly_message` is the text for the end user."""
    data: dict[str, Any] = {"name": name, "message": message}
    if friendly_message is not None:
        data["friendlyMessage"] = friendly_message
    return {"status": "error", "data": data}


def grant(scope: Iterable[str], claims: Mapping[str, Any] | None = None) -> Envelope:
    """credentials-exchange: the token's scopes (replacing the requested ones) and custom
    claims, each named by an `http(s)` URL of your own (others are dropped by the gateway)."""
    return success({"scope": list(scope), **(claims or {})})


def invalid_scope(message: str) -> Envelope:
    """credentials-exchange: refuse the token; the auth server answers OAuth2 `invalid_scope`."""
    return error("InvalidScopeError", message)


def invalid_request(message: str) -> Envelope:
    """credentials-exchange: refuse the token; the auth server answers OAuth2 `invalid_request`."""
    return error("InvalidRequestError", message)


def add_metadata(
    *, user_metadata: Mapping[str, Any] | None = None, app_metadata: Mapping[str, Any] | None = None
) -> Envelope:
    """pre-user-registration: metadata to store on the new user."""
    return success(
        {"user": {"user_metadata": dict(user_metadata or {}), "app_metadata": dict(app_metadata or {})}}
    )


def deny(friendly_message: str, *, message: str | None = None) -> Envelope:
    """pre-user-registration: refuse the signup. `friendly_message` is shown to the user,
    `message` (default: the same text) goes to the logs."""
    logged = friendly_message if message is None else message
    return error("PreUserRegistrationError", logged, friendly_message)


def send_failed(message: str) -> Envelope:
    """send-phone-message: the message could not be sent."""
    return error("SendPhoneMessageError", message)
