"""Provenance subjects in a table per kind, the record's confidence on the record's row.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

After 0006 a subject row (17.5 per record of the example, the most-written rows of a load)
was still ~39 bytes on SQLite, most of them not the subject's own: its kind as text
('relationship': 12 bytes, repeated in every row and in the key) and its fact's confidence
(an 8-byte float, the same for every subject of a record in every loader we know of).
Measured on the example at 20k rows: 681 of the database's 4,016 bytes per record.

* ``provenance_nodes``, ``provenance_attributes``, ``provenance_relationships``: per subject
  its id, the record's id, the fact index, and a confidence only where it differs from its
  record's. The kind is the table; the key (subject, id) is lineage's search, as before.
* ``provenance_records.confidence``: the confidence of the record's last subject (the one
  whose id is the record's id); its other subjects store NULL when they have the same.
* the view ``provenance`` keeps its columns and rows: a UNION ALL of the three, each joined
  to its record. Both backends push a view's ``subject_kind = ... AND subject_id = ...``
  into every branch, so lineage and ``graph node`` still walk the subject's key.

Existing rows are moved with the same ids; the sequence is provenance_records' still.

Migrations are frozen: the view's text is written out here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

KINDS = (
    ("node", "provenance_nodes"),
    ("attribute", "provenance_attributes"),
    ("relationship", "provenance_relationships"),
)

VIEW = """
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
FROM provenance_relationships s JOIN provenance_records r ON r.id = s.record_id"""


def upgrade() -> None:
    op.add_column("provenance_records", sa.Column("confidence", sa.Float, nullable=True))
    for _, table in KINDS:
        op.create_table(
            table,
            sa.Column("subject_id", sa.BigInteger, primary_key=True),
            sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("record_id", sa.BigInteger, nullable=False),
            sa.Column("fact_index", sa.SmallInteger, nullable=False),
            sa.Column("confidence", sa.Float, nullable=True),
            sqlite_with_rowid=False,
        )
    # A record's id is the id of its last subject (0006): found through a scratch index, not
    # a scan of the subjects per record.
    op.create_index("ix_provenance_subjects_id_0007", "provenance_subjects", ["id"])
    op.execute(
        """
        UPDATE provenance_records SET confidence =
            (SELECT s.confidence FROM provenance_subjects s WHERE s.id = provenance_records.id)"""
    )
    for kind, table in KINDS:
        op.execute(
            f"""
            INSERT INTO {table} (subject_id, id, record_id, fact_index, confidence)
            SELECT s.subject_id, s.id, s.record_id, s.fact_index,
                   CASE WHEN s.confidence = r.confidence THEN NULL ELSE s.confidence END
            FROM provenance_subjects s JOIN provenance_records r ON r.id = s.record_id
            WHERE s.subject_kind = '{kind}'"""
        )
    op.execute("DROP VIEW provenance")
    op.drop_table("provenance_subjects")  # its indexes go with it
    op.execute(VIEW)


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
