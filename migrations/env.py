"""Alembic environment: journal-loader runs migrations on a connection it passes in.

There is no alembic.ini: ``journal_loader.storage.migrate`` builds the Alembic config in code
and hands over an open connection (``config.attributes["connection"]``).
"""

from __future__ import annotations

from alembic import context

from journal_loader.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running alembic by hand
    raise RuntimeError("run migrations with `journal-loader db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
