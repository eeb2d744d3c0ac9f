"""Stores of either backend for tests that run on both (the `backend_url` fixture of conftest):
open one from a URL, and run a plain SQL statement on it (written to read the same on both)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from typing import Any

from gateway.store.base import Store
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SqliteStore


def make_store(url: str) -> Store:
    """A store (not yet opened) for a database URL of either backend."""
    if url.startswith("sqlite://"):
        return SqliteStore(url)
    return PostgresStore(url, pool_min=1, pool_max=8)


def backend(store: Store) -> str:
    return "sqlite" if isinstance(store, SqliteStore) else "postgres"


async def sql(store: Store, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement (no parameters) and return its rows, committed."""
    if isinstance(store, SqliteStore):
        return await store.db.write(lambda c: [tuple(r) for r in c.execute(statement).fetchall()])
    assert isinstance(store, PostgresStore)

    async def op(c: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await c.fetch(statement)]

    return await store.db.write(op)


def batches(store: Store) -> int:
    """Transactions the store has committed so far."""
    assert isinstance(store, SqliteStore | PostgresStore)
    return store.db.batches


def db_rows(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of one statement (`?` placeholders), read straight from a gateway's database of
    either backend, outside the gateway (as an operator's SQL shell would)."""
    if url.startswith("sqlite://"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            with conn:
                return [tuple(r) for r in conn.execute(statement, args).fetchall()]
        finally:
            conn.close()
    parts = statement.split("?")
    numbered = parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))

    async def query() -> list[tuple[Any, ...]]:
        import asyncpg  # noqa: PLC0415

        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(numbered, *args)]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from inside a running loop
        return pool.submit(asyncio.run, query()).result()
