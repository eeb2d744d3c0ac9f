-- The queue of pending deliveries apart from their records (PostgreSQL only; SQLite keeps one
-- table). A claim, a lease renewal and a hand-back write only this narrow table, with its three
-- small indexes; `deliveries` is written when a delivery is created and when an attempt's
-- outcome moves it on, and its indexes are only those the API and the purge read.
--
--   delivery_queue  one row per pending delivery (none for a finished one), in the same
--                   transaction as the delivery's status: `due` is its due time, or the lease's
--                   expiry while `lease_owner` holds it (a crashed instance's rows come due when
--                   the lease runs out); `seq` is the delivery's, for ties of due time.
--                   `deliveries.next_attempt_at` keeps the due time it was given (not the lease),
--                   and `deliveries.lease_owner` is no longer written.
--   lane_wakes      "the hook's lane is due no later than `due`": rows an ingest (and any other
--                   wake) adds instead of updating the hook's row, which a claim may hold locked
--                   for a few milliseconds. Only inserted, never updated, so a wake neither waits
--                   for a claim nor is overwritten by one: the claim that serves the lane deletes
--                   the rows it saw, and a row it could not see yet (its transaction not committed)
--                   stays for the next claim.
CREATE TABLE delivery_queue (
    delivery_id text COLLATE "C" PRIMARY KEY,
    hook_id     text COLLATE "C" NOT NULL,
    tenant_id   text COLLATE "C" NOT NULL,
    due         double precision NOT NULL,
    seq         bigint NOT NULL,
    lease_owner text
);
-- A lane's deliveries in due order, then insertion order: a claim reads only the due ones.
CREATE INDEX delivery_queue_lane ON delivery_queue (hook_id, due, seq);
-- What is in flight (leased), per hook and per tenant: the caps count these.
CREATE INDEX delivery_queue_leased_by_hook ON delivery_queue (hook_id, due) WHERE lease_owner IS NOT NULL;
CREATE INDEX delivery_queue_leased_by_tenant ON delivery_queue (tenant_id, due) WHERE lease_owner IS NOT NULL;
ALTER TABLE delivery_queue SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.02);

CREATE TABLE lane_wakes (
    hook_id text COLLATE "C" NOT NULL,
    due     double precision NOT NULL
);
CREATE INDEX lane_wakes_by_hook ON lane_wakes (hook_id, due);

-- The pending deliveries of an existing database, leases included (an instance of the previous
-- version still running has its leases honoured; stop them before migrating all the same).
INSERT INTO delivery_queue (delivery_id, hook_id, tenant_id, due, seq, lease_owner)
    SELECT id, hook_id, tenant_id, COALESCE(next_attempt_at, 0), seq, lease_owner
    FROM deliveries WHERE status = 'pending';
UPDATE deliveries SET lease_owner = NULL WHERE status = 'pending' AND lease_owner IS NOT NULL;

-- What the queue now answers. Without an index naming `status`, `next_attempt_at` or
-- `lease_owner`, the outcome's update of a delivery is HOT (no index entry written) when its page
-- has room (fillfactor 85); the purge finds finished rows by creation time.
DROP INDEX deliveries_lane;
DROP INDEX deliveries_leased_by_hook;
DROP INDEX deliveries_leased_by_tenant;
DROP INDEX deliveries_finished_by_created;
CREATE INDEX deliveries_by_created ON deliveries (created_at);
ANALYZE delivery_queue;
