"""Progress you can see: a bar on a terminal, a log line every N seconds elsewhere.

On a terminal (stderr is a TTY) one line is redrawn in place (at most ten times a second)::

    business_registry  42.0% [########............]  12,345 rec  3,210 rec/s  ETA 0:01:23
      ok 12,000  failed 300  skipped 45                    (on one line)

Percent and ETA come from the byte position against the file's size (compressed bytes for a
gzip file), the rate from the records this run processed. The ETA uses the bytes read over
the last ``eta_window`` seconds (a minute by default), not since the start: a target that
slows down as its graph grows (a Propose API function does) makes a whole-run average far
too hopeful. Log lines written meanwhile clear
the bar, print, and redraw it (``LogSetup.console.around_emit``).

Elsewhere (cron, CI, systemd) there is no bar: a log line at the start and then at most one
every ``interval`` seconds, with the same figures (and, in JSON logs, as fields). Built on the
standard library: one line of text does not justify a dependency.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from journal_loader.journal.events import Statistics
    from journal_loader.runner.observers import RunInfo
    from journal_loader.runner.options import RunReport
    from journal_loader.sources.readers import ResumePoint

log = logging.getLogger("journal_loader.progress")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds != seconds or seconds > 360_000_000:
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Figures:
    """What the bar and the log lines show."""

    def __init__(self) -> None:
        self.processed = 0
        self.succeeded = 0
        self.failed = 0
        self.skipped = 0
        self.position = 0
        self.bytes_read = 0
        self.file_size = 0
        self.elapsed = 0.0
        self.rate = 0.0
        self.percent: float | None = None
        self.eta: float | None = None

    def fields(self) -> dict[str, int | float | None]:
        return {
            "records": self.processed,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "position": self.position,
            "records_per_second": round(self.rate, 1),
            "percent": None if self.percent is None else round(self.percent, 1),
            "eta_seconds": None if self.eta is None else round(self.eta),
        }


class _Sample(NamedTuple):
    at: float  # time.monotonic()
    bytes_read: int


class ProgressObserver:
    """A RunObserver; ``tty`` defaults to ``stream.isatty()``."""

    def __init__(
        self,
        *,
        loader: str = "",
        interval: float = 30.0,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        redraw_every: float = 0.1,
        eta_window: float = 60.0,
    ) -> None:
        self.loader = loader
        self.eta_window = eta_window
        self.interval = interval
        self._stream = stream
        self.tty = tty if tty is not None else _isatty(self.stream)
        self.clock = clock
        self.redraw_every = redraw_every
        self.figures = Figures()
        self._lock = threading.RLock()
        self._started: float | None = None
        self._base: _Sample | None = None  # what the ETA is measured from
        self._samples: deque[_Sample] = deque()  # per batch, the recent ones
        self._last_log = 0.0
        self._last_draw = 0.0
        self._shown = ""  # the bar currently on screen ("" when none)

    @property
    def stream(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    # --- RunObserver ------------------------------------------------------------------------
    def on_start(self, info: RunInfo) -> None:
        now = self.clock()
        f = self.figures
        self._started = now
        f.file_size = int(info.get("file_size") or 0)
        f.position = int(info.get("resumed_from") or 0)
        if f.file_size > 0:
            f.percent = 0.0
        if info.get("loader"):
            self.loader = str(info["loader"])
        if info.get("resumed_byte") is not None:
            self._base = _Sample(now, int(info["resumed_byte"]))
        elif not f.position:
            self._base = _Sample(now, 0)
        self._last_log = now
        if self.tty:
            self.draw(force=True)
        else:
            start = f"record {f.position:,}" if f.position else "the beginning"
            log.info(
                "loading %s (%s bytes), source %s, from %s",
                info.get("file", "?"),
                f"{f.file_size:,}",
                info.get("source_id", "?"),
                start,
                extra={"fields": {"file_size": f.file_size, "resumed_from": f.position}},
            )

    def on_batch(self, stats: Statistics, position: ResumePoint, bytes_read: int) -> None:
        now = self.clock()
        with self._lock:
            self._update(now, stats, position, bytes_read)
            if self.tty:
                if now - self._last_draw >= self.redraw_every:
                    self.draw(force=True)
            elif now - self._last_log >= self.interval:
                self._last_log = now
                self.log_line()

    def on_finish(self, report: RunReport) -> None:
        """On a terminal the bar is drawn once more with the final figures and left there."""
        with self._lock:
            if self.tty and self._shown:
                self.draw(force=True)
                try:
                    self.stream.write("\n")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass
                self._shown = ""

    # --- figures ----------------------------------------------------------------------------
    def _update(
        self, now: float, stats: Statistics, position: ResumePoint, bytes_read: int
    ) -> None:
        f = self.figures
        f.processed = int(stats.total_processed)
        f.succeeded, f.failed, f.skipped = (
            int(stats.imported),
            int(stats.failed),
            int(stats.skipped),
        )
        f.position = int(position.offset)
        f.bytes_read = int(bytes_read)
        started = self._started if self._started is not None else now
        f.elapsed = now - started
        f.rate = f.processed / f.elapsed if f.elapsed > 0 else 0.0
        if f.file_size > 0:
            f.percent = min(100.0, 100.0 * f.bytes_read / f.file_size)
        if self._base is None:  # a resumed run that did not say where in bytes: from here on
            self._base = _Sample(now, f.bytes_read)
            return
        # The recent window: from the newest sample at least eta_window old (the base while
        # the run is younger than the window) to now.
        samples = self._samples
        if not samples:
            samples.append(self._base)
        while len(samples) > 1 and samples[1].at <= now - self.eta_window:
            samples.popleft()
        t0, b0 = samples[0]
        samples.append(_Sample(now, f.bytes_read))
        if now > t0 and f.bytes_read > b0 and f.file_size > 0:
            byte_rate = (f.bytes_read - b0) / (now - t0)
            f.eta = max(0.0, (f.file_size - f.bytes_read) / byte_rate)

    def line(self, width: int | None = None) -> str:
        f = self.figures
        pct = "  ?  %" if f.percent is None else f"{f.percent:5.1f}%"
        cells = 20
        filled = 0 if f.percent is None else int(cells * f.percent / 100)
        bar = "#" * filled + "." * (cells - filled)
        text = (
            f"{self.loader}  {pct} [{bar}]  {f.processed:,} rec  {f.rate:,.0f} rec/s  "
            f"ETA {fmt_duration(f.eta)}  ok {f.succeeded:,}  failed {f.failed:,}  "
            f"skipped {f.skipped:,}"
        )
        if width is not None and len(text) > width:
            text = text[: max(0, width - 1)]
        return text

    def log_line(self) -> None:
        f = self.figures
        pct = "?" if f.percent is None else f"{f.percent:.1f}%"
        log.info(
            "progress: %s, %s records (%s records/s), ETA %s; succeeded %s, failed %s, skipped %s",
            pct,
            f"{f.processed:,}",
            f"{f.rate:,.0f}",
            fmt_duration(f.eta),
            f"{f.succeeded:,}",
            f"{f.failed:,}",
            f"{f.skipped:,}",
            extra={"fields": f.fields()},
        )

    # --- the terminal -----------------------------------------------------------------------
    def draw(self, force: bool = False) -> None:
        with self._lock:
            width = shutil.get_terminal_size((100, 24)).columns - 1
            text = self.line(width)
            try:
                self.stream.write("\r\x1b[K" + text)
                self.stream.flush()
            except (OSError, ValueError):
                return
            self._shown = text
            self._last_draw = self.clock()

    def clear(self) -> None:
        with self._lock:
            if not self._shown:
                return
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self._shown = ""

    def around_emit(self, write: Callable[[], None]) -> None:
        """For the console log handler: clear the bar, write the log line, redraw the bar."""
        with self._lock:
            shown = bool(self._shown)
            if shown:
                self.clear()
            write()
            if shown:
                self.draw(force=True)


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
