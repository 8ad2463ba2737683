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
    CROSS JOIN LATERAL (
        SELECT position, source_id, record_offset, event_type FROM {journal} e
        WHERE e.source_id = f.source_id AND e.record_offset = f.record_offset
          AND e.event_type IN ('ProposeSucceeded', 'RecordFailed', 'RecordSkipped', 'RecordResolved')
        OFFSET 0  -- keeps the lookup per failed record (no hash join over the whole journal)
    ) j
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
    COALESCE(p.line, 0),
    COALESCE(p.byte_start, 0),
    COALESCE(p.byte_end, 0),
    p.stage,
    p.error_type,
    p.message,
    decode(p.raw, 'base64'),
    p.record::text,
    o.attempts,
    f.recorded_at,
    l.recorded_at,
    o.last_p,
    l.run_id
FROM open_failures o
JOIN {journal} f ON f.position = o.first_p
JOIN {journal} l ON l.position = o.last_p
-- the last failure's payload, parsed once (not once per field)
CROSS JOIN LATERAL json_to_record(l.payload::json) AS p(
    line bigint, byte_start bigint, byte_end bigint, stage text, error_type text,
    message text, raw text, record json)
