-- Lanes: each hook is a lane of its pending deliveries, and a claim serves the due lanes in
-- turn (gateway/store/sqlite/lanes.py). A hook that may not send now (at its concurrency cap,
-- out of rate tokens, paused, throttled by 429s, its tenant at its cap) is a lane that is not
-- due: its deliveries stay where they are and no worker holds them.
--   next_due      a lower bound of the time the lane may send next; NULL: nothing pending
--   hold_until    the lane may not send before this (a pause, a 429's wait), whatever wakes it
--   rate_next_at  rateLimitPerSecond's theoretical next send time (GCRA), shared by every worker
--   throttled     429s in a row from this hook's receiver: the back-off after the next one grows
ALTER TABLE hooks ADD COLUMN next_due REAL;
ALTER TABLE hooks ADD COLUMN hold_until REAL;
ALTER TABLE hooks ADD COLUMN rate_next_at REAL;
ALTER TABLE hooks ADD COLUMN throttled INTEGER NOT NULL DEFAULT 0;
CREATE INDEX hooks_next_due ON hooks (next_due) WHERE next_due IS NOT NULL;
-- A lane's deliveries in due order; replaces the one global due index.
DROP INDEX IF EXISTS deliveries_due;
CREATE INDEX deliveries_lane ON deliveries (hook_id, next_attempt_at) WHERE status = 'pending';
-- What is in flight (leased, lease not run out), per hook and per tenant: the caps count these.
CREATE INDEX deliveries_leased_by_hook ON deliveries (hook_id, next_attempt_at)
    WHERE status = 'pending' AND lease_owner IS NOT NULL;
CREATE INDEX deliveries_leased_by_tenant ON deliveries (tenant_id, next_attempt_at)
    WHERE status = 'pending' AND lease_owner IS NOT NULL;
UPDATE hooks SET next_due = (
    SELECT MIN(d.next_attempt_at) FROM deliveries d WHERE d.hook_id = hooks.id AND d.status = 'pending'
);
