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
import dataclasses
import getpass
import io
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from journal_loader import projections
from journal_loader.errors import JournalLoaderError, SkipRecord, UnknownIdError, error_type_of
from journal_loader.graph.target import GraphTarget
from journal_loader.journal import queries
from journal_loader.journal.events import RecordResolved, RunStarted, decode
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.loader import Loader
from journal_loader.runner import RecordOutcome, RunOptions, retry_records
from journal_loader.sources.readers import RawRecord, ReaderOptions, ResumePoint, open_reader
from journal_loader.storage.base import Store, utcnow
from journal_loader.storage.journal_store import source_lock_name
from journal_loader.storage.ops_store import ops_store


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
    return ops_store(store).dlq_entries(
        source_id=source_id, stage=stage, error_type=error_type, limit=limit
    )


def _entry(store: Store, entry_id: int) -> dict[str, Any]:
    row = ops_store(store).dlq_entry(entry_id)
    if row is None:
        raise UnknownEntryError(f"no DLQ entry {entry_id} (see `journal-loader dlq list`)")
    return row


def show_entry(store: Store, entry_id: int) -> dict[str, Any]:
    """The entry, its raw input and parsed record, and every event of that record."""
    row = _entry(store, entry_id)
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
    row = _entry(store, entry_id)
    who = resolved_by or _whoami()
    run_id = f"resolve-{os.getpid()}-{utcnow():%Y%m%dT%H%M%S}"[:36]
    lock_name = source_lock_name(row["source_type"], row["file_hash"])
    with store.lock_source(lock_name, {"run_id": run_id}), store.transaction() as tx:
        # Shared (the head read under the chain lock): chunks of a split source append
        # without the source's lock we hold (journal_loader/runner/lease.py::attach).
        writer = JournalWriter(row["source_id"], run_id, None, shared=True)
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


class RetryDecision(StrEnum):
    """A DLQ entry's outcome when it was not retried (``RetryOutcome.outcome``)."""

    WOULD_RETRY = "would retry"  # --dry-run
    NOT_RETRIED = "not retried"  # it failed in an earlier load: the current one reads it


@dataclass(slots=True)
class RetryOutcome:
    entry_id: int
    source_id: int
    record_offset: int
    outcome: RecordOutcome | RetryDecision  # succeeded, failed, skipped; or not tried
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
    entries = ops_store(store).dlq_entries_to_retry(entry_ids=entry_ids, source_id=source_id)
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
    src, load_start, started = ops_store(store).retry_source(source_id)
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
                    RetryDecision.NOT_RETRIED,
                    "failed in an earlier load of this source; the current load (--force) "
                    "reads it again",
                )
            )
        else:
            current.append(e)
    if not current:
        return
    reparse = _reparser(run_started, str(src.get("file_name") or ""))
    records = [reparse(e) for e in current]
    if dry_run:
        for e, rec in zip(current, records, strict=True):
            report.outcomes.append(
                RetryOutcome(
                    e["id"],
                    source_id,
                    e["record_offset"],
                    RetryDecision.WOULD_RETRY,
                    _dry(loader, rec),
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
    # src was read before the retry took the source's lock: its last position is at most
    # where the retry's events begin, so reading after it finds them all
    outcome = _outcomes(store, source_id, run_id, int(src["last_position"]))
    for e in current:
        status, message = outcome.get(
            e["record_offset"], (RecordOutcome.FAILED, "no outcome journaled")
        )
        report.outcomes.append(
            RetryOutcome(e["id"], source_id, e["record_offset"], status, message)
        )


def _reparser(run_started: RunStarted, file_name: str = "") -> Any:
    options = ReaderOptions.from_journal(run_started.reader)
    if (
        options.delimiter is None
        and options.format in (None, "csv")
        and file_name.lower().removesuffix(".gz").endswith(".tsv")
    ):
        # A journal written before the reader recorded the delimiter it used: a .tsv
        # file's null delimiter meant a tab, not a comma (only `format: csv` set by hand on
        # a .tsv file read it with commas, and such a journal cannot say so).
        options = dataclasses.replace(options, delimiter="\t")
    reader = open_reader(
        "<journal>",
        options,
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


def _outcomes(
    store: Store, source_id: int, run_id: str, after: int
) -> dict[int, tuple[RecordOutcome, str]]:
    names = {
        "ProposeSucceeded": RecordOutcome.IMPORTED,
        "RecordFailed": RecordOutcome.FAILED,
        "RecordSkipped": RecordOutcome.SKIPPED,
    }
    out = {}
    for offset, event_type, payload in ops_store(store).run_outcomes(source_id, run_id, after):
        ev = decode(payload)
        message = getattr(ev, "message", "") or getattr(ev, "reason", "")
        out[offset] = (names[event_type], message)
    return out


def _whoami() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"
