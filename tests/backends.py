"""Stores of either backend for tests that run on both (the `backend_url` fixture of conftest):
open one from a URL, and run a plain SQL statement on it (written to read the same on both)."""

from __future__ import annotations

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
