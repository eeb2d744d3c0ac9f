-- No query reads attempts by start time (purge goes through their delivery): the index only
-- cost an insert per attempt on the hot path.
DROP INDEX IF EXISTS attempts_by_started;
