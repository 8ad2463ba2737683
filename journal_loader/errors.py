"""journal-loader's own exception hierarchy: every error it raises on purpose is a
``JournalLoaderError``.

Driver errors (sqlite3, psycopg, SQLAlchemy) never escape the storage layer raw: they are
classified into the three kinds the runner acts on (see ``journal_loader.storage.errors``):

* ``TransientError``: retry with backoff; never puts a record in the dead-letter queue.
* ``RecordError`` subclasses: about one record; the record goes to the DLQ, the run goes on.
* ``FatalError`` and the other ``JournalLoaderError`` subclasses: stop the run with a message.

``SkipRecord`` is no failure: the record is journaled as skipped, with its reason.
``RecordError`` and ``SkipRecord`` are ``JournalLoaderError`` subclasses too, so one
``except JournalLoaderError`` catches all of journal-loader's errors; code that treats a
record's failure or skip apart from the run's errors catches them first (the runner does).

Every ``JournalLoaderError`` carries the process exit code the CLI uses for it, so the CLI
never needs to know which error means what.

``RecordValidationError`` was called ``ValidationError``, the name pydantic's error has;
``ValidationError`` stays importable as an alias, and the DLQ still names the failure
``ValidationError`` (``RecordError.error_type``), so old and new entries group together.

Base layer: imports nothing from journal_loader.
"""

from __future__ import annotations

from typing import Any, ClassVar


class JournalLoaderError(Exception):
    """Base of every error journal-loader raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(JournalLoaderError):
    """A bad config file, option or loader definition (exit code 2)."""

    exit_code = 2


class UsageError(ConfigError):
    """A bad command-line call (exit code 2)."""


class SourceFileError(JournalLoaderError):
    """The input file as a whole cannot be read (missing, a directory, empty, bad header...).

    The message names the file and, when known, the line and byte offset.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        line: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        where = path
        if line is not None:
            where += f", line {line}"
        if byte_offset is not None:
            where += f", byte {byte_offset}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.reason = reason
        self.line = line
        self.byte_offset = byte_offset


class SourceChangedError(SourceFileError):
    """The file changed (grew, shrank, was rewritten) while it was being loaded."""


class SourceLockedError(JournalLoaderError):
    """Another run holds this source's lock (exit code 75, EX_TEMPFAIL: try again later)."""

    exit_code = 75


class FencedOutError(JournalLoaderError):
    """This run lost its lease on the source (another run took over); it must not write."""


class StorageError(JournalLoaderError):
    """A database failure, already classified (see storage.errors.classify)."""


class TransientError(StorageError):
    """Worth retrying: connection lost, timeout, serialization failure, deadlock, busy.

    ``retry_after``: seconds the target asked us to wait (a 429/503's Retry-After).
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpenError(JournalLoaderError):
    """Too many transient failures in a row: the run stops (resumable) instead of grinding."""


class FailureLimitError(JournalLoaderError):
    """max_failed_records / max_failure_rate exceeded: the input looks plainly wrong."""


class FailFastError(JournalLoaderError):
    """The first ``fail_fast_records`` records of a run all failed the same way: the loader
    or the config is wrong, not the data (exit code 2: rerunning will not help; fix it, and
    the next run resumes after the records already failed)."""

    exit_code = 2


class UnknownIdError(UsageError):
    """An id given on the command line (a source, a DLQ entry, a node...) that does not
    exist: a usage error, exit code 2, like any other wrong argument."""


class UnknownSourceError(UnknownIdError):
    """A source id that does not exist."""


class NoDatabaseError(UsageError):
    """A command that reads or maintains a journal found no journal-loader database at the
    URL it was given (it never creates one)."""


class RunError(JournalLoaderError):
    """Raised by ``RunReport.raise_for_status()`` (and ``run(raise_on_failure=True)``);
    ``report`` is the run's report, ``exit_code`` the CLI's code for it."""

    def __init__(self, message: str, report: Any) -> None:
        super().__init__(message)
        self.report = report
        self.exit_code = int(report.exit_code) or 1


class RunFailedError(RunError):
    """The run failed (status ``failed``); the journal says why and the next run resumes."""


class RunInterruptedError(RunFailedError):
    """The run was stopped by a signal (SIGTERM, SIGINT) after finishing its batch."""


class RunPartialError(RunError):
    """The run stopped early by design (``--limit``): raised only when asked for."""


class FatalError(StorageError):
    """Retrying cannot help: authentication, permission, missing table or function."""


class ConflictError(TransientError):
    """Another writer got there first: a deadlock or a serialization failure between two
    loaders. Nothing is down; the transaction is retried at once (after a short random
    delay), on its own budget (journal_loader/runner.py, ``Runner._retrying``)."""


class IntegrityConflictError(ConflictError):
    """A unique key another writer committed first; the batch is retried and re-resolves."""


class SchemaError(FatalError):
    """The database schema is missing, too old, or from a newer journal-loader."""


class RecordError(JournalLoaderError):
    """A failure that belongs to one record: it goes to the DLQ and the run goes on.

    ``stage`` is where it happened: read, parse, validate or propose.
    """

    stage: str = "propose"
    # The DLQ's name for a class whose name changed; every other class goes by its own name.
    _journaled_as: ClassVar[dict[type[RecordError], str]] = {}

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}

    @property
    def error_type(self) -> str:
        """The name the DLQ files this failure under (``dlq list --error-type``)."""
        cls = type(self)
        return self._journaled_as.get(cls, cls.__name__)


class ParseError(RecordError):
    stage = "parse"


class RecordValidationError(RecordError):
    """The record breaks a rule (required field, date format, unknown node type...)."""

    stage = "validate"


# The old name: user code imports it, and the DLQ has always filed these failures under it.
ValidationError = RecordValidationError
RecordError._journaled_as[RecordValidationError] = "ValidationError"


class ProposeError(RecordError):
    """The graph refused the fact (an ``error`` answer, a constraint the record breaks)."""

    stage = "propose"


class ProposeAnswerError(ProposeError):
    """The graph answered ``error`` for one of the record's facts (the DLQ's error type)."""


class AmbiguousMatchError(ProposeError):
    """Two or more existing entities match: never merged silently."""


class SkipRecord(JournalLoaderError):
    """Raised (or returned through ``Loader.skip``) to skip a record with a reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_type_of(error: BaseException) -> str:
    """The DLQ's name for an error that failed a record: a ``RecordError``'s ``error_type``,
    any other exception's class name (a bug in a loader: ``KeyError``, ``TypeError``...)."""
    if isinstance(error, RecordError):
        return error.error_type
    return type(error).__name__
