"""PostgreSQL access on asyncpg: a pool, transactions that are retried after a deadlock, and
group commit for the writes that come in crowds.

- `read(fn)` runs `fn(conn)` on a pooled connection, outside a transaction (each statement
  sees what was committed when it started, as SQLite's reader does).
- `write(fn)` runs `fn(conn)` in a transaction of its own. A caller cancelled meanwhile does not
  cancel the write: it still lands, as on SQLite. A deadlock or serialization failure (PostgreSQL
  aborts one of the transactions) runs `fn` again, a few times.
- `GroupCommit` gathers concurrent calls of one kind (ingest, outcomes) into one transaction,
  a few transactions at once: one commit, and one round trip per statement, for many calls.
- `connect()` opens a connection outside the pool, for a caller that keeps it (LISTEN).

When a write fails because PostgreSQL cannot store anything (its disk full, a read-only
database: `errors.cannot_write`), `fault` says why and `ping` (so `/readyz`) raises, until the
probe `ping` makes at most every `FAULT_PROBE_S` succeeds (a row that needs a new page of
`write_probe`, rolled back), so the gateway says it is ready again by itself, traffic or not.
A transaction that merely commits proves nothing: an idle claim, which changes no row, commits
on a full disk too (SQLite's store likewise counts only a commit that changed something).

Text PostgreSQL cannot store (a NUL character, which SQLite keeps) is a `BadRequest`: it comes
from a caller, since the store cleans what the gateway writes itself (`clean`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ...errors import BadRequest, StorageFault, cannot_write
from . import schema

log = logging.getLogger("gateway.store")

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item of a group commit
R = TypeVar("R")

MAX_BATCH = 500  # calls per group-commit transaction
RANDOM_PAGE_COST = "1.1"  # for the gateway's sessions: the planner's cost of a page read by key
TX_RETRIES = 5  # a transaction chosen as a deadlock's victim is run again this many times
CLOSE_WAIT_S = 10.0  # writes still running get this long at close
FAULT_PROBE_S = 1.0  # while writes fail for want of space: `ping` tries a write at most this often
# The probe's row: a page of `write_probe` to itself (its column is stored as is, migration 009),
# so the probe needs the table to grow, which a full disk refuses.
_PROBE_SQL = "INSERT INTO write_probe (pad) VALUES (repeat('x', 5000))"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def clean(text: str | None) -> str | None:
    """Text the gateway stores itself (a receiver's answer, an error): PostgreSQL's text holds
    no NUL character, so it becomes U+FFFD, as undecodable bytes already do."""
    if text is None or "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd")


def status_count(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Database:
    """Owns the pool; `open()` then `close()`."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min: int = 2,
        pool_max: int = 10,
        statement_timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        migrate: str = "manual",
    ) -> None:
        self.dsn = dsn
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.statement_timeout_s = statement_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.migrate_mode = migrate
        self._pool: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # transactions committed
        self.writes = 0  # calls they carried
        self.retries = 0  # transactions run again after a deadlock or serialization failure
        self.fault: str | None = None  # why writes fail now (`cannot_write`); None once a probe succeeds
        self._probe_at = 0.0  # while `fault`: when (monotonic) `ping` may try a write again

    # -- life -------------------------------------------------------------------------------

    def _server_settings(self) -> dict[str, str]:
        return {
            "statement_timeout": str(max(1, int(self.statement_timeout_s * 1000))),
            "application_name": "hooks-gateway",
            # The store's statements find rows by key, in tables whose working set is in memory.
            # With the default (4, a spinning disk's), the planner seq-scans the queue and the
            # deliveries while they are small (thousands of rows) or their statistics are stale,
            # at a cost that grows with the table, for every batch (docs/DECISIONS.md).
            "random_page_cost": RANDOM_PAGE_COST,
        }

    async def open(self) -> None:
        import asyncpg  # noqa: PLC0415 - only deployments on PostgreSQL need it

        conn = await self.connect()
        try:
            if self.migrate_mode == "auto":
                await schema.migrate(conn)
            else:
                await schema.check(conn, where=redact(self.dsn))
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=min(self.pool_min, self.pool_max),
            max_size=self.pool_max,
            timeout=self.connect_timeout_s,
            server_settings=self._server_settings(),
            reset=_keep_session,
        )

    async def close(self) -> None:
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=CLOSE_WAIT_S)
            except TimeoutError:
                pool.terminate()

    async def connect(self) -> Any:
        """A connection of its own, outside the pool, with the pool's settings; the caller closes
        it. For what must hold one connection (LISTEN, migrations, advisory locks)."""
        import asyncpg  # noqa: PLC0415

        return await asyncpg.connect(
            self.dsn, timeout=self.connect_timeout_s, server_settings=self._server_settings()
        )

    @property
    def pool(self) -> Any:
        """The asyncpg pool (`async with db.pool.acquire() as conn`)."""
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def ping(self) -> None:
        """Raises when the database cannot be read, or (`StorageFault`) while its writes fail."""
        await self.read(lambda c: c.fetchval("SELECT 1"))
        if self.fault is None:
            return
        now = time.monotonic()
        if now >= self._probe_at:
            self._probe_at = now + FAULT_PROBE_S
            try:
                await self._probe()
            except Exception as exc:
                reason = cannot_write(exc)
                if reason is None:
                    raise
                self.fault = reason
            else:
                log.info("the database can be written again (a probe write succeeded)")
                self.fault = None
                return
        raise StorageFault(self.fault)

    async def _probe(self) -> None:
        """A write that needs room: its row is rolled back, and the table emptied again so that
        the next probe needs a new page too."""
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(_PROBE_SQL)
            finally:
                await tx.rollback()
            await conn.execute("TRUNCATE write_probe")

    def _wrote(self, exc: BaseException) -> None:
        """A write transaction failed with `exc`."""
        reason = cannot_write(exc)
        if reason is None:
            return
        if self.fault is None:
            self._probe_at = time.monotonic() + FAULT_PROBE_S
            log.error("the database cannot be written (%s): writes fail (503) until one succeeds; "
                      "/readyz tries a write every %.0f s", reason, FAULT_PROBE_S)
        self.fault = reason

    # -- queries ----------------------------------------------------------------------------

    async def read(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        async with self.pool.acquire() as conn:
            with _caller_text():
                return await fn(conn)

    async def write(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        pool = self.pool
        task = self.track(asyncio.ensure_future(self.transaction(fn, pool=pool)))
        return await asyncio.shield(task)

    async def transaction(
        self, fn: Callable[[Any], Awaitable[T]], *, pool: Any = None, calls: int = 1, single: bool = False
    ) -> T:
        """`fn(conn)` in one transaction, run again when PostgreSQL aborted it to break a
        deadlock or a serialization conflict (so `fn` must be safe to run again). `single`: `fn`
        runs one statement, which is a transaction of its own: no BEGIN and COMMIT round trips."""
        import asyncpg  # noqa: PLC0415

        pool = pool or self.pool
        for attempt in range(TX_RETRIES):
            try:
                async with pool.acquire() as conn:
                    with _caller_text():
                        if single:
                            result = await fn(conn)
                        else:
                            async with conn.transaction():
                                result = await fn(conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == TX_RETRIES - 1:
                    raise
                self.retries += 1
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))  # noqa: S311 - jitter
                continue
            except Exception as exc:
                self._wrote(exc)
                raise
            # A commit does not clear `fault`: only the probe (`ping`) does, see the docstring.
            self.batches += 1
            self.writes += calls
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def track(self, task: asyncio.Task[T] | asyncio.Future[T]) -> asyncio.Task[T]:
        """Keep `task` until it ends, so `close()` waits for it."""
        assert isinstance(task, asyncio.Task)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_retrieved)  # a caller that went away leaves no "never retrieved" log
        return task


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


