"""The trigram index of fuzzy matching, built by the migrations instead of by a run.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

PostgreSQL with pg_trgm (0002 installs it where the server allows): the GIN index
``ix_nodes_fuzzy_key_trgm`` over ``nodes.fuzzy_key``, through which the embedded graph finds
fuzzy candidates (journal_loader/graph/fuzzy.py). Until this revision the embedded graph
built it the first time a run turned fuzzy matching on: DDL in the middle of a run, and by a
role that often may not run it (CREATE INDEX needs the owner of ``nodes``; the loader role of
deploy/postgres/loader_role.sql fell back to an in-process index for good). Migrations run
as the owner.

Without pg_trgm, and on SQLite, this revision changes nothing: fuzzy candidates come from an
in-process index, as before (the embedded graph logs it). pg_trgm installed later: build the
index once as the owner with the statement ``CREATE INDEX CONCURRENTLY`` below (README).

The price: PostgreSQL maintains the index on every node insert, also for loads that never
turn fuzzy matching on (measured: about 13 us per node on top of an 11 us COPY).

A new database (no nodes) gets the index inside the migration's transaction. One with nodes
(an upgrade of a graph in use) gets it CONCURRENTLY, outside any transaction, so loaders
writing meanwhile are not blocked while it builds. An interrupted concurrent build leaves an
invalid index: dropped and built again here, so `journal-loader db upgrade` can simply be
run again after an error.

Migrations are frozen: the index's definition is written out here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

INDEX = "ix_nodes_fuzzy_key_trgm"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.execute(
        sa.text(
            "SELECT n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
        )
    ).scalar()
    if schema is None:
        return  # no pg_trgm: fuzzy candidates come from an in-process index
    opclass = '"' + str(schema).replace('"', '""') + '".gin_trgm_ops'
    valid = bind.execute(
        sa.text("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(:name)"),
        {"name": INDEX},
    ).scalar()
    if valid:
        return  # built by a run of an earlier journal-loader
    if not bind.execute(sa.text("SELECT EXISTS (SELECT 1 FROM nodes)")).scalar():
        if valid is not None:
            op.execute(f"DROP INDEX {INDEX}")
        op.execute(f"CREATE INDEX {INDEX} ON nodes USING gin (fuzzy_key {opclass})")
        return
    with op.get_context().autocommit_block():
        if valid is not None:  # an interrupted CREATE INDEX CONCURRENTLY
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} "
            f"ON nodes USING gin (fuzzy_key {opclass})"
        )


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
