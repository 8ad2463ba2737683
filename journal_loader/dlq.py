"""The dead-letter queue as a working tool: list, show, retry, resolve.

The DLQ (``failed_records``) is a projection: nothing here edits it. ``retry`` and ``resolve``
append events (with ``retry_of`` / ``failure_position`` pointing at the failure they answer)
and the projection follows, inline and in a rebuild alike.

``retry`` needs no source file: it re-parses each record's raw bytes, kept in the journal,
with the header and dialect the run journaled (``RunStarted.header_raw``/``reader``) and the
*current* loader code, then validates and proposes it like a run does, one transaction per
batch (``journal_loader.runner.retry_records``), holding the source's lock. Records that
now succeed leave the DLQ; records that fail again stay, with one more attempt.

Only failures of the source's current load are retried: after a ``--force`` reload started,
an older failure is the new load's business (it will read that record again).
"""

from __future__ import annotations

import base64
import getpass
import io
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Row, and_, select

from journal_loader import projections
from journal_loader.errors import JournalLoaderError, SkipRecord, UnknownIdError, error_type_of
from journal_loader.graph.target import GraphTarget
from journal_loader.journal import queries
from journal_loader.journal.events import RecordResolved, RunStarted, decode
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.loader import Loader
from journal_loader.runner import RecordOutcome, RunOptions, retry_records
from journal_loader.sources.readers import RawRecord, ResumePoint, open_reader
from journal_loader.storage.base import Store, utcnow
from journal_loader.storage.schema import failed_records, journal, sources


class DlqError(JournalLoaderError):
    pass


class UnknownEntryError(DlqError, UnknownIdError):
    """A DLQ entry id (or a source id) that does not exist: exit code 2."""


