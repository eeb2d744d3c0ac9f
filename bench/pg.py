"""PostgreSQL for the benchmarks: a throwaway server (the tests' tests/pgserver.py, with fsync and
synchronous commits on, as a production server runs), a database per measurement, counts, and
the backlog pre-step written with COPY.

The server runs on the cores the caller names (`taskset`), like every other process of a run.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .bodies import POST_USER_REGISTRATION, encode

TRIGGER = "post-user-registration"


class Server:
    """`with Server(cores) as pg: url = pg.database()`."""

    def __init__(self, cores: str | None) -> None:
        from tests.pgserver import PostgresServer, find_bindir  # noqa: PLC0415 - the tests' helper

        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL's server programs were not found: apt-get install postgresql")
        self.server = PostgresServer(bindir, durable=True)
        if cores is not None:
            self.server.launcher = ["taskset", "-c", cores]

    def __enter__(self) -> Server:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def database(self) -> str:
        return self.server.create_database_sync(prefix="bench")

    def settle(self, done: str | None = None) -> None:
        """Between two measurements: drop the database `done` (a measurement's, its gateways
        stopped: autovacuum would go on working on it) and write every dirty page out now
        (CHECKPOINT), so that no measurement pays for the previous one's writes or lands on a
        timed checkpoint's I/O."""

        async def go() -> None:
            import asyncpg  # noqa: PLC0415

            conn = await asyncpg.connect(self.server.url())
            try:
                if done is not None:
                    name = done.rsplit("/", 1)[-1].split("?", 1)[0]
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()

        _run(go())

    @property
    def log(self) -> Path:
        return self.server.log


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def count(url: str, sql: str, *args: object) -> int:
    async def go() -> int:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return int(_run(go()))


def insert_backlog(url: str, *, tenant: str, hook_id: str, count: int) -> float:
    """`count` pending deliveries due now, one event each, in one transaction of COPY; the
    hook's lane made due, as ingest leaves it. Returns the seconds it took."""
    t0 = time.perf_counter()
    now = time.time()
    start_ms = int(now * 1000)
    body = encode(POST_USER_REGISTRATION)

    async def go() -> None:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "events", columns=["id", "tenant_id", "trigger_id", "body", "created_at"],
                    records=((f"evt_{start_ms:013d}{i:013d}", tenant, TRIGGER, body, now)
                             for i in range(count)),
                )
                await conn.copy_records_to_table(
                    "deliveries",
                    columns=["id", "tenant_id", "event_id", "hook_id", "trigger_id", "kind", "status",
                             "attempt_count", "next_attempt_at", "created_at", "updated_at"],
                    records=((f"dlv_{start_ms:013d}{i:013d}", tenant, f"evt_{start_ms:013d}{i:013d}", hook_id,
                              TRIGGER, "async", "pending", 0, now - 1.0 + i * 1e-7, now, now)
                             for i in range(count)),
                )
                # Their queue rows (gateway/store/postgres/migrations/006_delivery_queue.sql).
                await conn.execute(
                    "INSERT INTO delivery_queue (delivery_id, hook_id, tenant_id, due, seq)"
                    " SELECT id, hook_id, tenant_id, next_attempt_at, seq FROM deliveries"
                    " WHERE status = 'pending'")
                await conn.execute("UPDATE hooks SET next_due = $1 WHERE id = $2", now - 1.0, hook_id)
            for table in ("deliveries", "delivery_queue", "events"):
                await conn.execute(f"VACUUM ANALYZE {table}")
            await conn.execute("CHECKPOINT")  # the pre-step's pages written out before the drain
        finally:
            await conn.close()

    _run(go())
    return time.perf_counter() - t0


def size_mb(url: str) -> float:
    return count(url, "SELECT pg_database_size(current_database())") / 1e6


def insert_finished(url: str, *, tenant: str, hook_id: str, count: int, at: float) -> float:
    """`count` succeeded deliveries created at `at`, each with its event and one attempt (what
    the retention purge deletes), with COPY. Returns the seconds it took."""
    t0 = time.perf_counter()
    start_ms = int(at * 1000)
    body = encode(POST_USER_REGISTRATION)

    async def go() -> None:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "events", columns=["id", "tenant_id", "trigger_id", "body", "created_at"],
                    records=((f"evo_{start_ms:013d}{i:013d}", tenant, TRIGGER, body, at)
                             for i in range(count)),
                )
                await conn.copy_records_to_table(
                    "deliveries",
                    columns=["id", "tenant_id", "event_id", "hook_id", "trigger_id", "kind", "status",
                             "attempt_count", "created_at", "updated_at"],
                    records=((f"dlo_{start_ms:013d}{i:013d}", tenant, f"evo_{start_ms:013d}{i:013d}", hook_id,
                              TRIGGER, "async", "succeeded", 1, at, at) for i in range(count)),
                )
                await conn.copy_records_to_table(
                    "attempts",
                    columns=["delivery_id", "number", "started_at", "duration_ms", "status_code",
                             "response_body"],
                    records=((f"dlo_{start_ms:013d}{i:013d}", 1, at, 3.0, 200, "{}") for i in range(count)),
                )
            for table in ("deliveries", "events", "attempts"):
                await conn.execute(f"VACUUM ANALYZE {table}")
        finally:
            await conn.close()

    _run(go())
    return time.perf_counter() - t0


def table_sizes(url: str) -> dict[str, tuple[float, int, int]]:
    """Per hot table: (total size in MB, live rows, dead rows) from PostgreSQL's statistics."""
    async def go() -> dict[str, tuple[float, int, int]]:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            rows = await conn.fetch(
                "SELECT relname, pg_total_relation_size(relid) AS size, n_live_tup, n_dead_tup"
                " FROM pg_stat_user_tables WHERE relname IN ('deliveries', 'events', 'attempts')")
        finally:
            await conn.close()
        return {r["relname"]: (r["size"] / 1e6, int(r["n_live_tup"]), int(r["n_dead_tup"])) for r in rows}

    result: dict[str, tuple[float, int, int]] = _run(go())
    return result
