"""Stopping a run between batches: SIGTERM/SIGINT, or ``RunOptions.stop`` (a worker).

A stop never cuts a batch: the batch in progress commits, then the run ends as failed with
the reason journaled, and resumable.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from journal_loader.runner.options import STOP_REQUESTED


class RunStopped(Exception):
    """Raised between batches when a stop was asked for; carries the reason."""


class StopSignal:
    """Whether (and why) the run should stop before its next batch."""

    def __init__(self, stop: Callable[[], bool] | None = None) -> None:
        self._ask = stop
        self.reason: str | None = None

    def check(self) -> None:
        """Raise RunStopped if a signal came or ``stop()`` says so."""
        if self.reason is None and self._ask is not None and self._ask():
            self.reason = STOP_REQUESTED
        if self.reason:
            raise RunStopped(self.reason)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """SIGTERM/SIGINT set the reason while inside. Signals reach only the main thread;
        elsewhere this does nothing (a worker's thread stops its run through ``stop``)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.reason = f"stopped by {signal.Signals(signum).name}; rerun to continue"

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
