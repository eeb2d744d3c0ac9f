-- Tracing (issue 14), as SQLite's migration 009: the W3C traceparent of the ingest that stored
-- the event, so that its delivery attempts continue the same trace after the queue. NULL: stored
-- with tracing off. A nullable column without a default: no table rewrite.
ALTER TABLE events ADD COLUMN traceparent text;
