"""Storage backends behind one interface (``Store``/``Tx`` in ``base``).

``open_store(url)`` picks the backend from the URL's scheme and, by default, brings the
schema up to date (migrations run on first use).

Owns: the engine (``Store``/``Tx``, ``sqlite``, ``postgres``, ``migrate``, ``schema``,
``sql``), the classification of driver errors (``errors``) and every SQL statement of
journal-loader outside the graph backend: the domain repositories run it, taking and
returning plain values (tuples, bytes, types defined here): ``journal_store`` (the journal,
source identity, leases), ``projection_store`` (the projections' inline updates, rebuild and
check), ``audit_reader`` (lineage, as-of, the streamed journal), ``ops_store`` (status, the
DLQ, metrics) and ``queue_store`` (the worker queue's tables), their SQL named in
``queries/*.sql``. Where a backend differs, a repository has one class per backend.

May import: the base layer only (``errors``, ``secrets``, ``resources``...); never sources,
config, the graph, the journal or anything above them (the layers: tests/test_layering.py).
"""

from __future__ import annotations

from journal_loader.errors import ConfigError, NoDatabaseError
from journal_loader.secrets import mask_url, password_from_url, register_secret
from journal_loader.storage.base import SourceLock, Store, Tx

__all__ = ["SourceLock", "Store", "Tx", "open_store", "url_search_path", "with_schema"]

DEFAULT_OWN_SCHEMA = "journal_loader"


def url_search_path(url: str) -> str | None:
    """The search_path a PostgreSQL URL sets itself (``options=-csearch_path=...``), if any."""
    from sqlalchemy import make_url

    options = make_url(url).query.get("options")
    if not options:
        return None
    tokens = (options if isinstance(options, str) else " ".join(options)).split()
    for i, part in enumerate(tokens):
        for prefix in ("-csearch_path=", "--search_path=", "--search-path="):
            if part.startswith(prefix):
                return part[len(prefix) :]
        if part == "-c" and i + 1 < len(tokens) and tokens[i + 1].startswith("search_path="):
            return tokens[i + 1][len("search_path=") :]
    return None


def with_schema(url: str, schema: str | None) -> str:
    """The URL with journal-loader's tables in ``schema`` (PostgreSQL): its search_path set
    through ``options``. A search_path the URL sets itself wins: it is left as it is."""
    if schema is None or not url.split(":", 1)[0].lower().startswith("postgres"):
        return url
    if url_search_path(url) is not None:
        return url
    from sqlalchemy import make_url

    parsed = make_url(url)
    options = parsed.query.get("options")
    existing = (options if isinstance(options, str) else " ".join(options)) if options else ""
    joined = f"{existing} -csearch_path={schema}".strip()
    return parsed.update_query_dict({"options": joined}).render_as_string(hide_password=False)


def open_store(
    url: str,
    *,
    upgrade: bool = True,
    create: bool = True,
    read_only: bool = False,
    check: bool = True,
) -> Store:
    """The store at ``url``, its schema brought up to date (``upgrade``) or only checked.

    ``create=False``: the commands that read or maintain a journal never make one: a SQLite
    file that does not exist, or a database without journal-loader's schema, is a
    NoDatabaseError (exit 2), and nothing is written. ``read_only=True``: the caller only
    reads; a SQLite file (or its folder) that cannot be written is opened read-only,
    without a WAL or lock files (an auditor's copy). ``check=False``: no schema check at
    all (``db upgrade`` looks at the revision itself, and migrates an empty database).
    """
    register_secret(password_from_url(url))
    scheme = url.split(":", 1)[0].lower()
    store: Store
    try:
        if scheme.startswith("sqlite"):
            from journal_loader.storage.sqlite import SQLiteStore

            store = SQLiteStore(url, read_only=read_only)
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
    if not create and not store.exists():
        store.dispose()
        raise NoDatabaseError(
            f"no journal-loader database at {store.display_url}{store.describe_missing()}: "
            "this command reads an existing journal and never creates one"
        )
    if check:
        store.ensure_schema(upgrade=upgrade and store.writable)
    return store
