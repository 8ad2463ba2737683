"""The audit commands' reads: the journal streamed, lineage, the projections as of a cut.

``journal_loader.audit`` decides what to check and report; every query it needs is here, as
named SQL in ``storage/queries/audit.sql`` (+ ``audit.postgresql.sql``), and returns plain
tuples and values. Reads run on a read connection (on SQLite a deferred transaction: no write
lock, so a running load is never held up).

Streaming: the journal may hold millions of events, so the walks (``verify``, ``export``)
never load it into memory. They read through the driver underneath a read connection, fetched
in batches, one statement (so one consistent snapshot, and no pagination query to re-plan per
page). One class per backend, where the drivers differ:

* SQLite: a plain cursor (sqlite3 steps through the result lazily); time cuts compare the
  stored UTC text, whose order is time order;
* PostgreSQL: a named, server-side cursor (``DECLARE ... CURSOR``), binary; the server
  formats ``recorded_at`` in the chain's canonical form (``audit.postgresql.sql``); as-of
  reads run in one REPEATABLE READ snapshot.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, column, func, select, text

from journal_loader.storage import schema
from journal_loader.storage.base import Store
from journal_loader.storage.journal_store import journal_store
from journal_loader.storage.projection_store import PROJECTIONS, projection_store
from journal_loader.storage.sql import load_queries, to_pyformat

FETCH_ROWS = 2_000
CUT_VIEW = "jl_cut_journal"  # a temporary view: the journal as of the cut
_QUERIES = Path(__file__).with_name("queries") / "audit.sql"
_cursor_names = itertools.count(1)

#: The columns of the event rows ``event_batches`` yields, in order. ``recorded_at`` is the
#: chain's canonical text on PostgreSQL, the stored UTC text on SQLite.
EVENT_COLUMNS = (
    "position",
    "source_id",
    "record_offset",
    "event_type",
    "schema_version",
    "payload",
    "run_id",
    "recorded_at",
    "prev_hash",
    "hash",
)


class LineageRow(NamedTuple):
    """One provenance row of a subject, with the RecordParsed and ProposeSucceeded of the run
    that wrote it (None when the journal has no such event)."""

    provenance_id: int
    source_id: int
    record_offset: int
    fact_index: int
    run_id: str
    confidence: float
    source_type: str | None
    source_name: str | None
    source_version: str | None
    file_name: str | None
    file_path: str | None
    file_hash: str | None
    parsed_position: int | None
    parsed_at: Any
    parsed_payload: str | None
    parsed_hash: bytes | None
    answer_position: int | None
    answer_at: Any
    answer_payload: str | None
    answer_hash: bytes | None


class AnswerRow(NamedTuple):
    """A ProposeSucceeded event (a graph's answer), with its source."""

    position: int
    source_id: int
    record_offset: int
    run_id: str
    recorded_at: Any  # a datetime, or SQLite's text
    payload: str
    source_type: str | None
    source_name: str | None
    source_version: str | None
    file_name: str | None
    file_path: str | None
    file_hash: str | None


class ParsedRow(NamedTuple):
    position: int
    recorded_at: Any
    payload: str
    hash: bytes


def audit_queries(dialect: str) -> dict[str, str]:
    """The named audit queries of a dialect (bench/bench_rebuild.py explains their plans)."""
    return load_queries(_QUERIES, dialect)


class AsOfTables:
    """The projections as of a cut, in temporary tables of an open read transaction."""

    def __init__(
        self,
        conn: Connection,
        dialect: str,
        position: int | None,
        recorded_at: dt.datetime | None,
        tables: dict[str, str],
    ) -> None:
        self._conn = conn
        self._dialect = dialect
        #: the last event at or before the cut (None: the journal was empty then), its time
        self.position = position
        self.recorded_at = recorded_at
        self.tables = tables

    def rows(self, name: str, chunk: int = 5_000) -> Iterator[dict[str, Any]]:
        """The rows of projection ``name`` (typed like the live table's, times in UTC), in key
        order."""
        live = schema.metadata.tables[name]
        key = ", ".join(c.name for c in live.primary_key.columns)
        names = ", ".join(c.name for c in live.columns)
        query = text(f"SELECT {names} FROM {self.tables[name]} ORDER BY {key}")  # noqa: S608
        typed = query.columns(*[column(c.name, c.type) for c in live.columns])
        result = self._conn.execute(typed).mappings()
        while True:
            batch = result.fetchmany(chunk)
            if not batch:
                return
            for r in batch:
                yield {k: (_utc(v) if isinstance(v, dt.datetime) else v) for k, v in r.items()}

    def stall_threshold(self) -> str | None:
        """``loader_settings.stall_threshold_seconds`` (as stored; None when unset)."""
        value = self._conn.execute(text(audit_queries(self._dialect)["status_settings"])).scalar()
        return None if value is None else str(value)


class AuditReader:
    """The portable reads; a backend's subclass says how the driver streams and cuts."""

    dialect: str

    def __init__(self, store: Store) -> None:
        self.store = store
        self.q = audit_queries(self.dialect)

    # --- small reads --------------------------------------------------------------------------
    def _driver_sql(self, sql: str) -> str:
        return sql

    def _fetchall(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of a small query, through the driver, on a read connection."""
        with self.store.read() as conn:
            raw: Any = conn.connection.driver_connection
            cursor = raw.cursor()
            try:
                cursor.execute(self._driver_sql(sql), dict(params))
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
            finally:
                cursor.close()

    def source_exists(self, source_id: int) -> bool:
        """Does the journal hold events of this source?"""
        return bool(self._fetchall(self.q["source_exists"], {"source_id": source_id}))

    def last_position(self) -> int:
        """The journal's last position (0 when it is empty). Positions below it may still be
        in flight (PostgreSQL): a walk that must not miss an event that appears later stops
        at ``high_water`` instead."""
        rows = self._fetchall(self.q["last_position"], {})
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def high_water(self) -> int:
        """``JournalStore.high_water``: every position at or below it is committed or will
        never exist. Read it before the walk it bounds opens its snapshot."""
        with self.store.read_tx() as tx:
            return journal_store(self.store).high_water(tx)

    def claimed_heads(self, source_id: int | None = None) -> dict[int, int]:
        """What the sources projection says each source's last event is (source -> position)."""
        if source_id is None:
            rows = self._fetchall(self.q["claimed_heads"], {})
        else:
            rows = self._fetchall(self.q["claimed_head"], {"source_id": source_id})
        return {int(r[0]): int(r[1]) for r in rows}

    def subject(self, kind: str, subject_id: int) -> tuple[Any, ...] | None:
        """The embedded graph's row of a node, attribute or relationship (``audit.sql``'s
        ``node`` / ``attribute`` / ``relationship`` columns), None when it has none."""
        rows = self._fetchall(self.q[kind], {"id": subject_id})
        return rows[0] if rows else None

    def lineage(self, kind: str, subject_id: int) -> list[LineageRow]:
        """Every provenance row of the subject with its events, oldest first (a row repeats
        when a run wrote several events for it)."""
        rows = self._fetchall(self.q["lineage"], {"subject_kind": kind, "subject_id": subject_id})
        return [LineageRow._make(r) for r in rows]

    def answers_naming(self, subject_id: int | str) -> list[AnswerRow]:
        """The ProposeSucceeded events whose payload may name this id (the candidates: the
        caller checks each answer). A string id is looked for quoted, a number as digits."""
        value = str(subject_id)
        escaped = value.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        needle = f'%"{escaped}"%' if isinstance(subject_id, str) else f"%{escaped}%"
        rows = self._fetchall(self.q["answers_naming"], {"needle": needle})
        return [AnswerRow._make(r) for r in rows]

    def parsed_in_run(self, source_id: int, record_offset: int, run_id: str) -> ParsedRow | None:
        """The record's last RecordParsed of that run."""
        rows = self._fetchall(
            self.q["parsed_in_run"],
            {"source_id": source_id, "record_offset": record_offset, "run_id": run_id},
        )
        return ParsedRow._make(rows[0]) if rows else None

    def run_started_payload(self, source_id: int, run_id: str) -> str | None:
        """The payload of a run's RunStarted."""
        rows = self._fetchall(
            self.q["run_started_in_run"], {"source_id": source_id, "run_id": run_id}
        )
        return str(rows[0][0]) if rows else None

    def event_count(self) -> int:
        with self.store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.journal)).scalar_one())

    # --- the journal, streamed ------------------------------------------------------------------
    def event_batches(
        self,
        *,
        last: int,
        source_id: int | None = None,
        from_position: int = 0,
        batch: int = FETCH_ROWS,
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The events (``EVENT_COLUMNS``) from ``from_position`` to ``last``, of every source
        or one, in position order, a list of up to ``batch`` at a time, constant memory.

        The connection stays open while the caller iterates; close the generator (or exhaust
        it) to release it."""
        params: dict[str, Any] = {"from_position": from_position, "last": last}
        sql = self.q["events_all"]
        if source_id is not None:
            sql = self.q["events_source"]
            params["source_id"] = source_id
        with self.store.read() as conn:
            raw: Any = conn.connection.driver_connection
            with self._stream_cursor(raw, sql, params, batch) as cursor:
                while True:
                    rows: list[tuple[Any, ...]] = cursor.fetchmany(batch)
                    if not rows:
                        break
                    yield rows

    @contextlib.contextmanager
    def _stream_cursor(
        self, raw: Any, sql: str, params: dict[str, Any], batch: int
    ) -> Iterator[Any]:
        cursor = raw.cursor()
        cursor.execute(sql, params)
        try:
            yield cursor
        finally:
            cursor.close()

    # --- the projections as of a cut --------------------------------------------------------------
    def _cut_sql(self, position: int | None, time: dt.datetime | None) -> str:
        """``SELECT * FROM journal`` cut after ``position`` or at ``time``, the cut a literal
        from a validated int or datetime (never from the user's text): the body of the
        temporary view the as-of queries read in place of ``journal``. A view, not a subquery
        with a bound parameter, because both planners inline it wherever the projections' SQL
        names the journal (with or without an alias)."""
        if position is not None:
            return f"SELECT * FROM journal WHERE position <= {int(position)}"  # noqa: S608
        assert time is not None
        stamp = _utc(time).strftime("%Y-%m-%d %H:%M:%S.%f")
        return self._time_cut_sql(stamp)

    def _time_cut_sql(self, stamp: str) -> str:
        raise NotImplementedError

    @contextlib.contextmanager
    def projections_at(
        self, *, position: int | None = None, time: dt.datetime | None = None
    ) -> Iterator[AsOfTables]:
        """Rebuild every projection from the journal cut after ``position`` (or at ``time``)
        into temporary tables, with the projections' own set-based SQL; yield them; roll back.
        The live tables are never read nor written, and no write lock is taken.

        A position cut stops at the high water too: past it, an event still in flight below
        the cut could commit afterwards and change what "as of that position" was. The
        high water is read before the snapshot is taken (``AsOfTables.position`` says where
        the cut fell)."""
        if (position is None) == (time is None):
            raise ValueError("a cut is a position or a time")
        if position is not None:
            position = min(position, self.high_water())
        projections = projection_store(self.store)
        with self.store.read() as conn:
            projections.snapshot(conn)
            cut = self._cut_sql(position, time)
            conn.execute(text(f"CREATE TEMPORARY VIEW {CUT_VIEW} AS {cut}"))
            bounds = conn.execute(
                text(self.q["cut_bounds"].replace("{journal}", CUT_VIEW)).columns(
                    column("position", schema.journal.c.position.type),
                    column("recorded_at", schema.journal.c.recorded_at.type),
                )
            ).first()
            tables = projections.rebuild_at(conn, CUT_VIEW)
            assert set(tables) == set(PROJECTIONS)
            try:
                yield AsOfTables(
                    conn,
                    self.dialect,
                    None if bounds is None else int(bounds[0]),
                    None if bounds is None else _utc(bounds[1]),
                    tables,
                )
            finally:
                conn.rollback()  # the temporary view and tables go with it


class SQLiteAuditReader(AuditReader):
    dialect = "sqlite"

    def _time_cut_sql(self, stamp: str) -> str:
        # stored as UTC text in this very format: text order is time order
        return f"SELECT * FROM journal WHERE recorded_at <= '{stamp}'"  # noqa: S608


class PostgresAuditReader(AuditReader):
    dialect = "postgresql"

    def _driver_sql(self, sql: str) -> str:
        return to_pyformat(sql)

    @contextlib.contextmanager
    def _stream_cursor(
        self, raw: Any, sql: str, params: dict[str, Any], batch: int
    ) -> Iterator[Any]:
        cursor = raw.cursor(name=f"jl_audit_{next(_cursor_names)}", binary=True)
        cursor.itersize = batch
        cursor.execute(to_pyformat(sql), params)
        try:
            yield cursor
        finally:
            cursor.close()
            raw.rollback()  # end the read transaction the named cursor needed

    def _time_cut_sql(self, stamp: str) -> str:
        return f"SELECT * FROM journal WHERE recorded_at <= TIMESTAMPTZ '{stamp}+00'"  # noqa: S608


_BACKENDS: dict[str, type[AuditReader]] = {
    "sqlite": SQLiteAuditReader,
    "postgresql": PostgresAuditReader,
}


def audit_reader(store: Store) -> AuditReader:
    """The audit reads of this store's backend."""
    return _BACKENDS[store.dialect](store)


def _utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite hands timestamps back naive; they are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)
