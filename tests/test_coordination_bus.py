"""How many instances share the in-memory limits (gateway/coordination.py): each instance's
presence names its interval and expires after three of them, an older release's after 15 s; an
instance that says it leaves is no longer counted, even by its last news; and an instance that
cannot listen keeps the count it had, since the others' silence then says nothing. News of work
goes only to instances that are there, at most every `WORK_EVERY_S`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from gateway.coordination import LEGACY_TTL_S, WORK_EVERY_S, PostgresBus


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


async def _heard(conn: Any, sender: str, topic: str) -> list[str]:
    """`conn` listens on the bus's channel; returns the list its `sender|topic|` news lands in."""
    got: list[str] = []

    def on(_c: Any, _pid: int, _channel: str, message: str) -> None:
        if message.startswith(f"{sender}|{topic}|"):
            got.append(message)

    await conn.add_listener("gateway_bus", on)
    return got


async def _until(predicate: Any, what: str, bound_s: float = 10.0) -> None:
    end = time.monotonic() + bound_s
    while not predicate():
        assert time.monotonic() < end, what
        await asyncio.sleep(0.02)


async def test_work_news_is_not_sent_while_no_other_instance_is_there(pg_url: str) -> None:
    """Alone, an instance has nobody to wake: its workers find the work themselves. A newcomer
    still sends it until it has listened long enough to have heard its peers (an older release
    speaks every 5 s). Once another instance says it is there, `work` goes out again."""
    clock = Clock()
    a = PostgresBus(pg_url, clock=clock)
    await a.start()
    conn = await asyncpg.connect(pg_url)
    try:
        work = await _heard(conn, a.instance_id, "work")
        presence = await _heard(conn, a.instance_id, "presence")
        a.publish("work")  # a newcomer: its peers may not have spoken yet
        await _until(lambda: len(work) == 1, "a newcomer's work news")
        clock.now += LEGACY_TTL_S
        await asyncio.sleep(2 * WORK_EVERY_S)
        a.publish("work")
        heard = len(presence)
        clock.now += 1.0  # the next presence: a's outbox went out since
        await _until(lambda: len(presence) > heard, "a's presence")
        assert len(work) == 1
        b = PostgresBus(pg_url)
        await b.start()
        try:
            await _until(lambda: a.instances() == 2, "a hears b")
            a.publish("work")
            await _until(lambda: len(work) == 2, "a's work news")
        finally:
            await b.stop()
    finally:
        await conn.close()
        await a.stop()


async def test_a_stream_of_work_news_is_one_notification_per_wait_and_the_last_is_kept(pg_url: str) -> None:
    """A busy ingest makes work due hundreds of times a second; each notification wakes every
    other instance's claim loop. At most one goes out per `WORK_EVERY_S`, and news held back
    goes out at the end of the wait: the last one is never dropped."""
    a, b = PostgresBus(pg_url), PostgresBus(pg_url)
    await a.start()
    await b.start()
    woken: list[float] = []
    b.subscribe("work", lambda _payload: woken.append(time.monotonic()))
    try:
        await _until(lambda: a.instances() == 2, "a hears b")
        began = time.monotonic()
        published = 0
        while time.monotonic() - began < 0.5:
            a.publish("work")
            published += 1
            await asyncio.sleep(0.001)  # the bus sends meanwhile
        last = time.monotonic()
        await _until(lambda: woken and woken[-1] >= last, "news after the last publish")
        await asyncio.sleep(4 * WORK_EVERY_S)
        assert published > 100
        assert 2 <= len(woken) <= (last - began) / WORK_EVERY_S + 2
    finally:
        await a.stop()
        await b.stop()


@pytest.fixture(autouse=True)
def _quiet_bus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="gateway.coordination")
