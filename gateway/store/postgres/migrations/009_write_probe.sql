-- /readyz on PostgreSQL (issue 11): while writes fail for want of space, a probe says when they
-- work again (gateway/store/postgres/database.py). Its row is rolled back and the table emptied,
-- so it holds nothing; unlogged (no WAL); its column is stored as is (neither compressed nor
-- moved out of line), so that the probe's 5,000-byte row needs a new page, which is what a full
-- disk refuses.
CREATE UNLOGGED TABLE write_probe (pad text NOT NULL);
ALTER TABLE write_probe ALTER COLUMN pad SET STORAGE PLAIN;
