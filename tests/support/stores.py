"""Stores for tests of the migrations."""

from __future__ import annotations

from journal_loader.storage import Store


def bare_store(db_url: str) -> Store:
    """A store on the URL without running its migrations (``upgrade(store.engine, rev)``
    then builds the schema a test starts from)."""
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)
