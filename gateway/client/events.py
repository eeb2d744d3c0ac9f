"""The events a receiver gets, one typed class per extensibility point (SPEC's table).

The body is checked as the gateway checks what the auth server sends (gateway/points/events.py),
then its fields are read into these classes; `body` keeps the whole event, extra fields
included. A hook in the `standard` format gets Standard Webhooks' `{type, timestamp, data}`:
its `data` is the event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from gateway.errors import ApiError
from gateway.points.events import validate_event

from .constants import (
    CREDENTIALS_EXCHANGE,
    POST_CHANGE_PASSWORD,
    POST_USER_REGISTRATION,
    PRE_USER_REGISTRATION,
    SEND_PHONE_MESSAGE,
)
from .errors import EventInvalid


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    return value if isinstance(value, bool) else None


def _dict(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """The user of a user event; fields the point does not carry are None (or empty)."""

    id: str | None = None
    tenant: str | None = None
    username: str | None = None
    email: str | None = None
    email_verified: bool | None = None
    phone_number: str | None = None
    phone_number_verified: bool | None = None
    user_metadata: dict[str, Any] = field(default_factory=dict)
    app_metadata: dict[str, Any] = field(default_factory=dict)
    last_password_reset: str | None = None  # post-change-password: ISO 8601

    @classmethod
    def from_json(cls, user: Mapping[str, Any]) -> User:
        return cls(
            id=_str(user, "id"), tenant=_str(user, "tenant"), username=_str(user, "username"),
            email=_str(user, "email"), email_verified=_bool(user, "emailVerified"),
            phone_number=_str(user, "phoneNumber"), phone_number_verified=_bool(user, "phoneNumberVerified"),
            user_metadata=_dict(user, "user_metadata"), app_metadata=_dict(user, "app_metadata"),
            last_password_reset=_str(user, "last_password_reset"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """The OAuth2 client of a credentials exchange."""

    id: str
    name: str | None = None
    tenant: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """What every event carries: the delivery's `webhook-id` (stable across retries: use it to
    drop duplicates), its `webhook-timestamp` (unix seconds) and the event `body` itself."""

    trigger: ClassVar[str]
    webhook_id: str
    timestamp: int
    body: dict[str, Any]

    @property
    def context(self) -> dict[str, Any]:
        return _dict(self.body, "context")

    @classmethod
    def parse(cls, body: Any, *, webhook_id: str, timestamp: int) -> Self:
        """The event of this point from a decoded JSON body; `EventInvalid` if it is not one."""
        if isinstance(body, dict) and set(body) == {"type", "timestamp", "data"}:
            if body["type"] != cls.trigger:
                raise EventInvalid(f"this receiver takes {cls.trigger} events, not another point's")
            body = body["data"]
        try:
            event = validate_event(cls.trigger, body)
        except ApiError as exc:
            raise EventInvalid(f"not a {cls.trigger} event: {exc.message}") from None
        return cls._read(event, webhook_id=webhook_id, timestamp=timestamp)

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsExchangeEvent(Event):
    """A client asks for an access token (`client_credentials`): answer with `answers.grant`."""

    trigger: ClassVar[str] = CREDENTIALS_EXCHANGE
    audience: str
    client: Client
    scope: list[str]

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        client = body["client"]
        return cls(
            webhook_id=webhook_id, timestamp=timestamp, body=body, audience=body["audience"],
            client=Client(id=client["id"], name=_str(client, "name"), tenant=_str(client, "tenant"),
                          metadata=_dict(client, "metadata")),
            scope=list(body["scope"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PreUserRegistrationEvent(Event):
    """A user signs up: answer with `answers.add_metadata`, or refuse with `answers.deny`."""

    trigger: ClassVar[str] = PRE_USER_REGISTRATION
    user: User

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        return cls(webhook_id=webhook_id, timestamp=timestamp, body=body, user=User.from_json(body["user"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class SendPhoneMessageEvent(Event):
    """Send `text` to `recipient` (by SMS or voice); answer `answers.success()` once sent."""

    trigger: ClassVar[str] = SEND_PHONE_MESSAGE
    recipient: str
    text: str
    message_type: str  # "sms" or "voice"
    action: str  # "enrollment" or "second-factor-authentication"
    language: str
    code: str

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        context = body["context"]
        return cls(
            webhook_id=webhook_id, timestamp=timestamp, body=body, recipient=body["recipient"],
            text=body["text"], message_type=context["message_type"], action=context["action"],
            language=context["language"], code=context["code"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PostUserRegistrationEvent(Event):
    """A user was created (delivered durably; the answer is only logged)."""

    trigger: ClassVar[str] = POST_USER_REGISTRATION
    user: User

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        return cls(webhook_id=webhook_id, timestamp=timestamp, body=body, user=User.from_json(body["user"]))


@dataclass(frozen=True, slots=True, kw_only=True)
class PostChangePasswordEvent(Event):
    """A user changed their password (delivered durably; the answer is only logged)."""

    trigger: ClassVar[str] = POST_CHANGE_PASSWORD
    user: User

    @classmethod
    def _read(cls, body: dict[str, Any], *, webhook_id: str, timestamp: int) -> Self:
        return cls(webhook_id=webhook_id, timestamp=timestamp, body=body, user=User.from_json(body["user"]))


EVENT_TYPES: Mapping[str, type[Event]] = {
    cls.trigger: cls
    for cls in (
        CredentialsExchangeEvent,
        PreUserRegistrationEvent,
        SendPhoneMessageEvent,
        PostUserRegistrationEvent,
        PostChangePasswordEvent,
    )
}
