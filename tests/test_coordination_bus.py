"""How many instances share the in-memory limits (gateway/coordination.py): each instance's
presence names its interval and expires after three of them, an older release's after 15 s; an
instance that says it leaves is no longer counted, even by its last news; and an instance that
cannot listen keeps the count it had, since the others' silence then says nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from gateway.coordination import PostgresBus


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hear(bus: PostgresBus, message: str) -> None:
    bus._on_notify(None, 0, "gateway_bus", message)


def test_a_presence_counts_for_three_of_its_sender_s_intervals() -> None:
    clock = Clock()
    bus = PostgresBus("postgresql://unused", clock=clock)
    hear(bus, "peer-a|presence|1")
    assert bus.instances() == 2
    clock.now += 2.9
    assert bus.instances() == 2
    clock.now += 0.2
    assert bus.instances() == 1  # three seconds without a word from it


def test_an_older_release_s_presence_without_its_interval_counts_for_15_seconds() -> None:
    """A rolling upgrade: an instance of the previous release says it is alive every 5 s with
    no interval; counted for 3 s only, it would be missing two seconds in five."""
    clock = Clock()
    bus = PostgresBus("postgresql://unused", clock=clock)
    hear(bus, "old-1|presence|")
    clock.now += 14.0
    assert bus.instances() == 2
    clock.now += 1.5
    assert bus.instances() == 1


def test_an_instance_that_leaves_is_not_counted_again_by_its_last_news() -> None:
    clock = Clock()
    bus = PostgresBus("postgresql://unused", clock=clock)
    got: list[str] = []
    bus.subscribe("tenant", got.append)
    hear(bus, "peer-a|presence|1")
    hear(bus, "peer-b|presence|1")
    assert bus.instances() == 3
    hear(bus, "peer-a|leave|")
    assert bus.instances() == 2
    hear(bus, "peer-a|tenant|acme")  # news it sent while draining still arrives ...
    assert got == ["acme"]
    assert bus.instances() == 2  # ... without making it count again


async def test_an_instance_that_cannot_listen_keeps_its_count(pg_url: str) -> None:
    """Its listening connection lost (and not back), an instance hears nobody: it keeps the
    count it had rather than taking the whole limit for itself, while the other, which still
    listens, stops counting it after three seconds of silence. Once it listens again, it counts
    the others at once."""
    refused = asyncio.Event()
    opened: list[Any] = []

    async def connect(dsn: str) -> Any:
        if refused.is_set():
            raise OSError("refused for the test")
        conn = await asyncpg.connect(dsn)
        opened.append(conn)
        return conn

    a = PostgresBus(pg_url, connect=connect)
    b = PostgresBus(pg_url)
    await a.start()
    await b.start()
    try:
        end = time.monotonic() + 10
        while not (a.instances() == 2 and b.instances() == 2):
            assert time.monotonic() < end, (a.instances(), b.instances())
            await asyncio.sleep(0.05)
        refused.set()
        opened[-1].terminate()  # a's listening connection is gone and cannot come back
        await asyncio.sleep(4.0)  # longer than a presence counts
        assert a.instances() == 2  # a hears nobody: it keeps its count
        assert b.instances() == 1  # b hears nothing from a any more
        refused.clear()
        end = time.monotonic() + 15
        while not (a._connected.is_set() and b.instances() == 2):
            assert time.monotonic() < end, "a did not come back"
            await asyncio.sleep(0.05)
        assert a.instances() == 2
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture(autouse=True)
def _quiet_bus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="gateway.coordination")
