"""What the instances of one deployment tell each other (SPEC "Running it": limits, pauses and
hook edits hold across instances).

A `Bus` carries news between instances:

- `work`: deliveries became due (ingest, a retry, a replay): idle workers everywhere claim
  now instead of at their next poll (sent at most every `WORK_EVERY_S`, and not at all while,
  after listening for `LEGACY_TTL_S`, no other instance is heard);
- `tenant`: a tenant's hooks, secrets or settings changed: every instance drops its cached
  view of that tenant, so an edit takes effect everywhere within a second;
- presence: each instance says it is alive every `PRESENCE_S`, so that each knows how many
  share the limits that are kept in memory (the gateway's own API rate limits, a tenant's
  blocking calls in flight): each instance enforces its share;
- leave: an instance that closes its intake (SIGTERM) says so, and the others stop counting
  it at once, so a rolling restart does not halve the survivors' shares for `PRESENCE_TTL_S`
  (a killed instance cannot say so: it counts until its presence expires).

With SQLite (one instance) the bus is in-process. With PostgreSQL it is LISTEN/NOTIFY on one
dedicated connection, reconnected with back-off when it is lost; after a reconnect every
cached view is dropped and the workers look for work, since news may have been missed.
What the bus carries is only ever a hint: the database stays the truth, and views expire and
workers poll on their own, so a lost notification delays an edit or a delivery, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("gateway.coordination")

CHANNEL = "gateway_bus"  # the one LISTEN channel of a deployment
WORK, TENANT, PRESENCE, RESET, LEAVE = "work", "tenant", "presence", "reset", "leave"
PRESENCE_S = 1.0  # an instance says it is alive this often ...
TTL_INTERVALS = 3  # ... and counts as gone when not heard from for this many of its intervals
PRESENCE_TTL_S = TTL_INTERVALS * PRESENCE_S
# A presence names its sender's interval; one that does not (an older release, every 5 s) is
# given as long, so that a rolling upgrade never drops an instance that is there.
LEGACY_TTL_S = TTL_INTERVALS * 5.0
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0  # back-off of the listening connection
MAX_PAYLOAD_CHARS = 7000  # NOTIFY takes 8,000 bytes; payloads here are ids, far shorter
SEND_BATCH = 200  # notifications sent in one round trip
# `work` goes out at most this often (the last of a burst at the end of the wait, never dropped):
# a busy ingest would otherwise send one per commit, and each wakes every other instance's
# claim loop for a claim that mostly finds the lane held by another's (DECISIONS).
WORK_EVERY_S = 0.05

Callback = Callable[[str], None]


class Bus(Protocol):
    instance_id: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def publish(self, topic: str, payload: str = "") -> None:
        """Tell the other instances (never blocks, never raises: news is a hint)."""
        ...

    def subscribe(self, topic: str, callback: Callback) -> None:
        """`callback(payload)` for news from the other instances (and `RESET` after a gap)."""
        ...

    def instances(self) -> int:
        """How many instances are alive, this one included (at least 1)."""
        ...

    def leave(self) -> None:
        """This instance takes no more intake: the others stop counting it in their shares."""
        ...


def share(total: float, instances: int) -> float:
    """One instance's part of a limit the `instances` keep together."""
    return total / max(1, instances)


def share_count(total: int, instances: int) -> int:
    """One instance's part of a count limit: rounded up, so that a small cap never becomes 0."""
    return max(1, math.ceil(total / max(1, instances)))


class _Subscribers:
    def __init__(self) -> None:
        self._callbacks: dict[str, list[Callback]] = {}

    def subscribe(self, topic: str, callback: Callback) -> None:
        self._callbacks.setdefault(topic, []).append(callback)

    def deliver(self, topic: str, payload: str) -> None:
        for callback in self._callbacks.get(topic, ()):
            try:
                callback(payload)
            except Exception:
                log.exception("a subscriber of %r failed", topic)


class LocalBus(_Subscribers):
    """One instance: there is nobody to tell."""

    def __init__(self) -> None:
        super().__init__()
        self.instance_id = _new_instance_id()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def publish(self, topic: str, payload: str = "") -> None:
        return None

    def instances(self) -> int:
        return 1

    def leave(self) -> None:
        return None