@contextlib.contextmanager
def _caller_text() -> Iterator[None]:
    import asyncpg  # noqa: PLC0415

    try:
        yield
    except asyncpg.CharacterNotInRepertoireError:
        raise BadRequest("text must not contain NUL characters") from None


class GroupCommit(Generic[I, R]):
    """Concurrent calls share transactions: `submit(item)` queues the item, and up to `lanes`
    transactions at once each take everything queued (up to `MAX_BATCH`) and run
    `run(conn, items)`, which returns one result per item. Under load the batches grow by
    themselves: what arrives while a transaction commits goes into the next one.

    When a batch raises, each of its items is run again alone, so that one failing call (a
    conflict) does not fail the others. A caller cancelled meanwhile does not cancel its item."""

    def __init__(
        self,
        db: Database,
        run: Callable[[Any, list[I]], Awaitable[list[R]]],
        *,
        lanes: int = 2,
        max_batch: int = MAX_BATCH,
        single: Callable[[list[I]], bool] | None = None,
    ) -> None:
        self._db = db
        self._run = run
        self._single = single  # whether `run` makes one statement of these items (`Database.transaction`)
        self._lanes = max(1, lanes)
        self._max_batch = max_batch
        self._queue: deque[tuple[I, asyncio.Future[R]]] = deque()
        self._running = 0

    async def submit(self, item: I) -> R:
        self._db.pool  # noqa: B018 - "database is not open" before anything is queued
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running < self._lanes:
            self._running += 1
            self._db.track(asyncio.ensure_future(self._drain()))
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._queue:
                take = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(take)]
                await self._commit(batch)
        finally:
            self._running -= 1

    async def _commit(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            single = self._single is not None and self._single(items)
            results = await self._db.transaction(
                lambda c: self._run(c, items), calls=len(items), single=single
            )
        except Exception as exc:  # noqa: BLE001 - handed to the callers
            if len(batch) == 1:
                _settle(batch[0][1], exc=exc)
                return
            for item, future in batch:  # which one failed: each alone
                try:
                    (result,) = await self._db.transaction(self._alone(item))
                except Exception as one_exc:  # noqa: BLE001
                    _settle(future, exc=one_exc)
                else:
                    _settle(future, result=result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


    def _alone(self, item: I) -> Callable[[Any], Awaitable[list[R]]]:
        return lambda c: self._run(c, [item])


def _settle(future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    if future.done():  # nobody waits for it any more
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def _keep_session(conn: Any) -> None:
    """What the pool runs when a connection comes back: nothing. asyncpg's default (RESET ALL,
    unlock advisory locks, UNLISTEN, CLOSE ALL) is a round trip per use, for session state the
    store never sets: its settings come with the connection, and what locks or listens uses a
    connection of its own (`connect()`). Measured: 4 statements per delivery and event fewer."""
    return None
