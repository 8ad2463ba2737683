"""Committing a batch of records: one batch, one transaction (invariant 2).

In the transaction: check the fencing token (``Lease.check``); give every record exactly one
terminal event (invariant 3): ``ProposeSucceeded``, ``RecordFailed`` or ``RecordSkipped``,
a failing record undone alone (``GraphTarget.abort_record``); write the graph's buffered
rows, append the events and the checkpoint (``BatchCommitted``, unless the records are a DLQ
retry's), apply the projections; COMMIT.

A record's outcome is decided in one place (``_conclude``), and what an exception means for
a record in one ladder (``_conclude_error``). A transient database error rolls the batch
back and retries it (``RetryPolicy``); a value the database refuses at the bulk write redoes
the batch record by record (safe mode), where it fails only its record.

Two variants of the batch, chosen by the target: a target outside the journal's transaction
gets the batch in three steps (``runner/two_phase.py``); a target whose lookups are round
trips is shown the batch's entities first, by a planning pass of the loader's ``propose``
(``_prefetch``). Where the store writes a batch's journal behind (``appends_behind``: COPY on
PostgreSQL, one statement on SQLite), the next batch, read ahead by the loop, is parsed and
its facts collected while this batch's last rows are written
(``_append_behind_and_plan_ahead``).
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from journal_loader import faults, projections
from journal_loader.errors import (
    JournalLoaderError,
    ProposeAnswerError,
    RecordError,
    SkipRecord,
    StorageError,
)
from journal_loader.graph.protocol import STATUS_ERROR, ProposeResult
from journal_loader.graph.target import FactRecorder, GraphTarget
from journal_loader.journal.events import (
    BatchCommitted,
    ProposeSucceeded,
    RecordFailed,
    RecordParsed,
    RecordSkipped,
    Statistics,
)
from journal_loader.journal.parsed import ShapeCache, TextContext
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.loader import Loader
from journal_loader.runner.lease import Lease, attach, lock_holder
from journal_loader.runner.limits import FailFast
from journal_loader.runner.options import (
    Observers,
    RecordOutcome,
    RetryKind,
    RunOptions,
    Stage,
)
from journal_loader.runner.retry import Backoff, CircuitBreaker, RetryPolicy
from journal_loader.runner.two_phase import InDoubt, two_phase_batch
from journal_loader.secrets import scrub
from journal_loader.sources.readers import RawRecord, ResumePoint
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import is_record_error
from journal_loader.storage.journal_store import source_lock_name
from journal_loader.suggest import did_you_mean

log = logging.getLogger("journal_loader.runner")

Terminal = ProposeSucceeded | RecordFailed | RecordSkipped


@dataclass(slots=True)
class BatchResult:
    events: list[PendingEvent] = field(default_factory=list)
    stats: Statistics = field(default_factory=Statistics)
    propose_seconds: list[float] = field(default_factory=list)
    end: ResumePoint | None = None  # where the batch ended (fail-fast may cut it short)

    def outcomes(self) -> list[PendingEvent]:
        """The records' outcomes (success or failure; skips do not count), in record order."""
        return sorted(
            (e for e in self.events if isinstance(e.event, ProposeSucceeded | RecordFailed)),
            key=lambda e: e.record_offset or 0,
        )


@dataclass(slots=True)
class _Plan:
    """A batch's records parsed and their facts collected (``BatchCommitter._plan``)."""

    batch: list[RawRecord]
    result: BatchResult  # its events (none left: they are in ``planned``) and counts
    planned: list[tuple[RawRecord, dict[str, Any] | None, list[PendingEvent], Any]]
    collected: list[Any]
    answers_read: bool


class _CutShort(Exception):
    """Redo this batch with its first ``keep`` records only (fail-fast trips there)."""

    def __init__(self, keep: int) -> None:
        super().__init__(f"fail-fast: the batch ends after {keep} records")
        self.keep = keep


