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
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from sqlalchemy import Connection, create_engine, event
from sqlalchemy.pool import NullPool, QueuePool

from journal_loader.errors import ConfigError, SourceLockedError
from journal_loader.storage.base import (
    JournalAppend,
    SourceLock,
    Store,
    Tx,
    epoch_micros,
    lock_key,
)
from journal_loader.storage.errors import DB_ERRORS, classify

SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"

log = logging.getLogger("journal_loader.storage")

# The writing connection's own checkpoints: only past this many WAL pages (~400 MB), a
# backstop should the checkpointer thread fall behind (see _Checkpointer).
WAL_AUTOCHECKPOINT_BACKSTOP = 100_000


def _use_wal(cur: sqlite3.Cursor, timeout: float = 60.0) -> None:
    """Put the database in WAL mode (a no-op when it is), waiting out another connection's
    switch instead of failing.

    A new connection does not know the file's mode until it reads it, so its
    ``PRAGMA journal_mode = WAL`` tries to switch, and while another process is creating
    the file and switching it, SQLite answers SQLITE_BUSY at once, without calling the busy
    handler. Seen in `jobs run --workers 2` on a new database: about one start in 30 failed
    with "database is locked" before any transaction (tests/test_ops_jobs.py, the two
    registries side by side; pinned by tests/test_storage_contract.py,
    test_sqlite_new_database_opened_by_many_processes_at_once). Reading the mode first
    answers "wal" without a lock once the file is in WAL; the switch itself is retried."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            row = cur.execute("PRAGMA journal_mode").fetchone()
            if not row or str(row[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _b64decode(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value)


# A batch's journal rows in one statement (``SQLiteTx.journal_insert``). Each row's small
# columns come as a JSON array of [offset, event type, schema version, where its payload
# starts, its length]; the payloads as one blob of them all, each row's cut out by
# ``substr`` (on a blob: bytes, O(1)) and read as text (UTF-8: the text the row held when
# bound as a str); the hashes as one blob of 32-byte digests, each row's previous hash the
# one before its own (the batch's first: :head). What every row shares is bound once. (The
# COALESCE: substr of an empty blob is NULL, not an empty value; payloads are never NULL.)
_INSERT_JOURNAL = """
INSERT INTO journal (position, source_id, record_offset, event_type, schema_version, payload,
                     run_id, recorded_at, prev_hash, hash)
SELECT :first + j.key, :source_id, j.value ->> 0, j.value ->> 1, j.value ->> 2,
       COALESCE(CAST(substr(:payloads, j.value ->> 3, j.value ->> 4) AS TEXT), ''), :run_id,
       :recorded_at,
       CASE WHEN j.key = 0 THEN :head ELSE substr(:hashes, 32 * j.key - 31, 32) END,
       substr(:hashes, 32 * j.key + 1, 32)
