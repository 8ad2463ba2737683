"""The creating record's provenance on the created row: nodes, attributes, relationships.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

A record that creates a node, an attribute or a relationship asserts it too, and that
assertion was a row of its kind's provenance table (0007). On the example, 10.8 of a
record's 18.4 provenance rows were such rows: a row, and an index entry, written for a
subject the same batch had just written (issue 11).

* ``nodes``, ``attributes``, ``relationships`` get ``prov_id`` (that provenance row's id, from
  the same sequence), ``prov_record_id`` (its record, ``provenance_records.id``),
  ``prov_fact_index`` and ``prov_confidence`` (NULL: the record's), all nullable.
* A load writes the creating record's assertion there, and only the later ones (another
  record, or a later run) in the kind's table.
* The view ``provenance`` keeps its columns and its rows: three more branches, one per
  table, join a row's creating record. A filter on ``subject_kind`` and ``subject_id`` still
  reaches a key in every branch (here the subject's own primary key).

Rows written before this revision are left as they are: their assertions stay in the kinds'
tables, the new columns NULL, and the view shows them as before. Nothing is rewritten, so
the upgrade takes no longer on a large database than on an empty one.

The view is dropped and created again, so on PostgreSQL its grants go with it: run
deploy/postgres/loader_role.sql again after this upgrade (the README says so).

Migrations are frozen: the view's text is written out here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

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


def upgrade() -> None:
    for table in ("nodes", "attributes", "relationships"):
        op.add_column(table, sa.Column("prov_id", sa.BigInteger, nullable=True))
        op.add_column(table, sa.Column("prov_record_id", sa.BigInteger, nullable=True))
        op.add_column(table, sa.Column("prov_fact_index", sa.SmallInteger, nullable=True))
        op.add_column(table, sa.Column("prov_confidence", sa.Float, nullable=True))
    op.execute("DROP VIEW provenance")
    op.execute(VIEW)


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
