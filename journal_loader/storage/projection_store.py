"""The projections' SQL: inline updates, the set-based rebuild, and the rebuild's check.

``journal_loader.projections`` decides *what* changes (it turns a batch's journal rows into
deltas); this module says *how* each change is written, with the SQL the projections declare
in ``projections/*.sql`` (shipped in the wheel, found by ``resources.projections_dir``).
Everything here takes plain values (ints, strings, datetimes) and returns plain values.

One class per backend. The SQL differs only in the files' dialect overrides (and in
``JSON_TEXT``, written once for both, see ``storage/sql.py``); what differs in code is how a
rebuild keeps concurrent runs out and reads one snapshot:

* PostgreSQL: a rebuild locks the projections against concurrent runs' updates (they wait at
  their projection update, then apply their deltas to the rebuilt rows); a check and an
  as-of read run in a REPEATABLE READ snapshot, so both rebuilds see the same journal.
* SQLite: a write transaction already excludes every other writer (BEGIN IMMEDIATE) and a
  read transaction is a snapshot: nothing to add.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, insert, text

from journal_loader.resources import projections_dir
from journal_loader.storage import schema
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.sql import load_queries

PROJECTIONS = ("sources", "failed_records")
COMPARE_LIMIT = 20  # differing rows shown per projection and side by a check
INSERT_ROWS = 5_000  # rows per INSERT when projections are copied into another database


class FailureRow(NamedTuple):
    """A record's latest failure, as the DLQ keeps it."""

    position: int
    source_id: int
    record_offset: int
    line_number: int
    byte_start: int
    byte_end: int
    stage: str
    error_type: str
    error_message: str
    raw_input: bytes | None
    parsed_record: str | None  # the parsed record as JSON text
    recorded_at: dt.datetime
    run_id: str


class Difference(NamedTuple):
    projection: str
    side: str  # 'live only' | 'rebuilt only'
    row: dict[str, Any]


class RebuildResult(NamedTuple):
    rows: dict[str, int]  # rows of each projection after the rebuild
    differences: list[Difference]  # a check's rows that differ (at most COMPARE_LIMIT a side)


def columns(name: str) -> list[str]:
    return [c.name for c in schema.metadata.tables[name].columns]