FROM json_each(:rows) AS j
"""
# ``->>`` is SQLite 3.38's (2022); older libraries take the rows by executemany.
_ONE_STATEMENT_JOURNAL = sqlite3.sqlite_version_info >= (3, 38, 0)
# A statement's payloads stay well under SQLite's largest value (1 GB by default).
_JOURNAL_STATEMENT_BYTES = 64 << 20
_json_rows = msgspec.json.Encoder().encode


class SQLiteTx(Tx):
    store: SQLiteStore
    # The journal's one statement (journal_insert) runs without the GIL: a thread can
    # insert a batch's journal while the next batch is planned
    # (BatchCommitter._append_behind_and_plan_ahead). The graph's rows, by executemany,
    # are not written behind: executemany takes the GIL back for every row.
    appends_behind = _ONE_STATEMENT_JOURNAL
    # ... and COMMIT after it, in that thread: the COMMIT (the batch's pages into the WAL,
    # its checksums and its sync) also runs without the GIL (commit_behind).
    commits_behind = _ONE_STATEMENT_JOURNAL

    def __init__(self, store: SQLiteStore, conn: Connection) -> None:
        super().__init__(store, conn)
        self._next_id: dict[str, int] = {}

    def _commit_in_thread(self) -> None:
        # isolation_level is None (we BEGIN ourselves): after this, the sqlite3 connection
        # has no open transaction, so SQLAlchemy's COMMIT at the end of the store's
        # transaction() is a no-op (sqlite3's commit() without a transaction does nothing),
        # and a ROLLBACK after a failed COMMIT rolls back what is still open.
        try:
            self.cursor.execute("COMMIT")
        except DB_ERRORS as e:
            raise classify(e, where=self.store.display_url) from e

    def journal_insert(self, rows: JournalAppend) -> Callable[[], None]:
        """One ``INSERT ... SELECT ... FROM json_each`` (``_INSERT_JOURNAL``) for the batch,
        not an ``executemany`` of ten parameters a row; its parameters built here.

        Why: the rows are the same (tests/test_storage_contract.py compares every column,
        type and all, with ``insert_rows``), for less CPU, and without the GIL. Measured on
        400,000 rows like the example's journal (two a record): 11.5 us of CPU a record to
        insert and commit against 16.2 by executemany, and 0.95 us to build the parameters
        against 2.0 for the row lists (bench/HISTORY.md, 2026-11-30). sqlite3 releases the
        GIL for the whole statement, where executemany takes it back at every row."""
        positions = rows.positions
        n = len(positions)
        if not _ONE_STATEMENT_JOURNAL or (n and positions[-1] - positions[0] != n - 1):
            return super().journal_insert(rows)  # (reserve_positions hands out a range here)
        payloads, hashes = rows.payloads, rows.hashes
        offsets, types, versions = rows.offsets, rows.event_types, rows.versions
        statements: list[dict[str, Any]] = []
        start = 0
        while start < n:
            end, size = start, 0
            meta: list[tuple[int | None, str, int, int, int]] = []
            add = meta.append
            while end < n and (end == start or size < _JOURNAL_STATEMENT_BYTES):
                length = len(payloads[end])
                add((offsets[end], types[end], versions[end], size + 1, length))
                size += length
                end += 1
            digests = b"".join(hashes[start:end])
            if len(digests) != 32 * (end - start):  # (SHA-256 digests, journal/chain.py)
                raise ValueError("a journal hash that is not 32 bytes")
            statements.append(
                {
                    "first": positions[start],
                    "source_id": rows.source_id,
                    "payloads": b"".join(payloads[start:end]),
                    "run_id": rows.run_id,
                    "recorded_at": rows.recorded_at,
                    "head": rows.head if start == 0 else hashes[start - 1],
                    "hashes": digests,
                    "rows": _json_rows(meta),
                }
            )
            start = end

        def insert() -> None:
            for params in statements:
                try:
                    self.cursor.execute(_INSERT_JOURNAL, params)
                except DB_ERRORS as e:
                    raise classify(e, where=self.store.display_url) from e

        return insert

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

    def graph_timestamp(self, value: Any) -> Any:
        # Integer microseconds, not text (migration 0009, issue 11): the example writes about
        # 18 graph timestamps a record, and each is 8 bytes instead of 26 (3,245 -> ~2,9xx
        # bytes of database a record, bench/bench_journal_bytes.py). The journal's
        # recorded_at stays text: its rows are append-only, so no migration may rewrite the
        # old ones, and its as-of queries compare the column, where SQLite would order any
        # integer before any text.
        return epoch_micros(value)


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


class _Checkpointer:
    """Copies the WAL back into the database file in a thread of its own (issue 11).

    With SQLite's automatic checkpoints, the connection that commits copies the WAL's pages
    into the database right after its COMMIT, in the runner's thread: every page a batch
    dirtied is written twice (the WAL, then the database) and synced twice before the next
    batch can start. As the graph's indexes grow, a batch of the example dirties ~9 pages a
    record, nearly all of them leaf pages of indexes with random keys (measured: 5,500 pages
    a batch at 50,000 rows, 9,100 at 300,000), and at 300,000 rows that checkpoint took
    90-120 ms of a batch's ~600. Here the writing connection only appends to the WAL (its
    own checkpoints only past WAL_AUTOCHECKPOINT_BACKSTOP pages), and after each commit this
    thread runs a PASSIVE checkpoint on its own connection: it waits for no one and copies
    what is committed while the next batch is being built (sqlite3 releases the GIL while
    SQLite works, so the copying and its syncs overlap the runner's Python). Measured,
    30,000 rows of the example onto a 300,000-row graph, three rounds interleaved on this
    shared 2-core machine: 1,630 against 1,404 records/s (median), the same CPU per record;
    the main thread's commit 60-80 ms a batch against 150-200.

    The WAL starts over from its beginning only when a write transaction begins with every
    frame copied, and a runner begins its next batch right after a commit, before that
    commit's frames are: so once the WAL holds ``restart_frames`` frames, the next write
    transaction waits for the checkpoint in progress to end (``before_write``), and its
    commit restarts the WAL. The WAL stays under about ``restart_frames`` pages plus a
    batch (the file keeps its largest size until the last connection closes), at one wait
    per that many pages.

    Durability is unchanged: a commit is durable once its WAL frames are synced (at COMMIT,
    ``synchronous=FULL``); a checkpoint only moves committed pages, and SQLite resumes or
    redoes one cut short by a crash. The last connection to close (``dispose``) still
    checkpoints the rest and deletes the WAL, as before.

    Fork: a child forked while this thread works inside SQLite can deadlock in SQLite's own
    mutexes at its first connect (tried: it does). journal-loader never forks; its workers
    are new processes (``jobs run --workers``, procrastinate). A program that forks after a
    load should ``dispose()`` the store first (that stops the thread)."""

    #: the WAL's size (pages) past which a write transaction waits for the checkpoint
    restart_frames = 65_536
    #: at most one checkpoint per this many seconds (many small transactions: one per
    #: interval, not one per commit)
    min_interval = 0.02

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames = 0  # the WAL's frames at the last checkpoint's end
        self._wake = threading.Event()
        self._caught_up = threading.Event()  # a checkpoint ended after the last commit
        self._pokes = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def poke(self) -> None:
        """A transaction committed: checkpoint soon."""
        with self._guard:
            self._pokes += 1
            self._caught_up.clear()
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name=f"sqlite-checkpoint {self.path.name}", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def before_write(self) -> None:
        """Before a write transaction: when the WAL is long, let the checkpoint in progress
        end, so that this transaction's commit starts the WAL over."""
        thread = self._thread
        if self.frames >= self.restart_frames and thread is not None and thread.is_alive():
            self._caught_up.wait(timeout=60)

    def stop(self) -> None:
        with self._guard:
            self._stopping = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join()
        self._stopping = False
        self.frames = 0

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as e:  # the writer's own (backstop) checkpoints go on
            log.warning("no checkpointer thread for %s: %s", self.path, e)
            return
        try:
            while True:
                self._wake.wait()
                if self._stopping:
                    return
                self._wake.clear()
                pokes = self._pokes
                try:
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.frames = int(row[1]) if row and row[1] is not None else 0
                except sqlite3.Error as e:  # e.g. busy: the next commit pokes again
                    log.debug("checkpoint of %s: %s", self.path, e)
                with self._guard:
                    if pokes == self._pokes:
                        self._caught_up.set()
                time.sleep(self.min_interval)
        finally:
            self._caught_up.set()  # nobody waits for a thread that is gone
            conn.close()


class _WriterQueue:
    """First come, first served among the processes (and threads) writing one SQLite file.

    The first turnstile was one exclusive flock on ``writer.lock``, held to COMMIT. flock
    is not fair: releasing it wakes the waiter, but the waiter must still be scheduled and
    retry, while the releaser, still on its core, takes the lock again within microseconds
    for its next batch. Measured: two processes of 60 back-to-back 3 ms transactions
    each ran one after the other (60 A, then 60 B) in 3 of 3 runs; with a checkpoint
    thread busy beside the runner (_Checkpointer), `jobs run --workers 2` ran one job to
    its end before the other's first batch in 2 runs of 8. Now each write transaction
    takes a ticket (a counter in ``writers.next``, read and incremented under a flock),
    holds an exclusive flock on its own file ``writers/<ticket>`` until it ends, and
    first waits, in a blocking shared flock, for every lower ticket's file: a writer
    coming back for its next batch queues behind the ones already waiting, so busy
    writers alternate. A process that dies holding a ticket loses its flocks with its
    descriptors, so the writers behind it go on (its file stays until a later writer
    removes it). Pinned by tests/test_storage_contract.py
    (test_sqlite_busy_writers_alternate, test_sqlite_writers_queue_survives_a_killed_writer)."""

    def __init__(self, lock_dir: Path) -> None:
        self.counter = lock_dir / "writers.next"
        self.tickets = lock_dir / "writers"

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        self.tickets.mkdir(exist_ok=True)
        counter = os.open(self.counter, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(counter, fcntl.LOCK_EX)
            raw = os.pread(counter, 32, 0).strip()
            ticket = int(raw) if raw.isdigit() else 0
            os.pwrite(counter, b"%020d" % (ticket + 1), 0)
            # Our file exists and is locked before the counter is released: whoever draws
            # a later ticket finds it and waits for it.
            mine = f"{ticket:020d}"
            path = self.tickets / mine
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            os.close(counter)
        try:
            for name in sorted(os.listdir(self.tickets)):
                if name >= mine:
                    break
                self._wait_for(self.tickets / name)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.close(fd)  # closing the descriptor drops the flock: the next ticket goes

    @staticmethod
    def _wait_for(path: Path) -> None:
        """Until the writer holding ``path`` has ended (or died)."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # it ended
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)
        # Its holder unlinks it at its end; a file left is a dead writer's
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class SQLiteStore(Store):
    dialect = "sqlite"
    #: checkpoints in a thread of their own (_Checkpointer); False: SQLite's own, after commit
    checkpoint_thread = True

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
        self._checkpointer = (
            _Checkpointer(self.real_path) if writable and self.checkpoint_thread else None
        )
        checkpoint_in_thread = self._checkpointer is not None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            if writable:  # setting the journal mode writes the file
                _use_wal(cur)
                cur.execute("PRAGMA synchronous = FULL")
                if checkpoint_in_thread:  # _Checkpointer does it
                    cur.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BACKSTOP}")
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

    @property
    def appends_behind(self) -> bool:
        return SQLiteTx.appends_behind

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
        """A write transaction, in this process's turn in the writers' queue (_WriterQueue).

        SQLite has one writer at a time, and a writer that finds the database locked does
        not queue: its busy handler sleeps and retries, up to 100 ms between tries. A runner
        commits a batch and BEGINs the next one within a few milliseconds, so a second
        process (another job of `jobs run --workers 2`, a `dlq retry`) almost never hits
        the gap: it starved until the first job ended, and a job longer than the busy
        timeout (60 s) made it fail with "database is locked". So a write transaction first
        waits for its turn in a first-come, first-served queue of writers kept in
        ``<db>.locks/`` (see _WriterQueue for why a plain flock was not enough), held to
        COMMIT or ROLLBACK. The turn is taken before SQLite's lock (one order: no
        deadlock), each time on descriptors of its own, so threads of one process take
        turns too; the kernel drops it when the process dies. Pinned by
        tests/test_storage_contract.py (test_sqlite_writers_take_turns,
        test_sqlite_busy_writers_alternate) and tests/test_ops_jobs.py (two registries side
        by side with --workers 2)."""
        if not self.writable:
            with super().transaction() as tx:
                yield tx
            return
        self.lock_dir.mkdir(exist_ok=True)
        if self._checkpointer is not None:
            self._checkpointer.before_write()
        with _WriterQueue(self.lock_dir).turn(), super().transaction() as tx:
            yield tx
        if self._checkpointer is not None:
            self._checkpointer.poke()  # committed (an exception skips this)

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()  # before the last connection's own checkpoint
        super().dispose()

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