def list_entries(
    store: Store,
    *,
    source_id: int | None = None,
    stage: str | None = None,
    error_type: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    f = failed_records
    query = (
        select(
            f.c.id,
            f.c.source_id,
            sources.c.source_type,
            sources.c.file_name,
            f.c.record_offset,
            f.c.line_number,
            f.c.stage,
            f.c.error_type,
            f.c.error_message,
            f.c.attempts,
            f.c.first_failed_at,
            f.c.last_failed_at,
        )
        .join(sources, sources.c.source_id == f.c.source_id)
        .order_by(f.c.source_id, f.c.record_offset)
    )
    if source_id is not None:
        query = query.where(f.c.source_id == source_id)
    if stage is not None:
        query = query.where(f.c.stage == stage)
    if error_type is not None:
        query = query.where(f.c.error_type == error_type)
    if limit is not None:
        query = query.limit(limit)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _entry(store: Store, entry_id: int) -> Row[Any]:
    with store.read() as conn:
        row = conn.execute(
            select(
                failed_records,
                sources.c.source_type,
                sources.c.file_name,
                sources.c.file_hash,
                sources.c.source_version,
            )
            .join(sources, sources.c.source_id == failed_records.c.source_id)
            .where(failed_records.c.id == entry_id)
        ).first()
    if row is None:
        raise UnknownEntryError(f"no DLQ entry {entry_id} (see `journal-loader dlq list`)")
    return row


def show_entry(store: Store, entry_id: int) -> dict[str, Any]:
    """The entry, its raw input and parsed record, and every event of that record."""
    row = _entry(store, entry_id)._mapping
    with store.transaction() as tx:
        events = queries.record_events(tx, row["source_id"], row["record_offset"])
        tx.conn.rollback()
    attempts, history = [], []
    for e in events:
        payload = msgspec.to_builtins(e.event)
        payload.pop("type", None)
        payload.pop("raw", None)
        item = {
            "position": e.position,
            "event_type": e.event_type,
            "run_id": e.run_id,
            "recorded_at": e.recorded_at,
            **payload,
        }
        history.append(item)
        if e.event_type == "RecordFailed":
            attempts.append(item)
    raw = row["raw_input"]
    return {
        **{k: v for k, v in row.items() if k not in ("raw_input", "parsed_record")},
        "raw_input": None if raw is None else bytes(raw).decode("utf-8", "backslashreplace"),
        "raw_input_base64": None if raw is None else base64.b64encode(bytes(raw)).decode(),
        "parsed_record": None
        if row["parsed_record"] is None
        else msgspec.json.decode(row["parsed_record"]),
        "attempts": attempts,
        "events": history,
    }


def resolve(store: Store, entry_id: int, note: str, resolved_by: str | None = None) -> int:
    """A person decides the record is not to be loaded: journal who and why; it leaves the
    DLQ. Returns the journal position of the RecordResolved event."""
    if not note.strip():
        raise DlqError("a resolution needs a note saying why (--note)")
    row = _entry(store, entry_id)._mapping
    who = resolved_by or _whoami()
    run_id = f"resolve-{os.getpid()}-{utcnow():%Y%m%dT%H%M%S}"[:36]
    lock_name = f"{row['source_type']}:{row['file_hash']}"
    with store.lock_source(lock_name, {"run_id": run_id}), store.transaction() as tx:
        last = tx.fetchone(
            "SELECT last_position FROM sources WHERE source_id = :s",
            {"s": row["source_id"]},
        )
        head = tx.fetchone(
            queries.queries(tx.store.dialect)["event_at"], {"position": int(last[0])}
        )
        writer = JournalWriter(row["source_id"], run_id, bytes(head[9]))
        rows = writer.append(
            tx,
            [
                PendingEvent.of(
                    row["record_offset"],
                    RecordResolved(
                        note=note, resolved_by=who, failure_position=row["last_position"]
                    ),
                )
            ],
        )
        projections.apply(tx, rows)
    return rows[0].position


@dataclass(slots=True)
class RetryOutcome:
    entry_id: int
    source_id: int
    record_offset: int
    outcome: str  # succeeded | failed | skipped | would retry | not retried
    message: str = ""


@dataclass(slots=True)
class RetryReport:
    outcomes: list[RetryOutcome] = field(default_factory=list)
    dry_run: bool = False

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


def retry(
    store: Store,
    loader: Loader,
    target: GraphTarget,
    *,
    entry_ids: Sequence[int] = (),
    source_id: int | None = None,
    dry_run: bool = False,
    options: RunOptions | None = None,
) -> RetryReport:
    """Retry DLQ entries (all, a source's, or the given ids); see the module docstring."""
    f = failed_records
    query = select(f).order_by(f.c.source_id, f.c.record_offset)
    if entry_ids:
        query = query.where(f.c.id.in_(list(entry_ids)))
    if source_id is not None:
        query = query.where(f.c.source_id == source_id)
    with store.read() as conn:
        entries = [dict(r) for r in conn.execute(query).mappings()]
    missing = set(entry_ids) - {e["id"] for e in entries}
    if missing:
        raise UnknownEntryError(
            f"no DLQ entr{'y' if len(missing) == 1 else 'ies'} "
            f"{', '.join(map(str, sorted(missing)))}"
        )
    report = RetryReport(dry_run=dry_run)
    by_source: dict[int, list[dict[str, Any]]] = {}
    for e in entries:
        by_source.setdefault(e["source_id"], []).append(e)
    for sid, items in by_source.items():
        _retry_source(store, loader, target, sid, items, dry_run, options or RunOptions(), report)
    return report


def _retry_source(
    store: Store,
    loader: Loader,
    target: GraphTarget,
    source_id: int,
    items: list[dict[str, Any]],
    dry_run: bool,
    options: RunOptions,
    report: RetryReport,
) -> None:
    with store.read() as conn:
        src = conn.execute(select(sources).where(sources.c.source_id == source_id)).mappings().one()
        load_start, _ = _last_source_event(conn, source_id, "LoadStarted")
        _, started = _last_source_event(conn, source_id, "RunStarted")
    run_started = decode(started)
    assert isinstance(run_started, RunStarted)
    current = []
    for e in items:
        if e["id"] < load_start:
            report.outcomes.append(
                RetryOutcome(
                    e["id"],
                    source_id,
                    e["record_offset"],
                    "not retried",
                    "failed in an earlier load of this source; the current load (--force) "
                    "reads it again",
                )
            )
        else:
            current.append(e)
    if not current:
        return
    reparse = _reparser(run_started)
    records = [reparse(e) for e in current]
    if dry_run:
        for e, rec in zip(current, records, strict=True):
            report.outcomes.append(
                RetryOutcome(
                    e["id"], source_id, e["record_offset"], "would retry", _dry(loader, rec)
                )
            )
        return
    run_id = retry_records(
        store,
        loader,
        target,
        source_id=source_id,
        source_type=src["source_type"],
        file_hash=src["file_hash"],
        records=records,
        retry_of={e["record_offset"]: e["last_position"] for e in current},
        options=options,
    )
    outcome = _outcomes(store, source_id, run_id)
    for e in current:
        status, message = outcome.get(
            e["record_offset"], (RecordOutcome.FAILED, "no outcome journaled")
        )
        report.outcomes.append(
            RetryOutcome(e["id"], source_id, e["record_offset"], status, message)
        )


def _last_source_event(conn: Any, source_id: int, event_type: str) -> tuple[int, str]:
    """(position, payload) of the source's last source-level event of that type."""
    row = conn.execute(
        select(journal.c.position, journal.c.payload)
        .where(
            and_(
                journal.c.source_id == source_id,
                journal.c.record_offset.is_(None),
                journal.c.event_type == event_type,
            )
        )
        .order_by(journal.c.position.desc())
        .limit(1)
    ).one()
    return int(row[0]), str(row[1])


def _reparser(run_started: RunStarted) -> Any:
    opts = run_started.reader
    reader = open_reader(
        "<journal>",
        format=opts.get("format"),
        encoding=opts.get("encoding", "utf-8"),
        delimiter=opts.get("delimiter"),
        quotechar=opts.get("quotechar", '"'),
        field_size_limit=opts.get("field_size_limit", 1_048_576),
        max_record_bytes=opts.get("max_record_bytes", 8_388_608),
        fileobj=io.BytesIO(run_started.header_raw or b""),
    )

    def reparse(entry: dict[str, Any]) -> RawRecord:
        at = ResumePoint(entry["record_offset"], entry["line_number"], entry["byte_start"])
        raw = entry["raw_input"]
        if raw is None:
            return RawRecord(
                at.offset,
                at.line,
                at.byte,
                at.byte,
                b"",
                None,
                "the journal holds no raw input for this record",
                "no_raw_input",
            )
        return reader.reparse(bytes(raw), at)

    return reparse


def _dry(loader: Loader, rec: RawRecord) -> str:
    """What parse and validate say now (nothing is proposed or written)."""
    if rec.error is not None:
        return f"still unreadable: {rec.error}"
    try:
        assert rec.data is not None
        parsed = loader.parse(rec.data)
    except SkipRecord as s:
        return f"would be skipped: {s.reason}"
    except Exception as e:
        return f"parse still fails: {error_type_of(e)}: {e}"
    if parsed is None:
        return "would be skipped: parse returned None"
    problems = loader.validate(parsed)
    return ("validate still fails: " + "; ".join(problems)) if problems else "parses and validates"


def _outcomes(store: Store, source_id: int, run_id: str) -> dict[int, tuple[str, str]]:
    names = {"ProposeSucceeded": "succeeded", "RecordFailed": "failed", "RecordSkipped": "skipped"}
    with store.read() as conn:
        rows = conn.execute(
            select(journal.c.record_offset, journal.c.event_type, journal.c.payload).where(
                and_(
                    journal.c.source_id == source_id,
                    journal.c.run_id == run_id,
                    journal.c.event_type.in_(list(names)),
                )
            )
        ).all()
    out = {}
    for offset, event_type, payload in rows:
        ev = decode(payload)
        message = getattr(ev, "message", "") or getattr(ev, "reason", "")
        out[int(offset)] = (names[event_type], message)
    return out


def _whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