class BatchCommitter:
    """Commits batches of one source for one run; ``stats`` sums the committed ones."""

    def __init__(
        self,
        *,
        loader: Loader,
        store: Store,
        target: GraphTarget,
        lease: Lease,
        writer: JournalWriter,
        retry: RetryPolicy,
        observers: Observers,
        file_hash: str = "",
        start_from: int | None = None,
        fail_fast: FailFast | None = None,
        in_doubt: dict[int, set[str]] | None = None,
        retry_of: Mapping[int, int] | None = None,
        chunk: int | None = None,
        text_context: TextContext | None = None,
    ) -> None:
        self.loader = loader
        self.chunk = chunk  # a chunk's run: its checkpoints are the chunk's (runner/chunks.py)
        self.store = store
        self.target = target
        self.lease = lease
        self.writer = writer
        self.retry = retry
        self.observers = observers
        self.file_hash = file_hash  # ProposeAttempted's key prefix
        self.start_from = start_from
        self.fail_fast = fail_fast
        self.in_doubt = InDoubt.of(in_doubt or {})
        # offset -> journal position of the failure a DLQ retry answers (``retry_records``)
        self.retry_of: Mapping[int, int] = retry_of or {}
        self.stats = Statistics()
        # The loader read an answer inside propose: its facts are not collected any more
        # (journal_loader/graph/batch.py)
        self._answers_read = False
        # RecordParsed without the record where its text rebuilds it (journal/parsed.py):
        # only with the run's RunStarted to rebuild from (not a DLQ retry's records), and
        # only in one-transaction batches, where a record and the one whose keys it refers
        # to commit together (reset at each attempt).
        self._shapes = None if text_context is None else ShapeCache(text_context)
        self._shapes_on = False
        self._shapes_of: BatchResult | None = None  # the attempt the shapes are of
        # The next batch, read ahead by the loop (``commit(ahead=...)``), and its plan made
        # while this batch's rows were still being written (``_plan_ahead``).
        self._ahead_batch: list[RawRecord] | None = None
        self._ahead: _Plan | None = None

    @property
    def source_id(self) -> int:
        return self.lease.source_id

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    # --- a batch ---------------------------------------------------------------------------
    @property
    def plans_ahead(self) -> bool:
        """Does a batch gain from being given the next one (``commit(ahead=...)``)? Where
        the batch's journal rows are written behind (``Store.appends_behind``: PostgreSQL's
        COPY, SQLite's one statement), the next batch is read, parsed and its facts
        collected while the database still inserts this one's rows."""
        target = self.target
        return (
            target.transactional
            and target.wants_batch
            and not self._answers_read
            and self.store.appends_behind
        )

    def commit(
        self,
        batch: list[RawRecord],
        position: ResumePoint | None,
        ends: list[ResumePoint] | None = None,
        ahead: list[RawRecord] | None = None,
    ) -> BatchResult:
        """Decide, journal and commit the records' outcomes, retrying as needed; then the
        checkpoint is ``position`` (None: no checkpoint, the records are a DLQ retry's).
        ``ends``, while fail-fast may trip: where each record ends, so the batch can end at
        the record that trips it. ``ahead``: the next batch, already read (``plans_ahead``);
        its records are parsed and their facts collected before this batch's commit, and
        the next ``commit`` of exactly that batch uses that work in its first attempt."""
        self._ahead_batch = ahead
        if self._ahead is not None and self._ahead.batch is not batch:
            self._ahead = None  # planned for a batch that is not this one (a cut, a stop)
        safe = False
        while True:
            try:

                def attempt(
                    mode: bool = safe,
                    records: list[RawRecord] = batch,
                    at: ResumePoint | None = position,
                    record_ends: list[ResumePoint] | None = ends,
                ) -> BatchResult:
                    return self._transaction(records, at, mode, record_ends)

                done = self.retry.call(attempt, f"batch at record {batch[0].offset}")
                # What survived the batch is long-lived (the graph's caches): move it out of
                # the cyclic GC's sight, or every full collection walks the whole cache
                # (measured: 36 collections cost a quarter of a 30k-record load). Reference
                # counting still frees it; gc.unfreeze() at the end of the run hands it back.
                gc.freeze()
                self.stats.add(done.stats)
                # committed batches only: a retried one counts once
                self.observers.on_propose_durations(done.propose_seconds)
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
                self.observers.on_retry(RetryKind.RECORD_BY_RECORD, scrub(str(e)), 0.0)
                safe = True

    def _transaction(
        self,
        batch: list[RawRecord],
        position: ResumePoint | None,
        safe: bool,
        ends: list[ResumePoint] | None = None,
    ) -> BatchResult:
        if not self.target.transactional:
            self._shapes_on = False
            return two_phase_batch(self, batch, position)  # fail-fast checks after the batch
        self._shapes_on = self._shapes is not None
        tx: Tx | None = None
        try:
            with self.store.transaction() as tx:
                self.lease.check(tx)
                self.target.begin_batch(tx, safe_mode=safe)
                result = BatchResult()
                if self.target.wants_batch and not self._answers_read:
                    self._propose_batch(tx, batch, result)
                elif self.target.wants_prefetch:
                    # Every record is prepared before any is proposed (the planning pass
                    # needs them all), but each record's events are put back beside its
                    # outcome, as _propose_batch does: the journal reads record by record
                    # whichever path a batch took (tests/test_graph_batch.py, the variant
                    # with a batch of several records after the switch to fact by fact).
                    events = result.events
                    prepared: list[tuple[RawRecord, dict[str, Any] | None, list[PendingEvent]]]
                    prepared = []
                    for rec in batch:
                        mark = len(events)
                        parsed = self.prepare(rec, result)
                        prepared.append((rec, parsed, events[mark:]))
                        del events[mark:]
                    self._prefetch(tx, [(r, p) for r, p, _ in prepared if p is not None])
                    for rec, parsed, early in prepared:
                        events += early
                        if parsed is not None:
                            self.propose_record(rec, parsed, result)
                else:
                    for rec in batch:
                        parsed = self.prepare(rec, result)
                        if parsed is not None:
                            self.propose_record(rec, parsed, result)
                if ends is not None and position is not None:
                    self._cut_short(batch, result)  # rolls back: redo only up to the trip
                    result.end = position
                if position is not None:
                    result.events.append(PendingEvent.of(None, self.checkpoint(position, result)))
                if self._ahead_batch and self.plans_ahead:
                    self._append_behind_and_plan_ahead(tx, result.events)
                else:
                    self.target.flush(tx)
                    self.append(tx, result.events)
                if not tx.commit_handed_behind:  # (else the COMMIT's thread does these)
                    faults.point("before_commit")
                    self.lease.check_lock()
        except BaseException:
            if tx is not None and tx.committed_behind:
                # The COMMIT ran behind and succeeded, and then this thread raised (only a
                # BaseException can: the planning ahead keeps its errors): the batch is
                # durable, so the chain head and the graph's caches move on with it. The
                # run ends with that exception, and a new run reads both from the database
                # (tests/test_plan_ahead.py checks the batch stays committed and the
                # chain holds), so this only keeps what is in memory true to the database
                # for whatever still holds it.
                self.writer.confirm()
                self.target.after_commit()
            else:
                self.writer.discard()
                self.target.after_rollback()
            raise
        self.writer.confirm()
        self.target.after_commit()
        faults.point("after_commit")
        return result

    def append(self, tx: Tx, events: list[PendingEvent]) -> None:
        """Journal the events in the transaction, and the projections follow in it."""
        rows = self.writer.append(tx, events)
        projections.apply(tx, rows)

    def _append_behind_and_plan_ahead(self, tx: Tx, events: list[PendingEvent]) -> None:
        """``flush`` and ``append``, with the rows written behind (``Tx.write_behind``) while
        the next batch is planned (``_plan_ahead``); then the projections, then COMMIT.

        Why: on PostgreSQL the end of a batch was the server's alone (the graph's last rows,
        the journal's rows, their index entries and foreign-key checks) while the client
        waited, and the start of the next batch the client's alone (reading, parsing and
        collecting its facts: most of the client's work when the loader proposes little).
        Here the two overlap. The events are hash-chained and their positions reserved
        first, in this thread (the chain and the reservation are this batch's, in order);
        only the inserts run behind. It is one transaction still: the projections' queries
        and COMMIT wait for the write and raise its error (the batch then rolls back whole,
        and is retried or redone record by record as before). Measured: bench/HISTORY.md.

        PostgreSQL, when a write handed over during the batch still runs as its records are
        all resolved (the server slower than the client: the example): the chain's
        reservation needs the connection, so it would wait for that write first, doing
        nothing. The batch's last graph rows are queued behind that write instead
        (``Tx.write_behind_queued``), the next batch is planned while both run, and then
        the events are chained, their rows written behind and the projections applied.
        The same rows in the same order on the same transaction; an error of either write
        is raised by the reservation, and the batch rolls back whole. Pinned by
        tests/test_plan_ahead.py (``SlowServer``: the same load as handing the last rows
        over once the write has ended, also with a transient error inside the writes) and
        tests/test_write_behind.py (the queue's contract).

        SQLite: only the journal's rows go behind (one statement, ``SQLiteTx.journal_insert``,
        which runs without the GIL); the graph's last rows are written here first, as
        ``flush`` did (by executemany, which takes the GIL back at every row: a thread would
        wait at each one, beside the planning). SQLite's graph path is otherwise unchanged.

        SQLite also COMMITs behind (``Tx.commit_behind``): the projections are written here
        first, from the chained rows (they read nothing of the journal's), then the thread
        inserts the journal's rows, passes ``before_commit`` (the fault point) and the lock
        check (``Lease.check_lock``, so a run that lost its lock still cannot commit), and
        COMMITs, while this thread plans the next batch. Why: a COMMIT writes every page the
        batch dirtied into the WAL, checksums them and syncs the file, and once the graph's
        indexes outgrow a batch that is ~20-37 ms of each batch of 1,000 records of the
        example (more as the graph grows), all of it in SQLite without the GIL, while the
        planning of the next batch is as long (measured: bench/HISTORY.md). It is one
        transaction still, committed by one COMMIT after every write of the batch
        (invariant 2); the batch is reported committed (``after_commit``, ``confirm``) only
        once the thread has been joined and its COMMIT succeeded, by the store's
        ``transaction()``, which raises the thread's error otherwise (the batch then rolls
        back and is retried, as before). Pinned by tests/test_plan_ahead.py (the same
        journal, graph and DLQ as committing here; a COMMIT that fails for real; a batch
        committed behind while this thread raises) and tests/test_crash.py's matrix (a kill
        at ``before_commit``, now in that thread)."""
        graph_write = self.target.take_flush(tx)
        if graph_write is not None and tx.writes_behind and tx.behind_running:
            # (PostgreSQL, the server still inserting rows handed over during the batch: see
            # the docstring; measured in bench/HISTORY.md, "session 12")
            last_rows = graph_write

            def write_last_rows() -> None:
                last_rows()
                faults.point(faults.QUEUED_WRITE)

            tx.write_behind_queued(write_last_rows)
            self._plan_ahead()
            self._top_up_ids()
            journal_inserts: list[Callable[[], None]] = []
            chained = self.writer.append(tx, events, defer=journal_inserts)
            tx.write_behind(lambda: _run_all(journal_inserts), append=True)
            projections.apply(tx, chained)
            return
        if graph_write is not None and not tx.writes_behind:
            graph_write()
            graph_write = None
        inserts: list[Callable[[], None]] = []
        rows = self.writer.append(tx, events, defer=inserts)

        def write() -> None:
            if graph_write is not None:
                graph_write()
            _run_all(inserts)

        if tx.commits_behind and tx.appends_behind and graph_write is None:
            projections.apply(tx, rows)

            def write_and_check() -> None:
                write()
                faults.point("before_commit")
                self.lease.check_lock()

            tx.commit_behind(write_and_check)
            self._plan_ahead()
            return
        if not tx.write_behind(write, append=True):  # the graph's last write still runs
            tx.join_behind()
            tx.write_behind(write, append=True)
        self._plan_ahead()
        self._top_up_ids()
        projections.apply(tx, rows)

    def _top_up_ids(self) -> None:
        """The ids the batch planned ahead will reserve, fetched now on a connection of the
        store's own (``Store.top_up_ids``), while this batch's last rows are written behind:
        the run's thread would wait for that write here anyway (PostgreSQL)."""
        plan = self._ahead
        if plan is not None and plan.collected and self.store.is_server:
            wanted = self.target.ids_wanted(plan.collected)
            if wanted:
                self.store.top_up_ids(wanted)

    def _cut_short(self, batch: list[RawRecord], result: BatchResult) -> None:
        """Raise _CutShort when fail-fast trips before the last record of this batch, so
        that the batch is redone up to the record that trips it: the run then stops right
        there (``fail_fast_records`` records in the DLQ, not a whole batch of them)."""
        if self.fail_fast is None:
            return
        offset = self.fail_fast.trips_at(result.outcomes())
        if offset is not None:
            keep = offset - batch[0].offset + 1
            if keep < len(batch):
                raise _CutShort(keep)

    def _propose_batch(self, tx: Tx, batch: list[RawRecord], out: BatchResult) -> None:
        """The loader's ``propose`` for every record first, collecting the facts; then the
        graph looks the batch up at once and resolves the records in order
        (journal_loader/graph/batch.py). A record the collector cannot stand for (its
        ``propose`` raised or read an answer, or the graph refused a fact) is proposed again
        in its place through ``propose_fact``: the same answers and failures as ever."""
        target = self.target
        plan = self._ahead
        if plan is not None and plan.batch is batch:
            self._ahead = None  # used once: a retry of this batch plans again
        else:  # (a plan of the next batch, made by a failed attempt of this one, stays)
            plan = self._plan(batch)
        # (the plan's outcomes so far: read errors, skips, validation failures)
        out.stats.add(plan.result.stats)
        planned = plan.planned
        if plan.answers_read:
            self._answers_read = True  # this loader reads answers: propose_fact from now on
        if plan.collected:
            target.prefetch_collected(tx, plan.collected)
        del plan
        events = out.events
        source_id, run_id, seconds = self.source_id, self.run_id, out.propose_seconds
        for rec, parsed, early, facts in planned:
            events += early
            if parsed is None:
                continue  # concluded by prepare (a read error, a skip, a validation failure)
            if facts is None:
                self.propose_record(rec, parsed, out)
                continue
            started = time.perf_counter()
            faults.point("before_propose")
            try:
                results = target.propose_collected(source_id, rec.offset, run_id, facts)
            except Exception:  # undone: proposed again, it fails (or not) as it always did
                self.propose_record(rec, parsed, out, reached=True)
                continue
            faults.point("after_propose")
            seconds.append(time.perf_counter() - started)
            succeeded = ProposeSucceeded(results=results, retry_of=self.retry_of.get(rec.offset))
            self._conclude(rec, out, succeeded)

    def _plan(self, batch: list[RawRecord]) -> _Plan:
        """The loader's ``parse`` and ``propose`` (collecting the facts) for every record of
        the batch, in record order. Touches no database and no graph state: its events and
        counts are the plan's own (``_Plan.result``) until a batch takes it."""
        collector = self.target.collector()
        result = BatchResult()
        events = result.events
        # (record, parsed record or None, its events so far, its facts or None): a record's
        # events are put back in record order by _propose_batch, so the journal reads as if
        # each record had been proposed before the next was parsed
        planned: list[tuple[RawRecord, dict[str, Any] | None, list[PendingEvent], Any]] = []
        for rec in batch:
            mark = len(events)
            parsed = self.prepare(rec, result)
            early = events[mark:]
            del events[mark:]
            facts = None
            if parsed is not None and not collector.answers_read:
                facts = collector.collect(self.loader.propose, parsed)
            planned.append((rec, parsed, early, facts))
        return _Plan(batch, result, planned, collector.collected, collector.answers_read)

    def _plan_ahead(self) -> None:
        """Plan the next batch (``commit(ahead=...)``) now, while the server inserts this
        batch's last rows (``_append_behind_and_plan_ahead``), so that the client's reading,
        parsing and collecting of the next batch costs no wall time where it used to wait.

        Why this is safe: a plan is what the loader makes of the records, with no database
        and no graph state (``_plan``), so making it before this batch commits changes no
        answer; it is kept in memory, journaled only by the batch that takes it. If this
        batch then fails, is retried, cut short by fail-fast or the run stops, the next
        ``commit`` is of another list or none (``commit`` drops a plan not of its batch);
        a retried next batch plans again (a plan is used once). RecordParsed v3's shapes
        (journal/parsed.py) are per batch attempt: the plan's own result starts its shapes,
        and they refer only to records of that plan, which commit together. Pinned by
        tests/test_plan_ahead.py (the same journal, graph, answers and DLQ as without it,
        with a retried batch, and a read error after the batches read ahead) and the crash
        matrix of tests/test_crash.py (PostgreSQL runs killed at every boundary)."""
        ahead, self._ahead_batch = self._ahead_batch, None
        if ahead and self.plans_ahead:
            try:
                self._ahead = self._plan(ahead)
            except Exception:  # planned again in its turn, it raises there
                # What the loader raises for the next batch's records (an error that stops
                # the run, a transient database error of its own lookups) belongs to that
                # batch: it must neither roll this one back nor have it retried. The next
                # batch plans again in its own transaction, after this one has committed,
                # and raises there, as without planning ahead (tests/test_plan_ahead.py).
                self._ahead = None

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

    def checkpoint(self, position: ResumePoint, result: BatchResult) -> BatchCommitted:
        return BatchCommitted(
            next_offset=position.offset,
            next_line=position.line,
            next_byte=position.byte,
            imported=result.stats.imported,
            failed=result.stats.failed,
            skipped=result.stats.skipped,
            chunk=self.chunk,
        )

    # --- one record ------------------------------------------------------------------------
    def prepare(self, rec: RawRecord, out: BatchResult) -> dict[str, Any] | None:
        """Read errors, skips, parse and validate. Returns the parsed record to propose, or
        None when the record already has its outcome."""
        out.stats.total_processed += 1
        if rec.error is not None:
            failed = self._failed(rec, Stage.READ, rec.error_type or "read_error", rec.error)
            self._conclude(rec, out, failed)
            return None
        if self.start_from is not None and rec.offset < self.start_from:
            self._conclude(rec, out, self._skipped(rec, f"before --start-from {self.start_from}"))
            return None
        stage = Stage.PARSE
        parsed: dict[str, Any] | None = None
        parsed_event: PendingEvent | None = None
        problems: list[str] = []
        try:
            assert rec.data is not None
            parsed = self.loader.parse(rec.data)
            if parsed is not None:
                parsed_event = PendingEvent.of(rec.offset, self._parsed_event(rec, parsed, out))
                stage = Stage.VALIDATE
                problems = self.loader.validate(parsed)
        except Exception as error:
            self._conclude_error(error, rec, stage, parsed, out)
            return None
        if parsed is None or parsed_event is None:
            self._conclude(rec, out, self._skipped(rec, "parse returned None"))
            return None
        # A failure from here on follows the RecordParsed: it is what the loader made of
        # the record, and stays.
        out.events.append(parsed_event)
        if problems:
            failed = self._failed(
                rec, Stage.VALIDATE, "ValidationError", "; ".join(problems), parsed
            )
            self._conclude(rec, out, failed)
            return None
        return parsed

    def _parsed_event(
        self, rec: RawRecord, parsed: dict[str, Any], out: BatchResult
    ) -> RecordParsed:
        """The record's RecordParsed: in version 3 where its text rebuilds the record
        (journal/parsed.py), decided now, when it is encoded, on the record as journaled."""
        shapes = self._shapes
        if shapes is None or not self._shapes_on or parsed.__class__ is not dict:
            return RecordParsed(
                line=rec.line,
                byte_start=rec.byte_start,
                byte_end=rec.byte_end,
                raw=rec.raw,
                record=parsed,
            )
        if out is not self._shapes_of:  # a new attempt of a batch: its own shapes
            shapes.reset()
            self._shapes_of = out
        return shapes.event(
            rec.offset, rec.line, rec.byte_start, rec.byte_end, rec.raw, parsed, rec.fields
        )

    def propose_record(
        self,
        rec: RawRecord,
        parsed: dict[str, Any],
        out: BatchResult,
        in_doubt: bool = False,
        reached: bool = False,
    ) -> None:
        """``reached``: the record has passed ``before_propose`` already (a collected record
        proposed again: the boundary is counted once per record)."""
        started = time.perf_counter()
        try:
            results = self._propose(rec.offset, parsed, in_doubt, reached)
        except Exception as error:
            self._conclude_error(error, rec, Stage.PROPOSE, parsed, out)
            return
        finally:
            out.propose_seconds.append(time.perf_counter() - started)
        succeeded = ProposeSucceeded(results=results, retry_of=self.retry_of.get(rec.offset))
        self._conclude(rec, out, succeeded, in_doubt=in_doubt)

    def recovered(self, rec: RawRecord, results: list[ProposeResult], out: BatchResult) -> None:
        """An in-doubt record whose earlier attempt committed on the target: its answers are
        read back from the target's outcome table, not asked again."""
        succeeded = ProposeSucceeded(
            results=results, retry_of=self.retry_of.get(rec.offset), recovered=True
        )
        self._conclude(rec, out, succeeded)

    def _propose(
        self, offset: int, parsed: dict[str, Any], in_doubt: bool, reached: bool = False
    ) -> list[ProposeResult]:
        target = self.target
        if not reached:
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
            self.in_doubt.reached.add(offset)  # from its commit on, the deployment may have it
        target.finish_record()  # in safe mode this writes, and may fail the record
        faults.point("after_propose")
        return results

    def _conclude_error(
        self,
        error: Exception,
        rec: RawRecord,
        stage: Stage,
        parsed: dict[str, Any] | None,
        out: BatchResult,
    ) -> None:
        """What an exception raised while a record was parsed, validated or proposed means:
        the one ladder. Its order matters: a skip or a record's own error first (they must
        never stop the run, whatever their base classes), then the run's errors (storage,
        fencing, fail-fast...) go up: they roll the batch back; anything else is a bug in the
        loader's code, or a value msgspec cannot encode: the record fails (a loader that
        fails every record is stopped by fail-fast or the failure limits)."""
        if isinstance(error, SkipRecord):
            self._conclude(rec, out, self._skipped(rec, error.reason))
        elif isinstance(error, RecordError):
            # At parse and validate the step says where; a propose that raises says it
            # itself (an ambiguous match is a propose error, a bad value a validate one).
            where = error.stage if stage is Stage.PROPOSE else stage
            failed = self._failed(
                rec, where, error.error_type, error.message, parsed, error.details
            )
            self._conclude(rec, out, failed)
        elif isinstance(error, JournalLoaderError):
            raise error
        else:
            record = rec.data if stage is Stage.PARSE else parsed
            message = describe_error(error, record, stage)
            self._conclude(
                rec, out, self._failed(rec, stage, type(error).__name__, message, parsed)
            )

    def _conclude(
        self, rec: RawRecord, out: BatchResult, terminal: Terminal, *, in_doubt: bool = False
    ) -> RecordOutcome:
        """The record's outcome: its terminal event joins the batch and is counted. Every
        record of a batch comes here exactly once (invariant 3)."""
        if isinstance(terminal, ProposeSucceeded):
            out.events.append(PendingEvent.of(rec.offset, terminal))
            _count_imported(terminal.results, out.stats, in_doubt)
            return RecordOutcome.IMPORTED
        if isinstance(terminal, RecordFailed):
            try:
                pending = PendingEvent.of(rec.offset, terminal)
            except (TypeError, msgspec.EncodeError):  # the parsed record cannot be encoded
                terminal = msgspec.structs.replace(terminal, record=None, details={})
                pending = PendingEvent.of(rec.offset, terminal)
            out.events.append(pending)
            out.stats.failed += 1
            return RecordOutcome.FAILED
        out.events.append(PendingEvent.of(rec.offset, terminal))
        out.stats.skipped += 1
        return RecordOutcome.SKIPPED

    def _failed(
        self,
        rec: RawRecord,
        stage: str,
        error_type: str,
        message: str,
        parsed: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> RecordFailed:
        return RecordFailed(
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

    def _skipped(self, rec: RawRecord, reason: str) -> RecordSkipped:
        return RecordSkipped(
            reason=reason,
            line=rec.line,
            byte_start=rec.byte_start,
            byte_end=rec.byte_end,
            raw=rec.raw,
            retry_of=self.retry_of.get(rec.offset),
        )


def _count_imported(results: list[ProposeResult], stats: Statistics, in_doubt: bool) -> None:
    stats.imported += 1
    if in_doubt:
        stats.records_replayed += 1
    if not results:
        return
    # counted in locals, added once (an attribute of the Struct costs a get and a set)
    created = matched = rel_created = rel_duplicate = rel_updated = conflicts = 0
    for r in results:
        relationship_counted = False
        for a in r.actions:
            action = a.action
            if action == "entity_matched":
                matched += 1
            elif action == "entity_created":
                created += 1
            elif action == "relationship_duplicate":
                rel_duplicate += 1
                relationship_counted = True
            elif action == "relationship_created":
                rel_created += 1
                relationship_counted = True
            elif action == "relationship_updated":
                rel_updated += 1
                relationship_counted = True
        if not relationship_counted and any(
            a.action == "relationship_conflicted" for a in r.actions
        ):
            # A Propose API deployment answers a new relationship that conflicts with
            # `relationship_conflicted` alone; it was stored, so it was created.
            rel_created += 1
        if r.conflicts:
            conflicts += len(r.conflicts)
    stats.entities_created += created
    stats.entities_matched += matched
    stats.relationships_created += rel_created
    stats.relationships_duplicate += rel_duplicate
    stats.relationships_updated += rel_updated
    stats.conflicts_detected += conflicts


def describe_error(error: Exception, record: object, stage: str) -> str:
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
        what = "column" if stage == Stage.PARSE else "field"
        where = "the record" if stage == Stage.PARSE else "the parsed record"
        return (
            f"no {what} {key!r} in {where} (its {what}s: {', '.join(map(repr, keys))})"
            + did_you_mean(key, keys)
        )
    return str(error) or repr(error)


# --- the DLQ's retry -------------------------------------------------------------------------
def retry_records(
    store: Store,
    loader: Loader,
    target: GraphTarget,
    *,
    source_id: int,
    source_type: str,
    file_hash: str,
    records: Sequence[RawRecord],
    retry_of: Mapping[int, int],
    options: RunOptions,
    run_id: str | None = None,
) -> str:
    """Decide the outcome of records of a registered source again, outside a file run: the
    DLQ's retry (journal_loader/dlq.py). Under the source's lock and a lease of its own,
    in batches of ``options.batch_size``, one transaction each, retried like a run's; no
    checkpoint moves. Each outcome names the failure it answers (``retry_of``: offset ->
    journal position of its RecordFailed). Returns the run id the outcomes are journaled
    under (``run_id``, or a new one)."""
    run_id = run_id or str(uuid.uuid4())
    observers = Observers()
    retry = RetryPolicy(
        max_retries=options.max_retries,
        backoff=Backoff(options.retry_delay, options.retry_max_delay),
        breaker=CircuitBreaker(options.circuit_breaker),
        observer=observers,
        sleep=time.sleep,
    )
    name = source_lock_name(source_type, file_hash)
    with store.lock_source(name, lock_holder(run_id)) as lock:
        lease, writer = attach(store, retry, source_id, run_id, lock)
        committer = BatchCommitter(
            loader=loader,
            store=store,
            target=target,
            lease=lease,
            writer=writer,
            retry=retry,
            observers=observers,
            file_hash=file_hash,
            start_from=options.start_from,
            retry_of=retry_of,
        )
        for i in range(0, len(records), options.batch_size):
            committer.commit(list(records[i : i + options.batch_size]), None)
    return run_id


__all__ = ["BatchCommitter", "BatchResult", "describe_error", "retry_records"]


def _run_all(writes: list[Callable[[], None]]) -> None:
    for write in writes:
        write()
