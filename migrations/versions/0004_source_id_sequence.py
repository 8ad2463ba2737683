"""Source ids from a sequence on PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Registration took ``MAX(source_id) + 1``: two loaders registering new sources at the same
moment on one PostgreSQL both read the same maximum, and the second to commit was refused by
``sources_pkey`` (a retry hid it). A sequence hands out distinct ids without either waiting
for the other. It is not the column's default (the id is journaled in ``SourceRegistered``
and the projection's rebuild writes it back as it was); ``next_source_id`` in
journal_loader/storage/queries/journal.postgresql.sql takes it, and moves it past the
table's maximum when a database was filled by other means (``replay --into``).

SQLite keeps ``MAX + 1``: a write transaction there excludes every other writer.

The ``loader_status`` view gains the health ``ABANDONED`` for sources retired by
``SourceAbandoned`` (``journal-loader source abandon``, or superseded by a new version of the
same file): health checks and ``status --stalled`` ignore them.

Migrations are frozen: the view's text is written out here, not imported from 0001.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


_STATUS_COLUMNS = """
    s.source_id, s.source_type, s.source_name, s.source_version, s.file_name, s.status,
    s.records_in_file, s.records_processed, s.records_imported, s.records_failed,
    s.records_skipped,
    (SELECT count(*) FROM failed_records f WHERE f.source_id = s.source_id) AS dlq_depth,
    s.current_run_id, s.error_message, s.import_started_at, s.import_completed_at,
    s.updated_at AS last_event_at"""

_HEALTH_TAIL = """
      WHEN s.status = 'processing' THEN 'RUNNING'
      WHEN s.status = 'failed' THEN 'FAILED'
      WHEN s.status = 'partial' THEN 'PARTIAL'
      WHEN s.status = 'abandoned' THEN 'ABANDONED'
      ELSE 'OK'
    END AS health
FROM sources s
"""

SQLITE_LOADER_STATUS = f"""
CREATE VIEW loader_status AS
SELECT {_STATUS_COLUMNS},
    CAST((julianday('now') - julianday(s.updated_at)) * 86400 AS INTEGER)
        AS last_event_age_seconds,
    CASE
      WHEN s.status = 'processing'
       AND (julianday('now') - julianday(s.updated_at)) * 86400 >
           COALESCE((SELECT CAST(value AS REAL) FROM loader_settings
                     WHERE name = 'stall_threshold_seconds'), 3600)
        THEN 'STALLED'{_HEALTH_TAIL}"""

POSTGRES_LOADER_STATUS = f"""
CREATE VIEW loader_status AS
SELECT {_STATUS_COLUMNS},
    CAST(EXTRACT(EPOCH FROM (now() - s.updated_at)) AS BIGINT) AS last_event_age_seconds,
    CASE
      WHEN s.status = 'processing'
       AND EXTRACT(EPOCH FROM (now() - s.updated_at)) >
           COALESCE((SELECT CAST(value AS DOUBLE PRECISION) FROM loader_settings
                     WHERE name = 'stall_threshold_seconds'), 3600)
        THEN 'STALLED'{_HEALTH_TAIL}"""


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.execute("DROP VIEW loader_status")
    op.execute(POSTGRES_LOADER_STATUS if postgres else SQLITE_LOADER_STATUS)
    if not postgres:
        return
    op.execute("CREATE SEQUENCE sources_source_id_seq OWNED BY sources.source_id")
    op.execute(
        "SELECT setval('sources_source_id_seq', "
        "COALESCE((SELECT MAX(source_id) FROM sources), 0) + 1, false)"
    )


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
