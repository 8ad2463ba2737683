-- Set-based rebuild of `sources` from the journal ({target} is the table to fill).
-- {journal} is `journal`, or a subquery cutting it at a position (as-of views).

-- name: rebuild
WITH
loads AS (
    SELECT source_id, MAX(position) AS p
    FROM {journal} WHERE event_type = 'LoadStarted' GROUP BY source_id
),
outcomes AS (
    SELECT j.source_id, j.record_offset, MAX(j.position) AS p
    FROM {journal} j JOIN loads l ON l.source_id = j.source_id AND j.position > l.p
    WHERE j.event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped')
    GROUP BY j.source_id, j.record_offset
),
counts AS (
    SELECT o.source_id,
           COUNT(*) AS processed,
           COUNT(*) FILTER (WHERE j.event_type = 'ProposeSucceeded') AS imported,
           COUNT(*) FILTER (WHERE j.event_type = 'RecordFailed') AS failed,
           COUNT(*) FILTER (WHERE j.event_type = 'RecordSkipped') AS skipped
    FROM outcomes o JOIN {journal} j ON j.position = o.p
    GROUP BY o.source_id
),
run_events AS (
    SELECT source_id, MAX(position) AS p
    FROM {journal} WHERE event_type IN ('RunStarted', 'RunFinished') GROUP BY source_id
),
run_starts AS (
    SELECT source_id, MAX(position) AS p
    FROM {journal} WHERE event_type = 'RunStarted' GROUP BY source_id
),
completions AS (
    SELECT j.source_id, MAX(j.position) AS p
    FROM {journal} j JOIN loads l ON l.source_id = j.source_id AND j.position > l.p
    WHERE j.event_type = 'RunFinished' AND (j.payload::json ->> 'status') = 'completed'
    GROUP BY j.source_id
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
    (r.payload::json ->> 'source_type'),
    (r.payload::json ->> 'source_name'),
    (r.payload::json ->> 'version_label'),
    (r.payload::json ->> 'file_name'),
    (r.payload::json ->> 'file_path'),
    (r.payload::json ->> 'file_hash'),
    CAST((r.payload::json ->> 'file_size') AS BIGINT),
    lj.recorded_at,
    cj.recorded_at,
    CAST((cj.payload::json ->> 'records_in_file') AS BIGINT),
    COALESCE(c.processed, 0),
    COALESCE(c.imported, 0),
    COALESCE(c.failed, 0),
    COALESCE(c.skipped, 0),
    CASE WHEN rj.position IS NULL THEN 'registered'
         WHEN rj.event_type = 'RunStarted' THEN 'processing'
         ELSE (rj.payload::json ->> 'status') END,
    CASE WHEN rj.event_type = 'RunFinished' AND (rj.payload::json ->> 'status') = 'failed'
         THEN COALESCE((rj.payload::json ->> 'reason'), '') END,
    sj.run_id,
    le.p,
    r.recorded_at,
    ej.recorded_at
FROM {journal} r
JOIN last_events le ON le.source_id = r.source_id
JOIN {journal} ej ON ej.position = le.p
LEFT JOIN loads l ON l.source_id = r.source_id
LEFT JOIN {journal} lj ON lj.position = l.p
LEFT JOIN completions cp ON cp.source_id = r.source_id
LEFT JOIN {journal} cj ON cj.position = cp.p
LEFT JOIN counts c ON c.source_id = r.source_id
LEFT JOIN run_events re ON re.source_id = r.source_id
LEFT JOIN {journal} rj ON rj.position = re.p
LEFT JOIN run_starts rs ON rs.source_id = r.source_id
LEFT JOIN {journal} sj ON sj.position = rs.p
WHERE r.event_type = 'SourceRegistered'
