-- Reads of the audit commands (journal_loader/audit/), run by journal_loader/storage/
-- audit_reader.py. {journal} is `journal` or a view cutting it at a moment (the as-of
-- reads); parameters are always bound.

-- name: cut_bounds
-- The last event at or before a cut: its position and time (for "as of position N (time)").
SELECT j.position, j.recorded_at
FROM journal j
WHERE j.position = (SELECT MAX(c.position) FROM {journal} c)

-- name: status_settings
SELECT value FROM loader_settings WHERE name = 'stall_threshold_seconds'

-- name: lineage
-- Every assertion of one subject: its provenance rows (the view provenance: the subject's
-- rows found by its kind's table's primary key, each with its record's row), each joined to
-- the RecordParsed and ProposeSucceeded of the run that wrote it (ix_journal_source_offset:
-- a record has a handful of events, filtered on type and run).
SELECT p.id, p.source_id, p.record_offset, p.fact_index, p.run_id, p.confidence,
       s.source_type, s.source_name, s.source_version, s.file_name, s.file_path, s.file_hash,
       rp.position, rp.recorded_at, rp.payload, rp.hash,
       ps.position, ps.recorded_at, ps.payload, ps.hash
FROM provenance p
LEFT JOIN sources s ON s.source_id = p.source_id
LEFT JOIN journal rp
       ON rp.source_id = p.source_id AND rp.record_offset = p.record_offset
      AND rp.event_type = 'RecordParsed' AND rp.run_id = p.run_id
LEFT JOIN journal ps
       ON ps.source_id = p.source_id AND ps.record_offset = p.record_offset
      AND ps.event_type = 'ProposeSucceeded' AND ps.run_id = p.run_id
WHERE p.subject_kind = :subject_kind AND p.subject_id = :subject_id
ORDER BY COALESCE(ps.position, rp.position), p.id

-- name: answers_naming
-- The graph's answers that name an id (a Propose API deployment's: its nodes and relationships
-- live outside the journal's database, so the journal's answers are their lineage). A scan
-- of the ProposeSucceeded events; LIKE finds the candidates, the caller checks each answer.
SELECT ps.position, ps.source_id, ps.record_offset, ps.run_id, ps.recorded_at, ps.payload,
       s.source_type, s.source_name, s.source_version, s.file_name, s.file_path, s.file_hash
FROM journal ps
LEFT JOIN sources s ON s.source_id = ps.source_id
WHERE ps.event_type = 'ProposeSucceeded' AND ps.payload LIKE :needle ESCAPE '!'
ORDER BY ps.position

-- name: run_started_in_run
SELECT payload FROM journal
WHERE source_id = :source_id AND record_offset IS NULL AND event_type = 'RunStarted'
  AND run_id = :run_id
ORDER BY position DESC
LIMIT 1

-- name: parsed_in_run
SELECT position, recorded_at, payload, hash FROM journal
WHERE source_id = :source_id AND record_offset = :record_offset
  AND event_type = 'RecordParsed' AND run_id = :run_id
ORDER BY position DESC
LIMIT 1

-- name: node
SELECT id, node_type, name, external_key, created_at FROM nodes WHERE id = :id

-- name: attribute
SELECT a.id, a.attr_type, a.value, a.created_at, n.id, n.node_type, n.name, n.external_key
FROM attributes a JOIN nodes n ON n.id = a.node_id
WHERE a.id = :id

-- name: relationship
SELECT r.id, r.rel_type, r.strength, r.created_at,
       s.id, s.node_type, s.name, s.external_key,
       t.id, t.node_type, t.name, t.external_key
FROM relationships r
JOIN nodes s ON s.id = r.source_node_id
JOIN nodes t ON t.id = r.target_node_id
WHERE r.id = :id

-- name: source_exists
-- (ix_journal_source_offset: the first entry of the source)
SELECT 1 FROM journal WHERE source_id = :source_id LIMIT 1

-- name: last_position
SELECT MAX(position) FROM journal

-- name: claimed_heads
-- What the sources projection says each source's last event is (verify's tail check).
SELECT source_id, last_position FROM sources

-- name: claimed_head
SELECT source_id, last_position FROM sources WHERE source_id = :source_id

-- name: events_all
-- verify and export: events in position order (the primary key), :last bounding the walk
-- to what was committed when it began (one pass checks every source's chain).
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       recorded_at,
       prev_hash, hash
FROM journal
WHERE position >= :from_position AND position <= :last
ORDER BY position

-- name: events_source
SELECT position, source_id, record_offset, event_type, schema_version, payload, run_id,
       recorded_at,
       prev_hash, hash
FROM journal
WHERE source_id = :source_id AND position >= :from_position AND position <= :last
ORDER BY position
