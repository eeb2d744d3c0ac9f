-- Auto-disable (issue 14), as SQLite's migration 010: when the hook's unbroken run of failed
-- attempts began; set by the first failed attempt after a success, cleared by a success (both
-- recorded with the attempt: gateway/store/postgres/batches.py run_outcomes). NULL: its last
-- attempt succeeded. A nullable column without a default: no table rewrite.
ALTER TABLE hooks ADD COLUMN failing_since double precision;
