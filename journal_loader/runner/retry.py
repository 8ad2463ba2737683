"""Retrying a unit of work (a batch, a registration, the run's end) after a transient error.

Nothing of a failed attempt is kept (its transaction rolled back), so a retry never counts a
record twice. Two budgets, on purpose:

* transient errors (the database or the target failed for a moment): exponential backoff
  with jitter, honouring a target's Retry-After, at most ``max_retries`` per unit of work;
  the circuit breaker counts them in a row across the whole run (any success resets it) and
  past ``circuit_breaker`` stops the run instead of grinding on;
* conflicts (another loader committed a unique key first, or two transactions deadlocked or
  failed to serialize) are not outages: a short random delay (so the two do not collide
  again in step), on a budget of their own (``CONFLICT_RETRIES``) that the breaker does not
  see, and a give-up says what happened instead of "the database is down". The graph's
  sorted locks (``EmbeddedGraph.prefetch``) keep them rare. Pinned by
  tests/test_faults.py::test_conflicts_retry_on_their_own_budget.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from journal_loader.errors import CircuitOpenError, ConflictError, TransientError
from journal_loader.runner.options import RetryKind, RetryObserver
from journal_loader.secrets import scrub

log = logging.getLogger("journal_loader.runner")

# Conflicts in a row before a unit of work gives up (at least its transient budget).
CONFLICT_RETRIES = 20

_T = TypeVar("_T")


@dataclass(slots=True)
class CircuitBreaker:
    """Transient failures in a row across the whole run; open at ``limit``."""

    limit: int
    failures: int = 0

    def trip(self, error: TransientError, what: str) -> None:
        """Count one failure; raise CircuitOpenError when that opens the circuit."""
        self.failures += 1
        if self.failures >= self.limit:
            raise CircuitOpenError(
                f"{what}: {self.failures} transient failures in a row "
                f"(circuit_breaker {self.limit}); stopping. Last: {error}. "
                "Rerun when the database or target is back; nothing is lost"
            ) from error

    def reset(self) -> None:
        self.failures = 0


@dataclass(slots=True)
class Backoff:
    delay: float = 0.5  # the first transient retry's (before jitter); conflicts' upper bound
    max_delay: float = 30.0

    def transient(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self.max_delay, self.delay * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay

    def conflict(self) -> float:
        return random.uniform(0, self.delay)


class RetryPolicy:
    """One per run: its circuit breaker spans every unit of work the run retries."""

    def __init__(
        self,
        *,
        max_retries: int,
        backoff: Backoff,
        breaker: CircuitBreaker,
        observer: RetryObserver,
        sleep: Callable[[float], None],
    ) -> None:
        self.max_retries = max_retries
        self.backoff = backoff
        self.breaker = breaker
        self.observer = observer
        self.sleep = sleep

    def call(self, fn: Callable[[], _T], what: str, retries: int | None = None) -> _T:
        """``fn()``, retried on transient errors and conflicts (see the module docstring);
        ``what`` names the work in messages; ``retries`` overrides ``max_retries``."""
        limit = self.max_retries if retries is None else retries
        conflict_limit = max(CONFLICT_RETRIES, limit)
        attempt = conflicts = 0
        while True:
            try:
                result = fn()
            except ConflictError as e:  # (a TransientError too: this clause comes first)
                conflicts += 1
                if conflicts > conflict_limit:
                    raise ConflictError(
                        f"{what}: another loader kept writing the same rows first "
                        f"({conflict_limit} conflicts in a row; last: {e}). Nothing is lost; "
                        "rerun to continue"
                    ) from e
                delay = self.backoff.conflict()
                log.warning(
                    "%s: %s; conflict with another writer, retry %d/%d in %.2fs",
                    what,
                    e,
                    conflicts,
                    conflict_limit,
                    delay,
                )
                self.observer.on_retry(RetryKind.CONFLICT, scrub(f"{what}: {e}"), delay)
                self.sleep(delay)
            except TransientError as e:
                attempt += 1
                self.breaker.trip(e, what)
                if attempt > limit:
                    raise TransientError(
                        f"{what}: giving up after {limit} retries: {e}. Rerun when the "
                        "database or target is back; nothing is lost"
                    ) from e
                delay = self.backoff.transient(attempt, e.retry_after)
                log.warning("%s: %s; retry %d/%d in %.2fs", what, e, attempt, limit, delay)
                self.observer.on_retry(RetryKind.TRANSIENT, scrub(f"{what}: {e}"), delay)
                self.sleep(delay)
            else:
                self.breaker.reset()
                return result
