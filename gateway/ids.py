"""Identifiers: a prefix, then 32 hex digits that sort by creation time (ULID-like):
48 bits of milliseconds, then 80 random bits. Hex because it is encoded in C (base32 in
the standard library is Python code, several times slower on this hot path).

The random bits come from the OS's CSPRNG, read 4 KiB at a time: one `getrandom` system call
per ~400 ids instead of one per id (each call also hands the GIL to another thread).
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4000  # a multiple of 10: 400 ids
_lock = threading.Lock()
_pool = b""
_offset = 0


def _random10() -> bytes:
    global _pool, _offset
    with _lock:
        if _offset >= len(_pool):
            _pool = os.urandom(_POOL_BYTES)
            _offset = 0
        out = _pool[_offset:_offset + 10]
        _offset += 10
        return out


def new_id(prefix: str, *, now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{ms:012x}{_random10().hex()}"


def _after_fork() -> None:
    global _pool, _offset
    _pool, _offset = b"", 0  # a child must not hand out its parent's remaining bytes


os.register_at_fork(after_in_child=_after_fork)

HOOK = "hk"
EVENT = "evt"
DELIVERY = "dlv"
