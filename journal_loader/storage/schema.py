"""The declared schema: every table journal-loader owns, as SQLAlchemy Core metadata.

The database is built by the migrations in ``migrations/`` (never by ``create_all``);
``tests/test_schema.py`` checks that what the migrations build equals this declaration, so a
migration that forgets a column, or a column added here without a migration, fails CI.

Three groups of tables:

* the journal: the only source of truth, append-only (triggers refuse UPDATE/DELETE/TRUNCATE);
* projections (``sources``, ``failed_records``, view ``loader_status``): derived from the
  journal, updated in each batch's transaction, rebuildable by ``projections rebuild``;
* the embedded knowledge graph (``nodes``, ``attributes``, ``relationships``, and
  ``provenance_records`` with a subjects' table per kind behind the view ``provenance``).

Plus ``source_leases`` (the fencing token of the run that owns a source; operational state,
not a projection) and ``loader_settings``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid (fast, auto-assigned).
BigId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)

metadata = MetaData()

journal = Table(
    "journal",
    metadata,
    Column("position", BigId, primary_key=True, autoincrement=True),
    Column("source_id", BigInteger, nullable=False),
    Column("record_offset", BigInteger, nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("recorded_at", Timestamp, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=True),
    Column("hash", LargeBinary(32), nullable=False),
)
# One index serves history (source, offset), the resume point (source, offset IS NULL, last
# position) and the per-record projections' rebuild; every extra index costs every append.
Index("ix_journal_source_offset", journal.c.source_id, journal.c.record_offset, journal.c.position)
# Two partial indexes that hold only rare events (migration 0003): source-level events, for
# the rebuilds' run-level CTE and the resume point, and failures, for the DLQ rebuild.
Index(
    "ix_journal_source_events",
    journal.c.source_id,
    journal.c.event_type,
    journal.c.position,
    sqlite_where=text("record_offset IS NULL"),
    postgresql_where=text("record_offset IS NULL"),
)
Index(
    "ix_journal_failures",
    journal.c.source_id,
    journal.c.record_offset,
    journal.c.position,
    sqlite_where=text("event_type = 'RecordFailed'"),
    postgresql_where=text("event_type = 'RecordFailed'"),
)

# source_id: on PostgreSQL taken from the sequence sources_source_id_seq (migration 0004),
# not a column default; SQLite takes MAX + 1 under its single-writer lock.
sources = Table(
    "sources",
    metadata,
    Column("source_id", BigInteger, primary_key=True, autoincrement=False),
    Column("source_type", String(100), nullable=False),
    Column("source_name", String(200), nullable=False),
    Column("source_version", String(100), nullable=False),
    Column("file_name", String(500), nullable=False),
    Column("file_path", Text, nullable=False),
    Column("file_hash", String(64), nullable=False),
    Column("file_size_bytes", BigInteger, nullable=False),
    Column("import_started_at", Timestamp, nullable=True),
    Column("import_completed_at", Timestamp, nullable=True),
    Column("records_in_file", BigInteger, nullable=True),
    Column("records_processed", BigInteger, nullable=False),
    Column("records_imported", BigInteger, nullable=False),
    Column("records_failed", BigInteger, nullable=False),
    Column("records_skipped", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("error_message", Text, nullable=True),
    Column("current_run_id", String(36), nullable=True),
    Column("last_position", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    UniqueConstraint("source_type", "file_hash", name="uq_sources_type_hash"),
)

failed_records = Table(
    "failed_records",
    metadata,
    # id = journal position of the RecordFailed that put the record in the DLQ: stable, and
    # derivable from the journal, so a rebuild gives every row the same id.
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("source_id", BigInteger, nullable=False),
    Column("record_offset", BigInteger, nullable=False),
    Column("line_number", BigInteger, nullable=False),
    Column("byte_start", BigInteger, nullable=False),
    Column("byte_end", BigInteger, nullable=False),
    Column("stage", String(20), nullable=False),
    Column("error_type", String(200), nullable=False),
    Column("error_message", Text, nullable=False),
    Column("raw_input", LargeBinary, nullable=True),
    Column("parsed_record", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", Timestamp, nullable=False),
    Column("last_failed_at", Timestamp, nullable=False),
    Column("last_position", BigInteger, nullable=False),
    Column("run_id", String(36), nullable=False),
    UniqueConstraint("source_id", "record_offset", name="uq_failed_records_source_offset"),
)

source_leases = Table(
    "source_leases",
    metadata,
    Column("source_id", BigInteger, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("acquired_at", Timestamp, nullable=False),
    Column("heartbeat_at", Timestamp, nullable=False),
)

loader_settings = Table(
    "loader_settings",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)


def _created_by_columns() -> list[Column[Any]]:
    """The provenance of the record that created a node, attribute or relationship, on the
    row itself (migration 0011): the row of the view ``provenance`` that its kind's table
    held before. NULL on rows written before 0011 (their creating record's row is in that
    table) and on rows no record created. Why: of the example's 18.4 provenance rows a
    record, 10.8 named a subject the same record had just created, one more index entry
    each (issue 11; bench/HISTORY.md, session 14)."""
    return [
        # that provenance row's id (the same id, from provenance_records' sequence)
        Column("prov_id", BigInteger, nullable=True),
        Column("prov_record_id", BigInteger, nullable=True),  # provenance_records.id
        Column("prov_fact_index", SmallInteger, nullable=True),
        Column("prov_confidence", Float, nullable=True),  # NULL: the record's
    ]


nodes = Table(
    "nodes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("node_type", String(100), nullable=False),
    Column("name", Text, nullable=False),
    Column("norm_name", Text, nullable=False),
    Column("external_key", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    # The name as [a-z0-9 ] words, accents folded (journal_loader.graph.fuzzy.fuzzy_key), NULL
    # for names outside fuzzy matching. Added by migration 0002.
    Column("fuzzy_key", Text, nullable=True),
    *_created_by_columns(),
)
Index(
    "uq_nodes_type_key",
    nodes.c.node_type,
    nodes.c.external_key,
    unique=True,
    sqlite_where=text("external_key IS NOT NULL"),
    postgresql_where=text("external_key IS NOT NULL"),
)
# A name-only entity exists once per type, even when two runners create it concurrently.
Index(
    "uq_nodes_type_name_unkeyed",
    nodes.c.node_type,
    nodes.c.norm_name,
    unique=True,
    sqlite_where=text("external_key IS NULL"),
    postgresql_where=text("external_key IS NULL"),
)
# The names of keyed nodes (migration 0008). A name-only node's name is already in
# uq_nodes_type_name_unkeyed: a full (node_type, norm_name) index held every name-only node
# twice, one more random-key page write per new node (issue 11, measured with
# bench/probe_scale.py: 1,587 of a batch's 7,163 pages at 100,000 rows). A lookup by name
# is two index searches, one per partial index (the queries say external_key IS NULL and
# IS NOT NULL; tests/test_graph_plans.py checks each is an index search).
Index(
    "ix_nodes_type_name_keyed",
    nodes.c.node_type,
    nodes.c.norm_name,
    sqlite_where=text("external_key IS NOT NULL"),
    postgresql_where=text("external_key IS NOT NULL"),
)
# Fuzzy candidates through pg_trgm (migration 0005, PostgreSQL only, where pg_trgm is
# installed: in public, see 0002). Optional: OPTIONAL_INDEXES below.
Index(
    "ix_nodes_fuzzy_key_trgm",
    nodes.c.fuzzy_key,
    postgresql_using="gin",
    postgresql_ops={"fuzzy_key": "public.gin_trgm_ops"},
).ddl_if(dialect="postgresql")

attributes = Table(
    "attributes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("node_id", BigInteger, ForeignKey("nodes.id"), nullable=False),
    Column("attr_type", String(100), nullable=False),
    Column("value", Text, nullable=False),
    Column("norm_value", Text, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    *_created_by_columns(),
    UniqueConstraint("node_id", "attr_type", "value", name="uq_attributes_node_type_value"),
)
# Alias matching's index: the default alias type's attributes only (migration 0010; another
# type's index is built by its first run: graph/store.py, ensure_alias_index, which also
# says why the index is partial and its name).
Index(
    "ix_attributes_alias_namealias_22fd81a5",
    attributes.c.norm_value,
    attributes.c.node_id,
    sqlite_where=text("attr_type = 'nameAlias'"),
    postgresql_where=text("attr_type = 'nameAlias'"),
)

relationships = Table(
    "relationships",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_node_id", BigInteger, ForeignKey("nodes.id"), nullable=False),
    Column("rel_type", String(100), nullable=False),
    Column("target_node_id", BigInteger, ForeignKey("nodes.id"), nullable=False),
    Column("strength", Float, nullable=False),
    Column("valid_from", Date, nullable=True),
    Column("valid_to", Date, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    *_created_by_columns(),
    UniqueConstraint(
        "source_node_id", "rel_type", "target_node_id", name="uq_relationships_endpoints"
    ),
)
Index("ix_relationships_target", relationships.c.target_node_id)

# Provenance: which record asserted each node, attribute and relationship (the view
# ``provenance`` below, one row per subject per record that asserted it). Most of such a row
# is the record's, so a record has one row (source, offset, run, time; migration 0006) and
# each subject a short one in its kind's table (migration 0007): the kind is the table, not
# text in every row and key, and the fact's confidence is the record's unless it differs.
# On SQLite the subjects' tables are WITHOUT ROWID, keyed by subject: one b-tree entry each
# (measured: 17.5 subjects per record of the example, the most-written rows of a load).
provenance_records = Table(
    "provenance_records",
    metadata,
    # the last of its subjects' ids; the sequence (PostgreSQL) or MAX(id) + 1 (SQLite) hands
    # out the subjects' ids (Tx.reserve_ids("provenance_records"))
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source_id", BigInteger, nullable=False),
    Column("record_offset", BigInteger, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("created_at", Timestamp, nullable=False),
    # the confidence of its last subject: that of every subject whose own is NULL (added by
    # 0007, so nullable; every row has one)
    Column("confidence", Float, nullable=True),
)


def _provenance_subjects(name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("subject_id", BigInteger, primary_key=True),
        Column("id", BigInteger, primary_key=True, autoincrement=False),
        Column("record_id", BigInteger, nullable=False),  # provenance_records.id
        Column("fact_index", SmallInteger, nullable=False),
        Column("confidence", Float, nullable=True),  # NULL: the record's
        sqlite_with_rowid=False,
    )


provenance_nodes = _provenance_subjects("provenance_nodes")
provenance_attributes = _provenance_subjects("provenance_attributes")
provenance_relationships = _provenance_subjects("provenance_relationships")
#: each subject kind's provenance table
PROVENANCE_TABLES = {
    "node": "provenance_nodes",
    "attribute": "provenance_attributes",
    "relationship": "provenance_relationships",
}

# Indexes declared above that a database may lack: the GIN trigram index over
# nodes.fuzzy_key needs the pg_trgm extension, which is optional (see
# journal_loader/graph/fuzzy.py); migration 0005 builds it where pg_trgm is installed, and
# without it fuzzy candidates come from an in-process index.
OPTIONAL_INDEXES = ("ix_nodes_fuzzy_key_trgm",)

GRAPH_TABLES = (
    "nodes",
    "attributes",
    "relationships",
    "provenance_records",
    *PROVENANCE_TABLES.values(),
)
PROJECTION_TABLES = ("sources", "failed_records")


# --- what is not a table: functions, triggers, views, sequences --------------------------
# The migrations create these with SQL text; they are declared here as the SQL that builds
# them today, so tests/test_schema.py can build a database from this module alone
# (``create_all`` + ``DECLARED_DDL``) and compare it with the migrated one object by object,
# views and triggers included (as procrastinate compares its migrations with schema.sql).

_STATUS_COLUMNS = """
    s.source_id, s.source_type, s.source_name, s.source_version, s.file_name, s.status,
    s.records_in_file, s.records_processed, s.records_imported, s.records_failed,
    s.records_skipped,
    (SELECT count(*) FROM failed_records f WHERE f.source_id = s.source_id) AS dlq_depth,
    s.current_run_id, s.error_message, s.import_started_at, s.import_completed_at,
    s.updated_at AS last_event_at"""

# health: STALLED when a source is 'processing' and its last event is older than the
# threshold in loader_settings (default one hour); ABANDONED once retired.
_HEALTH_TAIL = """
      WHEN s.status = 'processing' THEN 'RUNNING'
      WHEN s.status = 'failed' THEN 'FAILED'
      WHEN s.status = 'partial' THEN 'PARTIAL'
      WHEN s.status = 'abandoned' THEN 'ABANDONED'
      ELSE 'OK'
    END AS health
