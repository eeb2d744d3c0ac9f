"""Field checks for JSON bodies: each failure is a 400 naming the field."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import BadRequest, shown


def no_unknown(body: Mapping[str, Any], allowed: Iterable[str], what: str = "body") -> None:
    allowed_set = set(allowed)
    unknown = sorted(k for k in body if k not in allowed_set)
    if unknown:
        raise BadRequest(f"unknown field {shown(unknown[0])} in {what}", field=unknown[0])


def string(body: Mapping[str, Any], key: str, *, max_len: int = 2048, pattern: re.Pattern[str] | None = None,
           hint: str = "") -> str:
    value = body[key]
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be a string", field=key)
    if not value or len(value) > max_len:
        raise BadRequest(f"{key!r} must be 1 to {max_len} characters", field=key)
    if pattern is not None and not pattern.fullmatch(value):
        raise BadRequest(f"{key!r} must match {hint or pattern.pattern}", field=key)
    return value


def boolean(body: Mapping[str, Any], key: str) -> bool:
    value = body[key]
    if not isinstance(value, bool):
        raise BadRequest(f"{key!r} must be true or false", field=key)
    return value


def integer(body: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key!r} must be an integer", field=key)
    if not minimum <= value <= maximum:
        raise BadRequest(f"{key!r} must be between {minimum} and {maximum}", field=key)
    return value


def number_or_null(body: Mapping[str, Any], key: str, *, minimum: float, maximum: float) -> float | None:
    value = body[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key!r} must be a number or null", field=key)
    if not minimum <= value <= maximum:
        raise BadRequest(f"{key!r} must be between {minimum} and {maximum}", field=key)
    return float(value)


def choice(body: Mapping[str, Any], key: str, options: Iterable[str]) -> str:
    value = body[key]
    opts = list(options)
    if value not in opts:
        raise BadRequest(f"{key!r} must be one of {', '.join(repr(o) for o in opts)}", field=key)
    return str(value)
