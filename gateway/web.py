"""Small helpers shared by the HTTP handlers: JSON in and out, query parameters, times."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import strictjson
from .errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType, shown

_dumps = strictjson.dumps  # no NaN or Infinity ever leaves the gateway

# Times the APIs accept (unix seconds): from the epoch to the end of year 9999, the range of
# ISO-8601 and of every database; anything else is a 400, never an overflow further in.
TIME_MIN_S = 0.0
TIME_MAX_S = 253_402_300_799.0  # 9999-12-31T23:59:59Z
MAX_PAGE = 1_000_000  # `page` of every list: page * per_page stays far inside SQLite's integers
# ASCII digits only: int() and float() would also take "١", " 5" and "1_0".
_INTEGER = re.compile(r"-?[0-9]{1,19}")
_NUMBER = re.compile(r"-?[0-9]{1,400}(?:\.[0-9]+)?(?:[eE][-+]?[0-9]{1,4})?")


# How long a caller may take to send a request's whole body (`[server] body_timeout`, set on the
# app by gateway/app.py): a caller trickling bytes would otherwise hold a connection and a handler
# for ever. The head is bounded by aiohttp's keep-alive timer, which runs until a head is whole.
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)
DEFAULT_BODY_TIMEOUT_S = 10.0
# Set on a request whose stream cannot be read on (a body cut off): the outermost middleware
# answers `Connection: close`. After an answer given before the whole body was read (a 408, 413,
# 401), aiohttp keeps reading and dropping the rest for `LINGER_S` before it closes, so that the
# caller reads the answer rather than a reset; 2 s instead of aiohttp's 10 s bounds what a
# trickling caller can hold.
LINGER_S = 2.0
CLOSE_AFTER_ANSWER: web.RequestKey[bool] = web.RequestKey("close_after_answer", bool)


def body_deadline(request: web.Request) -> float:
    return request.config_dict.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)


def body_timed_out(request: web.Request, what: str, timeout: float) -> RequestTimeout:
    request[CLOSE_AFTER_ANSWER] = True
    return RequestTimeout(f"{what} did not arrive within {timeout:g} s")


def answer_and_close(response: web.StreamResponse) -> None:
    """Answer `Connection: close`: aiohttp then reads and drops what the caller still sends for
    at most `LINGER_S` (so the caller gets to read the answer before the close), and closes."""
    response.force_close()


def dumps(value: Any) -> str:
    return _dumps(value)


def json_response(value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_text_response(_dumps(value), status=status, headers=headers)


def json_text_response(
    text: str, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An answer whose JSON was already dumped (by `dumps`), not dumped again."""
    return web.Response(body=text.encode(), status=status, headers=headers, content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` bytes (before reading it all)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        if request.content.is_eof():
            # The whole body came with the head (nearly every forward): nothing to wait for, and
            # no timer to arm and cancel (about 8 us of CPU a request, measured).
            data = await request.read()
        else:
            timeout = body_deadline(request)
            try:
                async with asyncio.timeout(timeout):
                    data = await request.read()  # aiohttp stops at client_max_size (the same limit)
            except TimeoutError:
                raise body_timed_out(request, "the request body", timeout) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    return data


async def read_json(request: web.Request, limit: int, *, required: bool = True) -> Any:
    ctype = request.content_type
    raw = await read_body(request, limit)
    if not raw.strip():
        if required:
            raise BadRequest("request body must be JSON")
        return None
    # aiohttp reports a missing Content-Type as application/octet-stream: accepted.
    if ctype not in ("", "application/json", "application/octet-stream") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {shown(ctype)}")
    value = parse_json(raw)
    if value is None and not required:
        raise BadRequest("request body must be a JSON object or empty, not null")
    return value


def parse_json(raw: bytes) -> Any:
    """Strict JSON (`gateway/strictjson.py`) that the gateway can store and answer again;
    anything else is a 400."""
    try:
        return strictjson.loads(raw)
    except strictjson.StrictJSONError as exc:
        what = "malformed JSON" if exc.syntax else "request body is not strict JSON"
        raise BadRequest(f"{what}: {exc.message}") from None


def require_object(value: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    if not _INTEGER.fullmatch(text):
        raise BadRequest(f"query parameter {name!r} must be an integer between {minimum} and {maximum}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise BadRequest(f"query parameter {name!r} must be between {minimum} and {maximum}")
    return value


def query_bool(request: web.Request, name: str) -> bool | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise BadRequest(f"query parameter {name!r} must be true or false")


def query_time(request: web.Request, name: str) -> float | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    return parse_time(text, f"query parameter {name!r}")


def parse_time(value: Any, what: str) -> float:
    """ISO-8601 (`2026-12-01T10:00:00Z`) or unix seconds, within `TIME_MIN_S..TIME_MAX_S`."""
    seconds = _time_or_none(value)
    if seconds is None:
        raise BadRequest(f"{what} must be an ISO-8601 time or unix seconds")
    if not TIME_MIN_S <= seconds <= TIME_MAX_S:  # False for NaN too
        raise BadRequest(f"{what} must be a time between 1970-01-01 and 9999-12-31 (unix seconds "
                         f"{TIME_MIN_S:.0f} to {TIME_MAX_S:.0f})")
    return seconds


def _time_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # Compared as an int first: float() of a 400-digit integer raises OverflowError.
        return float(value) if TIME_MIN_S <= value <= TIME_MAX_S else -1.0
    if isinstance(value, float):
        return value
    if not isinstance(value, str):
        return None
    if _NUMBER.fullmatch(value):
        return float(value)  # "1e400" is infinite: out of range
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):  # year 1 with an offset, and the like
        return -1.0


def iso(ts: float | None) -> str | None:
    """A stored time as ISO 8601; None for no time, or one no calendar can show (a row written
    before receivers' headers were bounded could hold a pause in the year 5138, or `inf`)."""
    if ts is None or not TIME_MIN_S <= ts <= TIME_MAX_S:  # False for NaN too
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def finite(value: float | None, *, maximum: float = TIME_MAX_S) -> float | None:
    """A stored number as JSON can carry it: None for NaN, infinities and absurd sizes."""
    if value is None or not -maximum <= value <= maximum:
        return None
    return value


def fields_filter(request: web.Request, allowed: set[str]) -> tuple[list[str] | None, bool]:
    """Auth0's `fields=a,b` and `include_fields=true|false`."""
    include = query_bool(request, "include_fields")  # checked with or without `fields`
    text = request.query.get("fields")
    if not text:
        return None, True
    names = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise BadRequest(f"unknown field {shown(unknown[0])} in 'fields'")
    return names, include is not False


def apply_fields(obj: dict[str, Any], names: list[str] | None, include: bool) -> dict[str, Any]:
    if names is None:
        return obj
    if include:
        return {k: v for k, v in obj.items() if k in names}
    return {k: v for k, v in obj.items() if k not in names}
