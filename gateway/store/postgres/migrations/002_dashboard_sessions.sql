-- Dashboard sessions (issue 12), as SQLite's migration 007: every instance knows every session.
-- token_hash is the hex SHA-256 of the cookie's random token (the token itself is never stored).
-- scopes: the Management API scopes the session acts with, space-separated.
CREATE TABLE dashboard_sessions (
    token_hash   text COLLATE "C" PRIMARY KEY,
    tenant_id    text COLLATE "C",
    subject      text NOT NULL,
    display_name text NOT NULL,
    scopes       text NOT NULL,
    method       text NOT NULL,
    created_at   double precision NOT NULL,
    last_seen_at double precision NOT NULL,
    expires_at   double precision NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
CREATE INDEX dashboard_sessions_by_tenant ON dashboard_sessions (tenant_id);
