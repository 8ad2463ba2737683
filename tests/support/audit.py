"""Helpers for the audit tests (tests/test_audit_*.py): journals built event by event or by
real runs, projection snapshots, and tampering with the journal as its owner would."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from sqlalchemy import select, text

from journal_loader import projections
from journal_loader.cli import main
from journal_loader.journal.events import (
    BatchCommitted,
    Event,
    LoadStarted,
    ProposeSucceeded,
    RecordFailed,
    RecordParsed,
    RecordResolved,
    RecordSkipped,
    RunAbandoned,
    RunFinished,
    RunStarted,
    SourceRegistered,
)
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage import Store, schema

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def cli_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _norm(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def row_tuple(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_norm(row[c.name]) for c in schema.metadata.tables[table].columns)


def live_projections(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every column of every row of the live projections, in key order."""
    out = {}
    with store.read() as conn:
        for name in projections.PROJECTIONS:
            table = schema.metadata.tables[name]
            rows = conn.execute(select(table).order_by(*table.primary_key.columns)).mappings()
            out[name] = [row_tuple(name, dict(r)) for r in rows]
    return out


def asof_projections(store: Store, cut: Any) -> dict[str, list[tuple[Any, ...]]]:
    from journal_loader.audit.asof import projections_at

    with projections_at(store, cut) as asof:
        return {
            name: [row_tuple(name, r) for r in asof.rows(name)] for name in projections.PROJECTIONS
        }


def last_position(store: Store) -> int:
    with store.read() as conn:
        return int(
            conn.execute(text("SELECT COALESCE(MAX(position), 0) FROM journal")).scalar_one()
        )


# --- journals built event by event ---------------------------------------------------------


@dataclass
class SimSource:
    source_id: int
    head: bytes | None = None
    run_id: str = ""
    status: str = "registered"  # processing | completed | partial | failed
    next_offset: int = 0
    load_start: int = 0  # position of the current load's LoadStarted


@dataclass
class Snapshot:
    position: int
    recorded_at: dt.datetime
    projections: dict[str, list[tuple[Any, ...]]]


@dataclass
class JournalSim:
    """Appends events the way the runner (and ``dlq resolve``) do: one transaction per step,
    the projections applied inline; snapshots the live projections after every commit.

    Every transaction gets its own ``recorded_at``, one second after the previous one, so
    time cuts fall between transactions."""

    store: Store
    clock: dt.datetime = T0
    sources: list[SimSource] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)

    def commit(
        self, src: SimSource, run_id: str, events: Sequence[tuple[int | None, Event]]
    ) -> None:
        self.clock += dt.timedelta(seconds=1)
        writer = JournalWriter(src.source_id, run_id, src.head)
        with self.store.transaction() as tx:
            rows = writer.append(tx, [PendingEvent.of(o, e) for o, e in events], self.clock)
            projections.apply(tx, rows)
        writer.confirm()
        src.head = writer.head
        for row in rows:
            if isinstance(row.event, LoadStarted):
                src.load_start = row.position
        self.snapshots.append(Snapshot(rows[-1].position, self.clock, live_projections(self.store)))

    # --- steps -----------------------------------------------------------------------------
    def register(self) -> SimSource:
        with self.store.read() as conn:
            next_id = conn.execute(text("SELECT COALESCE(MAX(source_id), 0) + 1 FROM sources"))
            src = SimSource(source_id=int(next_id.scalar_one()), run_id=str(uuid.uuid4()))
        self.sources.append(src)
        n = src.source_id
        self.commit(
            src,
            src.run_id,
            [
                (
                    None,
                    SourceRegistered(
                        source_type="sim",
                        source_name="Simulated",
                        file_name=f"sim_{n}.csv",
                        file_path=f"/data/sim_{n}.csv",
                        file_hash=f"{n:064x}",
                        file_size=1000 + n,
                        file_mtime="2026-01-01T00:00:00Z",
                        version_label=f"v{n}",
                        update_frequency="hash",
                        format="csv",
                    ),
                ),
                (None, LoadStarted(reason="first")),
                (None, RunStarted(loader="sim", mode="new")),
            ],
        )
        src.status = "processing"
        return src

    def batch(self, src: SimSource, outcomes: Sequence[str]) -> None:
        """New records with these outcomes (ok | fail | skip | invalid: parsed, then failed),
        then the checkpoint."""
        assert src.status == "processing"
        events: list[tuple[int | None, Event]] = []
        for i, outcome in enumerate(outcomes):
            events += _record_events(src.next_offset + i, outcome)
        src.next_offset += len(outcomes)
        events.append(
            (
                None,
                BatchCommitted(
                    next_offset=src.next_offset,
                    next_line=src.next_offset + 2,
                    next_byte=src.next_offset * 20,
                ),
            )
        )
        self.commit(src, src.run_id, events)

    def retry(self, src: SimSource, answers: dict[int, str]) -> None:
        """``dlq retry``: DLQ records of the current load answered again (ok | fail | skip |
        invalid), with ``retry_of`` naming the failure, by a run of its own, no checkpoint."""
        last = {o: p for _, o, p in self.dlq_entries(src) if o in answers}
        events: list[tuple[int | None, Event]] = []
        for offset, outcome in sorted(answers.items()):
            events += _record_events(offset, outcome, retry_of=last[offset])
        if events:
            self.commit(src, str(uuid.uuid4()), events)

    def finish(self, src: SimSource, status: str) -> None:
        assert src.status == "processing"
        self.commit(
            src,
            src.run_id,
            [
                (
                    None,
                    RunFinished(
                        status=status,
                        reason="" if status == "completed" else f"stopped: {status}",
                        records_in_file=src.next_offset if status == "completed" else None,
                    ),
                )
            ],
        )
        src.status = status

    def restart(self, src: SimSource) -> None:
        """The next run of a source: a resume (after a dead run: RunAbandoned first), or a
        --force reload of a completed one (a new load: offsets from 0)."""
        old_run, src.run_id = src.run_id, str(uuid.uuid4())
        events: list[tuple[int | None, Event]] = []
        if src.status == "processing":
            events.append((None, RunAbandoned(abandoned_run_id=old_run, reason="died")))
        if src.status == "completed":
            events.append((None, LoadStarted(reason="force")))
            events.append((None, RunStarted(loader="sim", mode="new")))
            src.next_offset = 0
        else:
            events.append(
                (None, RunStarted(loader="sim", mode="resume", resume_offset=src.next_offset))
            )
        self.commit(src, src.run_id, events)
        src.status = "processing"

    def dlq_entries(self, src: SimSource) -> list[tuple[int, int, int]]:
        """(id, record_offset, last_position) of the source's DLQ entries."""
        with self.store.read() as conn:
            return [
                (int(r[0]), int(r[1]), int(r[2]))
                for r in conn.execute(
                    text(
                        "SELECT id, record_offset, last_position FROM failed_records "
                        "WHERE source_id = :s ORDER BY record_offset"
                    ),
                    {"s": src.source_id},
                )
            ]

    def dlq_offsets(self, src: SimSource, *, current_load: bool = False) -> list[int]:
        """DLQ offsets (only failures of the current load: what ``dlq retry`` retries)."""
        return [o for i, o, _ in self.dlq_entries(src) if not current_load or i > src.load_start]

    def resolve(self, src: SimSource, offsets: Sequence[int]) -> None:
        if offsets:
            self.commit(
                src,
                str(uuid.uuid4()),
                [
                    (o, RecordResolved(note="not ours to load", resolved_by="auditor"))
                    for o in offsets
                ],
            )


