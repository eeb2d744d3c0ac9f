"""Dashboard sessions on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..database import Database
from ..models import DashboardSession

SESSION_COLUMNS = (
    "token_hash, tenant_id, subject, display_name, scopes, method, created_at, last_seen_at, expires_at"
)


def session_from_row(row: Sequence[Any]) -> DashboardSession:
    return DashboardSession(
        token_hash=row[0],
        tenant_id=row[1],
        subject=row[2],
        display_name=row[3],
        scopes=frozenset(str(row[4]).split()),
        method=row[5],
        created_at=float(row[6]),
        last_seen_at=float(row[7]),
        expires_at=float(row[8]),
    )


class SessionQueries:
    """Create, read, touch and end dashboard sessions."""

    db: Database

    async def create_session(self, session: DashboardSession) -> None:
        """Store a new session; sessions whose lifetime has ended go at the same time."""

        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM dashboard_sessions WHERE expires_at <= ?", (session.created_at,))
            c.execute(
                f"INSERT INTO dashboard_sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                (
                    session.token_hash,
                    session.tenant_id,
                    session.subject,
                    session.display_name,
                    " ".join(sorted(session.scopes)),
                    session.method,
                    session.created_at,
                    session.last_seen_at,
                    session.expires_at,
                ),
            )

        await self.db.write(op)

    async def get_session(self, token_hash: str) -> DashboardSession | None:
        def op(c: sqlite3.Connection) -> DashboardSession | None:
            row = c.execute(
                f"SELECT {SESSION_COLUMNS} FROM dashboard_sessions WHERE token_hash = ?",  # noqa: S608
                (token_hash,),
            ).fetchone()
            return session_from_row(row) if row else None

        return await self.db.read(op)

    async def touch_session(self, token_hash: str, now: float) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE dashboard_sessions SET last_seen_at = MAX(last_seen_at, ?) WHERE token_hash = ?",
                (now, token_hash),
            )

        await self.db.write(op)

    async def delete_session(self, token_hash: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM dashboard_sessions WHERE token_hash = ?", (token_hash,))

        await self.db.write(op)