class ProjectionStore:
    """The portable part; a backend's subclass adds how a rebuild is isolated."""

    dialect: str

    def __init__(self) -> None:
        self._dir: Path | None = None
        self._queries: dict[str, dict[str, str]] = {}

    def queries(self, name: str) -> dict[str, str]:
        """Projection ``name``'s named SQL. Looked up per statement of the inline updates, so
        kept at hand (building the path each time cost 5 us a statement); a different
        projections folder (bench_rebuild.py --projections-dir) is read afresh."""
        folder = projections_dir()
        if folder is not self._dir:
            self._dir, self._queries = folder, {}
        found = self._queries.get(name)
        if found is None:
            found = self._queries[name] = load_queries(folder / f"{name}.sql", self.dialect)
        return found

    # --- inline updates (in the transaction that appends the events) -------------------------
    def register_source(
        self,
        tx: Tx,
        source_id: int,
        position: int,
        recorded_at: dt.datetime,
        *,
        source_type: str,
        source_name: str,
        source_version: str,
        file_name: str,
        file_path: str,
        file_hash: str,
        file_size_bytes: int,
    ) -> None:
        tx.run(
            self.queries("sources")["register"],
            {
                "source_id": source_id,
                "position": position,
                "recorded_at": tx.timestamp(recorded_at),
                "source_type": source_type,
                "source_name": source_name,
                "source_version": source_version,
                "file_name": file_name,
                "file_path": file_path,
                "file_hash": file_hash,
                "file_size_bytes": file_size_bytes,
            },
        )

    def start_load(self, tx: Tx, source_id: int, position: int, recorded_at: dt.datetime) -> None:
        envelope = _envelope(tx, source_id, position, recorded_at)
        tx.run(self.queries("sources")["start_load"], envelope)

    def start_run(
        self, tx: Tx, source_id: int, position: int, recorded_at: dt.datetime, run_id: str
    ) -> None:
        tx.run(
            self.queries("sources")["start_run"],
            {**_envelope(tx, source_id, position, recorded_at), "run_id": run_id},
        )

    def abandon_source(
        self, tx: Tx, source_id: int, position: int, recorded_at: dt.datetime, reason: str
    ) -> None:
        tx.run(
            self.queries("sources")["abandon"],
            {**_envelope(tx, source_id, position, recorded_at), "reason": reason},
        )

    def finish_run(
        self,
        tx: Tx,
        source_id: int,
        position: int,
        recorded_at: dt.datetime,
        *,
        status: str,
        completed: bool,
        error_message: str | None,
        records_in_file: int | None,
    ) -> None:
        tx.run(
            self.queries("sources")["finish_run"],
            {
                **_envelope(tx, source_id, position, recorded_at),
                "status": status,
                "completed": completed,
                "error_message": error_message,
                "records_in_file": records_in_file,
            },
        )

    def add_counts(
        self,
        tx: Tx,
        source_id: int,
        position: int,
        recorded_at: dt.datetime,
        *,
        processed: int,
        imported: int,
        failed: int,
        skipped: int,
    ) -> None:
        """Add a batch's outcome counts to the source's; ``position``: its last event."""
        tx.run(
            self.queries("sources")["apply_counts"],
            {
                **_envelope(tx, source_id, position, recorded_at),
                "processed": processed,
                "imported": imported,
                "failed": failed,
                "skipped": skipped,
            },
        )

    def upsert_failure(self, tx: Tx, failure: FailureRow) -> None:
        """The record enters the DLQ, or its entry gains an attempt."""
        params = failure._asdict()
        params["recorded_at"] = tx.timestamp(failure.recorded_at)
        tx.run(self.queries("failed_records")["upsert_failure"], params)

    def clear_failures(self, tx: Tx, source_id: int, offsets: Sequence[int]) -> None:
        """Remove these records (they now succeeded, were skipped or resolved) from the DLQ.

        One range query finds which of them are in the DLQ at all (usually none), instead of
        one DELETE per successful record."""
        if not offsets:
            return
        q = self.queries("failed_records")
        in_dlq = {
            r[0]
            for r in tx.fetchall(
                q["offsets_in_range"],
                {"source_id": source_id, "low": min(offsets), "high": max(offsets)},
            )
        }
        gone = [o for o in offsets if o in in_dlq]
        if gone:
            tx.executemany(
                q["remove"], [{"source_id": source_id, "record_offset": o} for o in gone]
            )

    # --- rebuild ------------------------------------------------------------------------------
    def rebuild_sql(self, name: str, target: str, journal: str = "journal") -> str:
        """The set-based rebuild of projection ``name`` into table ``target``, reading the
        events from ``journal``: the table, or a view over a cut of it (the as-of reads). A
        bare subquery will not do: the SQL reads ``FROM {journal} WHERE`` without an alias."""
        return (
            self.queries(name)["rebuild"].replace("{target}", target).replace("{journal}", journal)
        )

    def rebuild(self, store: Store, *, check: bool = False) -> RebuildResult:
        """Rebuild the projections from the journal. With ``check``, rebuild into scratch
        tables, compare with the live ones row for row, change nothing."""
        counts: dict[str, int] = {}
        diffs: list[Difference] = []
        with store.transaction() as tx:
            self._isolate_rebuild(tx, check)
            for name in PROJECTIONS:
                if check:
                    target = f"jl_rebuilt_{name}"
                    tx.execute(f"DROP TABLE IF EXISTS {target}")
                    tx.execute(_empty_copy(name, target))
                else:
                    target = name
                    tx.execute(f"DELETE FROM {name}")  # noqa: S608 - fixed names
                tx.execute(self.rebuild_sql(name, target))
                counts[name] = int(tx.execute(f"SELECT COUNT(*) FROM {target}").scalar_one())  # noqa: S608
                if check:
                    diffs.extend(self._compare(tx, name, target))
            if check:
                tx.conn.rollback()  # scratch tables and all: a check changes nothing
        return RebuildResult(counts, diffs)

    def _isolate_rebuild(self, tx: Tx, check: bool) -> None:
        """Keep concurrent runs from changing what the rebuild reads or writes."""

    def _compare(self, tx: Tx, live: str, rebuilt: str) -> Iterator[Difference]:
        cols = ", ".join(columns(live))
        for side, a, b in (("live only", live, rebuilt), ("rebuilt only", rebuilt, live)):
            result = tx.execute(
                f"SELECT {cols} FROM {a} EXCEPT SELECT {cols} FROM {b} "  # noqa: S608 - fixed names
                f"LIMIT {COMPARE_LIMIT}"
            )
            for r in result.mappings():
                yield Difference(live, side, dict(r))

    def snapshot(self, conn: Connection) -> None:
        """Make the read transaction on ``conn`` (not begun yet) one snapshot for every
        statement in it (the as-of reads rebuild both projections from one journal)."""

    def rebuild_at(self, conn: Connection, journal: str) -> dict[str, str]:
        """Rebuild every projection from ``journal`` (a view over a cut of the journal) into
        temporary tables on ``conn``; returns the table of each projection. They last as long
        as the caller's read transaction."""
        tables = {}
        for name in PROJECTIONS:
            target = f"jl_asof_{name}"
            conn.execute(text(_empty_copy(name, target)))
            conn.execute(text(self.rebuild_sql(name, target, journal=journal)))
            tables[name] = target
        return tables

    # --- the projections copied into another database (`replay --into`) -----------------------
    def replace_all(
        self, tx: Tx, rows: Mapping[str, Iterable[Mapping[str, Any]]], settings: Mapping[str, str]
    ) -> dict[str, int]:
        """Replace every projection's rows (``rows``: each projection's, any iterable) and
        set these ``loader_settings``; returns the rows written per projection."""
        for name in reversed(PROJECTIONS):  # the DLQ first: it refers to sources
            tx.conn.execute(delete(schema.metadata.tables[name]))
        counts = {name: _copy(rows[name], tx.conn, name) for name in PROJECTIONS}
        table = schema.loader_settings
        tx.conn.execute(delete(table).where(table.c.name.in_(list(settings))))
        tx.conn.execute(insert(table), [{"name": k, "value": v} for k, v in settings.items()])
        return counts


