"""When a run stops because its records keep failing: fail-fast and the failure limits.

* Fail-fast: a run whose first ``fail_fast_records`` records all failed at parse, validate
  or propose with the same kind of error (a loader that reads a column the file does not
  have, a node type the config does not list). Rerunning cannot help, so the run stops
  (exit 2) right after those records, which are in the DLQ; a fixed loader resumes after
  them. Skips and unreadable records neither count nor disarm it.
* ``max_failed_records`` / ``max_failure_rate``: the input is plainly wrong; stop instead of
  filling the DLQ with the whole file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from journal_loader.errors import FailFastError, FailureLimitError
from journal_loader.journal.events import Event, ProposeSucceeded, RecordFailed, Statistics
from journal_loader.journal.writer import PendingEvent
from journal_loader.runner.options import RunOptions, Stage


@dataclass(slots=True)
class FailFast:
    """The run's first records, while they all fail the same way (``fail_fast_records``)."""

    limit: int
    armed: bool
    failed: int = 0
    kind: tuple[str, str] | None = None  # (stage, error type)
    example: str = ""

    @classmethod
    def of(cls, options: RunOptions) -> FailFast:
        """Armed until a record of this run succeeds or fails differently."""
        return cls(options.fail_fast_records, armed=options.fail_fast_records > 0)

    def see(self, event: Event) -> None:
        """One record's terminal event, in record order."""
        if not self.armed:
            return
        if isinstance(event, ProposeSucceeded):
            self.armed = False  # a record made it: the loader works
        elif isinstance(event, RecordFailed) and event.stage != Stage.READ:
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

    def trips_at(self, outcomes: list[PendingEvent]) -> int | None:
        """The offset of the record (of a batch's outcomes, in record order) at which this
        would trip, without changing this state; None if it would not."""
        trial = dataclasses.replace(self)
        for pending in outcomes:
            trial.see(pending.event)
            if not trial.armed:
                return None
            if trial.tripped:
                return pending.record_offset or 0
        return None

    def check(self, outcomes: list[PendingEvent], source_id: int) -> None:
        """After a committed batch: count its outcomes; raise FailFastError if tripped."""
        if not self.armed:
            return
        for pending in outcomes:
            self.see(pending.event)
        if self.tripped and self.kind is not None:
            stage, error_type = self.kind
            raise FailFastError(
                f"the first {self.limit} records of this run all failed at {stage} with "
                f"{error_type} ({self.example}): the loader or the config looks wrong, not "
                f"the data (processing.fail_fast_records: {self.limit}; 0 turns this check "
                f"off). Those records are in the DLQ (journal-loader dlq list --source "
                f"{source_id}); fix it and rerun: the run resumes after them, and "
                "`journal-loader dlq retry` loads them again"
            )


def check_failure_limits(stats: Statistics, opt: RunOptions, source_id: int) -> None:
    """Raise FailureLimitError past ``max_failed_records`` or ``max_failure_rate``."""
    s = stats
    if opt.max_failed_records is not None and s.failed > opt.max_failed_records:
        raise FailureLimitError(
            f"{s.failed} records failed in this run, more than max_failed_records "
            f"({opt.max_failed_records}); the input looks wrong: see `journal-loader dlq "
            f"list --source {source_id}`; fix it and rerun to continue"
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
            f"{source_id}`; fix the input or the loader and rerun to continue"
        )
