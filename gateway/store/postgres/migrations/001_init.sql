-- The PostgreSQL schema: the same tables as SQLite's migrations 001-006 (gateway/store/migrations),
-- in PostgreSQL's types. Times are unix seconds (double precision); integers are bigint, as
-- SQLite's are 64-bit. Keys and the names the store sorts by are COLLATE "C": byte order, as
-- SQLite compares, whatever the database's default collation (and their indexes serve ranges).
-- Secret values are AES-GCM ciphertexts (gateway/crypto.py); JSON columns are text, read back
-- exactly as written.

CREATE TABLE tenants (
    id            text COLLATE "C" PRIMARY KEY,
    name          text NOT NULL,
    allowed_cidrs text NOT NULL DEFAULT '[]',   -- JSON array; empty = any address
    deadlines     text NOT NULL DEFAULT '{}',   -- JSON {triggerId: ms}
    max_in_flight bigint,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    quotas        text NOT NULL DEFAULT '{}'    -- JSON {hooksPerPoint, hooks, replaysPerHour}
);

-- A hook is also a lane of its pending deliveries (gateway/store/postgres/lanes.py):
--   next_due      a lower bound of the time the lane may send next; NULL: nothing pending
--   hold_until    the lane may not send before this (a pause, a 429's wait), whatever wakes it
--   rate_next_at  rateLimitPerSecond's theoretical next send time (GCRA), shared by every worker
--   throttled     429s in a row from this hook's receiver: the back-off after the next one grows
CREATE TABLE hooks (
    id                    text COLLATE "C" PRIMARY KEY,
    tenant_id             text COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                  text COLLATE "C" NOT NULL,
    trigger_id            text COLLATE "C" NOT NULL,
    url                   text NOT NULL,
    enabled               boolean NOT NULL DEFAULT false,
    "order"               bigint NOT NULL DEFAULT 0,
    timeout_ms            bigint NOT NULL,
    failure_policy        text NOT NULL DEFAULT 'fail',
    max_concurrency       bigint NOT NULL,
    rate_limit_per_second double precision,
    format                text NOT NULL DEFAULT 'auth0',
    disabled_reason       text,
    created_at            double precision NOT NULL,
    updated_at            double precision NOT NULL,
    next_due              double precision,
    hold_until            double precision,
    rate_next_at          double precision,
    throttled             bigint NOT NULL DEFAULT 0,
    UNIQUE (tenant_id, name)
);
CREATE INDEX hooks_by_tenant ON hooks (tenant_id, trigger_id);
CREATE INDEX hooks_next_due ON hooks (next_due) WHERE next_due IS NOT NULL;

CREATE TABLE hook_secrets (
    hook_id    text COLLATE "C" NOT NULL REFERENCES hooks(id) ON DELETE CASCADE,
    name       text COLLATE "C" NOT NULL,
    value      text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    PRIMARY KEY (hook_id, name)
);

CREATE TABLE signing_secrets (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook_id    text COLLATE "C" NOT NULL REFERENCES hooks(id) ON DELETE CASCADE,
    value      text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision                 -- NULL = current secret
);
CREATE INDEX signing_secrets_by_hook ON signing_secrets (hook_id);

CREATE TABLE events (
    id         text COLLATE "C" PRIMARY KEY,
    tenant_id  text COLLATE "C" NOT NULL,
    trigger_id text COLLATE "C" NOT NULL,
    body       bytea NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX events_by_created ON events (created_at);

-- `seq` is the order rows were inserted in (SQLite's rowid): ties of due time are claimed in
-- it, and a replay finds an event's latest delivery by it.
CREATE TABLE deliveries (
    id              text COLLATE "C" PRIMARY KEY,
    seq             bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id       text COLLATE "C" NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    hook_id         text COLLATE "C" NOT NULL,
    trigger_id      text COLLATE "C" NOT NULL,
    kind            text NOT NULL,              -- async | sync
    status          text NOT NULL,              -- pending | succeeded | failed | cancelled
    attempt_count   bigint NOT NULL DEFAULT 0,
    next_attempt_at double precision,           -- due time, or lease expiry while claimed
    lease_owner     text,
    last_error      text,
    created_at      double precision NOT NULL,
    updated_at      double precision NOT NULL
);
-- A lane's deliveries in due order (then insertion order): a claim reads only the due ones.
CREATE INDEX deliveries_lane ON deliveries (hook_id, next_attempt_at, seq) WHERE status = 'pending';
-- What is in flight (leased, lease not run out), per hook and per tenant: the caps count these.
CREATE INDEX deliveries_leased_by_hook ON deliveries (hook_id, next_attempt_at)
    WHERE status = 'pending' AND lease_owner IS NOT NULL;
CREATE INDEX deliveries_leased_by_tenant ON deliveries (tenant_id, next_attempt_at)
    WHERE status = 'pending' AND lease_owner IS NOT NULL;
CREATE INDEX deliveries_by_hook ON deliveries (tenant_id, hook_id, created_at);
CREATE INDEX deliveries_by_tenant ON deliveries (tenant_id, created_at);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
-- Purging reads only finished deliveries in creation order: index exactly those rows.
CREATE INDEX deliveries_finished_by_created ON deliveries (created_at) WHERE status != 'pending';
-- Rows are updated several times each (lease, outcome): room on the page keeps updates HOT,
-- and vacuum comes sooner than the default 20% of a large table.
ALTER TABLE deliveries SET (fillfactor = 85, autovacuum_vacuum_scale_factor = 0.02,
                            autovacuum_analyze_scale_factor = 0.02);

CREATE TABLE attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   text COLLATE "C" NOT NULL,
    number        bigint NOT NULL,
    started_at    double precision NOT NULL,
    duration_ms   double precision NOT NULL,
    status_code   bigint,
    error         text,
    response_body text,
    rl_limit      bigint,
    rl_remaining  bigint,
    rl_reset      double precision,
    retry_after   double precision
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, number);

-- request_hash: the SHA-256 of the request body the key was first used with.
CREATE TABLE idempotency_keys (
    tenant_id    text COLLATE "C" NOT NULL,
    key          text COLLATE "C" NOT NULL,
    trigger_id   text COLLATE "C" NOT NULL,
    response     text NOT NULL,
    created_at   double precision NOT NULL,
    expires_at   double precision NOT NULL,
    request_hash text,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_by_expiry ON idempotency_keys (expires_at);

-- Pauses of every delivery to one destination (scheme://host:port), shared by all workers.
CREATE TABLE destination_pauses (
    tenant_id   text COLLATE "C" NOT NULL,
    destination text COLLATE "C" NOT NULL,
    until       double precision NOT NULL,
    PRIMARY KEY (tenant_id, destination)
);

-- One row per accepted replay call: the replays-per-hour quota is counted here.
CREATE TABLE replays (
    tenant_id  text COLLATE "C" NOT NULL,
    hook_id    text COLLATE "C" NOT NULL,
    created_at double precision NOT NULL
);
CREATE INDEX replays_by_tenant ON replays (tenant_id, created_at);