FROM sources s
"""

# One row per subject per record that asserted it, as the table of that name had before
# migration 0006: what lineage, ``graph node`` and the documented queries read. A filter on
# subject_kind and subject_id reaches each branch's key (both backends push it down).
#: The views journal-loader creates beside its tables (their names must be free too).
VIEW_NAMES = ("loader_status", "provenance")

PROVENANCE_VIEW = """
CREATE VIEW provenance AS
SELECT s.id, 'node' AS subject_kind, s.subject_id, r.source_id, r.record_offset,
       s.fact_index, r.run_id, COALESCE(s.confidence, r.confidence) AS confidence,
       r.created_at
FROM provenance_nodes s JOIN provenance_records r ON r.id = s.record_id
UNION ALL
SELECT s.id, 'attribute', s.subject_id, r.source_id, r.record_offset,
       s.fact_index, r.run_id, COALESCE(s.confidence, r.confidence), r.created_at
FROM provenance_attributes s JOIN provenance_records r ON r.id = s.record_id
UNION ALL
SELECT s.id, 'relationship', s.subject_id, r.source_id, r.record_offset,
       s.fact_index, r.run_id, COALESCE(s.confidence, r.confidence), r.created_at
FROM provenance_relationships s JOIN provenance_records r ON r.id = s.record_id
UNION ALL
SELECT s.prov_id, 'node', s.id, r.source_id, r.record_offset,
       s.prov_fact_index, r.run_id, COALESCE(s.prov_confidence, r.confidence), r.created_at
