"""What a run is asked to do (``RunOptions``), what it reports (``RunReport``), who watches it
(``RunObserver``, defined in ``runner/observers.py``), and the named values a run deals in
(``RunStatus``, ``RunMode``, ...).

The enums are ``StrEnum``: their members are the very strings the journal stores, the
projections read and the CLI prints (``RunStatus.COMPLETED == "completed"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec

from journal_loader.errors import RunFailedError, RunInterruptedError, RunPartialError
from journal_loader.failures import FailureGroup
from journal_loader.journal.events import Statistics
from journal_loader.runner.observers import (
    BatchObserver,
    FinishObserver,
    Observer,
    Observers,
    ProposeDurationsObserver,
    RetryKind,
    RetryObserver,
    RunInfo,
    RunObserver,
    StartObserver,
)
from journal_loader.sources.identity import UpdateFrequency
from journal_loader.sources.options import DEFAULT_READER_OPTIONS, ReaderOptions


class RunStatus(StrEnum):
    """How a run ended (``RunReport.status``, ``RunFinished.status``; ``sources.status``
    takes it, see ``journal_loader.sources.status.SourceStatus``)."""

    COMPLETED = "completed"
    PARTIAL = "partial"  # stopped early by --limit: rerun to continue
    FAILED = "failed"
    ALREADY_PROCESSED = "already_processed"  # nothing to do: the source completed before


class RunMode(StrEnum):
    """``RunStarted.mode``: a load from the first record, or the rest of an earlier one."""

    NEW = "new"
    RESUME = "resume"


class ErrorKind(StrEnum):
    """Why a failed run failed (``RunReport.error_kind``)."""

    NONE = ""
    USAGE = "usage"  # the loader or config is wrong: exit 2, rerunning will not help
    INTERRUPTED = "interrupted"  # a signal (or RunOptions.stop) stopped it
    ERROR = "error"  # anything else: exit 1


class RecordOutcome(StrEnum):
    """A record's terminal outcome in a run: exactly one per record (invariant 3). The
    values are the words the DLQ's retry and the metrics print; ``imported`` records are
    what ``sources.records_imported`` and ``Statistics.imported`` count."""

    IMPORTED = "succeeded"  # ProposeSucceeded
    FAILED = "failed"  # RecordFailed: in the DLQ
    SKIPPED = "skipped"  # RecordSkipped


class Stage(StrEnum):
    """Where a record failed (``RecordFailed.stage``)."""

    READ = "read"
    PARSE = "parse"
    VALIDATE = "validate"
    PROPOSE = "propose"


COMPLETED, PARTIAL, FAILED = RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED
ALREADY = RunStatus.ALREADY_PROCESSED
FAILURE_GROUPS = 10  # in a RunReport
# The reason journaled when ``RunOptions.stop`` asked a run to stop (a worker shutting down):
# the run is resumable, and a worker tells this stop from a failure by it.
STOP_REQUESTED = "stopped: the worker is shutting down; the next run resumes after this batch"


@dataclass(slots=True)
class RunOptions:
    batch_size: int = 1000
    limit: int | None = None
    start_from: int | None = None
    force: bool = False
    # Run one chunk of a split source (runner/chunks.py); None: the whole file.
    chunk: int | None = None
    max_retries: int = 5
    retry_delay: float = 0.5
    retry_max_delay: float = 30.0
    source_type: str | None = None
    source_name: str | None = None
    update_frequency: str = UpdateFrequency.HASH.value
    reader: ReaderOptions = DEFAULT_READER_OPTIONS  # frozen: sharing the default is safe
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

    # msgspec does not check a Struct's fields when it is constructed: __post_init__ turns a
    # plain string a caller passes (an orchestrator's code) into the RunStatus.
    status: RunStatus
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
    # Why a failed run failed; "" when it did not fail.
    error_kind: ErrorKind = ErrorKind.NONE

    def __post_init__(self) -> None:
        self.status = RunStatus(self.status)

    @property
    def exit_code(self) -> int:
        if self.status != FAILED:
            return 0
        return 2 if self.error_kind == ErrorKind.USAGE else 1

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
            error = (
                RunInterruptedError if self.error_kind == ErrorKind.INTERRUPTED else RunFailedError
            )
            raise error(f"{self.source_type}: the run failed: {self.message}", self)
        if partial and self.status == PARTIAL:
            raise RunPartialError(
                f"{self.source_type}: the run stopped early: {self.message}", self
            )
        return self


__all__ = [
    "ALREADY",
    "COMPLETED",
    "FAILED",
    "FAILURE_GROUPS",
    "PARTIAL",
    "STOP_REQUESTED",
    "BatchObserver",
    "ErrorKind",
    "FinishObserver",
    "Observer",
    "Observers",
    "ProposeDurationsObserver",
    "RecordOutcome",
    "RetryKind",
    "RetryObserver",
    "RunInfo",
    "RunMode",
    "RunObserver",
    "RunOptions",
    "RunReport",
    "RunStatus",
    "Stage",
    "StartObserver",
]
