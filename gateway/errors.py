"""The gateway's one exception tree, and its JSON rendering.

    GatewayError
    ├── ConfigError                 bad settings: start-up stops (names key and file)
    ├── ApiError                    an answer to the caller: {statusCode, error, message}
    │   ├── BadRequest        400   malformed JSON, wrong types, unknown fields, bad values
    │   ├── Unauthorized      401   missing or invalid token
    │   ├── Forbidden         403   missing scope, address not allowed
    │   ├── NotFound          404   unknown id, or another tenant's object
    │   ├── Conflict          409   duplicate name or id
    │   ├── PayloadTooLarge   413   body over the configured limit
    │   ├── UriTooLong        414   request line too long for the HTTP server
    │   ├── TooManyRequests   429   own rate limit or in-flight cap (carries retry_after)
    │   └── RequestHeaderFieldsTooLarge  431   a header line too long, or too many of them
    ├── StorageFault                the database cannot store anything now (reason: disk full, ...)
    ├── DestinationRefused          the egress guard refused an address (address, range)
    ├── TransportError              an outbound request failed below HTTP (connect, protocol)
    │   ├── ConnectTimeout          no connection within the connect timeout
    │   └── AnswerTimeout           no complete answer within the request's timeout
    └── DeliveryFailure             one attempt to a receiver failed (reason, status, retry_after)

Only `ApiError` reaches a client as-is; everything else is translated at one boundary.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The settings are unusable; the message names the key and the file."""


MESSAGE_MAX_CHARS = 300  # an error message never carries more than this of anything
SHOWN_MAX_CHARS = 64  # a caller's value is named in a message only when it looks like an id
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/")


def shown(value: object) -> str:
    """A value the caller sent, as an error message may name it: quoted when it is a short id
    made of plain characters, else a placeholder, so that no message repeats arbitrary request
    bytes (a pasted token, a 7 KB path) back to the caller or into a log."""
    text = str(value)
    if 0 < len(text) <= SHOWN_MAX_CHARS and set(text) <= _ID_CHARS:
        return repr(text)
    return "(the value given)"


class ApiError(GatewayError):
    status: int = 500
    error: str = "Internal Server Error"

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, field: str | None = None
    ) -> None:
        if len(message) > MESSAGE_MAX_CHARS:
            message = message[: MESSAGE_MAX_CHARS - 1] + "…"
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        # The request field at fault, when there is one: the dashboard shows the message beside
        # it. Not part of the JSON answer.
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"statusCode": self.status, "error": self.error, "message": self.message}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class BadRequest(ApiError):
    status = 400
    error = "Bad Request"


class Unauthorized(ApiError):
    status = 401
    error = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    error = "Forbidden"


class NotFound(ApiError):
    status = 404
    error = "Not Found"


class MethodNotAllowed(ApiError):
    status = 405
    error = "Method Not Allowed"


class Conflict(ApiError):
    status = 409
    error = "Conflict"


class RequestTimeout(ApiError):
    """The caller did not send its whole body in time (gateway/web.py closes the connection)."""

    status = 408
    error = "Request Timeout"


class PayloadTooLarge(ApiError):
    status = 413
    error = "Payload Too Large"


class UriTooLong(ApiError):
    status = 414
    error = "URI Too Long"


class UnsupportedMediaType(ApiError):
    status = 415
    error = "Unsupported Media Type"


class TooManyRequests(ApiError):
    status = 429
    error = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str] | None = None) -> None:
        merged = {"Retry-After": str(max(0, int(retry_after)))}
        merged.update(headers or {})
        super().__init__(message, headers=merged)
        self.retry_after = retry_after


class RequestHeaderFieldsTooLarge(ApiError):
    status = 431
    error = "Request Header Fields Too Large"


class ServiceUnavailable(ApiError):
    status = 503
    error = "Service Unavailable"


DATABASE_RETRY_AFTER_S = 2  # what a caller is told to wait while the database is away

