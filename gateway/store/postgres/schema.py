"""The PostgreSQL schema's versions: its numbered `migrations/*.sql`, applied by `gateway migrate`
(or by `gateway serve` with `[database] migrate = "auto"`).

Unlike SQLite's file, a PostgreSQL database is shared by several instances and usually owned by
an operator who upgrades it on purpose, so an instance does not change it behind their back: on
an unmigrated or older database it refuses to start, naming the command. Migrations take an
advisory lock, so two instances (or two `gateway migrate`) never apply one twice; each file
runs in its own transaction with its version row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger("gateway.store")

# pg_advisory_lock key of migrations (any constant the gateway's other locks do not use).
MIGRATION_LOCK = 0x6761_7465_7761_7901  # "gateway" + 1


class SchemaNotReady(Exception):
    """The database lacks migrations this gateway needs; the message names `gateway migrate`."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """The migrations this gateway ships, in order."""
    folder = resources.files("gateway.store.postgres").joinpath("migrations")
    out = [
        Migration(int(f.name.split("_", 1)[0]), f.name, f.read_text())
        for f in folder.iterdir()
        if f.name.endswith(".sql")
    ]
    return sorted(out, key=lambda m: m.version)


async def applied(conn: Any) -> set[int]:
    """Versions recorded in the database (none when it was never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return set()
    return {int(r[0]) for r in await conn.fetch("SELECT version FROM schema_version")}


async def missing(conn: Any) -> list[Migration]:
    done = await applied(conn)
    return [m for m in available() if m.version not in done]


async def migrate(conn: Any) -> list[Migration]:
    """Apply the missing migrations, in order; returns those applied. `conn` is a connection of
    its own (not in a transaction): the advisory lock is held on it for the whole run."""
    await conn.execute("SET statement_timeout = 0")  # an index on a large table takes what it takes
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)")
        todo = await missing(conn)  # read under the lock: another instance may just have migrated
        for m in todo:
            log.info("applying migration %s", m.name)
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", m.version)
        return todo
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)


async def check(conn: Any, *, where: str) -> None:
    """`SchemaNotReady` when a migration this gateway ships is not applied to the database."""
    todo = await missing(conn)
    if not todo:
        return
    done = await applied(conn)
    state = "has no gateway schema" if not done else f"is at schema version {max(done)}"
    raise SchemaNotReady(
        f"the PostgreSQL database {where} {state}; this gateway needs version {available()[-1].version}"
        f" ({', '.join(m.name for m in todo)} not applied). Run `gateway migrate` (with the same"
        ' --config), or set [database] migrate = "auto" to let `gateway serve` apply them'
    )
