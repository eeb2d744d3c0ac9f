"""Dashboard sessions on PostgreSQL: every instance of a deployment knows every session."""

from __future__ import annotations

from typing import Any

from ..models import DashboardSession
from .database import Database
from .rows import has_nul

SESSION_COLUMNS = (
    "token_hash, tenant_id, subject, display_name, scopes, method, created_at, last_seen_at, expires_at"
)


def session_from_row(row: Any) -> DashboardSession:
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

        async def op(c: Any) -> None:
            await c.execute("DELETE FROM dashboard_sessions WHERE expires_at <= $1",
                            float(session.created_at))
            await c.execute(
                f"INSERT INTO dashboard_sessions ({SESSION_COLUMNS})"  # noqa: S608
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                session.token_hash,
                session.tenant_id,
                session.subject,
                session.display_name,
                " ".join(sorted(session.scopes)),
                session.method,
                float(session.created_at),
                float(session.last_seen_at),
                float(session.expires_at),
            )

        await self.db.write(op)

    async def get_session(self, token_hash: str) -> DashboardSession | None:
        if has_nul(token_hash):
            return None

        async def op(c: Any) -> DashboardSession | None:
            row = await c.fetchrow(
                f"SELECT {SESSION_COLUMNS} FROM dashboard_sessions WHERE token_hash = $1",  # noqa: S608
                token_hash,
            )
            return session_from_row(row) if row else None

        return await self.db.read(op)

    async def touch_session(self, token_hash: str, now: float) -> None:
        async def op(c: Any) -> None:
            await c.execute(
                "UPDATE dashboard_sessions SET last_seen_at = GREATEST(last_seen_at, $1)"
                " WHERE token_hash = $2",
                float(now),
                token_hash,
            )

        await self.db.write(op)

    async def delete_session(self, token_hash: str) -> None:
        if has_nul(token_hash):
            return

        async def op(c: Any) -> None:
            await c.execute("DELETE FROM dashboard_sessions WHERE token_hash = $1", token_hash)

        await self.db.write(op)
