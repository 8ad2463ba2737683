"""Initial schema: the journal (append-only), projections, leases, the embedded graph.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Migrations are frozen: this file spells out its tables instead of importing the declared
schema, because the declaration moves on and a migration must build today what it built
the day it was written. ``tests/test_schema.py`` checks that the head of the migrations
equals ``journal_loader.storage.schema``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)

# Invariant 1: the database itself refuses to change the journal. Pinned by
# tests/test_storage_contract.py::test_journal_refuses_update_delete_truncate.
SQLITE_APPEND_ONLY = [
    """CREATE TRIGGER journal_refuse_update BEFORE UPDATE ON journal
       BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER journal_refuse_delete BEFORE DELETE ON journal
       BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused'); END""",
]
POSTGRES_APPEND_ONLY = [
    """CREATE FUNCTION journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'journal is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
    """CREATE TRIGGER journal_refuse_update_delete BEFORE UPDATE OR DELETE ON journal
       FOR EACH ROW EXECUTE FUNCTION journal_refuse_change()""",
    """CREATE TRIGGER journal_refuse_truncate BEFORE TRUNCATE ON journal
       FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change()""",
]

_STATUS_COLUMNS = """
    s.source_id, s.source_type, s.source_name, s.source_version, s.file_name, s.status,
    s.records_in_file, s.records_processed, s.records_imported, s.records_failed,
    s.records_skipped,
    (SELECT count(*) FROM failed_records f WHERE f.source_id = s.source_id) AS dlq_depth,
    s.current_run_id, s.error_message, s.import_started_at, s.import_completed_at,
    s.updated_at AS last_event_at"""

# health: STALLED when a source is 'processing' and its last event is older than the
# threshold in loader_settings (default one hour).
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
        THEN 'STALLED'
      WHEN s.status = 'processing' THEN 'RUNNING'
      WHEN s.status = 'failed' THEN 'FAILED'
      WHEN s.status = 'partial' THEN 'PARTIAL'
      ELSE 'OK'
    END AS health
FROM sources s
"""
POSTGRES_LOADER_STATUS = f"""
CREATE VIEW loader_status AS
SELECT {_STATUS_COLUMNS},
    CAST(EXTRACT(EPOCH FROM (now() - s.updated_at)) AS BIGINT) AS last_event_age_seconds,
    CASE
      WHEN s.status = 'processing'
       AND EXTRACT(EPOCH FROM (now() - s.updated_at)) >
           COALESCE((SELECT CAST(value AS DOUBLE PRECISION) FROM loader_settings
                     WHERE name = 'stall_threshold_seconds'), 3600)
        THEN 'STALLED'
      WHEN s.status = 'processing' THEN 'RUNNING'
      WHEN s.status = 'failed' THEN 'FAILED'
      WHEN s.status = 'partial' THEN 'PARTIAL'
      ELSE 'OK'
    END AS health
FROM sources s
"""


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("position", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("record_offset", sa.BigInteger, nullable=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("recorded_at", Ts, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=True),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_index(
        "ix_journal_source_offset", "journal", ["source_id", "record_offset", "position"]
    )

    op.create_table(
        "sources",
        sa.Column("source_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("source_type", sa.String(100), nullable=False),
        sa.Column("source_name", sa.String(200), nullable=False),
        sa.Column("source_version", sa.String(100), nullable=False),
        sa.Column("file_name", sa.String(500), nullable=False),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=False),
        sa.Column("file_size_bytes", sa.BigInteger, nullable=False),
        sa.Column("import_started_at", Ts, nullable=True),
        sa.Column("import_completed_at", Ts, nullable=True),
        sa.Column("records_in_file", sa.BigInteger, nullable=True),
        sa.Column("records_processed", sa.BigInteger, nullable=False),
        sa.Column("records_imported", sa.BigInteger, nullable=False),
        sa.Column("records_failed", sa.BigInteger, nullable=False),
        sa.Column("records_skipped", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("current_run_id", sa.String(36), nullable=True),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.UniqueConstraint("source_type", "file_hash", name="uq_sources_type_hash"),
    )

    op.create_table(
        "failed_records",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("record_offset", sa.BigInteger, nullable=False),
        sa.Column("line_number", sa.BigInteger, nullable=False),
        sa.Column("byte_start", sa.BigInteger, nullable=False),
        sa.Column("byte_end", sa.BigInteger, nullable=False),
        sa.Column("stage", sa.String(20), nullable=False),
        sa.Column("error_type", sa.String(200), nullable=False),
        sa.Column("error_message", sa.Text, nullable=False),
        sa.Column("raw_input", sa.LargeBinary, nullable=True),
        sa.Column("parsed_record", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("first_failed_at", Ts, nullable=False),
        sa.Column("last_failed_at", Ts, nullable=False),
        sa.Column("last_position", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.UniqueConstraint("source_id", "record_offset", name="uq_failed_records_source_offset"),
    )

    op.create_table(
        "source_leases",
        sa.Column("source_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("acquired_at", Ts, nullable=False),
        sa.Column("heartbeat_at", Ts, nullable=False),
    )
    op.create_table(
        "loader_settings",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )

    op.create_table(
        "nodes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("node_type", sa.String(100), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("norm_name", sa.Text, nullable=False),
        sa.Column("external_key", sa.Text, nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
    )
    op.create_index(
        "uq_nodes_type_key",
        "nodes",
        ["node_type", "external_key"],
        unique=True,
        sqlite_where=sa.text("external_key IS NOT NULL"),
        postgresql_where=sa.text("external_key IS NOT NULL"),
    )
    op.create_index(
        "uq_nodes_type_name_unkeyed",
        "nodes",
        ["node_type", "norm_name"],
        unique=True,
        sqlite_where=sa.text("external_key IS NULL"),
        postgresql_where=sa.text("external_key IS NULL"),
    )
    op.create_index("ix_nodes_type_name", "nodes", ["node_type", "norm_name"])

    op.create_table(
        "attributes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("node_id", sa.BigInteger, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("attr_type", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("norm_value", sa.Text, nullable=False),
        sa.Column("created_at", Ts, nullable=False),
        sa.UniqueConstraint("node_id", "attr_type", "value", name="uq_attributes_node_type_value"),
    )
    op.create_index("ix_attributes_type_norm", "attributes", ["attr_type", "norm_value"])

    op.create_table(
        "relationships",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_node_id", sa.BigInteger, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("rel_type", sa.String(100), nullable=False),
        sa.Column("target_node_id", sa.BigInteger, sa.ForeignKey("nodes.id"), nullable=False),
        sa.Column("strength", sa.Float, nullable=False),
        sa.Column("valid_from", sa.Date, nullable=True),
        sa.Column("valid_to", sa.Date, nullable=True),
        sa.Column("metadata", sa.Text, nullable=True),
        sa.Column("created_at", Ts, nullable=False),
        sa.Column("updated_at", Ts, nullable=False),
        sa.UniqueConstraint(
            "source_node_id", "rel_type", "target_node_id", name="uq_relationships_endpoints"
        ),
    )
    op.create_index("ix_relationships_target", "relationships", ["target_node_id"])

    op.create_table(
        "provenance",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("subject_kind", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.BigInteger, nullable=False),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("record_offset", sa.BigInteger, nullable=False),
        sa.Column("fact_index", sa.SmallInteger, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )
    op.create_index("ix_provenance_subject", "provenance", ["subject_kind", "subject_id"])

    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_APPEND_ONLY:
            op.execute(statement)
        op.execute(POSTGRES_LOADER_STATUS)
    else:
        for statement in SQLITE_APPEND_ONLY:
            op.execute(statement)
        op.execute(SQLITE_LOADER_STATUS)


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
