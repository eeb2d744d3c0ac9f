-- Tenants, hooks and their secrets, events, deliveries, attempts, idempotency keys.
-- Times are unix seconds (REAL). Secret values are AES-GCM ciphertexts (gateway/crypto.py).

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    allowed_cidrs TEXT NOT NULL DEFAULT '[]',   -- JSON array; empty = any address
    deadlines     TEXT NOT NULL DEFAULT '{}',   -- JSON {triggerId: ms}
    max_in_flight INTEGER,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);

CREATE TABLE hooks (
    id                    TEXT PRIMARY KEY,
    tenant_id             TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    trigger_id            TEXT NOT NULL,
    url                   TEXT NOT NULL,
    enabled               INTEGER NOT NULL DEFAULT 0,
    "order"               INTEGER NOT NULL DEFAULT 0,
    timeout_ms            INTEGER NOT NULL,
    failure_policy        TEXT NOT NULL DEFAULT 'fail',
    max_concurrency       INTEGER NOT NULL,
    rate_limit_per_second REAL,
    format                TEXT NOT NULL DEFAULT 'auth0',
    disabled_reason       TEXT,
    created_at            REAL NOT NULL,
    updated_at            REAL NOT NULL,
    UNIQUE (tenant_id, name)
);
CREATE INDEX hooks_by_tenant ON hooks (tenant_id, trigger_id);

CREATE TABLE hook_secrets (
    hook_id    TEXT NOT NULL REFERENCES hooks(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (hook_id, name)
);

CREATE TABLE signing_secrets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    hook_id    TEXT NOT NULL REFERENCES hooks(id) ON DELETE CASCADE,
    value      TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL                               -- NULL = current secret
);
CREATE INDEX signing_secrets_by_hook ON signing_secrets (hook_id);

CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    body       BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX events_by_created ON events (created_at);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    hook_id         TEXT NOT NULL,
    trigger_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,              -- async | sync
    status          TEXT NOT NULL,              -- pending | succeeded | failed | cancelled
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,                       -- due time, or lease expiry while claimed
    lease_owner     TEXT,
    last_error      TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
-- The claim query reads only due pending rows, in due order: cost independent of backlog size.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_hook ON deliveries (tenant_id, hook_id, created_at);
CREATE INDEX deliveries_by_tenant ON deliveries (tenant_id, created_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   TEXT NOT NULL,
    number        INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    duration_ms   REAL NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT,
    rl_limit      INTEGER,
    rl_remaining  INTEGER,
    rl_reset      REAL,
    retry_after   REAL
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, number);
CREATE INDEX attempts_by_started ON attempts (started_at);

CREATE TABLE idempotency_keys (
    tenant_id  TEXT NOT NULL,
    key        TEXT NOT NULL,
    trigger_id TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency_keys (expires_at);

-- Pauses of every delivery to one destination (scheme://host:port), shared by all workers.
CREATE TABLE destination_pauses (
    tenant_id   TEXT NOT NULL,
    destination TEXT NOT NULL,
    until       REAL NOT NULL,
    PRIMARY KEY (tenant_id, destination)
);
