-- Dashboard sessions (issue 12): in the database, so every instance knows every session.
-- token_hash is the hex SHA-256 of the cookie's random token (the token itself is never stored).
-- scopes: the Management API scopes the session acts with, space-separated.
CREATE TABLE dashboard_sessions (
    token_hash   TEXT PRIMARY KEY,
    tenant_id    TEXT,
    subject      TEXT NOT NULL,
    display_name TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    method       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    expires_at   REAL NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_by_tenant ON dashboard_sessions (tenant_id);
