"""The runner: reads a source in batches; one batch is one transaction.

For each batch, in one transaction (invariant 2):

1. check the fencing token (``source_leases.generation``; see ``journal/queries.sql``);
2. for each record: parse, validate, propose; every record ends with exactly one terminal
   event (invariant 3), and a failing record is undone alone (``GraphTarget.abort_record``);
3. write the graph's buffered rows, append the events and the checkpoint
   (``BatchCommitted``: where the next batch starts, in records, lines and bytes), apply the
   projections; COMMIT.

Resume (invariant 5): the next run reads the last ``BatchCommitted`` of the current load and
seeks the file to its byte position. Nothing of an uncommitted batch survives a crash, so
the records after the checkpoint are exactly the ones not done. Pinned by tests/test_crash.py
(SIGKILL at every kind of boundary, then rerun, compared with one clean run).

Errors: a record's own problem fails the record (DLQ) and the run goes on; a transient
database error rolls the batch back and retries it with backoff (nothing of it was kept, so
nothing is counted twice); anything else stops the run as ``failed``, journaled with its
reason when the database still answers, and resumable.

Two variants of the batch, chosen by the target:

* a target outside the journal's transaction (a Propose API in another database) gets the
  batch in three steps, ``ProposeAttempted`` first (``_batch_two_phase``): effectively once;
* a target whose lookups are round trips (the embedded graph on PostgreSQL) is shown the
  batch's entities first, by a planning pass of the loader's ``propose`` (``_prefetch``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from journal_loader import faults, projections
from journal_loader.abandon import supersede_partial
from journal_loader.errors import (
    CircuitOpenError,
    ConflictError,
    FailFastError,
    FailureLimitError,
    FencedOutError,
    JournalLoaderError,
    ProposeAnswerError,
    RecordError,
    RunFailedError,
    RunInterruptedError,
    RunPartialError,
    SkipRecord,
    SourceFileError,
    StorageError,
    TransientError,
)
from journal_loader.failures import FailureGroup, summarise
from journal_loader.graph.protocol import STATUS_ERROR, ProposeResult
from journal_loader.graph.target import FactRecorder, GraphTarget
from journal_loader.journal import queries
from journal_loader.journal.events import (
    BatchCommitted,
    LoadStarted,
    ProposeAttempted,
    ProposeSucceeded,
    RecordFailed,
    RecordParsed,
    RecordSkipped,
    RunAbandoned,
    RunFinished,
    RunStarted,
    SourceRegistered,
    Statistics,
)
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.loader import Loader
from journal_loader.secrets import scrub
from journal_loader.sources.identity import SourceFile, open_source
from journal_loader.sources.readers import RawRecord, RecordReader, ResumePoint, open_reader
from journal_loader.storage.base import SourceLock, Store, Tx, utcnow
from journal_loader.storage.errors import is_record_error
from journal_loader.suggest import did_you_mean
from journal_loader.version import __version__

log = logging.getLogger("journal_loader.runner")

FAILURE_GROUPS = 10  # in a RunReport
COMPLETED, PARTIAL, FAILED, ALREADY = "completed", "partial", "failed", "already_processed"
# Conflicts in a row before a run gives up (at least max_retries): see Runner._retrying.
CONFLICT_RETRIES = 20
# The reason journaled when ``RunOptions.stop`` asked a run to stop (a worker shutting down):
# the run is resumable, and a worker tells this stop from a failure by it.
STOP_REQUESTED = "stopped: the worker is shutting down; the next run resumes after this batch"


@dataclass(slots=True)
class RunOptions:
    batch_size: int = 1000
    limit: int | None = None
    start_from: int | None = None
    force: bool = False
    max_retries: int = 5
    retry_delay: float = 0.5
    retry_max_delay: float = 30.0
    source_type: str | None = None
    source_name: str | None = None
    update_frequency: str = "hash"
    format: str | None = None
    encoding: str = "utf-8"
    delimiter: str | None = None
    quotechar: str = '"'
    field_size_limit: int = 1_048_576
    max_record_bytes: int = 8_388_608
    max_failed_records: int | None = None
    max_failure_rate: float | None = None
    failure_rate_min_records: int = 100
    fail_fast_records: int = 100
    circuit_breaker: int = 10
    # Asked before each batch: True stops the run after the batch in progress (committed),
    # journaled as failed with STOP_REQUESTED. Signals reach only a main thread's run; a run
    # in a worker's thread is stopped through this (journal_loader/ops/fleet.py).
    stop: Callable[[], bool] | None = None


class RunReport(msgspec.Struct, kw_only=True):
    """What a run did; ``run()`` returns it and the CLI prints it."""

    status: str
    message: str = ""
    source_id: int | None = None
    run_id: str | None = None
    source_type: str = ""
    file: str = ""
    file_hash: str = ""
    version_label: str = ""
    resumed_from: int = 0
    records_in_file: int | None = None
    statistics: Statistics = msgspec.field(default_factory=Statistics)
    started_at: str = ""
    duration_seconds: float = 0.0
    records_per_second: float = 0.0
    # things the user should know that are not the outcome (a superseded source)
    notes: list[str] = msgspec.field(default_factory=list)
    # This run's failures grouped by what went wrong (journal_loader/failures.py), largest
    # first, at most FAILURE_GROUPS of them; the CLI's summary shows the top three.
    failure_groups: list[FailureGroup] = msgspec.field(default_factory=list)
    # Why a failed run failed: "usage" (the loader or config is wrong: exit 2, rerunning
    # will not help), "interrupted" (a signal stopped it), "error" (anything else: exit 1).
    error_kind: str = ""

    @property
    def exit_code(self) -> int:
        if self.status != FAILED:
            return 0
        return 2 if self.error_kind == "usage" else 1

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (an orchestrator's XCom, a task's return value),
        with ``exit_code``."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data["exit_code"] = self.exit_code
        return data

    def raise_for_status(self, *, partial: bool = False) -> RunReport:
        """Raise ``RunFailedError`` (``RunInterruptedError`` when a signal stopped the run)
        if the run failed, and ``RunPartialError`` if it stopped early (``limit``) and
        ``partial`` is true; otherwise return the report."""
        if self.status == FAILED:
            error = RunInterruptedError if self.error_kind == "interrupted" else RunFailedError
            raise error(f"{self.source_type}: the run failed: {self.message}", self)
        if partial and self.status == PARTIAL:
            raise RunPartialError(
                f"{self.source_type}: the run stopped early: {self.message}", self
            )
        return self


class RunObserver(Protocol):
    """Progress, metrics and logs hook in here (journal_loader/ops). Every method is
    optional; an observer that raises is logged and ignored, never fails the run."""

    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None: ...
    def on_retry(self, kind: str, message: str, delay: float) -> None: ...
    def on_propose_durations(self, seconds: list[float]) -> None: ...
    def on_finish(self, report: RunReport) -> None: ...


@dataclass(slots=True)
class _BatchResult:
    events: list[PendingEvent] = field(default_factory=list)
    stats: Statistics = field(default_factory=Statistics)
    propose_seconds: list[float] = field(default_factory=list)
    end: ResumePoint | None = None  # where the batch ended (fail-fast may cut it short)


@dataclass(slots=True)
class _FailFast:
    """The run's first records, while they all fail the same way (``fail_fast_records``)."""

    limit: int
    armed: bool
    failed: int = 0
    kind: tuple[str, str] | None = None  # (stage, error type)
    example: str = ""

    def see(self, event: Any) -> None:
        """One record's terminal event, in record order."""
        if not self.armed:
            return
        if isinstance(event, ProposeSucceeded):
            self.armed = False  # a record made it: the loader works
        elif isinstance(event, RecordFailed) and event.stage != "read":
            kind = (event.stage, event.error_type)
            if self.kind is None:
                self.kind, self.example = kind, event.message
            elif kind != self.kind:
                self.armed = False  # failures of several kinds: the data, not the loader
                return
            self.failed += 1

    @property
    def tripped(self) -> bool:
        return self.armed and self.failed >= self.limit


