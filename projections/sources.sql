-- Inline updates of the `sources` projection (see projections/README.md).

-- name: register
INSERT INTO sources (
    source_id, source_type, source_name, source_version, file_name, file_path, file_hash,
    file_size_bytes, import_started_at, import_completed_at, records_in_file,
    records_processed, records_imported, records_failed, records_skipped, status,
    error_message, current_run_id, last_position, created_at, updated_at)
VALUES (
    :source_id, :source_type, :source_name, :source_version, :file_name, :file_path,
    :file_hash, :file_size_bytes, NULL, NULL, NULL, 0, 0, 0, 0, 'registered', NULL, NULL,
    :position, :recorded_at, :recorded_at)

-- name: start_load
UPDATE sources
SET records_processed = 0, records_imported = 0, records_failed = 0, records_skipped = 0,
    records_in_file = NULL, import_started_at = :recorded_at, import_completed_at = NULL,
    last_position = :position, updated_at = :recorded_at
WHERE source_id = :source_id

-- name: start_run
UPDATE sources
SET status = 'processing', current_run_id = :run_id, error_message = NULL,
    last_position = :position, updated_at = :recorded_at
WHERE source_id = :source_id

-- name: finish_run
UPDATE sources
SET status = :status,
    error_message = :error_message,
    import_completed_at = CASE WHEN :completed THEN :recorded_at
                               ELSE import_completed_at END,
    records_in_file = CASE WHEN :completed THEN :records_in_file
                           ELSE records_in_file END,
    last_position = :position, updated_at = :recorded_at
WHERE source_id = :source_id

-- name: abandon
-- SourceAbandoned: retired (its reason shown where a failed run's reason is).
UPDATE sources
SET status = 'abandoned', error_message = :reason,
    last_position = :position, updated_at = :recorded_at
WHERE source_id = :source_id

-- name: apply_counts
UPDATE sources
SET records_processed = records_processed + :processed,
    records_imported = records_imported + :imported,
    records_failed = records_failed + :failed,
    records_skipped = records_skipped + :skipped,
    last_position = :position, updated_at = :recorded_at
WHERE source_id = :source_id

-- name: rebuild
-- Set-based rebuild of `sources` from the journal ({target} is the table to fill).
-- {journal} is `journal`, or a view over a cut of it (as-of views). JSON_TEXT reads a field
-- of an event's payload, written for each dialect when loaded (journal_loader/storage/sql.py).
WITH
run_level AS (
    SELECT source_id,
           MAX(CASE WHEN event_type = 'SourceRegistered' THEN position END) AS reg_p,
           MAX(CASE WHEN event_type = 'LoadStarted' THEN position END) AS load_p,
           MAX(CASE WHEN event_type IN ('RunStarted', 'RunFinished', 'SourceAbandoned')
                    THEN position END) AS run_p,
           MAX(CASE WHEN event_type = 'RunStarted' THEN position END) AS start_p
    FROM {journal}
    WHERE record_offset IS NULL
      AND event_type IN ('SourceRegistered', 'LoadStarted', 'RunStarted', 'RunFinished',
                         'SourceAbandoned')
    GROUP BY source_id
),
completions AS (
    SELECT j.source_id, MAX(j.position) AS p
    FROM {journal} j JOIN run_level l ON l.source_id = j.source_id AND j.position > l.load_p
    WHERE j.record_offset IS NULL AND j.event_type = 'RunFinished'
      AND JSON_TEXT(j.payload, 'status') = 'completed'
    GROUP BY j.source_id
),
outcomes AS (
    SELECT j.source_id,
           MAX(j.position * 4 + CASE j.event_type WHEN 'ProposeSucceeded' THEN 1
                                                  WHEN 'RecordFailed' THEN 2 ELSE 3 END) AS pk
    FROM {journal} j JOIN run_level l ON l.source_id = j.source_id AND j.position > l.load_p
    WHERE j.event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped')
    GROUP BY j.source_id, j.record_offset
),
counts AS (
    SELECT source_id,
           COUNT(*) AS processed,
           COUNT(*) FILTER (WHERE pk % 4 = 1) AS imported,
           COUNT(*) FILTER (WHERE pk % 4 = 2) AS failed,
           COUNT(*) FILTER (WHERE pk % 4 = 3) AS skipped
    FROM outcomes GROUP BY source_id
),
last_events AS (
    SELECT source_id, MAX(position) AS p FROM {journal} GROUP BY source_id
)
INSERT INTO {target} (
    source_id, source_type, source_name, source_version, file_name, file_path, file_hash,
    file_size_bytes, import_started_at, import_completed_at, records_in_file,
    records_processed, records_imported, records_failed, records_skipped, status,
    error_message, current_run_id, last_position, created_at, updated_at)
SELECT
    r.source_id,
    JSON_TEXT(r.payload, 'source_type'),
    JSON_TEXT(r.payload, 'source_name'),
    JSON_TEXT(r.payload, 'version_label'),
    JSON_TEXT(r.payload, 'file_name'),
    JSON_TEXT(r.payload, 'file_path'),
    JSON_TEXT(r.payload, 'file_hash'),
    CAST(JSON_TEXT(r.payload, 'file_size') AS BIGINT),
    lj.recorded_at,
    cj.recorded_at,
    CAST(JSON_TEXT(cj.payload, 'records_in_file') AS BIGINT),
    COALESCE(c.processed, 0),
    COALESCE(c.imported, 0),
    COALESCE(c.failed, 0),
    COALESCE(c.skipped, 0),
    CASE WHEN rj.position IS NULL THEN 'registered'
         WHEN rj.event_type = 'RunStarted' THEN 'processing'
         WHEN rj.event_type = 'SourceAbandoned' THEN 'abandoned'
         ELSE JSON_TEXT(rj.payload, 'status') END,
    CASE WHEN rj.event_type = 'RunFinished' AND JSON_TEXT(rj.payload, 'status') = 'failed'
         THEN COALESCE(JSON_TEXT(rj.payload, 'reason'), '')
         WHEN rj.event_type = 'SourceAbandoned' THEN JSON_TEXT(rj.payload, 'reason') END,
    sj.run_id,
    le.p,
    r.recorded_at,
    ej.recorded_at
FROM run_level rl
JOIN {journal} r ON r.position = rl.reg_p
JOIN last_events le ON le.source_id = rl.source_id
JOIN {journal} ej ON ej.position = le.p
LEFT JOIN {journal} lj ON lj.position = rl.load_p
LEFT JOIN completions cp ON cp.source_id = rl.source_id
LEFT JOIN {journal} cj ON cj.position = cp.p
LEFT JOIN counts c ON c.source_id = rl.source_id
LEFT JOIN {journal} rj ON rj.position = rl.run_p
LEFT JOIN {journal} sj ON sj.position = rl.start_p
