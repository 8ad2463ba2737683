"""Several observers as one, and how a run ended (its exit code) as an observer sees it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

from journal_loader.errors import JournalLoaderError
from journal_loader.secrets import scrub

log = logging.getLogger("journal_loader.ops")


def exit_code_of(report: Any) -> int:
    """The exit code the run ends with. ``on_finish`` runs in the runner's ``finally``, so an
    error on its way out (another run holds the lock: 75) is still visible here."""
    code = int(getattr(report, "exit_code", 1))
    error = sys.exc_info()[1]
    if code == 0 or error is None:  # (an error handled by the caller around run() is not ours)
        return code
    if isinstance(error, JournalLoaderError):
        return error.exit_code
    if not isinstance(error, Exception):
        return 130  # KeyboardInterrupt, SystemExit
    return 1


def pending_error(report: Any) -> str:
    """The scrubbed message of the error the run is ending with, if any."""
    error = sys.exc_info()[1]
    if error is None or getattr(report, "exit_code", 1) == 0:
        return ""
    return scrub(str(error) or type(error).__name__)


class ObserverGroup:
    """Calls each member in order; one member's error is logged and does not stop the others.
    Forwards every hook a member implements (``on_retry``, ``on_propose_durations`` too)."""

    def __init__(self, members: Iterable[Any] = ()) -> None:
        self.members = list(members)
        self.finished = False

    def _each(self, method: str, *args: Any) -> None:
        for member in self.members:
            fn = getattr(member, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception:
                log.exception("observer %s failed in %s", type(member).__name__, method)

    def on_start(self, info: dict[str, Any]) -> None:
        self._each("on_start", info)

    def on_batch(self, stats: Any, position: Any, bytes_read: int) -> None:
        self._each("on_batch", stats, position, bytes_read)

    def on_retry(self, kind: str, error: str, delay: float) -> None:
        self._each("on_retry", kind, error, delay)

    def on_propose_durations(self, durations: Any) -> None:
        self._each("on_propose_durations", durations)

    def on_finish(self, report: Any) -> None:
        self.finished = True
        self._each("on_finish", report)

    def close(self) -> None:
        """Release what members hold (servers, log handlers), last member first."""
        for member in reversed(self.members):
            fn = getattr(member, "close", None)
            if fn is not None:
                try:
                    fn()
                except Exception:
                    log.exception("closing %s failed", type(member).__name__)
