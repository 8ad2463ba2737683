"""Who watches a run: the observer hooks, as typed Protocols the runner calls directly.

An observer implements any of the hooks (one Protocol each, so a class with only
``on_retry`` is an observer too); ``RunObserver`` is all of them. ``Observers`` is several
observers as one: each hook goes to the members that have it. Progress, metrics, logs and
end-of-run hooks (journal_loader/ops) plug in here, so the runner knows nothing of them.

Light on purpose (the CLI imports it at start through ``ops``): the types of the hooks'
arguments are imported for the type checker only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from journal_loader.journal.events import Statistics
    from journal_loader.runner.options import RunReport
    from journal_loader.sources.readers import ResumePoint

log = logging.getLogger("journal_loader.runner")


class RetryKind(StrEnum):
    """What ``on_retry`` reports (a metric's label)."""

    TRANSIENT = "transient"  # the database or target failed for a moment: backoff
    CONFLICT = "conflict"  # another writer got there first: a short random delay
    RECORD_BY_RECORD = "record_by_record"  # a value the database refused: the batch is redone


class RunInfo(TypedDict, total=False):
    """What ``on_start`` is told about the run."""

    source_id: int
    run_id: str
    source_type: str
    file: str
    file_size: int
    resumed_from: int
    resumed_byte: int
    loader: str


@runtime_checkable
class StartObserver(Protocol):
    def on_start(self, info: RunInfo) -> None:
        """Once the source is registered, before the first batch."""


@runtime_checkable
class BatchObserver(Protocol):
    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None:
        """After each committed batch: the run's totals so far and where it is."""


@runtime_checkable
class RetryObserver(Protocol):
    def on_retry(self, kind: RetryKind, message: str, delay: float) -> None:
        """Before a retry's wait (``delay`` seconds); ``message`` is scrubbed."""


@runtime_checkable
class ProposeDurationsObserver(Protocol):
    def on_propose_durations(self, seconds: list[float]) -> None:
        """Each committed batch's per-record propose times (a retried batch counts once)."""


@runtime_checkable
class FinishObserver(Protocol):
    def on_finish(self, report: RunReport) -> None:
        """At the end, also of a run that failed or raised (from the runner's ``finally``)."""


class RunObserver(
    StartObserver,
    BatchObserver,
    RetryObserver,
    ProposeDurationsObserver,
    FinishObserver,
    Protocol,
):
    """All the hooks. Every one is optional (an observer may implement any of them); an
    observer that raises is logged and ignored, never fails the run."""


Observer = StartObserver | BatchObserver | RetryObserver | ProposeDurationsObserver | FinishObserver

_P = ParamSpec("_P")


def _notify(observer: object, hook: Callable[_P, None], *args: _P.args, **kw: _P.kwargs) -> None:
    try:
        hook(*args, **kw)
    except Exception:  # an observer must never break a run
        log.exception("observer %r failed in %s", observer, hook.__name__)


class Observers:
    """Several observers as one: each hook goes to the members that implement it, in order;
    a member's error is logged and reaches neither the others nor the run."""

    def __init__(self, members: Iterable[Observer] = ()) -> None:
        self.members: list[Observer] = list(members)

    def on_start(self, info: RunInfo) -> None:
        for o in self.members:
            if isinstance(o, StartObserver):
                _notify(o, o.on_start, info)

    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None:
        for o in self.members:
            if isinstance(o, BatchObserver):
                _notify(o, o.on_batch, stats, position, bytes_read)

    def on_retry(self, kind: RetryKind, message: str, delay: float) -> None:
        for o in self.members:
            if isinstance(o, RetryObserver):
                _notify(o, o.on_retry, kind, message, delay)

    def on_propose_durations(self, seconds: list[float]) -> None:
        for o in self.members:
            if isinstance(o, ProposeDurationsObserver):
                _notify(o, o.on_propose_durations, seconds)

    def on_finish(self, report: RunReport) -> None:
        for o in self.members:
            if isinstance(o, FinishObserver):
                _notify(o, o.on_finish, report)
