-- The SHA-256 of the request body an Idempotency-Key was first used with: a repeat with
-- another body is refused (409) instead of answered with the first event's ids.
ALTER TABLE idempotency_keys ADD COLUMN request_hash TEXT;
