"""Partial indexes on the journal for the set-based rebuilds and as-of views.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Both hold only rare events (source-level events; failures), so appends hardly pay for them.
Measured on a journal of 3M events: `projections rebuild` 10-15 s -> 3.7-4.9 s on PostgreSQL
and 9-12 s -> 4.1-5 s on SQLite (with the rewritten rebuild SQL in projections/).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_journal_source_events",
        "journal",
        ["source_id", "event_type", "position"],
        sqlite_where=sa.text("record_offset IS NULL"),
        postgresql_where=sa.text("record_offset IS NULL"),
    )
    op.create_index(
        "ix_journal_failures",
        "journal",
        ["source_id", "record_offset", "position"],
        sqlite_where=sa.text("event_type = 'RecordFailed'"),
        postgresql_where=sa.text("event_type = 'RecordFailed'"),
    )


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