FROM nodes s JOIN provenance_records r ON r.id = s.prov_record_id
UNION ALL
SELECT s.prov_id, 'attribute', s.id, r.source_id, r.record_offset,
       s.prov_fact_index, r.run_id, COALESCE(s.prov_confidence, r.confidence), r.created_at
FROM attributes s JOIN provenance_records r ON r.id = s.prov_record_id
UNION ALL
SELECT s.prov_id, 'relationship', s.id, r.source_id, r.record_offset,
       s.prov_fact_index, r.run_id, COALESCE(s.prov_confidence, r.confidence), r.created_at
FROM relationships s JOIN provenance_records r ON r.id = s.prov_record_id"""

DECLARED_DDL: dict[str, list[str]] = {
    "sqlite": [
        # Invariant 1: the database itself refuses to change the journal.
        """CREATE TRIGGER journal_refuse_update BEFORE UPDATE ON journal
       BEGIN SELECT RAISE(ABORT, 'journal is append-only: UPDATE refused'); END""",
        """CREATE TRIGGER journal_refuse_delete BEFORE DELETE ON journal
       BEGIN SELECT RAISE(ABORT, 'journal is append-only: DELETE refused'); END""",
        f"""
CREATE VIEW loader_status AS
SELECT {_STATUS_COLUMNS},
    CAST((julianday('now') - julianday(s.updated_at)) * 86400 AS INTEGER)
        AS last_event_age_seconds,
    CASE
      WHEN s.status = 'processing'
       AND (julianday('now') - julianday(s.updated_at)) * 86400 >
           COALESCE((SELECT CAST(value AS REAL) FROM loader_settings
                     WHERE name = 'stall_threshold_seconds'), 3600)
        THEN 'STALLED'{_HEALTH_TAIL}""",  # noqa: S608 - constants, no input
        PROVENANCE_VIEW,
    ],
    "postgresql": [
        """CREATE FUNCTION journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'journal is append-only: % refused', TG_OP
           USING ERRCODE = 'restrict_violation';
       END $$""",
        """CREATE TRIGGER journal_refuse_update_delete BEFORE UPDATE OR DELETE ON journal
       FOR EACH ROW EXECUTE FUNCTION journal_refuse_change()""",
        """CREATE TRIGGER journal_refuse_truncate BEFORE TRUNCATE ON journal
       FOR EACH STATEMENT EXECUTE FUNCTION journal_refuse_change()""",
        f"""
CREATE VIEW loader_status AS
SELECT {_STATUS_COLUMNS},
    CAST(EXTRACT(EPOCH FROM (now() - s.updated_at)) AS BIGINT) AS last_event_age_seconds,
    CASE
      WHEN s.status = 'processing'
       AND EXTRACT(EPOCH FROM (now() - s.updated_at)) >
           COALESCE((SELECT CAST(value AS DOUBLE PRECISION) FROM loader_settings
                     WHERE name = 'stall_threshold_seconds'), 3600)
        THEN 'STALLED'{_HEALTH_TAIL}""",  # noqa: S608 - constants, no input
        # source ids (migration 0004); not a column default, see
        # storage/queries/journal.postgresql.sql
        "CREATE SEQUENCE sources_source_id_seq OWNED BY sources.source_id",
        PROVENANCE_VIEW,
    ],
}