class _Stop(Exception):
    pass


class Runner:
    def __init__(
        self,
        loader: Loader,
        store: Store,
        target: GraphTarget,
        file: str,
        options: RunOptions | None = None,
        observers: Sequence[RunObserver] = (),
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
    ) -> None:
        self.loader = loader
        self.store = store
        self.target = target
        self.file = file
        self.opt = options or RunOptions()
        self.observers = list(observers)
        self.sleep = sleep
        # A worker names its runs after its job (fleet.job_run_id), so the journal says
        # which delivery of which job made a run.
        self.run_id = run_id or str(uuid.uuid4())
        self.source_type = self.opt.source_type or loader.source_type_name
        self.stats = Statistics()
        self._stop_reason: str | None = None
        # offset -> journal position of the failure a DLQ retry answers (journal_loader/dlq.py)
        self.retry_of: dict[int, int] = {}
        self._registered_new = False  # this run registered its source (not a resume)
        self._consecutive_transient = 0
        self._in_doubt: set[int] = set()  # offsets attempted on a remote target, no outcome
        self._attempts: dict[int, set[str]] = {}  # their attempts' tokens (ProposeAttempted)
        self._reached: set[int] = set()  # offsets of this attempt whose calls may have committed
        self.file_hash = ""
        # Fail fast: armed until a record of this run succeeds or fails differently.
        limit = self.opt.fail_fast_records
        self._fail_fast = _FailFast(limit, armed=limit > 0)

    # --- the whole run ---------------------------------------------------------------------
    def run(self) -> RunReport:
        started = time.monotonic()
        started_at = utcnow()
        report = RunReport(
            status=FAILED,
            run_id=self.run_id,
            source_type=self.source_type,
            file=self.file,
            started_at=started_at.isoformat(),
        )
        src: SourceFile | None = None
        frozen_before = gc.get_freeze_count()
        thresholds = gc.get_threshold()
        # A batch allocates tens of thousands of tuples that live until its commit: with the
        # default thresholds the collector rescans them over and over.
        gc.set_threshold(max(thresholds[0], 50_000), max(thresholds[1], 20), thresholds[2])
        try:
            self.target.prepare()
            src = open_source(self.file, update_frequency=self.opt.update_frequency)
            report.file_hash, report.version_label = src.sha256, src.version_label
            self.file_hash = src.sha256
            holder = {
                "run_id": self.run_id,
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "started_at": started_at.isoformat(timespec="seconds"),
            }
            with self.store.lock_source(f"{self.source_type}:{src.sha256}", holder) as lock:
                self._run_locked(src, lock, report)
        except JournalLoaderError as e:
            report.message = scrub(str(e))
            raise
        finally:
            gc.set_threshold(*thresholds)
            if frozen_before == 0:
                gc.unfreeze()
            if src is not None:
                src.close()
            report.duration_seconds = round(time.monotonic() - started, 3)
            if report.duration_seconds > 0:
                report.records_per_second = round(
                    report.statistics.total_processed / report.duration_seconds, 1
                )
            for o in self.observers:
                _call(o, "on_finish", report)
        return report

    def _run_locked(self, src: SourceFile, lock: SourceLock, report: RunReport) -> None:
        self.lock = lock
        registered = self._register(src, report)
        if registered is None:
            return
        start, reader = registered
        report.source_id = self.source_id
        report.resumed_from = start.offset
        if start.at_start and self._registered_new:
            self._supersede(src, report)
        for o in self.observers:
            _call(
                o,
                "on_start",
                {
                    "source_id": self.source_id,
                    "run_id": self.run_id,
                    "source_type": self.source_type,
                    "file": self.file,
                    "file_size": src.size,
                    "resumed_from": start.offset,
                    "resumed_byte": start.byte,
                    "loader": self.loader.name,
                },
            )
        status, reason, in_file = FAILED, "", None
        with self._signals(), reader:
            try:
                status, reason, in_file = self._load(src, reader)
            except FencedOutError as e:
                # Another run owns the source now: it must not see a single write from us.
                report.status, report.message = FAILED, str(e)
                report.statistics = self.stats
                return
            except _Stop as e:
                status, reason = FAILED, scrub(str(e))
                report.error_kind = "interrupted"
            except JournalLoaderError as e:
                status, reason = FAILED, scrub(str(e))
                report.error_kind = "usage" if e.exit_code == 2 else "error"
            except Exception as e:  # a bug: still journal why the run stopped
                status, reason = FAILED, scrub(f"{type(e).__name__}: {e}")
                report.error_kind = "error"
                log.exception("run %s stopped by an unexpected error", self.run_id)
        report.status, report.message = status, reason
        report.statistics = self.stats
        report.records_in_file = in_file
        self._finish(status, reason, in_file, report)
        if self.stats.failed:
            report.failure_groups = self._failure_groups()

    # --- registration: SourceRegistered / LoadStarted / RunAbandoned / RunStarted --------------
    def _register(
        self, src: SourceFile, report: RunReport
    ) -> tuple[queries.Checkpoint, RecordReader] | None:
        opened: list[RecordReader] = []

        def attempt() -> tuple[queries.Checkpoint, RecordReader] | None:
            for old in opened:  # a retried attempt opens the file again
                old.close()
            opened.clear()
            with self.store.transaction() as tx:
                q = queries.queries(tx.store.dialect)
                identity = {"source_type": self.source_type, "file_hash": src.sha256}
                row = tx.fetchone(q["source_by_identity"], identity)
                if row is not None and tx.store.dialect == "postgresql":
                    # A run that lost its lock may still be inside a batch transaction (a
                    # stopped or cut-off process): wait for it to end before reading where
                    # the source stands, or this run would resume from a checkpoint that
                    # batch then moves. The batch holds this row since its check_lease.
                    # (SQLite has one writer at a time: a stale read fails its write.)
                    tx.fetchone(
                        "SELECT generation FROM source_leases WHERE source_id = :source_id "
                        "FOR UPDATE",
                        {"source_id": int(row[0])},
                    )
                    row = tx.fetchone(q["source_by_identity"], identity)
                events: list[PendingEvent] = []
                head: bytes | None = None
                self._registered_new = row is None
                if row is None:
                    self.source_id = int(tx.fetchone(q["next_source_id"])[0])
                    events.append(PendingEvent.of(None, self._source_registered(src)))
                    events.append(PendingEvent.of(None, LoadStarted(reason="first")))
                    mode = "new"
                else:
                    self.source_id, status, current_run, last_position = (
                        int(row[0]),
                        row[1],
                        row[2],
                        int(row[3]),
                    )
                    report.source_id = self.source_id
                    if status == COMPLETED and not self.opt.force:
                        report.status = ALREADY
                        report.message = (
                            f"already processed: source {self.source_id} ({src.file_name}, "
                            f"sha256 {src.sha256[:12]}) completed; use --force to load it again"
                        )
                        return None
                    head = bytes(
                        tx.fetchone(
                            queries.queries(tx.store.dialect)["event_at"],
                            {"position": last_position},
                        )[9]
                    )
                    if status == "processing":
                        # We hold the lock, so the run that left it 'processing' is dead.
                        events.append(
                            PendingEvent.of(
                                None,
                                RunAbandoned(
                                    abandoned_run_id=current_run or "",
                                    last_position=last_position,
                                    reason="the process stopped without finishing "
                                    f"(killed or crashed); run {self.run_id} takes over",
                                ),
                            )
                        )
                    if self.opt.force:
                        events.append(PendingEvent.of(None, LoadStarted(reason="force")))
                        mode = "new"
                    else:
                        mode = "resume"
                start = (
                    queries.Checkpoint(0, 0, 0)
                    if mode == "new"
                    else queries.checkpoint(tx, self.source_id)
                )
                if not self.target.transactional and mode == "resume":
                    self._attempts = queries.in_doubt(tx, self.source_id, start.position)
                    self._in_doubt = set(self._attempts)
                # The header (and dialect) go to the journal: `dlq retry` re-parses raw
                # records with them, without the file.
                reader = self._open_reader(src, start)
                opened.append(reader)
                events.append(
                    PendingEvent.of(
                        None,
                        RunStarted(
                            loader=self.loader.name,
                            mode=mode,
                            resume_offset=start.offset,
                            resume_line=start.line,
                            resume_byte=start.byte,
                            start_from=self.opt.start_from,
                            limit=self.opt.limit,
                            batch_size=self.opt.batch_size,
                            hostname=socket.gethostname(),
                            pid=os.getpid(),
                            version=__version__,
                            header=reader.header,
                            header_raw=reader.header_raw,
                            reader=self._reader_options(reader),
                        ),
                    )
                )
                now = utcnow()
                self.generation = self._acquire_lease(tx, now)
                self.writer = JournalWriter(self.source_id, self.run_id, head)
                rows = self.writer.append(tx, events, now)
                projections.apply(tx, rows)
            self.writer.confirm()
            return start, reader

        try:
            result: tuple[queries.Checkpoint, RecordReader] | None = self._retrying(
                attempt, "registering the source"
            )
        except BaseException:
            for r in opened:
                r.close()
            raise
        return result

    def _supersede(self, src: SourceFile, report: RunReport) -> None:
        """A new source whose file name a partial source of this type had (the file was
        edited, appended to or truncated after a killed run): retire that source, saying so
        (journal_loader/abandon.py explains the decision)."""
        try:
            done, notes = supersede_partial(
                self.store, self.source_id, self.source_type, src.file_name, src.sha256
            )
        except JournalLoaderError as e:  # retiring is housekeeping: the load goes on
            log.warning("could not retire earlier partial sources of %s: %s", src.file_name, e)
            return
        for a in done:
            notes.append(
                f"source {a.source_id} (same type and file name, other content) was left "
                f"{a.status_before} at record {a.next_offset:,}; it is now superseded by "
                f"source {self.source_id} (its facts and DLQ entries are kept)"
            )
        for note in notes:
            log.warning("%s", note)
        report.notes.extend(notes)

    def _acquire_lease(self, tx: Tx, now: Any) -> int:
        """Bump the source's fencing generation; this run now owns it (see check_lease)."""
        row = tx.fetchone(
            queries.queries(tx.store.dialect)["acquire_lease"],
            {
                "source_id": self.source_id,
                "run_id": self.run_id,
                "hostname": socket.gethostname()[:255],
                "pid": os.getpid(),
                "now": tx.timestamp(now),
            },
        )
        return int(row[0])

    def attach(self, source_id: int, lock: SourceLock) -> None:
        """Write to an already registered source outside a file run (``dlq retry``): take the
        lease and pick up the source's hash chain. The caller holds the source's lock."""
        self.source_id, self.lock = source_id, lock

        def attempt() -> None:
            with self.store.transaction() as tx:
                row = tx.fetchone(
                    "SELECT last_position FROM sources WHERE source_id = :source_id",
                    {"source_id": source_id},
                )
                if row is None:
                    raise JournalLoaderError(f"no source {source_id}")
                head = tx.fetchone(
                    queries.queries(tx.store.dialect)["event_at"], {"position": int(row[0])}
                )
                self.generation = self._acquire_lease(tx, utcnow())
                self.writer = JournalWriter(source_id, self.run_id, bytes(head[9]))

        self._retrying(attempt, f"attaching to source {source_id}")

    def commit_records(self, records: list[RawRecord]) -> None:
        """Process and commit records outside the file loop, without a checkpoint: the
        records of a DLQ retry (``retry_of`` set by the caller)."""
        self._commit_batch(records, None)

    def _open_reader(self, src: SourceFile, start: queries.Checkpoint) -> RecordReader:
        opt = self.opt
        return open_reader(
            src.path,
            format=opt.format,
            encoding=opt.encoding,
            delimiter=opt.delimiter,
            quotechar=opt.quotechar,
            field_size_limit=opt.field_size_limit,
            max_record_bytes=opt.max_record_bytes,
            start=None if start.at_start else ResumePoint(start.offset, start.line, start.byte),
            fileobj=src.fileobj,
        )

    def _reader_options(self, reader: RecordReader) -> dict[str, Any]:
        opt = self.opt
        return {
            "format": reader.format,
            "gzipped": reader.gzipped,
            "encoding": opt.encoding,
            "delimiter": opt.delimiter,
            "quotechar": opt.quotechar,
            "field_size_limit": opt.field_size_limit,
            "max_record_bytes": opt.max_record_bytes,
        }

    def _source_registered(self, src: SourceFile) -> SourceRegistered:
        from journal_loader.sources.readers import detect_format

        fmt, gz = detect_format(src.path, self.opt.format)
        return SourceRegistered(
            source_type=self.source_type,
            source_name=self.opt.source_name or self.source_type,
            file_name=src.file_name,
            file_path=os.path.abspath(src.path),
            file_hash=src.sha256,
            file_size=src.size,
            file_mtime=src.mtime_iso,
            version_label=src.version_label,
            update_frequency=self.opt.update_frequency,
            format=fmt,
            gzipped=gz,
            loader=self.loader.name,
        )

    # --- the batch loop -------------------------------------------------------------------
    def _load(self, src: SourceFile, reader: RecordReader) -> tuple[str, str, int | None]:
        opt = self.opt
        records = _Peekable(reader)
        remaining = opt.limit
        while True:
            if self._stop_reason is None and opt.stop is not None and opt.stop():
                self._stop_reason = STOP_REQUESTED
            if self._stop_reason:
                raise _Stop(self._stop_reason)
            size = opt.batch_size if remaining is None else min(opt.batch_size, remaining)
            batch: list[RawRecord] = []
            # While fail-fast may trip, where each record ends: a batch can end early there.
            ends: list[ResumePoint] | None = [] if self._fail_fast.armed else None
            file_error: SourceFileError | None = None
            try:
                records.take(size, batch, ends)
            except SourceFileError as e:  # e.g. truncated gzip: keep what came before it
                file_error = e
            if batch:
                position = records.position()
                src.check_unchanged()
                done = self._commit_batch(batch, position, ends)
                position = done.end or position
                if remaining is not None:
                    remaining -= len(batch)
                for o in self.observers:
                    _call(o, "on_batch", self.stats, position, reader.bytes_read())
                self._check_fail_fast(done)
                self._check_failure_limits()
            if file_error is not None:
                raise file_error
            if not records.has_next():
                src.check_unchanged()
                return COMPLETED, "", reader.position.offset
            if remaining is not None and remaining <= 0:
                return PARTIAL, f"stopped by --limit {opt.limit}; rerun to continue", None

    def _cut_short(self, batch: list[RawRecord], result: _BatchResult) -> None:
        """Raise _CutShort when fail-fast trips before the last record of this batch, so
        that the batch is redone up to the record that trips it: the run then stops right
        there (``fail_fast_records`` records in the DLQ, not a whole batch of them)."""
        trial = dataclasses.replace(self._fail_fast)
        for pending in _outcomes(result):
            trial.see(pending.event)
            if not trial.armed:
                return
            if trial.tripped:
                keep = (pending.record_offset or 0) - batch[0].offset + 1
                if keep < len(batch):
                    raise _CutShort(keep)
                return

    def _check_fail_fast(self, result: _BatchResult) -> None:
        """Stop a run whose first ``fail_fast_records`` records all failed at parse,
        validate or propose with the same kind of error: a loader that reads a column the
        file does not have, a node type the config does not list. Rerunning cannot help, so
        the run stops (exit 2) after those records, which are in the DLQ; a fixed loader
        resumes after them. Skips and unreadable records neither count nor disarm it. The
        batch itself ended at the record that tripped it (``_cut_short``), except on a
        target outside the journal's transaction, which is checked after its batch."""
        ff = self._fail_fast
        if not ff.armed:
            return
        for pending in _outcomes(result):
            ff.see(pending.event)
        if ff.tripped and ff.kind is not None:
            stage, error_type = ff.kind
            raise FailFastError(
                f"the first {ff.limit} records of this run all failed at {stage} with "
                f"{error_type} ({ff.example}): the loader or the config looks wrong, not the "
                f"data (processing.fail_fast_records: {ff.limit}; 0 turns this check off). "
                f"Those records are in the DLQ (journal-loader dlq list --source "
                f"{self.source_id}); fix it and rerun: the run resumes after them, and "
                "`journal-loader dlq retry` loads them again"
            )

    def _check_failure_limits(self) -> None:
        """Stop a run whose input is plainly wrong (``max_failed_records``, ``max_failure_rate``)
        instead of filling the DLQ with the whole file."""
        s, opt = self.stats, self.opt
        if opt.max_failed_records is not None and s.failed > opt.max_failed_records:
            raise FailureLimitError(
                f"{s.failed} records failed in this run, more than max_failed_records "
                f"({opt.max_failed_records}); the input looks wrong: see `journal-loader dlq "
                f"list --source {self.source_id}`; fix it and rerun to continue"
            )
        if (
            opt.max_failure_rate is not None
            and s.total_processed >= opt.failure_rate_min_records
            and s.failed / s.total_processed > opt.max_failure_rate
        ):
            raise FailureLimitError(
                f"{s.failed} of {s.total_processed} records failed in this run "
                f"({s.failed / s.total_processed:.1%}), above max_failure_rate "
                f"({opt.max_failure_rate:.1%}); see `journal-loader dlq list --source "
                f"{self.source_id}`; fix the input or the loader and rerun to continue"
            )

    def _commit_batch(
        self,
        batch: list[RawRecord],
        position: ResumePoint | None,
        ends: list[ResumePoint] | None = None,
    ) -> _BatchResult:
        safe = False
        while True:
            try:

                def attempt(
                    mode: bool = safe,
                    records: list[RawRecord] = batch,
                    at: ResumePoint | None = position,
                    record_ends: list[ResumePoint] | None = ends,
                ) -> _BatchResult:
                    return self._batch_transaction(records, at, mode, record_ends)

                done: _BatchResult = self._retrying(attempt, f"batch at record {batch[0].offset}")
                # What survived the batch is long-lived (the graph's caches): move it out of the
                # cyclic GC's sight, or every full collection walks the whole cache (measured:
                # 36 collections cost a quarter of a 30k-record load). Reference counting
                # still frees it; gc.unfreeze() at the end of the run hands it back.
                gc.freeze()
                self.stats.add(done.stats)
                for o in self.observers:  # committed batches only: a retried one counts once
                    _call(o, "on_propose_durations", done.propose_seconds)
                return done
            except _CutShort as cut:
                # fail-fast trips inside this batch: the batch ends with the record that
                # tripped it (nothing of the longer attempt was kept: it rolled back)
                assert ends is not None
                batch, ends = batch[: cut.keep], ends[: cut.keep]
                position = ends[-1]
            except StorageError as e:
                if safe or not is_record_error(e):
                    raise
                log.warning(
                    "batch at record %d: %s; redoing it record by record", batch[0].offset, e
                )
                for o in self.observers:
                    _call(o, "on_retry", "record_by_record", scrub(str(e)), 0.0)
                safe = True

    def _batch_transaction(
        self,
        batch: list[RawRecord],
        position: ResumePoint | None,
        safe: bool,
        ends: list[ResumePoint] | None = None,
    ) -> _BatchResult:
        if not self.target.transactional:
            return self._batch_two_phase(batch, position)  # fail-fast checks after the batch
        try:
            with self.store.transaction() as tx:
                self._check_lease(tx)
                self.target.begin_batch(tx, safe_mode=safe)
                result = _BatchResult()
                if self.target.wants_prefetch:
                    prepared = [
                        (rec, parsed)
                        for rec in batch
                        if (parsed := self._prepare(rec, result)) is not None
                    ]
                    self._prefetch(tx, prepared)
                    for rec, parsed in prepared:
                        self._propose_record(rec, parsed, result)
                else:
                    for rec in batch:
                        self._process(rec, result)
                if ends is not None and position is not None:
                    self._cut_short(batch, result)  # rolls back: redo only up to the trip
                    result.end = position
                if position is not None:  # None: a DLQ retry, which must not move the checkpoint
                    result.events.append(PendingEvent.of(None, self._checkpoint(position, result)))
                self.target.flush(tx)
                rows = self.writer.append(tx, result.events)
                projections.apply(tx, rows)
                faults.point("before_commit")
                self._check_lock()
        except BaseException:
            self.writer.discard()
            self.target.after_rollback()
            raise
        self.writer.confirm()
        self.target.after_commit()
        faults.point("after_commit")
        return result

    def _check_lock(self) -> None:
        """Just before COMMIT: a run whose lock connection ended while it was inside the
        batch (stopped, cut off) must not commit it; the run that took the lock waits for
        this transaction to end (see _register) and then resumes before this batch."""
        if not self.lock.is_held():
            raise FencedOutError(
                f"run {self.run_id} lost its lock on source {self.source_id} during a batch "
                "(its lock connection ended); the batch is rolled back"
            )

    def _batch_two_phase(
        self, batch: list[RawRecord], position: ResumePoint | None
    ) -> _BatchResult:
        """A batch for a target outside the journal's transaction (a Propose API in another
        database): its effects commit on the target before the batch can commit here.

        Effectively once, in three steps: (A) journal ``ProposeAttempted`` for the records
        about to be proposed, and commit; (B) propose them; (C) journal their outcomes and the
        checkpoint, and commit. A crash between A and C leaves the records attempted but
        without outcome: the next run reads the batch again (the checkpoint did not move),
        finds them in doubt (``_in_doubt``), proposes them again with the target told so, and
        the target's deduplication answers ``duplicate`` for what it had already applied:
        the success it was. Outcomes are journaled only in C, so each record still ends with
        exactly one terminal event. A retried attempt of this batch (same process) marks in
        doubt only the records that may have reached the target (``_reached``: those whose
        remote transaction got to its commit); the others were rolled back or never sent.
        A target that keeps its outcomes (``stored_outcomes``: a Propose API client with an
        outcome table) says exactly which in-doubt records committed, also after a crash:
        their answers are read back (``ProposeSucceeded.recovered``), the rest is proposed
        as new.
        Pinned by tests/test_propose_client_crash.py and
        tests/test_propose_client_deployment.py.
        """
        result = _BatchResult()
        prepared = [
            (rec, parsed) for rec in batch if (parsed := self._prepare(rec, result)) is not None
        ]
        doubtful = {rec.offset for rec, _ in prepared if rec.offset in self._in_doubt}
        recovered: dict[int, list[ProposeResult]] = {}
        if doubtful:
            stored = self.target.stored_outcomes(
                self.source_id, {o: self._attempts.get(o, set()) for o in doubtful}
            )
            if stored is not None:
                # The target keeps its outcomes with the attempt's token, in the transaction
                # of the record's calls: what reached it is read back (its answers exactly),
                # the rest is known never to have committed there: not in doubt.
                # (An attempt made while the target kept no outcomes, "", stays in doubt.)
                recovered = {o: stored[o] for o in doubtful if o in stored}
                doubtful = {
                    o for o in doubtful if o not in recovered and "" in self._attempts.get(o, {""})
                }
        to_propose = [(rec, parsed) for rec, parsed in prepared if rec.offset not in recovered]
        attempt = uuid.uuid4().hex if self.target.keeps_outcomes else ""
        self._reached = set()
        attempted = False
        try:
            if to_propose:
                with self.store.transaction() as tx:  # (A)
                    self._check_lease(tx)
                    self.target.begin_batch(tx)
                    rows = self.writer.append(
                        tx,
                        [
                            PendingEvent.of(
                                rec.offset,
                                ProposeAttempted(
                                    key=f"{self.file_hash}:{rec.offset}",
                                    in_doubt=rec.offset in doubtful,
                                    attempt=attempt,
                                ),
                            )
                            for rec, _ in to_propose
                        ],
                    )
                    projections.apply(tx, rows)
                self.writer.confirm()
                self._in_doubt.update(rec.offset for rec, _ in to_propose)
                for rec, _ in to_propose:
                    self._attempts.setdefault(rec.offset, set()).add(attempt)
                attempted = True
            self.target.attempt = attempt or None
            for rec, parsed in prepared:  # (B)
                answers = recovered.get(rec.offset)
                if answers is not None:
                    self._recovered(rec, answers, result)
                else:
                    self._propose_record(rec, parsed, result, in_doubt=rec.offset in doubtful)
            with self.store.transaction() as tx:  # (C)
                self._check_lease(tx)
                if position is not None:
                    result.events.append(PendingEvent.of(None, self._checkpoint(position, result)))
                rows = self.writer.append(tx, result.events)
                projections.apply(tx, rows)
                faults.point("before_commit")
                self._check_lock()
        except BaseException:
            self.writer.discard()
            self.target.after_rollback()
            if attempted:
                # In this process we know which records reached the deployment: a record
                # whose calls were rolled back (or never made) is not in doubt on a retry,
                # unless an earlier attempt may have committed it. (After a crash only the
                # journal is left, and every attempted record is in doubt.)
                self._in_doubt.difference_update(
                    rec.offset
                    for rec, _ in to_propose
                    if rec.offset not in self._reached and rec.offset not in doubtful
                )
            raise
        self.writer.confirm()
        self.target.after_commit()
        self._in_doubt.difference_update(rec.offset for rec in batch)
        for rec in batch:
            self._attempts.pop(rec.offset, None)
        faults.point("after_commit")
        return result

    def _prefetch(self, tx: Tx, prepared: list[tuple[RawRecord, dict[str, Any]]]) -> None:
        """A planning pass: run the loader's propose against a recorder to learn which
        entities and facts the batch names, and let the target look them up in bulk. The
        loader's code runs twice per record; on PostgreSQL that is far cheaper than a round
        trip per cache miss (measured: 145 us each, 2-3 per record of the example)."""
        recorder = FactRecorder()
        for _rec, parsed in prepared:
            try:
                self.loader.propose(parsed, recorder)
            except Exception:  # noqa: S112 - the real pass says what is wrong with it
                continue
        if recorder.entities:
            self.target.prefetch(tx, recorder.entities, recorder.facts)

    @staticmethod
    def _checkpoint(position: ResumePoint, result: _BatchResult) -> BatchCommitted:
        return BatchCommitted(
            next_offset=position.offset,
            next_line=position.line,
            next_byte=position.byte,
            succeeded=result.stats.successful,
            failed=result.stats.failed,
            skipped=result.stats.skipped,
        )

    def _check_lease(self, tx: Tx) -> None:
        q = queries.queries(tx.store.dialect)
        updated = tx.run(
            q["check_lease"],
            {
                "source_id": self.source_id,
                "generation": self.generation,
                "now": tx.timestamp(utcnow()),
            },
        )
        if updated != 1:
            raise FencedOutError(
                f"run {self.run_id} lost source {self.source_id} to a newer run "
                "(lease generation changed); stopping without writing"
            )
        if not self.lock.is_held():
            raise FencedOutError(
                f"run {self.run_id} lost its lock on source {self.source_id} "
                "(its lock connection ended); stopping without writing"
            )

    # --- one record -----------------------------------------------------------------------
    def _process(self, rec: RawRecord, out: _BatchResult) -> None:
        """Exactly one terminal event per record (invariant 3)."""
        parsed = self._prepare(rec, out)
        if parsed is not None:
            self._propose_record(rec, parsed, out)

    def _prepare(self, rec: RawRecord, out: _BatchResult) -> dict[str, Any] | None:
        """Read errors, skips, parse and validate. Returns the parsed record to propose, or
        None when the record already has its terminal event."""
        offset = rec.offset
        out.stats.total_processed += 1
        if rec.error is not None:
            self._fail(rec, "read", rec.error_type or "read_error", rec.error, None, out)
            return None
        if self.opt.start_from is not None and offset < self.opt.start_from:
            self._skip(rec, f"before --start-from {self.opt.start_from}", out)
            return None
        stage = "parse"
        parsed: dict[str, Any] | None = None
        try:
            assert rec.data is not None
            parsed = self.loader.parse(rec.data)
            if parsed is None:
                self._skip(rec, "parse returned None", out)
                return None
            parsed_event = PendingEvent.of(
                offset,
                RecordParsed(
                    line=rec.line,
                    byte_start=rec.byte_start,
                    byte_end=rec.byte_end,
                    raw=rec.raw,
                    record=parsed,
                ),
            )
            stage = "validate"
            problems = self.loader.validate(parsed)
        except SkipRecord as s:
            self._skip(rec, s.reason, out)
            return None
        except RecordError as e:
            self._fail(rec, stage, e.error_type, e.message, parsed, out, e.details)
            return None
        except (JournalLoaderError, KeyboardInterrupt):
            raise
        except Exception as e:
            # A bug in the loader's code, or a value msgspec cannot encode: this record fails;
            # a loader that fails every record is stopped by fail-fast or the failure limits.
            message = describe_error(e, rec.data if stage == "parse" else parsed, stage)
            self._fail(rec, stage, type(e).__name__, message, parsed, out)
            return None
        out.events.append(parsed_event)
        if problems:
            self._fail(rec, "validate", "ValidationError", "; ".join(problems), parsed, out)
            return None
        return parsed

    def _propose_record(
        self, rec: RawRecord, parsed: dict[str, Any], out: _BatchResult, in_doubt: bool = False
    ) -> None:
        offset = rec.offset
        started = time.perf_counter()
        try:
            results = self._propose(offset, parsed, in_doubt)
        except SkipRecord as s:
            self._skip(rec, s.reason, out)
            return
        except RecordError as e:
            self._fail(rec, e.stage, e.error_type, e.message, parsed, out, e.details)
            return
        except (JournalLoaderError, KeyboardInterrupt):
            raise
        except Exception as e:
            self._fail(
                rec, "propose", type(e).__name__, describe_error(e, parsed, "propose"), parsed, out
            )
            return
        finally:
            out.propose_seconds.append(time.perf_counter() - started)
        out.events.append(
            PendingEvent.of(
                offset, ProposeSucceeded(results=results, retry_of=self.retry_of.get(offset))
            )
        )
        self._count_success(results, out.stats, in_doubt)

    def _recovered(self, rec: RawRecord, results: list[ProposeResult], out: _BatchResult) -> None:
        """An in-doubt record whose earlier attempt committed on the target: its answers are
        read back from the target's outcome table, not asked again."""
        out.events.append(
            PendingEvent.of(
                rec.offset,
                ProposeSucceeded(
                    results=results, retry_of=self.retry_of.get(rec.offset), recovered=True
                ),
            )
        )
        self._count_success(results, out.stats, in_doubt=False)

    @staticmethod
    def _count_success(results: list[ProposeResult], stats: Statistics, in_doubt: bool) -> None:
        stats.successful += 1
        if in_doubt:
            stats.records_replayed += 1
        for r in results:
            relationship_counted = False
            for a in r.actions:
                action = a.action
                if action == "entity_created":
                    stats.entities_created += 1
                elif action == "entity_matched":
                    stats.entities_matched += 1
                elif action == "relationship_created":
                    stats.relationships_created += 1
                    relationship_counted = True
                elif action == "relationship_duplicate":
                    stats.relationships_duplicate += 1
                    relationship_counted = True
                elif action == "relationship_updated":
                    stats.relationships_updated += 1
                    relationship_counted = True
            if not relationship_counted and any(
                a.action == "relationship_conflicted" for a in r.actions
            ):
                # A Propose API deployment answers a new relationship that conflicts with
                # `relationship_conflicted` alone; it was stored, so it was created.
                stats.relationships_created += 1
            stats.conflicts_detected += len(r.conflicts)

    def _propose(
        self, offset: int, parsed: dict[str, Any], in_doubt: bool = False
    ) -> list[ProposeResult]:
        target = self.target
        faults.point("before_propose")
        target.begin_record(self.source_id, offset, self.run_id)
        if in_doubt:
            target.in_doubt = True  # a remote target marks the results of a re-proposal
        try:
            self.loader.propose(parsed, target.client)
            results = list(target.record_results())
            for r in results:
                if r.status == STATUS_ERROR:
                    raise ProposeAnswerError(r.error_message or "the graph answered error")
        except BaseException:
            target.abort_record()  # a remote target rolls the record's calls back
            raise
        if not target.transactional:
            self._reached.add(offset)  # from its commit on, the deployment may have it
        target.finish_record()  # in safe mode this writes, and may fail the record
        faults.point("after_propose")
        return results

    def _skip(self, rec: RawRecord, reason: str, out: _BatchResult) -> None:
        out.events.append(
            PendingEvent.of(
                rec.offset,
                RecordSkipped(
                    reason=reason,
                    line=rec.line,
                    byte_start=rec.byte_start,
                    byte_end=rec.byte_end,
                    raw=rec.raw,
                    retry_of=self.retry_of.get(rec.offset),
                ),
            )
        )
        out.stats.skipped += 1

    def _fail(
        self,
        rec: RawRecord,
        stage: str,
        error_type: str,
        message: str,
        parsed: dict[str, Any] | None,
        out: _BatchResult,
        details: dict[str, Any] | None = None,
    ) -> None:
        failed = RecordFailed(
            stage=stage,
            error_type=error_type,
            message=scrub(message),
            line=rec.line,
            byte_start=rec.byte_start,
            byte_end=rec.byte_end,
            raw=rec.raw,
            record=parsed,
            details=details or {},
            retry_of=self.retry_of.get(rec.offset),
        )
        try:
            event = PendingEvent.of(rec.offset, failed)
        except (TypeError, msgspec.EncodeError):  # the parsed record itself cannot be encoded
            failed = msgspec.structs.replace(failed, record=None, details={})
            event = PendingEvent.of(rec.offset, failed)
        # A RecordParsed for this offset may be in the batch already; it stays: it is what
        # the loader made of the record, and the failure follows it.
        out.events.append(event)
        out.stats.failed += 1

    # --- the end ---------------------------------------------------------------------------
    def _finish(self, status: str, reason: str, in_file: int | None, report: RunReport) -> None:
        def attempt() -> None:
            with self.store.transaction() as tx:
                self._check_lease(tx)
                rows = self.writer.append(
                    tx,
                    [
                        PendingEvent.of(
                            None,
                            RunFinished(
                                status=status,
                                reason=reason,
                                statistics=self.stats,
                                records_in_file=in_file,
                            ),
                        )
                    ],
                )
                projections.apply(tx, rows)
            self.writer.confirm()

        try:
            self._retrying(attempt, "journaling the end of the run", retries=2)
        except JournalLoaderError as e:
            self.writer.discard()
            # The database is gone: the next run will find this one 'processing', see that
            # nobody holds the lock, journal it as abandoned and resume.
            log.error("could not journal the end of run %s: %s", self.run_id, e)
            if report.status != FAILED:
                report.status = FAILED
            report.message = (report.message + "; " if report.message else "") + (
                f"the run's end could not be journaled: {e}"
            )

    def _failure_groups(self) -> list[FailureGroup]:
        """What went wrong in this run, from the DLQ: its entries whose latest failure is ours.
        Only a summary: a database error here is logged, never fails the run."""
        try:
            return summarise(self.store, source_id=self.source_id, run_id=self.run_id)[
                :FAILURE_GROUPS
            ]
        except Exception as e:
            log.warning("could not summarise the run's failures: %s", scrub(str(e)))
            return []

    # --- helpers ---------------------------------------------------------------------------
    def _retrying(self, fn: Callable[[], Any], what: str, retries: int | None = None) -> Any:
        """Transient errors: exponential backoff with jitter, on the monotonic clock (sleep),
        honouring a target's Retry-After. Nothing of a failed attempt was kept (its
        transaction rolled back), so a retry never counts a record twice.

        The circuit breaker counts transient failures in a row across the whole run (any
        success resets it): past ``circuit_breaker`` the run stops instead of grinding on.

        Conflicts are not outages: another loader committed a unique key first, or two
        transactions deadlocked or failed to serialize. The graph's sorted locks
        (``EmbeddedGraph.prefetch``) keep them rare; when one happens, the attempt is
        retried after a short random delay (so the two do not collide again in step), on a
        budget of its own that the circuit breaker does not see, and a give-up says what
        happened instead of "the database is down". Pinned by
        tests/test_faults.py::test_conflicts_retry_on_their_own_budget.
        """
        limit = self.opt.max_retries if retries is None else retries
        conflict_limit = max(CONFLICT_RETRIES, limit)
        attempt = conflicts = 0
        while True:
            try:
                result = fn()
            except ConflictError as e:
                conflicts += 1
                if conflicts > conflict_limit:
                    raise ConflictError(
                        f"{what}: another loader kept writing the same rows first "
                        f"({conflict_limit} conflicts in a row; last: {e}). Nothing is lost; "
                        "rerun to continue"
                    ) from e
                delay = random.uniform(0, self.opt.retry_delay)
                log.warning(
                    "%s: %s; conflict with another writer, retry %d/%d in %.2fs",
                    what,
                    e,
                    conflicts,
                    conflict_limit,
                    delay,
                )
                for o in self.observers:
                    _call(o, "on_retry", "conflict", scrub(f"{what}: {e}"), delay)
                self.sleep(delay)
            except TransientError as e:
                attempt += 1
                self._consecutive_transient += 1
                if self._consecutive_transient >= self.opt.circuit_breaker:
                    raise CircuitOpenError(
                        f"{what}: {self._consecutive_transient} transient failures in a row "
                        f"(circuit_breaker {self.opt.circuit_breaker}); stopping. Last: {e}. "
                        "Rerun when the database or target is back; nothing is lost"
                    ) from e
                if attempt > limit:
                    raise TransientError(
                        f"{what}: giving up after {limit} retries: {e}. Rerun when the "
                        "database or target is back; nothing is lost"
                    ) from e
                delay = min(self.opt.retry_max_delay, self.opt.retry_delay * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.opt.retry_max_delay))
                log.warning("%s: %s; retry %d/%d in %.2fs", what, e, attempt, limit, delay)
                for o in self.observers:
                    _call(o, "on_retry", "transient", scrub(f"{what}: {e}"), delay)
                self.sleep(delay)
            else:
                self._consecutive_transient = 0
                return result

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT: finish the current batch, journal the run as failed, exit."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: Any) -> None:
            self._stop_reason = f"stopped by {signal.Signals(signum).name}; rerun to continue"

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def describe_error(error: Exception, record: Any, stage: str) -> str:
    """A loader's exception as a DLQ message. A KeyError for a key the record does not have
    names the key, the keys it has (the file's columns, at parse) and the closest one."""
    if (
        isinstance(error, KeyError)
        and len(error.args) == 1
        and isinstance(error.args[0], str)
        and isinstance(record, dict)
        and error.args[0] not in record
    ):
        key, keys = error.args[0], [k for k in record if isinstance(k, str)]
        what = "column" if stage == "parse" else "field"
        where = "the record" if stage == "parse" else "the parsed record"
        return (
            f"no {what} {key!r} in {where} (its {what}s: {', '.join(map(repr, keys))})"
            + did_you_mean(key, keys)
        )
    return str(error) or repr(error)


