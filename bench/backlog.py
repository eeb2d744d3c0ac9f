"""The pre-step of the backlog scenario: pending deliveries written straight into the SQLite
file, one event and one delivery each, due now, in one transaction.

The rows match gateway/store/migrations/ (001_init.sql, and 005's lanes). `synchronous=OFF` and an in-memory
rollback journal are for this pre-step only; the gateway opens the file with its own settings.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .bodies import POST_USER_REGISTRATION, encode

TRIGGER = "post-user-registration"


def _ids(prefix: str, start_ms: int, n: int) -> Iterator[str]:
    # Time-ordered like the gateway's own ids (gateway/ids.py): a sortable prefix, a counter.
    for i in range(n):
        yield f"{prefix}_{start_ms:013d}{i:013d}"


def insert(db_path: Path, *, tenant: str, hook_id: str, count: int) -> float:
    """Insert `count` pending deliveries; returns the seconds it took."""
    t0 = time.perf_counter()
    now = time.time()
    start_ms = int(now * 1000)
    body = encode(POST_USER_REGISTRATION)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB for this pre-step only
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, tenant_id, trigger_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
            ((eid, tenant, TRIGGER, body, now) for eid in _ids("evt", start_ms, count)),
        )
        # Due in creation order, all of them due already.
        conn.executemany(
            "INSERT INTO deliveries (id, tenant_id, event_id, hook_id, trigger_id, kind, status,"
            " attempt_count, next_attempt_at, lease_owner, last_error, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'async', 'pending', 0, ?, NULL, NULL, ?, ?)",
            (
                (did, tenant, eid, hook_id, TRIGGER, now - 1.0 + i * 1e-7, now, now)
                for i, (did, eid) in enumerate(zip(_ids("dlv", start_ms, count), _ids("evt", start_ms, count),
                                                   strict=True))
            ),
        )
        # The hook's lane is due (gateway/store/sqlite/lanes.py), as the gateway's ingest leaves it.
        conn.execute("UPDATE hooks SET next_due = ? WHERE id = ?", (now - 1.0, hook_id))
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return time.perf_counter() - t0


def count(db_path: Path, status: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE status = ?", (status,)).fetchone()[0])
    finally:
        conn.close()


def count_kind(db_path: Path, kind: str) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM deliveries WHERE kind = ?", (kind,)).fetchone()[0])
    finally:
        conn.close()


def insert_finished(db_path: Path, *, tenant: str, hook_id: str, count: int, at: float) -> float:
    """`count` succeeded deliveries created at `at`, each with its event and one attempt: what
    the retention purge deletes. Returns the seconds it took."""
    t0 = time.perf_counter()
    start_ms = int(at * 1000)
    body = encode(POST_USER_REGISTRATION)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (id, tenant_id, trigger_id, body, created_at) VALUES (?, ?, ?, ?, ?)",
            ((eid, tenant, TRIGGER, body, at) for eid in _ids("evo", start_ms, count)),
        )
        conn.executemany(
            "INSERT INTO deliveries (id, tenant_id, event_id, hook_id, trigger_id, kind, status,"
            " attempt_count, next_attempt_at, lease_owner, last_error, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, 'async', 'succeeded', 1, NULL, NULL, NULL, ?, ?)",
            ((did, tenant, eid, hook_id, TRIGGER, at, at)
             for did, eid in zip(_ids("dlo", start_ms, count), _ids("evo", start_ms, count), strict=True)),
        )
        conn.executemany(
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, error,"
            " response_body) VALUES (?, 1, ?, 3.0, 200, NULL, '{}')",
            ((did, at) for did in _ids("dlo", start_ms, count)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return time.perf_counter() - t0


def count_older(db_path: Path, before: float) -> int:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT COUNT(*) FROM deliveries WHERE created_at < ?", (before,)).fetchone()
        return int(row[0])
    finally:
        conn.close()
