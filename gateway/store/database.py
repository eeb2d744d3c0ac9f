"""SQLite access with one writer thread that commits concurrent writes together.

Every write is a function of a `sqlite3.Connection`. The writer task drains all writes
waiting at that moment and runs them in one transaction (each in its own savepoint, so one
failing write does not undo the others), then commits once: one fsync for many requests
(group commit). Reads run on a second connection in their own thread; WAL lets them
proceed beside the writer.

When the database cannot be written (disk full, a lock held past the busy timeout, a read-only
or failing file: `errors.cannot_write`), every write of the batch fails with that error (a
`503` for a caller), `fault` says why, `ping` raises, and the writer tries a small write every
`FAULT_PROBE_S` until one succeeds: the gateway is ready again by itself, traffic or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from ..errors import StorageFault, cannot_write

log = logging.getLogger("gateway.store")

T = TypeVar("T")
MAX_BATCH = 1000  # writes per transaction
FAULT_PROBE_S = 1.0  # while writes fail (disk full, locked, read-only): one probe write this often
# After "disk full", writes are said to work again only with this much free space: small writes
# fit in pages already allocated (the WAL's) long before an event of some size does.
FULL_CLEARS_AT_BYTES = 4 << 20


WRITER_NICE = 5  # added to the writer thread's nice value (Linux): it yields to the event loop


def _background_priority() -> None:
    """Lower the writer thread's scheduling priority (Linux keeps a nice value per thread).

    The writer shares its core with the event loop. A batch of records of blocking calls takes
    a millisecond or two of SQLite; at the same priority the scheduler splits the core between
    the two threads, and a login request arriving meanwhile waits: measured in bench/, the p99
    of a blocking call at concurrency 1 went from ~2.0 ms to ~1.0 ms with the writer at nice 5,
    with ingest and end-to-end delivery rates unchanged within the noise. The loop waits for
    the writer only where it must (a 202 after its commit), so the writer still gets the time
    it needs; under saturation its batches simply grow."""
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))


def sqlite_path(url: str) -> str:
    """`sqlite:///relative/path.db`, `sqlite:////abs/path.db`, `sqlite://:memory:`."""
    rest = url.removeprefix("sqlite://")
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"


def _connect(path: str, busy_timeout_s: float, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the numbered `migrations/*.sql` not yet applied, in order; returns the schema version.

    Each version is applied unless it is recorded, not only those above the highest: a
    migration numbered below one already applied (written alongside it) still runs."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_version")}
    current = max(applied, default=0)
    folder = resources.files("gateway.store").joinpath("migrations")
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    for file in files:
        version = int(file.name.split("_", 1)[0])
        if version in applied:
            continue
        log.info("applying migration %s", file.name)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(file.read_text()):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = max(current, version)
    return int(current)


def _statements(script: str) -> list[str]:
    out, buf = [], []
    for line in script.splitlines():
        stripped = line.split("--", 1)[0]
        buf.append(stripped)
        if stripped.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    tail = "\n".join(buf).strip()
    if tail:
        out.append(tail)
    return out


class _Write:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.future = future


class Database:
    """Owns two connections and their threads; `open()` then `close()`."""

    def __init__(self, path: str, *, busy_timeout_s: float = 5.0, synchronous: str = "FULL") -> None:
        self.path = path
        self._busy = busy_timeout_s
        self._sync = synchronous
        self._writer_pool = ThreadPoolExecutor(
            1, thread_name_prefix="db-writer", initializer=_background_priority
        )
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="db-reader")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Write | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.writes = 0
        self.fault: str | None = None  # why writes fail now (`cannot_write`); None once one succeeds
        self._changed = False  # whether the last batch committed changed any row
        self._probe_at = 0.0  # while `fault`: when (monotonic) the next probe write is due

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        args = (self.path, self._busy, self._sync)
        self._writer = await loop.run_in_executor(self._writer_pool, _connect, *args)
        await loop.run_in_executor(self._writer_pool, migrate, self._writer)
        self._reader = await loop.run_in_executor(self._reader_pool, _connect, *args)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._write_loop(), name="db-writer")

    async def close(self) -> None:
        if self._queue is not None and self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        loop = asyncio.get_running_loop()
        if self._writer is not None:
            await loop.run_in_executor(self._writer_pool, self._writer.close)
            self._writer = None
        if self._reader is not None:
            await loop.run_in_executor(self._reader_pool, self._reader.close)
            self._reader = None
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        if conn is None:
            raise RuntimeError("database is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, fn, conn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._queue is None:
            raise RuntimeError("database is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, future))
        # A caller cancelled now does not cancel the write: it is queued and still lands; the
        # writer skips setting the result of a future nobody waits for.
        return await future

    async def ping(self) -> None:
        """Raises when the database cannot be read, or (`StorageFault`) while its writes fail."""
        await self.read(lambda c: c.execute("SELECT 1").fetchone())
        if self.fault is not None:
            raise StorageFault(self.fault)

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        getter: asyncio.Future[_Write | None] | None = None
        stop = False
        try:
            while not stop:
                if getter is None:
                    getter = asyncio.ensure_future(self._queue.get())
                if self.fault is not None:
                    wait = max(0.0, self._probe_at - time.monotonic())
                    done, _ = await asyncio.wait({getter}, timeout=wait)
                    if not done:  # nothing to write: a probe finds out whether writes work again
                        self._probe_at = time.monotonic() + FAULT_PROBE_S
                        await self._commit([_probe_write(loop)])
                        continue
                first = await getter
                getter = None
                if first is None:
                    break
                batch = [first]
                while len(batch) < MAX_BATCH and not self._queue.empty():
                    item = self._queue.get_nowait()
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                if self.fault is not None and time.monotonic() >= self._probe_at:
                    # Writes keep coming (idle workers' claims change nothing, so prove nothing):
                    # the probe rides along, else the fault would never clear without traffic.
                    self._probe_at = time.monotonic() + FAULT_PROBE_S
                    batch.append(_probe_write(loop))
                await self._commit(batch)
        finally:
            if getter is not None:
                getter.cancel()

    async def _commit(self, batch: list[_Write]) -> None:
        """Run the batch on the writer thread and hand each caller its result."""
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._writer_pool, self._run_batch, batch)
        except BaseException as exc:  # the commit itself failed: every write in it failed
            self._failed(exc)
            for item in batch:
                if not item.future.done():
                    error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                    item.future.set_exception(error)
            return
        # A transaction that changed nothing commits without writing a byte: no proof.
        wrote = self._changed or any(item.fn is _probe for item in batch)
        room = self.fault != "disk full" or self._space() >= FULL_CLEARS_AT_BYTES
        if self.fault is not None and wrote and room:
            log.warning("the database can be written again (it could not: %s)", self.fault)
            self.fault = None
        for item, (ok, value) in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    def _space(self) -> int:
        """Bytes free for us on the database's file system."""
        if self.path == ":memory:":
            return FULL_CLEARS_AT_BYTES
        try:
            st = os.statvfs(Path(self.path).parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _failed(self, exc: BaseException) -> None:
        reason = cannot_write(exc)
        if reason is None:
            log.error("write batch failed: %s", exc)
            return
        if self.fault is None:
            self._probe_at = time.monotonic() + FAULT_PROBE_S
            log.error("the database cannot be written (%s): writes fail (503) until one succeeds; "
                      "trying again every %.0f s", reason, FAULT_PROBE_S)
        self.fault = reason

    def _run_batch(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """One transaction for the batch. Writes rarely fail (a 409 on a duplicate name), so the
        batch first runs without savepoints; only if one write raises is it rolled back and run
        again with a savepoint per write, so the failing one does not undo the others."""
        conn = self._writer
        assert conn is not None
        before = conn.total_changes
        try:
            out = self._execute(conn, batch, isolate=False)
        except _WriteFailed:
            out = self._execute(conn, batch, isolate=True)
        self.batches += 1
        self.writes += len(batch)
        self._changed = conn.total_changes != before
        return out

    def _execute(
        self, conn: sqlite3.Connection, batch: list[_Write], *, isolate: bool
    ) -> list[tuple[bool, Any]]:
        out: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if not isolate:
                    try:
                        out.append((True, item.fn(conn)))
                    except Exception as exc:
                        if cannot_write(exc) is not None:
                            raise  # the database refused, not this write: the batch fails
                        raise _WriteFailed from exc
                    continue
                conn.execute("SAVEPOINT w")
                try:
                    value = item.fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller's future
                    if cannot_write(exc) is not None or not conn.in_transaction:
                        # The database refused (SQLite may have rolled the whole transaction
                        # back, savepoint and all): every write of the batch fails with this.
                        raise
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    out.append((False, exc))
                else:
                    conn.execute("RELEASE w")
                    out.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return out


def _probe(conn: sqlite3.Connection) -> None:
    """A write that needs what any write needs (the lock, a page of the WAL) and changes nothing
    the gateway reads: SQLite's `user_version`, which the gateway does not use, counted up."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    conn.execute(f"PRAGMA user_version = {(version + 1) % 2**31}")


def _probe_write(loop: asyncio.AbstractEventLoop) -> _Write:
    future: asyncio.Future[Any] = loop.create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody awaits it
    return _Write(_probe, future)


class _WriteFailed(Exception):
    """A write of a batch run without savepoints raised: run the batch again, isolated."""