class PostgresBus(_Subscribers):
    """LISTEN/NOTIFY on one connection of its own (not the store's pool: a listening
    connection must stay open, and a pool hands connections around)."""

    def __init__(
        self,
        dsn: str,
        *,
        connect: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        presence_s: float = PRESENCE_S,
    ) -> None:
        super().__init__()
        self.instance_id = _new_instance_id()
        self._dsn = dsn
        self._connect = connect
        self._clock = clock
        self._presence_s = presence_s
        self._seen: dict[str, tuple[float, float]] = {}  # instance -> (last heard, its presence TTL)
        self._gone: set[str] = set()  # instances that said they leave: not counted again
        self._frozen: int | None = None  # the count while this bus cannot hear anyone
        self._leaving = False
        self._outbox: asyncio.Queue[str] | None = None
        self._waiting: set[str] = set()  # payload-less news in the outbox, not yet sent
        self._task: asyncio.Task[None] | None = None
        self._work_next = 0.0  # when `work` may go out again (the loop's clock)
        self._listening_since: float | None = None  # this listening connection's start
        self._work_later: asyncio.TimerHandle | None = None  # the `work` held back meanwhile
        self._connected = asyncio.Event()
        self.reconnects = 0

    async def start(self) -> None:
        self._outbox = asyncio.Queue(maxsize=10_000)
        self._task = asyncio.create_task(self._run(), name="coordination-bus")
        # Start-up waits a moment for the connection, so the first edits are announced; the
        # bus catches up by itself if the database is not there yet.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=5.0)

    async def stop(self) -> None:
        if self._work_later is not None:
            self._work_later.cancel()
            self._work_later = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def publish(self, topic: str, payload: str = "") -> None:
        if self._outbox is None:
            return
        if topic == WORK and not self._work_now():
            return
        message = f"{self.instance_id}|{topic}|{payload}"[:MAX_PAYLOAD_CHARS]
        if not payload:
            # "New work" comes once per accepted event; one waiting copy says it all, so a
            # busy ingest sends a notification per round trip, not one per event.
            if message in self._waiting:
                return
            self._waiting.add(message)
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:  # the database is away: news is a hint, drop it
            self._waiting.discard(message)
            log.warning("bus outbox full; a notification was dropped")

    def _work_now(self) -> bool:
        """Whether `work` goes out now; if it is held back, it goes out at the end of the wait."""
        if self._work_later is not None:
            return False  # already held back: that one goes out (the common case of a stream)
        if self._alone():
            return False  # nobody to wake: a newcomer finds the work by its first claim
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return True  # not on the loop (never in the gateway): no timer to hold it back with
        now = loop.time()  # the timer's clock, not the injectable one
        if now < self._work_next:
            self._work_later = loop.call_later(self._work_next - now, self._work_due)
            return False
        self._work_next = now + WORK_EVERY_S
        return True

    def _alone(self) -> bool:
        """No other instance heard, after listening long enough to have heard any (an older
        release speaks every 5 s): before that, a newcomer that has not yet heard its peers
        must not keep news from them."""
        if self.instances() > 1 or self._listening_since is None:
            return False
        return self._clock() - self._listening_since >= LEGACY_TTL_S

    def _work_due(self) -> None:
        self._work_later = None
        self.publish(WORK)

    def instances(self) -> int:
        if self._frozen is not None:  # not listening: the others' silence says nothing
            return self._frozen
        return self._count()

    def _count(self) -> int:
        now = self._clock()
        return 1 + sum(1 for iid, (seen, ttl) in self._seen.items()
                       if seen >= now - ttl and iid != self.instance_id)

    def leave(self) -> None:
        if not self._leaving:
            self._leaving = True  # no presence from now on
            self.publish(LEAVE, "")

    def _hear_again(self) -> None:
        """After a gap in listening, the instances known before count for one more TTL from now:
        they are most likely still there, and their next presence comes within a second."""
        now = self._clock()
        self._seen = {iid: (now, ttl) for iid, (_seen, ttl) in self._seen.items()}
        self._frozen = None

    # -- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        first = True
        while True:
            conn: Any = None
            try:
                conn = await self._open()
                await conn.add_listener(CHANNEL, self._on_notify)
                self._hear_again()
                self._listening_since = self._clock()
                self._connected.set()
                if not first:
                    self.reconnects += 1
                    log.info("bus reconnected: dropping cached views")
                    self.deliver(RESET, "")
                first = False
                delay = RECONNECT_MIN_S
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect after a pause
                log.warning("bus connection lost (%s); reconnecting in %.1fs", type(exc).__name__, delay)
            finally:
                if self._connected.is_set():  # the count holds while nobody can be heard
                    self._frozen = self._count()
                self._connected.clear()
                self._listening_since = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2.0)
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _open(self) -> Any:
        if self._connect is not None:
            return await self._connect(self._dsn)
        import asyncpg  # noqa: PLC0415 - only deployments on PostgreSQL need it

        return await asyncpg.connect(self._dsn, timeout=5.0)

    async def _serve(self, conn: Any) -> None:
        """Send what is queued, and say we are alive, until the connection fails."""
        assert self._outbox is not None
        next_presence = 0.0
        while True:
            now = self._clock()
            if now >= next_presence:
                if not self._leaving:
                    self.publish(PRESENCE, f"{self._presence_s:g}")  # its interval: the TTL's unit
                next_presence = now + self._presence_s
            try:
                first = await asyncio.wait_for(self._outbox.get(), timeout=max(0.05, next_presence - now))
            except TimeoutError:
                if conn.is_closed():
                    raise ConnectionError("listening connection closed") from None
                continue
            batch = [first]
            while len(batch) < SEND_BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            self._waiting.difference_update(batch)
            await conn.execute("SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m", CHANNEL, batch)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, message: str) -> None:
        sender, _, rest = message.partition("|")
        topic, _, payload = rest.partition("|")
        if sender == self.instance_id:
            return
        if topic == LEAVE:
            self._seen.pop(sender, None)
            if len(self._gone) >= 1000:  # instance ids are never reused: forgetting is safe
                self._gone.clear()
            self._gone.add(sender)
            return
        if sender not in self._gone:  # a leaving instance's last news does not bring it back
            ttl = self._seen.get(sender, (0.0, LEGACY_TTL_S))[1]
            if topic == PRESENCE:
                try:
                    ttl = TTL_INTERVALS * min(60.0, max(0.1, float(payload)))
                except ValueError:
                    ttl = LEGACY_TTL_S
            self._seen[sender] = (self._clock(), ttl)
        if topic != PRESENCE:
            self.deliver(topic, payload)
        if len(self._seen) > 1000:  # instances come and go: forget the long gone
            now = self._clock()
            self._seen = {k: (seen, ttl) for k, (seen, ttl) in self._seen.items() if seen >= now - ttl}


def _new_instance_id() -> str:
    return f"{os.getpid()}-{os.urandom(4).hex()}"


def open_bus(database_url: str) -> Bus:
    """The bus for a deployment's database: LISTEN/NOTIFY on PostgreSQL, else in-process."""
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresBus(database_url)
    return LocalBus()
