-- Purging reads only finished deliveries in creation order: index exactly those rows.
CREATE INDEX deliveries_finished_by_created ON deliveries (created_at) WHERE status != 'pending';
