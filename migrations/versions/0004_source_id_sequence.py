"""Source ids from a sequence on PostgreSQL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

Registration took ``MAX(source_id) + 1``: two loaders registering new sources at the same
moment on one PostgreSQL both read the same maximum, and the second to commit was refused by
``sources_pkey`` (a retry hid it). A sequence hands out distinct ids without either waiting
for the other. It is not the column's default (the id is journaled in ``SourceRegistered``
and the projection's rebuild writes it back as it was); ``next_source_id`` in
journal_loader/journal/queries.postgresql.sql takes it, and moves it past the table's maximum
when a database was filled by other means (``replay --into``).

SQLite keeps ``MAX + 1``: a write transaction there excludes every other writer.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE sources_source_id_seq OWNED BY sources.source_id")
    op.execute(
        "SELECT setval('sources_source_id_seq', "
        "COALESCE((SELECT MAX(source_id) FROM sources), 0) + 1, false)"
    )


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
