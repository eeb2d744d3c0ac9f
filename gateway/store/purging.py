"""Pacing of the retention purge, shared by both stores: after each bounded batch, the purge
rests as long as the batch took, so it takes at most about half of the database writer (and of
the machine) from the ingests and outcomes running beside it. Measured in bench scenario 7."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
REST_MAX_S = 1.0  # a slow batch (a busy database) rests at most this long


async def paced(batch: Awaitable[T]) -> T:
    """Await one purge batch, then rest as long as it took."""
    started = time.monotonic()
    result = await batch
    await asyncio.sleep(min(REST_MAX_S, time.monotonic() - started))
    return result
