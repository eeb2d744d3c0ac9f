-- Quotas per tenant (issue 10). Independent of migration 005: either may be applied first.
-- A tenant's overrides of the [quotas] settings: JSON {hooksPerPoint, hooks, replaysPerHour},
-- each key optional (absent = the setting).
ALTER TABLE tenants ADD COLUMN quotas TEXT NOT NULL DEFAULT '{}';
-- One row per accepted replay call, so the replays-per-hour quota is counted in the database
-- (shared by every instance). Rows older than an hour are deleted by the next replay of the
-- tenant, and with the tenant.
CREATE TABLE replays (
    tenant_id  TEXT NOT NULL,
    hook_id    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX replays_by_tenant ON replays (tenant_id, created_at);
