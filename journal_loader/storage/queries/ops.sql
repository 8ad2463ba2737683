-- Reads of the operators' commands (status, dlq, metrics, the worker fleet), run by
-- journal_loader/storage/ops_store.py.

-- name: source_status
-- One row per source as `status` shows it: the loader_status view (migration 0001), with the
-- file's hash (the source's lock name is its type and hash).
SELECT s.*, src.file_hash FROM loader_status s
JOIN sources src ON src.source_id = s.source_id
ORDER BY s.source_id

-- name: dlq_depth
SELECT COUNT(*) FROM failed_records f JOIN sources s ON s.source_id = f.source_id
WHERE s.source_type = :source_type

-- name: run_finished
-- A source's RunFinished events (the worker counts its job's failed runs among them).
SELECT run_id, payload FROM journal
WHERE source_id = :source_id AND record_offset IS NULL AND event_type = 'RunFinished'

-- name: last_source_event
-- The source's last source-level event of one type (ix_journal_source_offset, backwards).
SELECT position, payload FROM journal
WHERE source_id = :source_id AND record_offset IS NULL AND event_type = :event_type
ORDER BY position DESC
LIMIT 1

-- name: run_outcomes
-- The outcomes one run journaled for a source's records (a DLQ retry's), all after the
-- position given (the source's last position before the run started). Searched by position, the primary
-- key, between that position and the journal's end: by the source alone it read every event of the
-- source to find the run's few (134 ms at a million events of one source on PostgreSQL,
-- growing with the source, against 0.2 ms by position); `+ 0` keeps the planners off that index, and the upper bound
-- makes it a search of the key where a journal has no statistics (in_doubt in journal.sql,
-- tests/test_journal_plans.py).
SELECT record_offset, event_type, payload FROM journal
WHERE position > :after AND position <= (SELECT MAX(position) FROM journal)
  AND source_id + 0 = :source_id AND run_id = :run_id
  AND event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped')
