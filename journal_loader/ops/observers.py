"""Several observers as one, and how a run ended (its exit code) as an observer sees it."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from journal_loader.errors import JournalLoaderError
from journal_loader.runner.observers import Observer, Observers
from journal_loader.secrets import scrub

if TYPE_CHECKING:
    from journal_loader.runner.options import RunReport

log = logging.getLogger("journal_loader.ops")


def exit_code_of(report: RunReport) -> int:
    """The exit code the run ends with. ``on_finish`` runs in the runner's ``finally``, so an
    error on its way out (another run holds the lock: 75) is still visible here."""
    code = report.exit_code
    error = sys.exc_info()[1]
    if code == 0 or error is None:  # (an error handled by the caller around run() is not ours)
        return code
    if isinstance(error, JournalLoaderError):
        return error.exit_code
    if not isinstance(error, Exception):
        return 130  # KeyboardInterrupt, SystemExit
    return 1


def pending_error(report: RunReport) -> str:
    """The scrubbed message of the error the run is ending with, if any."""
    error = sys.exc_info()[1]
    if error is None or report.exit_code == 0:
        return ""
    return scrub(str(error) or type(error).__name__)


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


class ObserverGroup(Observers):
    """The CLI's observers as one (``Observers``: each hook goes to the members that have
    it, one member's error is logged and does not stop the others); it remembers whether
    the run reached ``on_finish``, and closes its members."""

    def __init__(self, members: Iterable[Observer] = ()) -> None:
        super().__init__(members)
        self.finished = False

    def on_finish(self, report: RunReport) -> None:
        self.finished = True
        super().on_finish(report)

    def close(self) -> None:
        """Release what members hold (servers, log handlers), last member first."""
        for member in reversed(self.members):
            if isinstance(member, Closable):
                try:
                    member.close()
                except Exception:
                    log.exception("closing %s failed", type(member).__name__)
