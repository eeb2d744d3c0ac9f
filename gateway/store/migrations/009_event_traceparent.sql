-- Tracing (issue 14): the W3C traceparent of the ingest that stored the event, so that its
-- delivery attempts continue the same trace after the queue. NULL: stored with tracing off.
ALTER TABLE events ADD COLUMN traceparent TEXT;
