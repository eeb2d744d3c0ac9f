"""Identifiers: a prefix, then 26 characters that sort by creation time (ULID-like)."""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str, *, now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{_b32(ms, 10)}{_b32(int.from_bytes(os.urandom(10), 'big'), 16)}"


HOOK = "hk"
EVENT = "evt"
DELIVERY = "dlv"
