"""SQLite: the graph tables' timestamps as integer microseconds since the epoch (UTC).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

journal-loader wrote ``created_at`` / ``updated_at`` of ``nodes``, ``attributes``,
``relationships`` and ``provenance_records`` on SQLite as 26 characters of text
(``2026-11-30 00:33:12.237358``). The example writes about 18 of them a record: 8-byte
integers save ~330 bytes of database a record (issue 11's "DB growth per record").

The declared type stays DATETIME (NUMERIC affinity keeps an integer an integer), so the
schema is unchanged; this revision converts the rows written before it, in Python's own
parser (the same one ``storage.base.graph_time`` reads old text with), exactly to the
microsecond. The journal, the DLQ and the other tables keep their text (the journal is
append-only). On PostgreSQL (``timestamptz``, 8 bytes already) it does nothing.

The conversion rewrites every row of those tables once: on a large database it takes about
as long as writing the graph's tables again.
"""

from __future__ import annotations

import datetime as dt

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = {
    "nodes": ("created_at", "updated_at"),
    "attributes": ("created_at",),
    "relationships": ("created_at", "updated_at"),
    "provenance_records": ("created_at",),
}

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(value: object) -> object:
    # Defined here, not imported: a migration keeps the meaning it had when it was written.
    if not isinstance(value, str):
        return value
    stamp = dt.datetime.fromisoformat(value)
    stamp = stamp.replace(tzinfo=dt.UTC) if stamp.tzinfo is None else stamp.astimezone(dt.UTC)
    delta = stamp - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    raw = bind.connection.driver_connection
    assert raw is not None
    raw.create_function("jl_0009_micros", 1, _micros, deterministic=True)
    for table, columns in COLUMNS.items():
        sets = ", ".join(f"{c} = jl_0009_micros({c})" for c in columns)
        texts = " OR ".join(f"typeof({c}) = 'text'" for c in columns)
        op.execute(f"UPDATE {table} SET {sets} WHERE {texts}")


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
