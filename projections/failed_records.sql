-- Inline updates of the dead-letter queue `failed_records` (see projections/README.md).

-- name: upsert_failure
INSERT INTO failed_records (
    id, source_id, record_offset, line_number, byte_start, byte_end, stage, error_type,
    error_message, raw_input, parsed_record, attempts, first_failed_at, last_failed_at,
    last_position, run_id)
VALUES (
    :position, :source_id, :record_offset, :line_number, :byte_start, :byte_end, :stage,
    :error_type, :error_message, :raw_input, :parsed_record, 1, :recorded_at, :recorded_at,
    :position, :run_id)
ON CONFLICT (source_id, record_offset) DO UPDATE SET
    line_number = excluded.line_number,
    byte_start = excluded.byte_start,
    byte_end = excluded.byte_end,
    stage = excluded.stage,
    error_type = excluded.error_type,
    error_message = excluded.error_message,
    raw_input = excluded.raw_input,
    parsed_record = excluded.parsed_record,
    attempts = failed_records.attempts + 1,
    last_failed_at = excluded.last_failed_at,
    last_position = excluded.last_position,
    run_id = excluded.run_id

-- name: offsets_in_range
SELECT record_offset FROM failed_records
WHERE source_id = :source_id AND record_offset BETWEEN :low AND :high

-- name: remove
DELETE FROM failed_records WHERE source_id = :source_id AND record_offset = :record_offset
