"""Turning driver errors into journal-loader's three kinds: transient, record (data), fatal.

The runner never inspects a driver exception: it catches what ``classify`` returns.
The rule of thumb: if the same statement could succeed a moment later (the connection came
back, the lock was released, the other transaction committed), it is transient; if it can
only succeed after a person changes something (a grant, a table, the config), it is fatal;
if it is about the values of one record, it is a record error.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

from journal_loader.errors import (
    ConflictError,
    FatalError,
    IntegrityConflictError,
    JournalLoaderError,
    ProposeError,
    SchemaError,
    StorageError,
    TransientError,
)
from journal_loader.secrets import scrub

try:  # psycopg is a dependency, but keep SQLite-only use importable without it
    import psycopg
    from psycopg import errors as pg_errors
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]
    pg_errors = None  # type: ignore[assignment]

# SQLSTATE classes and codes (PostgreSQL appendix A).
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
    "57P01",  # admin_shutdown (pg_terminate_backend)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "57014",  # query_canceled (statement_timeout)
    "58000",  # system_error
    "25P04",  # idle_session_timeout
}
# Two writers in each other's way (no server trouble): retried at once, on their own budget.
_CONFLICT_STATES = {"40001", "40P01"}
_TRANSIENT_CLASSES = {"08"}  # connection exceptions
_FATAL_STATES = {
    "42501",  # insufficient_privilege
    "42P01",  # undefined_table
    "42883",  # undefined_function
    "42703",  # undefined_column
    "3D000",  # invalid_catalog_name (no such database)
    "3F000",  # invalid_schema_name
    "53100",  # disk_full
    "25006",  # read_only_sql_transaction
}
_FATAL_CLASSES = {"28"}  # invalid authorization (bad password)
_RECORD_CLASSES = {"22", "23"}  # data exceptions, integrity constraint violations

_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "busy")
_SQLITE_FATAL = (
    "readonly database",
    "read-only",
    "disk is full",
    "database or disk is full",
    "no such table",
    "no such column",
    "unable to open database",
    "disk i/o error",
    "file is not a database",
    "database disk image is malformed",
)


DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, sa_exc.SQLAlchemyError)
if psycopg is not None:
    DB_ERRORS += (psycopg.Error,)


def is_db_error(error: BaseException) -> bool:
    """Raised by a database driver or SQLAlchemy (not by a loader's or our own code)."""
    return isinstance(error, DB_ERRORS)


def _root(error: BaseException) -> BaseException:
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        return error.orig
    return error


def sqlstate(error: BaseException) -> str | None:
    root = _root(error)
    state = getattr(root, "sqlstate", None)
    return state if isinstance(state, str) else None


def describe(error: BaseException) -> str:
    """A one-line message without the SQL statement or its parameters (they may hold data
    that belongs in the DLQ, not in a log line) and without credentials."""
    root = _root(error)
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    state = sqlstate(error)
    prefix = f"{type(root).__name__}"
    if state:
        prefix += f" [{state}]"
    return scrub(f"{prefix}: {text}")


def classify(error: BaseException, where: str | None = None) -> JournalLoaderError:
    """Map any exception raised by a database call to a JournalLoaderError subclass.
    ``where`` (the database's masked URL) prefixes the message."""
    if isinstance(error, JournalLoaderError):
        return error
    root = _root(error)
    message = describe(error)
    if where:
        message = f"{scrub(where)}: {message}"
    state = sqlstate(error)
    if state is not None:
        if state == "23505":
            return IntegrityConflictError(message)
        if state in _CONFLICT_STATES:
            return ConflictError(message)
        if state in _TRANSIENT_STATES or state[:2] in _TRANSIENT_CLASSES:
            return TransientError(message)
        if state in _FATAL_STATES or state[:2] in _FATAL_CLASSES:
            if state in {"42P01", "42703"}:
                return SchemaError(message)
            return FatalError(message)
        if state[:2] in _RECORD_CLASSES:
            return StorageError(message)  # a record's values; the runner isolates the record
        return FatalError(message)
    if psycopg is not None and isinstance(root, psycopg.DataError):
        # Refused by psycopg before it reached the server (no SQLSTATE): a value it cannot
        # send, such as text with a NUL byte. One record's values, like class 22 above.
        return StorageError(message)
    if psycopg is not None and isinstance(root, psycopg.OperationalError):
        # no SQLSTATE: the connection could not be made or was lost
        lowered = str(root).lower()
        if "password authentication failed" in lowered or "authentication" in lowered:
            return FatalError(message)
        if 'database "' in lowered and "does not exist" in lowered:
            return FatalError(message)
        return TransientError(message)
    if psycopg is not None and isinstance(root, psycopg.InterfaceError):
        return TransientError(message)  # "the connection is closed"
    if isinstance(root, sqlite3.Error):
        lowered = str(root).lower()
        if isinstance(root, sqlite3.IntegrityError):
            if "unique" in lowered:
                return IntegrityConflictError(message)
            return StorageError(message)
        if any(s in lowered for s in _SQLITE_TRANSIENT):
            return TransientError(message)
        if "no such table" in lowered or "no such column" in lowered:
            return SchemaError(message)
        if any(s in lowered for s in _SQLITE_FATAL):
            return FatalError(message)
        return FatalError(message)
    if isinstance(error, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return TransientError(message)
    if isinstance(error, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return FatalError(message)
    return FatalError(message)


def is_record_error(error: JournalLoaderError) -> bool:
    """A database error caused by one record's values (raised inside its savepoint)."""
    return type(error) is StorageError or isinstance(error, ProposeError)
