"""What the audit modules share: their error, their SQL, and streaming reads of the journal.

Streaming: the journal may hold millions of events, so the commands that walk it (``verify``,
``export``) never load it into memory. They read through the driver underneath a read
connection: on SQLite a plain cursor (sqlite3 steps through the result lazily), on PostgreSQL
a named, server-side cursor (``DECLARE ... CURSOR``), both fetched in batches. One statement,
so one consistent snapshot, and no pagination query to re-plan per page.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from journal_loader.errors import JournalLoaderError, UnknownSourceError
from journal_loader.storage.base import Store
from journal_loader.storage.sql import load_queries, to_pyformat

FETCH_ROWS = 2_000
_cursor_names = itertools.count(1)


class AuditError(JournalLoaderError):
    """An audit command cannot do what was asked (an unknown id, an unusable heads file...)."""


class UnknownSubjectError(AuditError, UnknownSourceError):
    """An id that is not in the journal or the graph: a usage error (exit code 2)."""


def queries(dialect: str) -> dict[str, str]:
    return load_queries(Path(__file__).with_name("audit.sql"), dialect)


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite hands timestamps back naive; they are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def require_source(store: Store, source_id: int) -> None:
    """An AuditError unless the journal has events of this source."""
    if not fetchall(store, queries(store.dialect)["source_exists"], {"source_id": source_id}):
        raise UnknownSubjectError(f"no source {source_id} in the journal of {store.display_url}")


def fetchall(store: Store, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """All rows of a small query, through the driver, on a read connection (on SQLite a
    deferred transaction: no write lock, so a running load is never held up)."""
    with store.read() as conn:
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor()
        try:
            cursor.execute(to_pyformat(sql) if store.dialect == "postgresql" else sql, dict(params))
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows
        finally:
            cursor.close()


def stream(
    store: Store, sql: str, params: Mapping[str, Any], batch: int | None = None
) -> Iterator[tuple[Any, ...]]:
    """Rows of one query (``:name`` parameters), fetched ``batch`` at a time, constant memory.

    The connection stays open while the caller iterates; close the generator (or exhaust it)
    to release it.
    """
    for rows in stream_batches(store, sql, params, batch):
        yield from rows


def stream_batches(
    store: Store, sql: str, params: Mapping[str, Any], batch: int | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """``stream``, a list of up to ``batch`` rows at a time (for loops that count
    microseconds per row)."""
    batch = batch or FETCH_ROWS
    with store.read() as conn:
        raw: Any = conn.connection.driver_connection
        if store.dialect == "postgresql":
            cursor = raw.cursor(name=f"jl_audit_{next(_cursor_names)}", binary=True)
            cursor.itersize = batch
            cursor.execute(to_pyformat(sql), dict(params))
        else:
            cursor = raw.cursor()
            cursor.execute(sql, dict(params))
        try:
            while True:
                rows: list[tuple[Any, ...]] = cursor.fetchmany(batch)
                if not rows:
                    break
                yield rows
        finally:
            cursor.close()
            if store.dialect == "postgresql":
                raw.rollback()  # end the read transaction the named cursor needed