class SQLiteProjectionStore(ProjectionStore):
    dialect = "sqlite"


class PostgresProjectionStore(ProjectionStore):
    dialect = "postgresql"

    def _isolate_rebuild(self, tx: Tx, check: bool) -> None:
        if check:
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        else:
            # Runs that append meanwhile wait at their projection update, then apply their
            # deltas to the rebuilt rows.
            tx.execute("LOCK TABLE sources, failed_records IN SHARE ROW EXCLUSIVE MODE")

    def snapshot(self, conn: Connection) -> None:
        conn.execution_options(isolation_level="REPEATABLE READ")


_BACKENDS: dict[str, type[ProjectionStore]] = {
    "sqlite": SQLiteProjectionStore,
    "postgresql": PostgresProjectionStore,
}


@cache
def _for_dialect(dialect: str) -> ProjectionStore:
    return _BACKENDS[dialect]()


def projection_store(store: Store) -> ProjectionStore:
    """The projections' repository for this store's backend (stateless, shared)."""
    return _for_dialect(store.dialect)


def _envelope(tx: Tx, source_id: int, position: int, recorded_at: dt.datetime) -> dict[str, Any]:
    return {"source_id": source_id, "position": position, "recorded_at": tx.timestamp(recorded_at)}


def _empty_copy(name: str, target: str) -> str:
    return f"CREATE TEMPORARY TABLE {target} AS SELECT * FROM {name} WHERE 1 = 0"  # noqa: S608 - fixed names


def _copy(rows: Iterable[Mapping[str, Any]], conn: Connection, name: str) -> int:
    table = schema.metadata.tables[name]
    n = 0
    chunk: list[Mapping[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= INSERT_ROWS:
            conn.execute(insert(table), chunk)
            n += len(chunk)
            chunk = []
    if chunk:
        conn.execute(insert(table), chunk)
        n += len(chunk)
    return n
