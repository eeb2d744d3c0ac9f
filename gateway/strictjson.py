"""Strict JSON in and out: what the gateway reads from callers and receivers, and writes.

I-JSON (RFC 7493) with a depth bound: UTF-8 only, no lone surrogates, no `NaN`/`Infinity`
(nor a number that overflows to it, like `1e400`), integers within ±(2**53-1) (exact in every
JavaScript peer, and in SQLite), and no nesting deeper than `MAX_DEPTH` (the C parser would
otherwise raise `RecursionError` on `[[[[...`, and a deep value is costly to walk and dump).
Duplicate names are not refused: the last one wins, as in every JSON library.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

MAX_DEPTH: Final = 64  # arrays and objects inside each other
MAX_SAFE_INTEGER: Final = 2**53 - 1  # RFC 7493 §2.2: exactly representable as a double
_INT_CHARS_MAX: Final = len(str(-MAX_SAFE_INTEGER))  # a longer literal is out of range anyway

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class StrictJSONError(ValueError):
    """The text is not strict JSON; `message` says why without quoting the input. `syntax`:
    it is not JSON at all (or not UTF-8), rather than JSON that breaks a strict rule. `path`:
    where a refused number is (`deadlines.credentials-exchange`, `items[2]`), when known."""

    def __init__(self, message: str, *, syntax: bool = False, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.syntax = syntax
        self.path = path


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) > _INT_CHARS_MAX or abs(value := int(text)) > MAX_SAFE_INTEGER:
        raise StrictJSONError(f"an integer is outside ±{MAX_SAFE_INTEGER} (I-JSON)")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJSONError("a number is too large for a double")
    return value


_decoder = json.JSONDecoder(parse_constant=_constant, parse_int=_integer, parse_float=_float)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strict JSON; `StrictJSONError` for anything else (never another exception)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise StrictJSONError("not UTF-8", syntax=True) from None
    else:
        text = data
    try:
        value = _decoder.decode(text)
    except StrictJSONError as exc:
        path = _path_of_refused_number(text)
        if path is None:
            raise
        raise StrictJSONError(f"{path!r}: {exc.message}", path=path) from None
    except RecursionError:
        raise StrictJSONError(f"nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        # Its message names the place (line, column), not the bytes found there.
        raise StrictJSONError(str(exc), syntax=True) from None
    except ValueError:  # a number the float() of a hook refuses; defensive
        raise StrictJSONError("a number is not valid") from None
    # Counting brackets (in C) first: a body with fewer of them cannot be too deep.
    if text.count("[") + text.count("{") > max_depth and _depth_exceeds(value, max_depth):
        raise StrictJSONError(f"nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text):
        # Escaped surrogate pairs are fine; a lone one is text no database or answer can encode.
        try:
            _encode(value).encode()
        except UnicodeEncodeError:
            raise StrictJSONError("a string holds a lone UTF-16 surrogate") from None
    return value


def _depth_exceeds(value: Any, max_depth: int) -> bool:
    """Whether `value` has containers nested more than `max_depth` deep (level by level, no
    recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        below: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return False


class _Refused:
    """Stands for a refused number while `_path_of_refused_number` looks for it."""


_REFUSED: Final = _Refused()


def _mark_int(text: str) -> Any:
    try:
        return _integer(text)
    except StrictJSONError:
        return _REFUSED


def _mark_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _REFUSED


_marking_decoder = json.JSONDecoder(
    parse_constant=lambda name: _REFUSED, parse_int=_mark_int, parse_float=_mark_float
)


def _path_of_refused_number(text: str) -> str | None:
    """Where the first refused number is, for a message that names the field (error path only:
    the text is parsed a second time, with the refused numbers marked)."""
    try:
        value = _marking_decoder.decode(text)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if item is _REFUSED:
            return path or None
        if isinstance(item, dict):
            children = [(v, f"{path}.{_name(k)}" if path else _name(k)) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(item)]
        else:
            continue
        stack.extend(reversed(children))  # the first in the text is found first
    return None


def _name(key: str) -> str:
    """A member name for a message: field-like names as they are, others not echoed."""
    return key if _FIELD_NAME.fullmatch(key) else "*"


def dumps(value: Any) -> str:
    """Compact JSON text; `ValueError` for `NaN`/`Infinity`, `TypeError` for what JSON lacks."""
    return _encode(value)