class _CutShort(Exception):
    """Redo this batch with its first ``keep`` records only (fail-fast trips there)."""

    def __init__(self, keep: int) -> None:
        super().__init__(f"fail-fast: the batch ends after {keep} records")
        self.keep = keep


def _outcomes(result: _BatchResult) -> list[PendingEvent]:
    """The batch's records' outcomes (success or failure), in record order."""
    return sorted(
        (e for e in result.events if isinstance(e.event, ProposeSucceeded | RecordFailed)),
        key=lambda e: e.record_offset or 0,
    )


class _Peekable:
    """One record of look-ahead (to tell "the limit ended the run" from "the file ended").

    ``position()`` is where the record after the last one taken starts: the exact resume
    point. It is read from the reader once per batch (just before the look-ahead moves the
    reader on), not once per record.
    """

    __slots__ = ("_after_taken", "_head", "_it", "_reader")

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._it: Iterator[RawRecord] = iter(reader)
        self._head: RawRecord | None = None
        self._after_taken: ResumePoint = reader.position

    def has_next(self) -> bool:
        if self._head is None:
            self._after_taken = self._reader.position  # before the reader moves past it
            self._head = next(self._it, None)
        return self._head is not None

    def take(self, n: int, batch: list[RawRecord], ends: list[ResumePoint] | None = None) -> None:
        """Append up to n records to ``batch`` (fewer at the end of the file); and, when
        ``ends`` is given, where the record after each one starts (its resume point)."""
        if n > 0 and self._head is not None:
            batch.append(self._head)
            self._head = None
            n -= 1
            if ends is not None:  # the reader has not moved since it read the head
                ends.append(self._reader.position)
        it = self._it
        try:
            for _ in range(n):
                record = next(it, None)
                if record is None:
                    break
                batch.append(record)
                if ends is not None:
                    ends.append(self._reader.position)
        finally:  # also when the reader raises (a truncated gzip): the records before count
            self._after_taken = self._reader.position

    def position(self) -> ResumePoint:
        return self._after_taken


def _call(observer: Any, method: str, *args: Any) -> None:
    fn = getattr(observer, method, None)
    if fn is not None:
        try:
            fn(*args)
        except Exception:  # an observer must never break a run
            log.exception("observer %r failed in %s", observer, method)
