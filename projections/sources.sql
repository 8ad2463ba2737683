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
