"""Names and defaults of the SDK, each with its unit: header names, paths, deadlines, bounds."""

from __future__ import annotations

from typing import Final, Literal

from gateway import __version__

USER_AGENT: Final = f"hooks-gateway-sdk/{__version__}"

# The extensibility points (SPEC "Extensibility points"), as the wire spells them.
CREDENTIALS_EXCHANGE: Final = "credentials-exchange"
PRE_USER_REGISTRATION: Final = "pre-user-registration"
SEND_PHONE_MESSAGE: Final = "send-phone-message"
POST_USER_REGISTRATION: Final = "post-user-registration"
POST_CHANGE_PASSWORD: Final = "post-change-password"  # noqa: S105 (a trigger name, not a password)

BlockingTrigger = Literal["credentials-exchange", "pre-user-registration", "send-phone-message"]
EventTrigger = Literal["post-user-registration", "post-change-password"]
TriggerId = Literal[
    "credentials-exchange",
    "pre-user-registration",
    "send-phone-message",
    "post-user-registration",
    "post-change-password",
]
BLOCKING_TRIGGERS: Final[frozenset[str]] = frozenset(
    {CREDENTIALS_EXCHANGE, PRE_USER_REGISTRATION, SEND_PHONE_MESSAGE}
)
EVENT_TRIGGERS: Final[frozenset[str]] = frozenset({POST_USER_REGISTRATION, POST_CHANGE_PASSWORD})

# Request and answer headers.
HEADER_IDEMPOTENCY_KEY: Final = "Idempotency-Key"
HEADER_IDEMPOTENT_REPLAYED: Final = "Idempotent-Replayed"
HEADER_RATELIMIT_LIMIT: Final = "X-RateLimit-Limit"
HEADER_RATELIMIT_REMAINING: Final = "X-RateLimit-Remaining"
HEADER_RATELIMIT_RESET: Final = "X-RateLimit-Reset"
HEADER_RETRY_AFTER: Final = "Retry-After"

# Deadlines of one call, seconds: waits for the rate limit, back-off and the request together.
# A blocking invocation gets the gateway's own deadline (20 s, Auth0's) plus room for the trip.
DEFAULT_INVOKE_DEADLINE_S: Final = 25.0
DEFAULT_EMIT_DEADLINE_S: Final = 10.0
DEFAULT_MANAGEMENT_DEADLINE_S: Final = 30.0

# `X-RateLimit-Reset` below this is seconds from now, above it unix seconds (as the gateway
# reads its receivers' headers, gateway/delivery/schedule.py).
RESET_DELTA_MAX_S: Final = 1_000_000_000

ERROR_MESSAGE_MAX_CHARS: Final = 300  # of a message the SDK copies from an answer into an error
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024  # of one answer of the gateway, decoded: past it, ProtocolError
