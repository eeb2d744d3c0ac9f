"""Identifiers: a prefix, then 32 hex digits that sort by creation time (ULID-like):
48 bits of milliseconds, then 80 random bits. Hex because it is encoded in C (base32 in
the standard library is Python code, several times slower on this hot path)."""

from __future__ import annotations

import os
import time


def new_id(prefix: str, *, now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{ms:012x}{os.urandom(10).hex()}"


HOOK = "hk"
EVENT = "evt"
DELIVERY = "dlv"
