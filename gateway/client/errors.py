"""The SDK's one exception tree, split by who must react.

    ClientError                        base of every error the SDK raises on purpose
    ├── TransportError                 the gateway could not be reached, or did not answer HTTP
    │   └── DeadlineExceeded           the call's deadline passed while it was in flight
    ├── ProtocolError                  the gateway answered something the SDK cannot read
    ├── ApiError                       the gateway refused the call: {statusCode, error, message}
    │   ├── BadRequest          400    the body or a parameter is wrong (message names it)
    │   ├── Unauthorized        401    missing, expired or invalid token
    │   ├── Forbidden           403    missing scope, address not allowed
    │   ├── NotFound            404    unknown id, tenant or point (or another tenant's)
    │   ├── Conflict            409    duplicate name or id, second enabled send-phone-message hook
    │   ├── PayloadTooLarge     413    body over the gateway's limit
    │   ├── RateLimited         429    gave up after 429s: carries the reset time
    │   └── Unavailable         5xx    the gateway or its database is away
    ├── HookError                      a blocking point answered Auth0's error envelope
    │   ├── Denied                     PreUserRegistrationError: the signup is refused
    │   ├── InvalidScope               InvalidScopeError: OAuth2 `invalid_scope`
    │   ├── InvalidRequest             InvalidRequestError: OAuth2 `invalid_request`
    │   └── HookFailed                 ServerError: a hook failed or answered another error
    └── ReceiverError                  a receiver refuses what it was sent
        ├── SignatureInvalid           missing, stale or wrong Standard Webhooks signature
        ├── EventInvalid               the body is not the point's event
        └── BodyTooLarge               the body is over the receiver's limit

httpx's errors are translated at one boundary (gateway/client/session.py); tenacity retries
only `RateLimited`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .constants import ERROR_MESSAGE_MAX_CHARS


def _bounded(text: str) -> str:
    if len(text) > ERROR_MESSAGE_MAX_CHARS:
        return text[: ERROR_MESSAGE_MAX_CHARS - 1] + "…"
    return text


class ClientError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(_bounded(message))
        self.message = _bounded(message)


class TransportError(ClientError):
    """No connection to the gateway, or the connection broke before a whole HTTP answer."""


class DeadlineExceeded(TransportError):
    """The call's deadline passed while the request was in flight."""


class ProtocolError(ClientError):
    """The gateway answered, but not with what this call expects (not JSON, wrong shape)."""


class ApiError(ClientError):
    """The gateway answered an HTTP error with its JSON `{statusCode, error, message}`."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status = status
        self.error = error
        self.message = _bounded(message)


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class PayloadTooLarge(ApiError):
    pass


class Unavailable(ApiError):
    pass


class RateLimited(ApiError):
    """The gateway kept answering `429` and the SDK gave up (tries used, or the wait it asked
    for did not fit the call's deadline or the policy's longest wait).

    `reset_at`: unix seconds when the gateway's bucket is full again (`X-RateLimit-Reset`);
    `retry_after`: seconds the gateway asked to wait (`Retry-After`); `attempts`: requests sent.
    """

    def __init__(
        self,
        message: str,
        *,
        reset_at: float | None,
        retry_after: float | None,
        limit: int | None = None,
        remaining: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(429, "Too Many Requests", message)
        self.reset_at = reset_at
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.attempts = attempts


_BY_STATUS: Mapping[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def api_error(status: int, body: Any) -> ApiError:
    """The error for an HTTP error answer whose JSON is `body` (any shape is tolerated)."""
    error = message = ""
    if isinstance(body, Mapping):
        if isinstance(body.get("error"), str):
            error = body["error"]
        if isinstance(body.get("message"), str):
            message = body["message"]
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else ApiError)
    return cls(status, error or f"HTTP {status}", message or "(no message)")


class HookError(ClientError):
    """A blocking point answered `{"status": "error", "data": {name, message, friendlyMessage?}}`.

    `name`, `message` and `friendly_message` are the envelope's; `friendly_message` is the text
    meant for the end user (Auth0 shows it on the signup form).
    """

    #: The OAuth2 error an authorization server answers for this error (RFC 6749, 5.2).
    oauth_error: str = "server_error"

    def __init__(self, trigger: str, name: str, message: str, friendly_message: str | None = None) -> None:
        super().__init__(f"{trigger}: {name}: {message}" if message else f"{trigger}: {name}")
        self.trigger = trigger
        self.name = name
        self.message = _bounded(message)
        self.friendly_message = friendly_message

    def envelope(self) -> dict[str, Any]:
        """The error envelope as the gateway answered it."""
        data: dict[str, Any] = {"name": self.name, "message": self.message}
        if self.friendly_message is not None:
            data["friendlyMessage"] = self.friendly_message
        return {"status": "error", "data": data}


class Denied(HookError):
    """The receiver refused the signup (`PreUserRegistrationError`): show `friendly_message`."""

    oauth_error = "access_denied"


class InvalidScope(HookError):
    """`InvalidScopeError` from a credentials-exchange hook: answer OAuth2 `invalid_scope`."""

    oauth_error = "invalid_scope"


class InvalidRequest(HookError):
    """`InvalidRequestError` from a credentials-exchange hook: answer OAuth2 `invalid_request`."""

    oauth_error = "invalid_request"


class HookFailed(HookError):
    """`ServerError`: a hook failed or answered an error that may not pass through."""


_BY_NAME: Mapping[str, type[HookError]] = {
    "PreUserRegistrationError": Denied,
    "InvalidScopeError": InvalidScope,
    "InvalidRequestError": InvalidRequest,
    "ServerError": HookFailed,
}


def hook_error(trigger: str, name: str, message: str, friendly_message: str | None) -> HookError:
    """The typed error for an error envelope named `name`."""
    return _BY_NAME.get(name, HookError)(trigger, name, message, friendly_message)


class ReceiverError(ClientError):
    """A receiver refuses a request; `status` is the HTTP status its answer should carry."""

    status = 400
    error = "Bad Request"

    def body(self) -> dict[str, Any]:
        """The gateway's error shape, `{statusCode, error, message}`."""
        return {"statusCode": self.status, "error": self.error, "message": self.message}


class SignatureInvalid(ReceiverError):
    """The Standard Webhooks headers are missing, malformed, stale or do not match."""

    status = 401
    error = "Unauthorized"


class EventInvalid(ReceiverError):
    """The verified body is not JSON, or not the event of the receiver's point."""


class BodyTooLarge(ReceiverError):
    """The request body is over the receiver's limit."""

    status = 413
    error = "Payload Too Large"
