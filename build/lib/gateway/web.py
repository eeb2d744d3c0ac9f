"""Small helpers shared by the HTTP handlers: JSON in and out, query parameters, times."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    return _dumps(value)


def json_response(value: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_dumps(value).encode(), status=status, headers=headers, content_type="application/json"
    )


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` bytes (before reading it all)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        data = await request.read()  # aiohttp stops at the app's client_max_size (the same limit)
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
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {ctype!r}")
    value = parse_json(raw)
    if value is None and not required:
        raise BadRequest("request body must be a JSON object or empty, not null")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> Any:
    """JSON that the gateway can store and answer again; anything else is a 400."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise BadRequest(f"malformed JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw):
        # Escaped surrogate pairs are fine; a lone one is text no database or answer can encode.
        try:
            _dumps(value).encode()
        except UnicodeEncodeError:
            raise BadRequest("malformed JSON: a string holds a lone UTF-16 surrogate") from None
    return value


def require_object(value: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def query_int(request: web.Request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer") from None
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
    """ISO-8601 (`2026-12-01T10:00:00Z`) or unix seconds."""
    if isinstance(value, bool):
        raise BadRequest(f"{what} must be an ISO-8601 time or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{what} must be an ISO-8601 time or unix seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise BadRequest(f"{what} must be an ISO-8601 time or unix seconds")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fields_filter(request: web.Request, allowed: set[str]) -> tuple[list[str] | None, bool]:
    """Auth0's `fields=a,b` and `include_fields=true|false`."""
    text = request.query.get("fields")
    if not text:
        return None, True
    names = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} in 'fields'")
    include = query_bool(request, "include_fields")
    return names, include is not False


def apply_fields(obj: dict[str, Any], names: list[str] | None, include: bool) -> dict[str, Any]:
    if names is None:
        return obj
    if include:
        return {k: v for k, v in obj.items() if k in names}
    return {k: v for k, v in obj.items() if k not in names}
