-- Set-based rebuild of `sources` from the journal ({target} is the table to fill).
-- {journal} is `journal`, or a view over a cut of it (as-of views).

-- name: rebuild
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
      AND json_extract(j.payload, '$.status') = 'completed'
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
    json_extract(r.payload, '$.source_type'),
    json_extract(r.payload, '$.source_name'),
    json_extract(r.payload, '$.version_label'),
    json_extract(r.payload, '$.file_name'),
    json_extract(r.payload, '$.file_path'),
    json_extract(r.payload, '$.file_hash'),
    CAST(json_extract(r.payload, '$.file_size') AS BIGINT),
    lj.recorded_at,
    cj.recorded_at,
    CAST(json_extract(cj.payload, '$.records_in_file') AS BIGINT),
    COALESCE(c.processed, 0),
    COALESCE(c.imported, 0),
    COALESCE(c.failed, 0),
    COALESCE(c.skipped, 0),
    CASE WHEN rj.position IS NULL THEN 'registered'
         WHEN rj.event_type = 'RunStarted' THEN 'processing'
         WHEN rj.event_type = 'SourceAbandoned' THEN 'abandoned'
         ELSE json_extract(rj.payload, '$.status') END,
    CASE WHEN rj.event_type = 'RunFinished' AND json_extract(rj.payload, '$.status') = 'failed'
         THEN COALESCE(json_extract(rj.payload, '$.reason'), '')
         WHEN rj.event_type = 'SourceAbandoned' THEN json_extract(rj.payload, '$.reason') END,
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
