"""SQLite backend: the embedded default.

* WAL mode, ``synchronous=FULL`` (measured: no cost at 10k-row transactions), a long
  ``busy_timeout`` so a second writer waits instead of failing.
* Python's sqlite3 module opens transactions implicitly and cannot do ``BEGIN IMMEDIATE``;
  we switch that off (``isolation_level = None``) and emit BEGIN ourselves, as SQLAlchemy's
  documentation recommends. Write transactions take the write lock at BEGIN (IMMEDIATE):
  a batch either owns the database from its first read or waits, so nothing it read can be
  changed by another writer before it commits. That is also what makes ``reserve_ids``
  (max(id) + 1) safe: nobody else can insert while we hold the lock.
* The per-source lock is an ``flock`` on a file beside the database
  (``journal.db.locks/<name>.lock``); the kernel drops it when the process dies, so a
  killed run never blocks the next (pinned by tests/test_locking.py). "Beside" is beside the
  file's real path: two runs reaching one file through different symlinks meet one lock.
* Read-only use (``read_only=True``: status, verify, history...): a file or folder this
  process cannot write is opened ``mode=ro``, and ``immutable=1`` unless its ``-wal`` and
  ``-shm`` are there to read: SQLite then writes nothing, not even a WAL (an auditor's copy
  on read-only media). A writable file is opened as usual, so a running load is seen live.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.pool import NullPool, QueuePool

from journal_loader.errors import ConfigError, SourceLockedError
from journal_loader.storage.base import SourceLock, Store, Tx, lock_key

SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def _b64decode(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


class SQLiteTx(Tx):
    store: SQLiteStore

    def __init__(self, store: SQLiteStore, conn: Connection) -> None:
        super().__init__(store, conn)
        self._next_id: dict[str, int] = {}

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        marks = ",".join("?" * len(columns))
        self.cursor.executemany(
            f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})",  # noqa: S608 - our names
            rows,
        )

    def _reserve(self, table: str, column: str, n: int) -> list[int]:
        first = self._next_id.get(table)
        if first is None:
            self.cursor.execute(f"SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}")  # noqa: S608
            first = int(self.cursor.fetchone()[0])
        self._next_id[table] = first + n
        return list(range(first, first + n))

    def reserve_ids(self, table: str, n: int) -> list[int]:
        return self._reserve(table, "id", n)

    def next_id(self, table: str) -> int:
        next_id = self._next_id.get(table)
        if next_id is None:
            return self._reserve(table, "id", 1)[0]
        self._next_id[table] = next_id + 1
        return next_id

    def advisory_xact_lock(self, scope: str, names: Sequence[str]) -> None:
        """Nothing to take: a write transaction here (BEGIN IMMEDIATE) already excludes every
        other writer until it ends."""

    def reserve_positions(self, n: int) -> list[int]:
        return self._reserve("journal", "position", n)

    def timestamp(self, value: Any) -> Any:
        return value.astimezone(dt.UTC).strftime(SQLITE_TIME_FORMAT)


class _FileLock(SourceLock):
    def __init__(self, name: str, path: Path, fd: int) -> None:
        self.name = name
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def is_held(self) -> bool:
        return self._fd is not None


class SQLiteStore(Store):
    dialect = "sqlite"

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        # One connection kept open (not a new one per transaction): opening a SQLite
        # connection starts with empty page and statement caches, and closing the last one
        # checkpoints the WAL and deletes it: 5 fsyncs and an unlink per batch (measured:
        # 380-560 us of wall time per record, as much as the loader's CPU). The pool hands
        # the same connection back; dispose() closes it. Another thread or a second
        # transaction at the same time (a read while a batch is open) gets its own.
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=8,
            connect_args={"timeout": 60, "check_same_thread": False},
        )
        database = engine.url.database
        if not database or database == ":memory:" or engine.url.query.get("mode") == "memory":
            raise ConfigError(
                f"{url}: journal-loader needs a SQLite database file (sqlite:///path/journal.db)"
            )
        # sqlite:///file:/path/j.db?mode=ro&uri=true names the file in URI form
        if str(engine.url.query.get("uri", "")).lower() in ("true", "1") and database.startswith(
            "file:"
        ):
            database = database[len("file:") :]
        self.path = Path(database)
        if not self.path.parent.exists():
            raise ConfigError(f"{url}: the directory {self.path.parent} does not exist")
        # Locks live beside the real file, whichever symlink led here.
        self.real_path = self.path.resolve()
        self.open_mode = self._open_mode() if read_only else ""
        if self.open_mode:
            engine.dispose()
            uri = f"file:{quote(str(self.real_path))}?{self.open_mode}"
            engine = create_engine(
                "sqlite://",
                poolclass=NullPool,
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=60, check_same_thread=False),
            )
            self.writable = False
        super().__init__(url, engine)
        writable = not self.open_mode

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            if writable:  # setting the journal mode writes the file
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = FULL")
            cur.execute("PRAGMA foreign_keys = ON")
            # The graph's indexes take random inserts; with SQLite's default 8 MB page cache
            # they missed it once the database outgrew it (measured: inserts 2x slower). The
            # cache is part of the process's memory, and past the size that keeps the
            # indexes' inner pages a larger one bought nothing (issue 11, measured loading
            # 30,000 more rows onto a 300,000-row graph, 1.1 GB: 1,647 / 1,613 / 1,645
            # records per CPU-second with 256 / 64 / 16 MiB; peak RSS 490 / 278 / 229 MB):
            # a page it misses is read from the operating system's cache.
            cur.execute("PRAGMA cache_size = -65536")  # 64 MiB, allocated as used
            cur.execute("PRAGMA temp_store = MEMORY")
            cur.close()
            dbapi_conn.create_function("jl_b64decode", 1, _b64decode, deterministic=True)

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            read = not writable or conn.get_execution_options().get("jl_read_only")
            conn.exec_driver_sql(f"BEGIN {'DEFERRED' if read else 'IMMEDIATE'}")

    def _open_mode(self) -> str:
        """'' (as usual) when this process can write the file and its folder; else the URI
        parameters that read it without writing anything."""
        path, folder = self.real_path, self.real_path.parent
        if not path.is_file():
            return ""  # nothing to open read-only (exists() says so)
        if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
            return ""
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        if wal.is_file() and shm.is_file():
            return "mode=ro"  # the WAL holds committed pages: read them too
        return "mode=ro&immutable=1"

    def exists(self) -> bool:
        try:
            if self.path.stat().st_size == 0:
                return False  # an empty file is no database (and opening it would write one)
        except OSError:
            return False
        return super().exists()

    def describe_missing(self) -> str:
        if not self.path.exists():
            return f" ({self.path.absolute()} does not exist)"
        return f" ({self.path.absolute()} has no journal-loader schema)"

    def _make_tx(self, conn: Connection) -> Tx:
        return SQLiteTx(self, conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """A write transaction, after this process's turn at the writers' turnstile.

        SQLite has one writer at a time, and a writer that finds the database locked does
        not queue: its busy handler sleeps and retries, up to 100 ms between tries. A runner
        commits a batch and BEGINs the next one within a few milliseconds, so a second
        process (another job of `jobs run --workers 2`, a `dlq retry`) almost never hits
        the gap: it starved until the first job ended, and a job longer than the busy
        timeout (60 s) made it fail with "database is locked". So write transactions first
        take an exclusive flock on ``<db>.locks/writer.lock``, held to COMMIT or ROLLBACK.
        A process blocked in flock is woken by the kernel the moment the holder releases
        it, before the holder has read its next batch, so writers take turns batch by
        batch. The lock is taken before SQLite's (one order: no deadlock), each time on a
        descriptor of its own, so threads of one process take turns too; the kernel drops
        it when the process dies. Pinned by tests/test_storage_contract.py
        (test_sqlite_writers_take_turns) and tests/test_ops_jobs.py (two registries side
        by side with --workers 2)."""
        if not self.writable:
            with super().transaction() as tx:
                yield tx
            return
        self.lock_dir.mkdir(exist_ok=True)
        fd = os.open(self.lock_dir / "writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with super().transaction() as tx:
                yield tx
        finally:
            os.close(fd)  # closing the descriptor drops the flock

    def _read_connection(self) -> contextlib.AbstractContextManager[Connection]:
        return self.engine.connect().execution_options(jl_read_only=True)

    # --- locks ---
    @property
    def lock_dir(self) -> Path:
        return self.real_path.with_name(self.real_path.name + ".locks")

    def _lock_path(self, name: str) -> Path:
        return self.lock_dir / f"{lock_key(name) & 0xFFFFFFFFFFFFFFFF:016x}.lock"

    def lock_source(self, name: str, holder: dict[str, Any]) -> SourceLock:
        self.lock_dir.mkdir(exist_ok=True)
        path = self._lock_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SourceLockedError(
                f"{name} is being loaded by another run ({_describe_holder(path)}); "
                "try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"lock": name, **holder}).encode())
        return _FileLock(name, path, fd)

    def lock_is_free(self, name: str) -> bool:
        path = self._lock_path(name)
        if not path.exists():
            return True
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # also drops the probe's shared lock
        return True

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[None]:
        self.lock_dir.mkdir(exist_ok=True)
        fd = os.open(self.lock_dir / "migrate.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    parts = [f"run {info['run_id']}" if info.get("run_id") else "run ?"]
    if info.get("pid"):
        parts.append(f"pid {info['pid']} on {info.get('hostname', '?')}")
    if info.get("started_at"):
        parts.append(f"started {info['started_at']}")
    return ", ".join(parts)
