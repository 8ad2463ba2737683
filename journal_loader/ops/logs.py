"""Log lines for runs: text or JSON, each carrying loader, source_id and run_id.

``LogSetup`` installs two handlers on a logger (the root logger for the CLI, so a loader's
own ``logging`` calls are formatted too): the console (stderr) and, optionally, a file
rotated by size (``logging.handlers.RotatingFileHandler``: ``max_size`` bytes per file,
``retention`` rotated files kept). It is also a ``RunObserver``: ``on_start`` fills in the
run's source_id and run_id, so every line after it carries them.

No secret ever reaches a log line: every handler has a ``ScrubFilter`` that replaces the
message (and the formatted traceback) by ``secrets.scrub`` of it, and the formatters scrub
their output once more, so a password in a URL, a ``password=...`` pair or any registered
secret comes out as ``***`` in both formats.

JSON lines: ``{"ts", "level", "logger", "message", "loader", "source_id", "run_id"}`` plus
``"exc"`` with the traceback and any ``extra={"fields": {...}}`` given to the call.

A run's last line says how it ended (``run finished: completed, exit code 0: ...``; in JSON
with the fields ``event: run_finished``, ``status``, ``exit_code``, ``records``, ``succeeded``,
``failed``, ``skipped``, ``duration_seconds``, ``records_per_second``, ``reason``): INFO
when it exits 0, WARNING for 75 (locked), ERROR otherwise.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from journal_loader.errors import SourceLockedError
from journal_loader.secrets import scrub

if TYPE_CHECKING:
    from journal_loader.runner.observers import RunInfo
    from journal_loader.runner.options import RunReport

TEXT_FORMAT = (
    "%(asctime)s %(levelname)-7s %(name)s [%(loader)s source=%(source_id)s run=%(run_id)s] "
    "%(message)s"
)


class RunLabels:
    """What every line of the run carries; updated when the run knows its ids."""

    def __init__(self, loader: str = "-") -> None:
        self.loader = loader
        self.source_id: int | None = None
        self.run_id: str | None = None


class ContextFilter(logging.Filter):
    """Adds ``loader``, ``source_id`` and ``run_id`` to every record (``-`` while unknown)."""

    def __init__(self, context: RunLabels) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = self.context
        record.loader = ctx.loader
        record.source_id = "-" if ctx.source_id is None else ctx.source_id
        record.run_id = ctx.run_id or "-"
        return True


class ScrubFilter(logging.Filter):
    """Replaces the record's message and traceback by their scrubbed text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format in someone's log call: its arguments are not shown
            message = f"{record.msg} (log arguments not shown: they do not match the format)"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        _defaults(record)
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        _defaults(record)
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "loader": getattr(record, "loader", "-"),
            "source_id": _or_none(getattr(record, "source_id", "-")),
            "run_id": _or_none(getattr(record, "run_id", "-")),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(str(key), value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = scrub(record.exc_text)
        return json.dumps(line, ensure_ascii=False, default=lambda v: scrub(str(v)))


def _or_none(value: object) -> object:
    return None if value == "-" else value


def _defaults(record: logging.LogRecord) -> None:
    for name in ("loader", "source_id", "run_id"):
        if not hasattr(record, name):
            setattr(record, name, "-")


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {fmt!r} (text or json)")


class ConsoleHandler(logging.Handler):
    """Writes to the *current* ``sys.stderr`` (so it follows redirections), and lets a
    progress bar step aside: ``around_emit`` wraps each write (clear the bar, redraw it)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.around_emit: Callable[[Callable[[], None]], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"

            def write() -> None:
                sys.stderr.write(text)
                sys.stderr.flush()

            if self.around_emit is not None:
                self.around_emit(write)
            else:
                write()
        except Exception:
            self.handleError(record)


class LogSetup:
    """Handlers for one run; ``close()`` removes them again. Also a RunObserver."""

    def __init__(
        self,
        *,
        loader: str = "-",
        level: str | int = "INFO",
        fmt: str = "text",
        file: str | Path | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        retention: int = 5,
        console_level: str | int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.context = RunLabels(loader)
        self.logger = logger if logger is not None else logging.getLogger()
        self._level = _level(level)
        self._previous_level = self.logger.level
        self._closed = False
        self._lock = threading.Lock()
        context_filter, scrub_filter = ContextFilter(self.context), ScrubFilter()
        self.console = ConsoleHandler(
            _level(console_level) if console_level is not None else self._level
        )
        self.handlers: list[logging.Handler] = [self.console]
        self.file_handler: logging.handlers.RotatingFileHandler | None = None
        if file is not None:
            path = Path(file)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                # maxBytes or backupCount 0: the handler never rotates (documented).
                self.file_handler = logging.handlers.RotatingFileHandler(
                    path,
                    maxBytes=max_bytes if retention > 0 else 0,
                    backupCount=retention,
                    encoding="utf-8",
                )
            except OSError as e:
                from journal_loader.errors import ConfigError

                raise ConfigError(f"cannot open log file {path}: {e.strerror or e}") from None
            self.file_handler.setLevel(self._level)
            self.handlers.append(self.file_handler)
        for handler in self.handlers:
            handler.addFilter(context_filter)
            handler.addFilter(scrub_filter)
            handler.setFormatter(formatter(fmt))
            self.logger.addHandler(handler)
        lowest = min(h.level for h in self.handlers)
        self.logger.setLevel(lowest)
        # A library's INFO chatter (SQLAlchemy, urllib3) stays out unless DEBUG is asked for.
        self._quieted = {}
        if self._level > logging.DEBUG:
            for name in ("sqlalchemy", "alembic", "urllib3"):
                noisy = logging.getLogger(name)
                self._quieted[name] = noisy.level
                noisy.setLevel(max(noisy.level, logging.WARNING))

    # RunObserver
    def on_start(self, info: RunInfo) -> None:
        self.context.source_id = info.get("source_id")
        self.context.run_id = info.get("run_id")
        if info.get("loader"):
            self.context.loader = str(info["loader"])

    def on_finish(self, report: RunReport) -> None:
        if self.context.run_id is None:
            self.context.run_id = report.run_id
        if self.context.source_id is None:
            self.context.source_id = report.source_id
        self._log_end(report)

    @staticmethod
    def _log_end(report: RunReport) -> None:
        """The run's last line: how it ended, for a log shipper that never sees stdout."""
        from journal_loader.ops.observers import exit_code_of, pending_error

        code = exit_code_of(report)
        stats = report.statistics
        counts = {
            "records": stats.total_processed,
            "succeeded": stats.imported,
            "failed": stats.failed,
            "skipped": stats.skipped,
        }
        status = str(report.status)  # a RunStatus: its value
        duration = report.duration_seconds
        reason = report.message or pending_error(report)
        fields = {
            "event": "run_finished",
            "status": status,
            "exit_code": code,
            **counts,
            "duration_seconds": round(duration, 3),
            "records_per_second": report.records_per_second,
            "reason": reason or None,
        }
        locked = SourceLockedError.exit_code
        level = logging.INFO if code == 0 else logging.WARNING if code == locked else logging.ERROR
        logging.getLogger("journal_loader.run").log(
            level,
            "run finished: %s, exit code %d: %s records, %s succeeded, %s failed, %s skipped "
            "in %.2f s%s",
            status,
            code,
            f"{counts['records']:,}",
            f"{counts['succeeded']:,}",
            f"{counts['failed']:,}",
            f"{counts['skipped']:,}",
            duration,
            f" ({reason})" if reason else "",
            extra={"fields": fields},
        )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for handler in self.handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self.logger.setLevel(self._previous_level)
        for name, level in self._quieted.items():
            logging.getLogger(name).setLevel(level)


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value
