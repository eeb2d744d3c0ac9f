"""SQLite access with one writer thread that commits concurrent writes together.

Every write is a function of a `sqlite3.Connection`. The writer task drains all writes
waiting at that moment and runs them in one transaction (each in its own savepoint, so one
failing write does not undo the others), then commits once: one fsync for many requests
(group commit). Reads run on a second connection in their own thread; WAL lets them
proceed beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger("gateway.store")

T = TypeVar("T")
MAX_BATCH = 1000  # writes per transaction


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
        await self.read(lambda c: c.execute("SELECT 1").fetchone())

    async def _write_loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                results = await loop.run_in_executor(self._writer_pool, self._run_batch, batch)
            except BaseException as exc:  # the commit itself failed: every write in it failed
                log.error("write batch failed: %s", exc)
                for item in batch:
                    if not item.future.done():
                        error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                        item.future.set_exception(error)
                continue
            for item, (ok, value) in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    def _run_batch(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """One transaction for the batch. Writes rarely fail (a 409 on a duplicate name), so the
        batch first runs without savepoints; only if one write raises is it rolled back and run
        again with a savepoint per write, so the failing one does not undo the others."""
        conn = self._writer
        assert conn is not None
        try:
            out = self._execute(conn, batch, isolate=False)
        except _WriteFailed:
            out = self._execute(conn, batch, isolate=True)
        self.batches += 1
        self.writes += len(batch)
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
                        raise _WriteFailed from exc
                    continue
                conn.execute("SAVEPOINT w")
                try:
                    value = item.fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller's future
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


class _WriteFailed(Exception):
    """A write of a batch run without savepoints raised: run the batch again, isolated."""
