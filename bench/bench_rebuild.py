#!/usr/bin/env python3
"""Benchmark of the set-based projection rebuild (and the audit commands) on a large journal.

Generates a journal of ``--events`` events (default 3,000,000), synthetic but valid: every
payload is encoded with the real codec (``journal.events.encode``) and every event is chained
with the real canonical bytes and SHA-256, so ``verify`` passes on it. The history is what
loads leave: 30 sources of ~50,000 records each (RecordParsed + one terminal event per
record: ~96% succeeded, ~2.5% failed, ~1.5% skipped), a checkpoint every 1,000 records, runs
that stop partial and resume, one --force reload, DLQ retries and resolves, plus provenance
rows (a hot City node asserted by thousands of records, a relationship per record) for the
lineage queries. Rows go in with the driver in bulk (executemany on SQLite, COPY on
PostgreSQL), bypassing the runner: this measures the reads, not the loads.

Then, on each backend, it times and prints:

* ``projections.rebuild(store)`` and ``rebuild(store, check=True)`` (the issue's targets:
  under 10 s on SQLite, under 5 s on PostgreSQL, for 3M events);
* ``status --as-of`` half-way through the journal (the same SQL over a cut view);
* ``verify`` (every chain recomputed, streamed) and ``export`` (to /dev/null);
* ``lineage`` of a cold node, a relationship and a hot node, with the query plan.

    .venv/bin/python bench/bench_rebuild.py [--events N] [--backend sqlite|postgresql|both]
        [--sqlite-path PATH] [--pg-url URL] [--keep]
        [--projections-dir DIR] [--index "CREATE INDEX ..."]...

``--projections-dir`` and ``--index`` measure a change before making it: the projections'
SQL read from another directory, extra indexes built after the load.

PostgreSQL: ``--pg-url`` or ``$JOURNAL_LOADER_TEST_PG_URL``; a fresh schema ``jl_bench_*``
is created and dropped afterwards (unless ``--keep``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import make_url, text

from journal_loader import projections
from journal_loader.audit.asof import status_as_of
from journal_loader.audit.cut import Cut
from journal_loader.audit.export import export_events
from journal_loader.audit.lineage import lineage
from journal_loader.audit.verify import verify
from journal_loader.graph.protocol import Action, ProposeResult
from journal_loader.journal.chain import canonical, format_time
from journal_loader.journal.events import (
    BatchCommitted,
    Event,
    LoadStarted,
    ProposeSucceeded,
    RecordFailed,
    RecordParsed,
    RecordResolved,
    RecordSkipped,
    RunFinished,
    RunStarted,
    SourceRegistered,
    encode,
)
from journal_loader.storage import Store, open_store

SOURCES = 30
BATCH = 1000
HOT_NODES = 50  # cities: each asserted by thousands of records

JOURNAL_COLUMNS = (
    "position, source_id, record_offset, event_type, schema_version, payload, run_id, "
    "recorded_at, prev_hash, hash"
)
# provenance (a view since migration 0006): each generated row is a record of its own
RECORD_COLUMNS = "id, source_id, record_offset, run_id, created_at, confidence"
SUBJECT_COLUMNS = "subject_id, id, record_id, fact_index, confidence"
SUBJECT_TABLES = {
    "node": "provenance_nodes",
    "attribute": "provenance_attributes",
    "relationship": "provenance_relationships",
}


def _record_row(p: tuple[Any, ...], stamp: Any) -> tuple[Any, ...]:
    return (p[0], p[3], p[4], p[6], stamp, p[7])


def _subject_rows(provenance: list[tuple[Any, ...]], kind: str) -> list[tuple[Any, ...]]:
    """Each kind's table's rows (the confidence is the record's: NULL)."""
    return [(p[2], p[0], p[0], p[5], None) for p in provenance if p[1] == kind]


# --- the synthetic history ----------------------------------------------------------------------


class Generator:
    """Events in position order, each chained to its source's previous one."""

    def __init__(self, events: int, seed: int = 7) -> None:
        self.target = events
        self.rnd = random.Random(seed)
        self.position = 0
        self.heads: dict[int, bytes | None] = {}
        self.clock = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.provenance: list[tuple[Any, ...]] = []
        self.next_rel = 1
        self._stamp_of: dt.datetime | None = None
        self._stamp = ""

    def rows(self) -> Iterator[tuple[Any, ...]]:
        per_source = self.target // SOURCES
        for sid in range(1, SOURCES + 1):
            yield from self._source(sid, per_source)

    def _event(self, sid: int, offset: int | None, event: Event, run_id: str) -> tuple[Any, ...]:
        self.position += 1
        payload = encode(event)
        if self.clock != self._stamp_of:  # two events of a record share their time
            self._stamp_of, self._stamp = self.clock, format_time(self.clock)
        stamp = self._stamp
        prev = self.heads.get(sid)
        digest = hashlib.sha256(
            (prev or b"")
            + canonical(
                sid, offset, type(event).__name__, event.SCHEMA_VERSION, run_id, stamp, payload
            )
        ).digest()
        self.heads[sid] = digest
        return (
            self.position,
            sid,
            offset,
            type(event).__name__,
            event.SCHEMA_VERSION,
            payload.decode(),
            run_id,
            self.clock,
            prev,
            digest,
        )

    def _source(self, sid: int, budget: int) -> Iterator[tuple[Any, ...]]:
        rnd = self.rnd
        run = str(uuid.UUID(int=rnd.getrandbits(128)))
        self.clock += dt.timedelta(minutes=5)
        yield self._event(
            sid,
            None,
            SourceRegistered(
                source_type="business_registry",
                source_name="Registry",
                file_name=f"r{sid}.csv",
                file_path=f"/data/r{sid}.csv",
                file_hash=f"{sid:064x}",
                file_size=10**8,
                file_mtime="2026-01-01T00:00:00Z",
                version_label=f"2026-Q{sid % 4 + 1}",
                update_frequency="quarterly",
                format="csv",
            ),
            run,
        )
        yield self._event(sid, None, LoadStarted(reason="first"), run)
        yield self._event(sid, None, RunStarted(loader="bench", mode="new"), run)
        spent = 3
        records = max(1, (budget - 10) // 2)
        force_at = records // 2 if sid == 1 else None  # source 1 is reloaded with --force
        partial_at = records // 3 if sid % 5 == 0 else None  # some runs stop, then resume
        failed: list[tuple[int, int]] = []
        offset = 0
        done = 0
        while done < records and spent < budget - 4:
            self.clock += dt.timedelta(milliseconds=2)
            line = offset + 2
            raw = f"C{sid:03d}{offset:07d},COMPANY {offset} LLC,Domestic LLC,01/02/2003\n".encode()
            roll = rnd.random()
            if roll < 0.015:
                yield self._event(
                    sid, offset, RecordSkipped(reason="no legal name", line=line, raw=raw), run
                )
                spent += 1
            else:
                record = {"corp_number": f"C{sid:03d}{offset:07d}", "name": f"COMPANY {offset}"}
                yield self._event(
                    sid,
                    offset,
                    RecordParsed(
                        line=line,
                        byte_start=offset * 64,
                        byte_end=offset * 64 + len(raw),
                        raw=raw,
                        record=record,
                    ),
                    run,
                )
                spent += 1
                if roll < 0.04:
                    ev = RecordFailed(
                        stage="validate",
                        error_type="ValidationError",
                        message="bad zip",
                        line=line,
                        raw=raw,
                        record=record,
                    )
                    row = self._event(sid, offset, ev, run)
                    failed.append((offset, row[0]))
                    yield row
                else:
                    yield self._succeed(sid, offset, run)
                spent += 1
            offset += 1
            done += 1
            if offset % BATCH == 0:
                yield self._event(
                    sid,
                    None,
                    BatchCommitted(next_offset=offset, next_line=offset + 2, next_byte=offset * 64),
                    run,
                )
                spent += 1
            if partial_at is not None and done == partial_at:
                yield self._event(sid, None, RunFinished(status="partial", reason="--limit"), run)
                run = str(uuid.UUID(int=rnd.getrandbits(128)))
                yield self._event(
                    sid, None, RunStarted(loader="bench", mode="resume", resume_offset=offset), run
                )
                spent += 2
            if force_at is not None and done == force_at:
                yield self._event(
                    sid, None, RunFinished(status="completed", records_in_file=offset), run
                )
                run = str(uuid.UUID(int=rnd.getrandbits(128)))
                yield self._event(sid, None, LoadStarted(reason="force"), run)
                yield self._event(sid, None, RunStarted(loader="bench", mode="new"), run)
                spent += 3
                offset, failed = 0, []
        yield self._event(sid, None, RunFinished(status="completed", records_in_file=offset), run)
        # the DLQ afterwards: a third of the failures retried (half succeed), some resolved
        retry_run = str(uuid.UUID(int=rnd.getrandbits(128)))
        for off, position in failed[: len(failed) // 3]:
            if rnd.random() < 0.5:
                yield self._succeed(sid, off, retry_run, retry_of=position)
            else:
                yield self._event(
                    sid,
                    off,
                    RecordFailed(
                        stage="validate",
                        error_type="ValidationError",
                        message="bad zip",
                        retry_of=position,
                    ),
                    retry_run,
                )
        for off, position in failed[len(failed) // 3 : len(failed) // 3 + 5]:
            yield self._event(
                sid,
                off,
                RecordResolved(note="not ours", resolved_by="bench", failure_position=position),
                retry_run,
            )

    def _succeed(
        self, sid: int, offset: int, run: str, retry_of: int | None = None
    ) -> tuple[Any, ...]:
        rel = self.next_rel
        self.next_rel += 1
        company = 1_000_000 + sid * 100_000 + offset
        city = (sid * 7 + offset) % HOT_NODES + 1
        result = ProposeResult(
            status="success",
            overall_confidence=1.0,
            source_entity_id=company,
            target_entity_id=city,
            relationship_id=rel,
            actions=[
                Action(action="entity_created", role="source", entity_id=company),
                Action(action="entity_matched", role="target", entity_id=city),
                Action(action="relationship_created", relationship_id=rel),
            ],
        )
        row = self._event(sid, offset, ProposeSucceeded(results=[result], retry_of=retry_of), run)
        for kind, subject in (("node", city), ("relationship", rel)):
            self.provenance.append(
                (len(self.provenance) + 1, kind, subject, sid, offset, 0, run, 0.9, self.clock)
            )
        return row


# --- loading it ----------------------------------------------------------------------------------


def bulk_load(store: Store, events: int) -> tuple[int, int, float]:
    gen = Generator(events)
    started = time.monotonic()
    n = 0
    with store.transaction() as tx:
        raw = tx.raw
        if store.dialect == "sqlite":
            cur = raw.cursor()
            chunk: list[tuple[Any, ...]] = []
            for row in gen.rows():
                # SQLite keeps UTC text; the canonical stamp is the same digits
                stored = f"{gen._stamp[:10]} {gen._stamp[11:26]}"
                chunk.append((*row[:7], stored, *row[8:]))
                if len(chunk) >= 50_000:
                    cur.executemany(
                        f"INSERT INTO journal ({JOURNAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        chunk,
                    )
                    n += len(chunk)
                    chunk = []
            cur.executemany(
                f"INSERT INTO journal ({JOURNAL_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", chunk
            )
            n += len(chunk)
            cur.executemany(
                f"INSERT INTO provenance_records ({RECORD_COLUMNS}) VALUES (?,?,?,?,?,?)",
                [_record_row(p, p[8].strftime("%Y-%m-%d %H:%M:%S.%f")) for p in gen.provenance],
            )
            for kind, table in SUBJECT_TABLES.items():
                cur.executemany(
                    f"INSERT INTO {table} ({SUBJECT_COLUMNS}) VALUES (?,?,?,?,?)",
                    _subject_rows(gen.provenance, kind),
                )
        else:
            cur = raw.cursor()
            with cur.copy(f"COPY journal ({JOURNAL_COLUMNS}) FROM STDIN") as copy:
                for row in gen.rows():
                    copy.write_row(row)
                    n += 1
            with cur.copy(f"COPY provenance_records ({RECORD_COLUMNS}) FROM STDIN") as copy:
                for p in gen.provenance:
                    copy.write_row(_record_row(p, p[8]))
            for kind, table in SUBJECT_TABLES.items():
                with cur.copy(f"COPY {table} ({SUBJECT_COLUMNS}) FROM STDIN") as copy:
                    for row in _subject_rows(gen.provenance, kind):
                        copy.write_row(row)
            cur.execute("SELECT setval(pg_get_serial_sequence('journal', 'position'), %s)", (n,))
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('provenance_records', 'id'), %s)",
                (len(gen.provenance),),
            )
    took = time.monotonic() - started
    if store.dialect == "postgresql":
        # what autovacuum does to a journal that has been there a while (statistics, and the
        # visibility map that index-only scans need)
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE journal"))
            conn.execute(text("VACUUM ANALYZE provenance_records"))
            for table in SUBJECT_TABLES.values():
                conn.execute(text(f"VACUUM ANALYZE {table}"))
    return n, len(gen.provenance), took


# --- measuring -----------------------------------------------------------------------------------


def timed(what: str, fn: Callable[[], Any], target: float | None = None) -> Any:
    started = time.monotonic()
    result = fn()
    took = time.monotonic() - started
    verdict = (
        ""
        if target is None
        else (f"  (target < {target:g} s: " + ("ok)" if took < target else "MISSED)"))
    )
    print(f"  {what:<44} {took:8.2f} s{verdict}")
    return result


def explain(store: Store, sql: str, params: dict[str, Any]) -> str:
    with store.read() as conn:
        if store.dialect == "sqlite":
            rows = conn.execute(text("EXPLAIN QUERY PLAN " + sql), params).all()
            return "\n".join(f"    {r[3]}" for r in rows)
        rows = conn.execute(text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql), params).all()
        return "\n".join(f"    {r[0]}" for r in rows)


def bench(store: Store, label: str, events: int, target: float, indexes: list[str]) -> None:
    print(f"\n{label}: generating {events:,} events ...", flush=True)
    n, prov, took = bulk_load(store, events)
    what = "generate + bulk insert"
    print(f"  {what:<44} {took:8.2f} s  ({n:,} events, {prov:,} provenance rows)")
    for statement in indexes:
        timed(f"extra: {statement[:36]}...", lambda statement=statement: _ddl(store, statement))
    report = timed("projections rebuild", lambda: projections.rebuild(store), target)
    print(f"    rows: {report.rows}")
    check = timed(
        "projections rebuild --check", lambda: projections.rebuild(store, check=True), target
    )
    assert check.ok, check.differences[:3]
    timed(
        f"status --as-of {n // 2:,} (half-way)",
        lambda: status_as_of(store, Cut.at_position(n // 2)),
    )
    result = timed("verify (all chains)", lambda: verify(store))
    assert result.ok, result.breaks[:3]
    with open(os.devnull, "wb") as sink:
        timed("export --format jsonl > /dev/null", lambda: export_events(store, sink))
    from journal_loader.storage.audit_reader import audit_queries

    q = audit_queries(store.dialect)["lineage"]
    for what, kind, subject in (
        ("lineage relationship (1 assertion)", "relationship", 4242),
        ("lineage node (hot city)", "node", 7),
    ):
        found = timed(
            what,
            lambda kind=kind, subject=subject: (
                lineage(store, kind, subject) if _exists(store, kind, subject) else None
            ),
        )
        if found is not None:
            print(f"    {found.total:,} assertions")
        print(f"  plan ({kind} {subject}):")
        print(explain(store, q, {"subject_kind": kind, "subject_id": subject}))


def _ddl(store: Store, statement: str) -> None:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(statement))
        if store.dialect == "postgresql":
            conn.execute(text("ANALYZE journal"))


def _exists(store: Store, kind: str, subject: int) -> bool:
    # the bench writes provenance but no graph rows: give lineage its subject row
    with store.transaction() as tx:
        now = tx.timestamp(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        if kind == "node":
            tx.run(
                "INSERT INTO nodes (id, node_type, name, norm_name, created_at, updated_at) "
                "VALUES (:id, 'City', :name, :name, :t, :t)",
                {"id": subject, "name": f"city {subject}", "t": now},
            )
        else:
            for node in (900_001, 900_002):
                tx.run(
                    "INSERT INTO nodes (id, node_type, name, norm_name, created_at, updated_at) "
                    "VALUES (:id, 'Company', :name, :name, :t, :t)",
                    {"id": node, "name": f"company {node}", "t": now},
                )
            tx.run(
                "INSERT INTO relationships (id, source_node_id, rel_type, target_node_id, "
                "strength, created_at, updated_at) VALUES (:id, 900001, 'LOCATED_IN', 900002, "
                "1.0, :t, :t)",
                {"id": subject, "t": now},
            )
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--sqlite-path", help="SQLite file to create (default: a temp dir)")
    parser.add_argument("--pg-url", default=os.environ.get("JOURNAL_LOADER_TEST_PG_URL"))
    parser.add_argument("--keep", action="store_true", help="Keep the databases.")
    parser.add_argument(
        "--projections-dir",
        help="Read the projections' SQL from this directory instead (to measure a change)",
    )
    parser.add_argument(
        "--index",
        action="append",
        default=[],
        metavar="SQL",
        help="CREATE INDEX ... to run after the load (repeatable; to measure an index)",
    )
    args = parser.parse_args()
    if args.projections_dir:
        proposed = Path(args.projections_dir).resolve()
        from journal_loader.storage import projection_store

        projection_store.projections_dir = lambda: proposed  # type: ignore[assignment]
        print(f"projections' SQL from {proposed}")

    if args.backend in ("sqlite", "both"):
        path = (
            Path(args.sqlite_path)
            if args.sqlite_path
            else Path(tempfile.mkdtemp(prefix="jl_bench_")) / "journal.db"
        )
        if path.exists():
            sys.exit(f"{path} exists: pass a new --sqlite-path")
        store = open_store(f"sqlite:///{path}")
        try:
            bench(store, f"SQLite ({path})", args.events, 10.0, args.index)
        finally:
            store.dispose()
            if not args.keep:
                for p in path.parent.glob(path.name + "*"):  # the file, -wal, -shm, .locks/
                    if p.is_dir():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                if not args.sqlite_path:
                    shutil.rmtree(path.parent, ignore_errors=True)
    if args.backend in ("postgresql", "both"):
        if not args.pg_url:
            sys.exit("PostgreSQL: pass --pg-url or set JOURNAL_LOADER_TEST_PG_URL")
        import psycopg

        admin = (
            make_url(args.pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
        )
        schema = f"jl_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = make_url(args.pg_url).set(drivername="postgresql+psycopg")
        url = url.update_query_dict({"options": f"-csearch_path={schema}"})
        store = open_store(url.render_as_string(hide_password=False))
        try:
            bench(store, f"PostgreSQL (schema {schema})", args.events, 5.0, args.index)
        finally:
            store.dispose()
            if not args.keep:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
