"""``Runner``: one run of one file, from the lock to the journaled end.

take the source's lock -> register (``Registrar``) -> the batch loop (``BatchLoop``, which
commits through ``BatchCommitter``) -> journal ``RunFinished`` -> the report. Errors: a
record's own problem fails the record (DLQ) and the run goes on; a transient database error
rolls the batch back and retries it (``RetryPolicy``); anything else stops the run as
``failed``, journaled with its reason when the database still answers, and resumable.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Callable, Sequence

import msgspec

from journal_loader.errors import FencedOutError, JournalLoaderError
from journal_loader.failures import FailureGroup, summarise
from journal_loader.graph.target import GraphTarget
from journal_loader.journal.events import RunFinished, Statistics
from journal_loader.journal.parsed import TextContext
from journal_loader.journal.writer import PendingEvent
from journal_loader.loader import Loader
from journal_loader.runner.chunks import ChunkPlan, source_status_after
from journal_loader.runner.committer import BatchCommitter
from journal_loader.runner.lease import lock_holder
from journal_loader.runner.limits import FailFast
from journal_loader.runner.loop import BatchLoop
from journal_loader.runner.options import (
    FAILED,
    FAILURE_GROUPS,
    ErrorKind,
    Observer,
    Observers,
    RunOptions,
    RunReport,
    RunStatus,
)
from journal_loader.runner.registration import AlreadyProcessed, Registrar, Registration
from journal_loader.runner.retry import Backoff, CircuitBreaker, RetryPolicy
from journal_loader.runner.signals import RunStopped, StopSignal
from journal_loader.secrets import scrub
from journal_loader.sources.identity import SourceAhead, SourceFile, open_source
from journal_loader.storage.base import SourceLock, Store, utcnow
from journal_loader.storage.journal_store import chunk_lock_name, source_lock_name

log = logging.getLogger("journal_loader.runner")


class Runner:
    def __init__(
        self,
        loader: Loader,
        store: Store,
        target: GraphTarget,
        file: str,
        options: RunOptions | None = None,
        observers: Sequence[Observer] = (),
        sleep: Callable[[float], None] = time.sleep,
        run_id: str | None = None,
        source: SourceAhead | None = None,
    ) -> None:
        self.loader = loader
        # the file, already being opened and hashed (run() starts it before the store)
        self._source_ahead = source
        self.store = store
        self.target = target
        self.file = file
        self.opt = options or RunOptions()
        self.observers = Observers(observers)
        # A worker names its runs after its job (fleet.job_run_id), so the journal says
        # which delivery of which job made a run.
        self.run_id = run_id or str(uuid.uuid4())
        self.source_type = self.opt.source_type or loader.source_type_name
        self.stats = Statistics()  # the committed batches' (the committer's, once it runs)
        self.retry = RetryPolicy(
            max_retries=self.opt.max_retries,
            backoff=Backoff(self.opt.retry_delay, self.opt.retry_max_delay),
            breaker=CircuitBreaker(self.opt.circuit_breaker),
            observer=self.observers,
            sleep=sleep,
        )
        self.stop = StopSignal(self.opt.stop)
        self.fail_fast = FailFast.of(self.opt)

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
        # default thresholds the collector rescans them over and over. The count is net of
        # what is freed and gc.freeze() after each batch resets it, so above what one batch
        # keeps alive (~200 tracked objects a record of the example) a load collects almost
        # never (measured, batch 1,000: 82 collections, 31 us of CPU per record at 50,000;
        # 0.5 us at 500,000).
        gc.set_threshold(max(thresholds[0], 500_000), max(thresholds[1], 20), thresholds[2])
        try:
            self.target.prepare()
            if self._source_ahead is not None:
                src = self._source_ahead.result()
            else:
                src = open_source(self.file, update_frequency=self.opt.update_frequency)
            report.file_hash, report.version_label = src.sha256, src.version_label
            name = (
                source_lock_name(self.source_type, src.sha256)
                if self.opt.chunk is None
                else chunk_lock_name(self.source_type, src.sha256, self.opt.chunk)
            )
            with self.store.lock_source(name, lock_holder(self.run_id, started_at)) as lock:
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
            self.observers.on_finish(report)
        return report

    def _run_locked(self, src: SourceFile, lock: SourceLock, report: RunReport) -> None:
        registrar = Registrar(
            store=self.store,
            loader=self.loader,
            target=self.target,
            options=self.opt,
            source_type=self.source_type,
            run_id=self.run_id,
            retry=self.retry,
        )
        registered = registrar.register(src, lock)
        if isinstance(registered, AlreadyProcessed):
            report.source_id = registered.source_id
            report.status, report.message = RunStatus.ALREADY_PROCESSED, registered.message
            return
        source_id, start = registered.source_id, registered.start
        report.source_id = source_id
        report.resumed_from = start.offset
        if start.at_start and registered.new_source:
            report.notes.extend(registrar.supersede(src, source_id))
        committer = self._committer(registered, src)
        self.stats = committer.stats
        self.observers.on_start(
            {
                "source_id": source_id,
                "run_id": self.run_id,
                "source_type": self.source_type,
                "file": self.file,
                "file_size": src.size,
                "resumed_from": start.offset,
                "resumed_byte": start.byte,
                "loader": self.loader.name,
            }
        )
        loop = BatchLoop(
            committer,
            options=self.opt,
            stop=self.stop,
            fail_fast=self.fail_fast,
            observers=self.observers,
        )
        status, reason, in_file = FAILED, "", None
        with self.stop.installed(), registered.reader:
            try:
                status, reason, in_file = loop.run(src, registered.reader, registered.stop_at)
            except FencedOutError as e:
                # Another run owns the source now: it must not see a single write from us.
                report.status, report.message = FAILED, str(e)
                report.statistics = self.stats
                return
            except RunStopped as e:
                status, reason = FAILED, scrub(str(e))
                report.error_kind = ErrorKind.INTERRUPTED
            except JournalLoaderError as e:
                status, reason = FAILED, scrub(str(e))
                report.error_kind = ErrorKind.USAGE if e.exit_code == 2 else ErrorKind.ERROR
            except Exception as e:  # a bug: still journal why the run stopped
                status, reason = FAILED, scrub(f"{type(e).__name__}: {e}")
                report.error_kind = ErrorKind.ERROR
                log.exception("run %s stopped by an unexpected error", self.run_id)
        report.status, report.message = status, reason
        report.statistics = self.stats
        report.records_in_file = in_file
        self._finish(committer, status, reason, in_file, report, registered.plan)
        if self.stats.failed:
            report.failure_groups = self._failure_groups(source_id)

    def _committer(self, registered: Registration, src: SourceFile) -> BatchCommitter:
        return BatchCommitter(
            loader=self.loader,
            store=self.store,
            target=self.target,
            lease=registered.lease,
            writer=registered.writer,
            retry=self.retry,
            observers=self.observers,
            file_hash=src.sha256,
            start_from=self.opt.start_from,
            fail_fast=self.fail_fast,
            in_doubt=registered.in_doubt,
            chunk=self.opt.chunk,
            text_context=(
                None if registered.run_started is None else TextContext.of(registered.run_started)
            ),
        )

    def _finish(
        self,
        committer: BatchCommitter,
        status: RunStatus,
        reason: str,
        in_file: int | None,
        report: RunReport,
        plan: ChunkPlan | None = None,
    ) -> None:
        finished = RunFinished(
            status=status, reason=reason, statistics=self.stats, records_in_file=in_file
        )
        chunk = self.opt.chunk

        def attempt() -> None:
            with self.store.transaction() as tx:
                committer.lease.check(tx)
                event = finished
                if plan is not None and chunk is not None:
                    # The source's status after this chunk, read under the chain lock held
                    # to this transaction's COMMIT (runner/chunks.py::source_status_after).
                    committer.writer.lock_chain(tx)
                    source_status, records, note = source_status_after(tx, plan, chunk, status)
                    event = msgspec.structs.replace(
                        finished,
                        status=source_status,
                        reason=reason or note,
                        records_in_file=records,
                        chunk=chunk,
                        chunk_status=str(status),
                    )
                committer.append(tx, [PendingEvent.of(None, event)])
            committer.writer.confirm()

        try:
            self.retry.call(attempt, "journaling the end of the run", retries=2)
        except JournalLoaderError as e:
            committer.writer.discard()
            # The database is gone: the next run will find this one 'processing', see that
            # nobody holds the lock, journal it as abandoned and resume.
            log.error("could not journal the end of run %s: %s", self.run_id, e)
            if report.status != FAILED:
                report.status = FAILED
            report.message = (report.message + "; " if report.message else "") + (
                f"the run's end could not be journaled: {e}"
            )

    def _failure_groups(self, source_id: int) -> list[FailureGroup]:
        """What went wrong in this run, from the DLQ: its entries whose latest failure is ours.
        Only a summary: a database error here is logged, never fails the run."""
        try:
            return summarise(self.store, source_id=source_id, run_id=self.run_id)[:FAILURE_GROUPS]
        except Exception as e:
            log.warning("could not summarise the run's failures: %s", scrub(str(e)))
            return []


__all__ = ["Runner"]