def _record_events(
    offset: int, outcome: str, retry_of: int | None = None
) -> list[tuple[int | None, Event]]:
    line = offset + 2
    raw = f"name{offset},city{offset}\n".encode()
    start, end = offset * 20, offset * 20 + len(raw)
    events: list[tuple[int | None, Event]] = []
    if outcome in ("ok", "invalid"):
        parsed = RecordParsed(
            line=line, byte_start=start, byte_end=end, raw=raw, record={"n": offset}
        )
        events.append((offset, parsed))
    if outcome == "ok":
        events.append((offset, ProposeSucceeded(results=[], retry_of=retry_of)))
    elif outcome == "skip":
        events.append(
            (offset, RecordSkipped(reason="comment row", line=line, raw=raw, retry_of=retry_of))
        )
    else:
        invalid = outcome == "invalid"
        failed = RecordFailed(
            stage="validate" if invalid else "parse",
            error_type="ValidationError" if invalid else "ParseError",
            message=f"record {offset} is bad",
            line=line,
            byte_start=start,
            byte_end=end,
            raw=raw,
            record={"n": offset} if invalid else None,
            retry_of=retry_of,
        )
        events.append((offset, failed))
    return events


# --- tampering -------------------------------------------------------------------------------


def as_owner_without_guards(store: Store, *statements: tuple[str, dict[str, Any]]) -> None:
    """Run statements on the journal as its owner would, with the append-only triggers out of
    the way (SQLite: dropped; PostgreSQL: ALTER TABLE journal DISABLE TRIGGER USER, enabled
    again in the same transaction)."""
    with store.transaction() as tx:
        if store.dialect == "sqlite":
            tx.execute("DROP TRIGGER IF EXISTS journal_refuse_update")
            tx.execute("DROP TRIGGER IF EXISTS journal_refuse_delete")
        else:
            tx.execute("ALTER TABLE journal DISABLE TRIGGER USER")
        for sql, params in statements:
            tx.execute(sql, params)
        if store.dialect == "postgresql":
            tx.execute("ALTER TABLE journal ENABLE TRIGGER USER")


def write_pairs_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    from tests.support.loaders import write_csv

    return write_csv(path, ["name", "city"], [list(r) for r in rows])
