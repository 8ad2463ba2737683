"""The full (node_type, norm_name) index of nodes becomes a partial one, on keyed nodes only.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

A name-only node's (type, name) is already in the unique partial index
``uq_nodes_type_name_unkeyed`` (0001). ``ix_nodes_type_name`` held every node, so a name-only
node went into two indexes on the same random key: one page write more per new node once the
indexes outgrow the page cache (issue 11: the largest writer of a batch's pages at 100,000
rows of the example, 1,587 of 7,163). ``ix_nodes_type_name_keyed`` holds the keyed nodes'
names; the lookups by name search both partial indexes (their WHERE says which).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

KEYED = "external_key IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_nodes_type_name_keyed",
        "nodes",
        ["node_type", "norm_name"],
        sqlite_where=sa.text(KEYED),
        postgresql_where=sa.text(KEYED),
    )
    op.drop_index("ix_nodes_type_name", table_name="nodes")


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
