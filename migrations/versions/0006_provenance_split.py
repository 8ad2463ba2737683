"""Provenance in two tables, behind a view of the old table's name.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

``provenance`` held one row per subject (node, attribute, relationship) per record that
asserted it: 17.5 rows per record of the example, each with the record's source, offset, run
id (36 characters) and time, plus an index on the subject: the most-written rows of a load
(issue 11). Most of each row was the record's. Now:

* ``provenance_records``: one row per record that asserted anything (source, offset, run,
  time). Its id is the last of its subjects' ids, so its sequence (PostgreSQL) or its
  MAX(id) + 1 (SQLite) hands out the next subject id, as ``provenance``'s did.
* ``provenance_subjects``: per subject, its id, the record's id, the fact index and the
  confidence, keyed by (kind, subject, id): lineage's search. On SQLite WITHOUT ROWID: one
  b-tree entry per subject, where the rowid table and its index took two.
* the view ``provenance`` joins them back into the old table's rows, with the same ids:
  lineage, ``graph node``, the README's queries and a loader role's SELECT read it as before.

An existing graph's rows are moved (the record's id is the last id of its rows, as a new one
would get); the sequence goes on from the old table's.

Migrations are frozen: the view's text is written out here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ts = sa.DateTime(timezone=True)

VIEW = """
CREATE VIEW provenance AS
SELECT s.id, s.subject_kind, s.subject_id, r.source_id, r.record_offset, s.fact_index,
       r.run_id, s.confidence, r.created_at
FROM provenance_subjects s JOIN provenance_records r ON r.id = s.record_id"""


def upgrade() -> None:
    op.create_table(
        "provenance_records",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.BigInteger, nullable=False),
        sa.Column("record_offset", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("created_at", Ts, nullable=False),
    )
    op.create_table(
        "provenance_subjects",
        sa.Column("subject_kind", sa.String(16), primary_key=True),
        sa.Column("subject_id", sa.BigInteger, primary_key=True),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("record_id", sa.BigInteger, nullable=False),
        sa.Column("fact_index", sa.SmallInteger, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        """
        INSERT INTO provenance_records (id, source_id, record_offset, run_id, created_at)
        SELECT MAX(id), source_id, record_offset, run_id, MIN(created_at)
        FROM provenance GROUP BY source_id, record_offset, run_id"""
    )
    op.execute(
        """
        INSERT INTO provenance_subjects
            (subject_kind, subject_id, id, record_id, fact_index, confidence)
        SELECT p.subject_kind, p.subject_id, p.id, r.id, p.fact_index, p.confidence
        FROM provenance p
        JOIN provenance_records r ON r.source_id = p.source_id
         AND r.record_offset = p.record_offset AND r.run_id = p.run_id"""
    )
    if op.get_bind().dialect.name == "postgresql":
        # the subjects' ids go on after the old table's
        op.execute(
            """
            SELECT setval(pg_get_serial_sequence('provenance_records', 'id'), MAX(id))
            FROM provenance HAVING MAX(id) IS NOT NULL"""
        )
    op.drop_index("ix_provenance_subject", table_name="provenance")
    op.drop_table("provenance")
    op.execute(VIEW)


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
