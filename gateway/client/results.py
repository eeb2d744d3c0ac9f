"""What the auth server gets back: a typed result per blocking point, and an emitted event.

The gateway answers a blocking point with Auth0's envelope (SPEC "Blocking points"); a
success becomes the point's result here, an error becomes a `HookError` (gateway/client/errors.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .constants import CREDENTIALS_EXCHANGE, PRE_USER_REGISTRATION, SEND_PHONE_MESSAGE
from .errors import HookError, ProtocolError, hook_error


@dataclass(frozen=True, slots=True)
class CredentialsExchangeResult:
    """The access token's scopes, and the namespaced custom claims to add to it.

    `scope` replaces the requested scopes (an empty list when the hook reset them); `claims`
    holds only names the gateway allows (`http(s)` URLs outside Auth0's hosts).
    """

    scope: list[str]
    claims: dict[str, Any] = field(default_factory=dict)

    def token_claims(self) -> dict[str, Any]:
        """The claims to put into the access token: `scope` as OAuth2 spells it, and the rest."""
        return {"scope": " ".join(self.scope), **self.claims}


@dataclass(frozen=True, slots=True)
class PreUserRegistrationResult:
    """Metadata to store on the new user (merged over what the signup carried)."""

    user_metadata: dict[str, Any] = field(default_factory=dict)
    app_metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SendPhoneMessageResult:
    """The receiver sent the message; `data` is whatever its success answer carried."""

    data: dict[str, Any] = field(default_factory=dict)


InvokeResult = CredentialsExchangeResult | PreUserRegistrationResult | SendPhoneMessageResult


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} in the gateway's answer is not an object")
    return value


def read_envelope(trigger: str, payload: Any) -> InvokeResult:
    """The result of a blocking point's envelope; raises the typed `HookError` for an error."""
    envelope = _object(payload, "the envelope")
    data = _object(envelope.get("data", {}), '"data"')
    status = envelope.get("status")
    if status == "error":
        raise _error(trigger, data)
    if status != "success":
        raise ProtocolError('"status" of the gateway\'s answer is neither "success" nor "error"')
    if trigger == CREDENTIALS_EXCHANGE:
        scope = data.get("scope", [])
        if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
            raise ProtocolError('"scope" in the gateway\'s answer is not an array of strings')
        claims = {k: v for k, v in data.items() if k != "scope"}
        return CredentialsExchangeResult(scope=list(scope), claims=claims)
    if trigger == PRE_USER_REGISTRATION:
        user = _object(data.get("user", {}), '"user"')
        return PreUserRegistrationResult(
            user_metadata=_object(user.get("user_metadata", {}), '"user.user_metadata"'),
            app_metadata=_object(user.get("app_metadata", {}), '"user.app_metadata"'),
        )
    if trigger == SEND_PHONE_MESSAGE:
        return SendPhoneMessageResult(data=data)
    raise ValueError(f"{trigger!r} is not a blocking point")


def _error(trigger: str, data: Mapping[str, Any]) -> HookError:
    name, message, friendly = data.get("name"), data.get("message", ""), data.get("friendlyMessage")
    if not isinstance(name, str) or not isinstance(message, str):
        raise ProtocolError("an error envelope from the gateway lacks a string name or message")
    return hook_error(trigger, name, message, friendly if isinstance(friendly, str) else None)


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """One delivery an emitted event was given: one per enabled hook of the point."""

    hook_id: str
    delivery_id: str


@dataclass(frozen=True, slots=True)
class Emitted:
    """A non-blocking event, stored durably by the gateway.

    `replayed` is true when the gateway answered an earlier request with the same
    `Idempotency-Key`: `event_id` is then that request's event, and no new event was stored.
    """

    event_id: str
    deliveries: list[DeliveryRef]
    replayed: bool = False


def read_emitted(payload: Any, *, replayed: bool) -> Emitted:
    body = _object(payload, "the answer")
    event_id = body.get("eventId")
    if not isinstance(event_id, str):
        raise ProtocolError('"eventId" is missing from the gateway\'s answer')
    items = body.get("deliveries", [])
    if not isinstance(items, list):
        raise ProtocolError('"deliveries" in the gateway\'s answer is not an array')
    refs: list[DeliveryRef] = []
    for item in items:
        item = _object(item, "a delivery")
        hook_id, delivery_id = item.get("hookId"), item.get("deliveryId")
        if not isinstance(hook_id, str) or not isinstance(delivery_id, str):
            raise ProtocolError("a delivery in the gateway's answer lacks its ids")
        refs.append(DeliveryRef(hook_id=hook_id, delivery_id=delivery_id))
    return Emitted(event_id=event_id, deliveries=refs, replayed=replayed)
