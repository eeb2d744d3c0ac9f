"""The gateway's Python SDK, on httpx: for auth servers, tenants and receivers.

- `AuthServerClient` / `AsyncAuthServerClient`: `invoke` a blocking point (typed result, or a
  typed `HookError` such as `Denied`), `emit` a non-blocking one (the stored event's id).
- `ManagementClient` / `AsyncManagementClient`: hooks, secrets, signing secrets, deliveries,
  retry and replay.
- `Receiver` with `answers`: verify a delivery's Standard Webhooks signature, parse the
  point's event, answer Auth0's envelope; adapters for aiohttp, Starlette/FastAPI and Flask.

Every client paces itself on `X-RateLimit-Remaining`/`X-RateLimit-Reset` and backs off on
`429` for a bounded number of tries (`RateLimitPolicy`), then raises `RateLimited`. It needs
httpx and tenacity only: nothing of the gateway's server is imported. See docs/SDK.md.
"""

from __future__ import annotations

from . import answers
from .answers import Envelope
from .auth_server import AsyncAuthServerClient, AuthServerClient
from .constants import (
    CREDENTIALS_EXCHANGE,
    POST_CHANGE_PASSWORD,
    POST_USER_REGISTRATION,
    PRE_USER_REGISTRATION,
    SEND_PHONE_MESSAGE,
    BlockingTrigger,
    EventTrigger,
    TriggerId,
)
from .errors import (
    ApiError,
    BadRequest,
    BodyTooLarge,
    ClientError,
    Conflict,
    DeadlineExceeded,
    Denied,
    EventInvalid,
    Forbidden,
    HookError,
    HookFailed,
    InvalidRequest,
    InvalidScope,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    ReceiverError,
    SignatureInvalid,
    TransportError,
    Unauthorized,
    Unavailable,
)
from .events import (
    Client,
    CredentialsExchangeEvent,
    Event,
    PostChangePasswordEvent,
    PostUserRegistrationEvent,
    PreUserRegistrationEvent,
    SendPhoneMessageEvent,
    User,
)
from .management import AsyncManagementClient, ManagementClient
from .management_calls import UNSET
from .models import Attempt, Delivery, Hook, Page, PreviousSecret, Replay, SigningSecret
from .ratelimit import RateLimitInfo, RateLimitPolicy
from .receiver import Receiver
from .results import (
    CredentialsExchangeResult,
    DeliveryRef,
    Emitted,
    InvokeResult,
    PreUserRegistrationResult,
    SendPhoneMessageResult,
)

__all__ = [
    "CREDENTIALS_EXCHANGE",
    "POST_CHANGE_PASSWORD",
    "POST_USER_REGISTRATION",
    "PRE_USER_REGISTRATION",
    "SEND_PHONE_MESSAGE",
    "UNSET",
    "ApiError",
    "AsyncAuthServerClient",
    "AsyncManagementClient",
    "Attempt",
    "AuthServerClient",
    "BadRequest",
    "BlockingTrigger",
    "BodyTooLarge",
    "Client",
    "ClientError",
    "Conflict",
    "CredentialsExchangeEvent",
    "CredentialsExchangeResult",
    "DeadlineExceeded",
    "Delivery",
    "DeliveryRef",
    "Denied",
    "Emitted",
    "Envelope",
    "Event",
    "EventInvalid",
    "EventTrigger",
    "Forbidden",
    "Hook",
    "HookError",
    "HookFailed",
    "InvalidRequest",
    "InvalidScope",
    "InvokeResult",
    "ManagementClient",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PostChangePasswordEvent",
    "PostUserRegistrationEvent",
    "PreUserRegistrationEvent",
    "PreUserRegistrationResult",
    "PreviousSecret",
    "ProtocolError",
    "RateLimitInfo",
    "RateLimitPolicy",
    "RateLimited",
    "Receiver",
    "ReceiverError",
    "Replay",
    "SendPhoneMessageEvent",
    "SendPhoneMessageResult",
    "SignatureInvalid",
    "SigningSecret",
    "TransportError",
    "TriggerId",
    "Unauthorized",
    "Unavailable",
    "User",
    "answers",
]
