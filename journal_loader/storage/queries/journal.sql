-- The journal's statements (journal_loader/storage/journal_store.py): resume points, chain
-- heads, leases, source identity. PostgreSQL overrides in journal.postgresql.sql.

-- name: checkpoint
-- Where the current load stands: the last checkpoint, or the start of the load if it has
-- none yet. Walks the (source_id, record_offset IS NULL, position) index backwards.
SELECT position, event_type, payload
FROM journal
WHERE source_id = :source_id AND record_offset IS NULL
  AND event_type IN ('BatchCommitted', 'LoadStarted')
ORDER BY position DESC
LIMIT 1

-- name: plan_mark
-- Is the current load split into chunks? The last ChunksPlanned or LoadStarted of the source
-- (journal_loader/runner/chunks.py): a ChunksPlanned is the plan of the current load.
SELECT position, event_type, payload
FROM journal
WHERE source_id = :source_id AND record_offset IS NULL
  AND event_type IN ('ChunksPlanned', 'LoadStarted')
ORDER BY position DESC
LIMIT 1

-- name: chunk_marks
-- Per chunk of a split source, the last RunStarted, RunFinished and checkpoint after
-- the plan of its runs (the chunk is a field of their payloads).
SELECT JSON_TEXT(journal.payload, 'chunk') AS chunk, event_type, MAX(position)
FROM journal
WHERE source_id = :source_id AND record_offset IS NULL AND position > :after
  AND event_type IN ('RunStarted', 'RunFinished', 'BatchCommitted')
GROUP BY JSON_TEXT(journal.payload, 'chunk'), event_type

-- name: payload_at
SELECT payload, run_id FROM journal WHERE position = :position

-- name: in_doubt
-- Records proposed to a remote target after the checkpoint: their outcome never committed.
-- `position > :after` walks only the journal's tail (the primary key); `+ 0` keeps the
-- planners off the source index, which would read all of the source's events. The upper
-- bound (the journal's last position, one probe of the primary key) changes no answer:
-- without it PostgreSQL, on a journal it never analysed, took `position > :after` for a
-- third of the table and scanned all of it at every resume (74 ms at 2 million events,
-- growing with the journal), where a range with both ends is a search of the key (0.3 ms):
-- tests/test_journal_plans.py.
SELECT record_offset, payload
FROM journal
WHERE position > :after AND position <= (SELECT MAX(position) FROM journal)
  AND source_id + 0 = :source_id AND event_type = 'ProposeAttempted'

-- name: event_at
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       recorded_at, prev_hash, hash
FROM journal WHERE position = :position

-- name: record_events
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       recorded_at, prev_hash, hash
FROM journal
WHERE source_id = :source_id AND record_offset = :record_offset
ORDER BY position

-- name: run_started_payload
-- A run's RunStarted (its header and dialect rebuild version-3 RecordParsed events,
-- journal/parsed.py): ix_journal_source_events, then the run's few starts of the source.
SELECT payload FROM journal
WHERE source_id = :source_id AND record_offset IS NULL AND event_type = 'RunStarted'
  AND run_id = :run_id
ORDER BY position DESC
LIMIT 1

-- name: parsed_payload_in_run
-- The RecordParsed of a record in a run (ix_journal_source_offset): the one a version-3
-- RecordParsed of the same batch takes its keys and field map from.
SELECT payload FROM journal
WHERE source_id = :source_id AND record_offset = :record_offset
  AND event_type = 'RecordParsed' AND run_id = :run_id
ORDER BY position DESC
LIMIT 1

-- name: chain_head
-- The hash the source's next event chains to: that of its last event (the sources
-- projection moves last_position in the transaction that appends).
SELECT j.hash
FROM sources AS s JOIN journal AS j ON j.position = s.last_position
WHERE s.source_id = :source_id

-- name: source_by_identity
SELECT source_id, status, current_run_id, last_position
FROM sources WHERE source_type = :source_type AND file_hash = :file_hash

-- name: next_source_id
SELECT COALESCE(MAX(source_id), 0) + 1 FROM sources

-- name: acquire_lease
-- The fencing token: every run that takes over a source bumps the generation; every batch
-- checks it (check_lease) inside its own transaction, so a run that lost its lock can
-- never append after its successor started.
INSERT INTO source_leases (source_id, generation, run_id, hostname, pid, acquired_at, heartbeat_at)
VALUES (:source_id, 1, :run_id, :hostname, :pid, :now, :now)
ON CONFLICT (source_id) DO UPDATE SET
    generation = source_leases.generation + 1, run_id = excluded.run_id,
    hostname = excluded.hostname, pid = excluded.pid,
    acquired_at = excluded.acquired_at, heartbeat_at = excluded.heartbeat_at
RETURNING generation

-- name: check_lease
UPDATE source_leases SET heartbeat_at = :now
WHERE source_id = :source_id AND generation = :generation

-- name: source_for_abandon
SELECT source_type, file_hash, file_name, status, last_position
FROM sources WHERE source_id = :source_id

-- name: partial_predecessors
-- Sources of this type and file name with other content whose load did not finish: the
-- ones a new version of the file supersedes (journal_loader/abandon.py).
SELECT source_id FROM sources
WHERE source_type = :source_type AND file_name = :file_name AND file_hash <> :file_hash
  AND source_id <> :source_id AND status IN ('registered', 'processing', 'partial', 'failed')
ORDER BY source_id

-- name: last_reserved
-- The last position handed out. On SQLite it is also the high water (JournalStore.high_water):
-- one writer at a time, whose positions follow the last committed one. PostgreSQL reads its
-- sequence instead (journal.postgresql.sql) and looks for batches still in flight.
SELECT COALESCE(MAX(position), 0) FROM journal

-- name: events_after
-- A reader's next page: positions after its cursor, up to the high water (the primary key).
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       recorded_at, prev_hash, hash
FROM journal
WHERE position > :after AND position <= :upto
ORDER BY position
LIMIT :limit