# Failures that mean "the database cannot be reached right now", not "this request is bad":
# asyncpg's connection errors, a pool that times out, a socket that is gone.
_UNAVAILABLE_NAMES = frozenset({
    "PostgresConnectionError", "ConnectionDoesNotExistError", "ConnectionFailureError",
    "CannotConnectNowError", "TooManyConnectionsError", "InterfaceError", "ConnectionError",
    "ConnectionRefusedError", "ConnectionResetError", "AdminShutdownError", "CrashShutdownError",
    "QueryCanceledError", "InternalClientError",  # a pooled connection the server closed while idle
})


# Failures that mean "the database cannot store anything right now", whatever was asked: a full
# disk, a lock held by someone else past the busy timeout, a file or file system gone read-only,
# an I/O error. They clear by themselves (or by an operator) and the same write then succeeds.
# SQLite's primary result codes (the low byte of `sqlite_errorcode`):
_SQLITE_CANNOT_WRITE = {
    5: "database locked",  # SQLITE_BUSY: another connection held the lock past busy_timeout
    6: "database locked",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "database read-only",  # SQLITE_READONLY
    10: "disk I/O error",  # SQLITE_IOERR: EIO, EPERM of an immutable file, EROFS, ...
    13: "disk full",  # SQLITE_FULL
    14: "database file cannot be opened",  # SQLITE_CANTOPEN (its -wal or -shm file)
    15: "database locked",  # SQLITE_PROTOCOL: the WAL's locks kept changing hands
}
# PostgreSQL's SQLSTATEs (asyncpg's errors carry `sqlstate`):
_POSTGRES_CANNOT_WRITE = {
    "53100": "disk full",  # disk_full: a relation or a temporary file could not grow
    "53200": "out of memory",
    "58030": "disk I/O error",  # io_error
    "25006": "database read-only",  # read_only_sql_transaction: a standby, after a failover
}


class StorageFault(GatewayError):
    """The database cannot store anything now; `reason` says why (`cannot_write`'s words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the database cannot be written: {reason}")
        self.reason = reason


def cannot_write(exc: BaseException) -> str | None:
    """Why the database cannot store anything now ("disk full", "database locked", ...) when
    `exc` is such a failure, of SQLite or PostgreSQL; None otherwise."""
    if isinstance(exc, StorageFault):
        return exc.reason
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return _SQLITE_CANNOT_WRITE.get(code & 0xFF) if isinstance(code, int) else None
    state = getattr(exc, "sqlstate", None)
    return _POSTGRES_CANNOT_WRITE.get(state) if isinstance(state, str) else None


def database_unavailable(exc: BaseException) -> ServiceUnavailable | None:
    """A `503` with `Retry-After` when `exc` says the database is away (PostgreSQL restarting or
    unreachable) or cannot store anything now (`cannot_write`), so that a caller retries
    instead of counting a `500` (or a `202` that was not kept); None otherwise."""
    reason = cannot_write(exc)
    if reason is not None:
        return ServiceUnavailable(
            f"the database cannot store anything right now ({reason}); try again shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & _UNAVAILABLE_NAMES or isinstance(exc, TimeoutError | OSError):
        return ServiceUnavailable(
            "the database is not reachable right now; try again shortly",
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )
    return None


class DestinationRefused(GatewayError):
    """The egress guard refused a destination before any connection was made."""

    def __init__(self, address: str, range_: str) -> None:
        super().__init__(f"destination refused: {address} ({range_})")
        self.address = address
        self.range = range_


class TransportError(GatewayError):
    """An outbound request failed below HTTP: no connection, or an answer that is not HTTP.
    `unsent`: the request never left (no connection, refused before connecting), so sending it
    again cannot repeat anything. `reused`: the receiver closed a kept-alive connection after
    the request was written on it and before any byte of an answer: it may have read the
    request and acted on it, so a resend must be a new, recorded attempt, never a silent one."""

    def __init__(self, message: str, *, unsent: bool = False, reused: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.unsent = unsent
        self.reused = reused


class ConnectTimeout(TransportError):
    """No connection (TCP and TLS) within the connect timeout."""


class AnswerTimeout(TransportError):
    """The receiver did not answer in full within the request's timeout."""


class DeliveryFailure(GatewayError):
    """One attempt to a receiver failed; carries what the retry policy needs."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.retryable = retryable
