"""Alias matching's index holds the alias type's attributes only, not every attribute.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

``ix_attributes_type_norm`` indexed every attribute by (type, normalised value), and only
alias matching read it, for one type (the graph section's ``alias_attribute``). The example
writes ~5.7 attributes a record and no alias: the index was 205 bytes a record of database
and, as its keys are random, about 30% of the bytes a batch wrote at 300,000 rows (59 against
41 KB a record, bench/probe_scale.py; issue 11). ``ix_attributes_alias_namealias_22fd81a5``
holds the default alias type's attributes: (norm_value, node_id) WHERE attr_type =
'nameAlias'. A graph that matches aliases of another type gets that type's index from its
first run (journal_loader/graph/store.py, ensure_alias_index), which builds it once; where
the run may not (a role without the right), it logs the CREATE INDEX to run.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# graph/store.py's alias_index_name("nameAlias"), written out: a migration keeps its meaning
NAME = "ix_attributes_alias_namealias_22fd81a5"
WHERE = "attr_type = 'nameAlias'"


def upgrade() -> None:
    op.create_index(
        NAME,
        "attributes",
        ["norm_value", "node_id"],
        sqlite_where=sa.text(WHERE),
        postgresql_where=sa.text(WHERE),
    )
    op.drop_index("ix_attributes_type_norm", table_name="attributes")


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
