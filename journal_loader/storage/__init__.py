"""Storage backends behind one interface (``Store``/``Tx`` in ``base``).

``open_store(url)`` picks the backend from the URL's scheme and, by default, brings the
schema up to date (migrations run on first use).
"""

from __future__ import annotations

from journal_loader.errors import ConfigError
from journal_loader.secrets import mask_url, password_from_url, register_secret
from journal_loader.storage.base import SourceLock, Store, Tx

__all__ = ["SourceLock", "Store", "Tx", "open_store"]


def open_store(url: str, *, upgrade: bool = True, check: bool = True) -> Store:
    """``check=False``: no schema check at all (``db upgrade`` migrates an empty database)."""
    register_secret(password_from_url(url))
    scheme = url.split(":", 1)[0].lower()
    store: Store
    try:
        if scheme.startswith("sqlite"):
            from journal_loader.storage.sqlite import SQLiteStore

            store = SQLiteStore(url)
        elif scheme.startswith("postgres"):
            from journal_loader.storage.postgres import PostgresStore

            store = PostgresStore(url)
        else:
            raise ConfigError(
                f"unsupported database URL {mask_url(url)!r}: use sqlite:///path.db or "
                "postgresql+psycopg://user@host/dbname"
            )
    except ConfigError:
        raise
    except Exception as e:  # a malformed URL (bad port, bad %-escape...) must not echo it
        raise ConfigError(f"invalid database URL {mask_url(url)!r}: {type(e).__name__}") from e
    if check:
        store.ensure_schema(upgrade=upgrade)
    return store
