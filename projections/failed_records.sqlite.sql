-- Set-based rebuild of the DLQ `failed_records` from the journal ({target}: table to fill).
-- {journal} is `journal`, or a view over a cut of it (as-of views).

-- name: rebuild
WITH
failed_offsets AS (
    SELECT DISTINCT source_id, record_offset
    FROM {journal} WHERE event_type = 'RecordFailed'
),
outcomes AS (
    -- every terminal event of those records (the index on (source_id, record_offset) finds them)
    SELECT j.position, j.source_id, j.record_offset, j.event_type
    FROM failed_offsets f
    JOIN {journal} j ON j.source_id = f.source_id AND j.record_offset = f.record_offset
    WHERE j.event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped', 'RecordResolved')
),
cleared AS (
    SELECT source_id, record_offset, MAX(position) AS p
    FROM outcomes WHERE event_type <> 'RecordFailed'
    GROUP BY source_id, record_offset
),
open_failures AS (
    SELECT o.source_id, o.record_offset,
           MIN(o.position) AS first_p, MAX(o.position) AS last_p, COUNT(*) AS attempts
    FROM outcomes o
    LEFT JOIN cleared c ON c.source_id = o.source_id AND c.record_offset = o.record_offset
    WHERE o.event_type = 'RecordFailed' AND (c.p IS NULL OR o.position > c.p)
    GROUP BY o.source_id, o.record_offset
)
INSERT INTO {target} (
    id, source_id, record_offset, line_number, byte_start, byte_end, stage, error_type,
    error_message, raw_input, parsed_record, attempts, first_failed_at, last_failed_at,
    last_position, run_id)
SELECT
    o.first_p,
    o.source_id,
    o.record_offset,
    COALESCE(CAST(json_extract(l.payload, '$.line') AS BIGINT), 0),
    COALESCE(CAST(json_extract(l.payload, '$.byte_start') AS BIGINT), 0),
    COALESCE(CAST(json_extract(l.payload, '$.byte_end') AS BIGINT), 0),
    json_extract(l.payload, '$.stage'),
    json_extract(l.payload, '$.error_type'),
    json_extract(l.payload, '$.message'),
    jl_b64decode(json_extract(l.payload, '$.raw')),
    json_extract(l.payload, '$.record'),
    o.attempts,
    f.recorded_at,
    l.recorded_at,
    o.last_p,
    l.run_id
FROM open_failures o
JOIN {journal} f ON f.position = o.first_p
JOIN {journal} l ON l.position = o.last_p
