-- PostgreSQL overrides of audit.sql: the server formats recorded_at in the chain's canonical
-- form (UTC, microseconds, 'Z'), which is cheaper than formatting a datetime in Python for
-- each of millions of events.

-- name: events_all
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       prev_hash, hash
FROM journal
WHERE position >= :from_position AND position <= :last
ORDER BY position

-- name: events_source
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       prev_hash, hash
FROM journal
WHERE source_id = :source_id AND position >= :from_position AND position <= :last
ORDER BY position
