"""The storage interface: what the runner, the projections and the graph need from a database.

One module per backend implements it (``sqlite.py``, ``postgres.py``); everything above this
layer is backend-neutral and is tested by one contract suite against both
(``tests/test_storage_contract.py``).

Two kinds of access, on purpose:

* SQLAlchemy Core for the schema, migrations, reads and per-batch statements (cold paths);
* the driver connection underneath the same transaction (``Tx.raw``) for per-record lookups
  and bulk writes, where SQLAlchemy's per-statement overhead would halve the throughput
  (measured: SQLAlchemy Core executemany is about half of raw sqlite3 and 55-63k rows/s on
  PostgreSQL against 130-150k for psycopg executemany and more for COPY).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, CursorResult, Engine, TextClause, inspect, text

from journal_loader.errors import JournalLoaderError, SchemaError
from journal_loader.secrets import mask_url
from journal_loader.storage.errors import DB_ERRORS, classify
from journal_loader.storage.sql import to_pyformat
from journal_loader.switching import short_switch_interval

SCHEMA_HEAD = "0011"  # tests/test_schema.py checks this is the migrations' head


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def epoch_micros(value: dt.datetime) -> int:
    """Whole microseconds since the Unix epoch, UTC: how SQLite stores the graph tables'
    timestamps since migration 0009 (an 8-byte integer instead of 26 bytes of text)."""
    delta = value.astimezone(dt.UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def graph_time(value: Any) -> dt.datetime | None:
    """A graph table's timestamp as the driver returns it, as a UTC datetime: integer
    microseconds (SQLite since migration 0009), text (SQLite before it; naive text is UTC,
    as journal-loader always wrote it) or a datetime (PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, int):
        return EPOCH + dt.timedelta(microseconds=value)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks take bigint)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# The journal's columns, in the order ``JournalAppend.rows`` gives them.
JOURNAL_COLUMNS = (
    "position",
    "source_id",
    "record_offset",
    "event_type",
    "schema_version",
    "payload",
    "run_id",
    "recorded_at",
    "prev_hash",
    "hash",
)


@dataclass(slots=True)
class JournalAppend:
    """A batch's journal rows by column, as ``Tx.insert_journal`` writes them. What every
    row shares (the source, the run, the time) is given once; each row's ``prev_hash`` is
    the ``hash`` of the row before it, the first row's ``head``. Built by
    ``JournalWriter.append`` (journal/writer.py)."""

    positions: list[int]
    source_id: int
    run_id: str
    recorded_at: Any  # as ``Tx.timestamp`` made it
    head: bytes | None
    offsets: list[int | None]
    event_types: list[str]
    versions: list[int]
    payloads: list[bytes]  # the encoded events, UTF-8 JSON
    hashes: list[bytes]

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows, each in ``JOURNAL_COLUMNS`` order (the payload as text)."""
        sid, run, at = self.source_id, self.run_id, self.recorded_at
        prevs = [self.head, *self.hashes[:-1]]
        return [
            (p, sid, o, t, v, payload.decode(), run, at, prev, h)
            for p, o, t, v, payload, prev, h in zip(
                self.positions,
                self.offsets,
                self.event_types,
                self.versions,
                self.payloads,
                prevs,
                self.hashes,
                strict=True,
            )
        ]


class SourceLock(ABC):
    """Held for the whole run of one source; released (also by the OS/server) when the holder
    dies, so a killed run never blocks the next one."""

    name: str

    @abstractmethod
    def release(self) -> None: ...

    @abstractmethod
    def is_held(self) -> bool:
        """Still ours? (False when the lock's connection was killed.)"""

    def __enter__(self) -> SourceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _WriteBehind:
    """One bulk write running in a thread of its own, on its transaction's connection
    (``Tx.write_behind``)."""

    __slots__ = ("error", "prev", "thread")

    def __init__(self, write: Callable[[], None], prev: _WriteBehind | None = None) -> None:
        self.error: BaseException | None = None
        #: the write this one waits for first (``Tx.write_behind_queued``), still its
        #: transaction's user until it ends
        self.prev = prev
        self.thread = threading.Thread(
            target=self._run, args=(write,), name="journal-loader-write-behind", daemon=True
        )
        self.thread.start()

    def _run(self, write: Callable[[], None]) -> None:
        try:
            with short_switch_interval():  # why: journal_loader/switching.py
                write()
        except BaseException as e:  # handed to the transaction's thread (Tx.join_behind)
            self.error = e


class Tx(ABC):
    """One open transaction. Statements run on the same connection, in the same transaction,
    whether they go through SQLAlchemy (``execute``) or the driver (``fetchall``, ...).

    ``conn``, ``raw`` and ``cursor`` are properties: while a write started by
    ``write_behind`` runs, any other use of the transaction waits for it first (and raises
    its error), so the connection is only ever used by one thread at a time."""

    #: Does ``write_behind`` run the write in a thread (PostgreSQL), or at once (SQLite)?
    writes_behind = False
    #: ... and a write that holds a batch's journal rows (``write_behind(append=True)``)?
    #: Where the journal goes in by one statement that releases the GIL (SQLite's
    #: ``journal_insert``) or by COPY (PostgreSQL), yes: see
    #: ``BatchCommitter._append_behind_and_plan_ahead``.
    appends_behind = False
    #: ... and can such a write end with the transaction's COMMIT (``commit_behind``)?
    commits_behind = False

    def __init__(self, store: Store, conn: Connection) -> None:
        self.store = store
        self._conn = conn
        raw = conn.connection.driver_connection
        assert raw is not None, "a pooled connection always has its driver connection"
        self._raw: Any = raw
        self._cursor: Any = raw.cursor()
        self._savepoint_seq = 0
        self._behind: _WriteBehind | None = None
        self._behind_error: BaseException | None = None
        #: ``commit_behind`` was called: the COMMIT is the write behind's (caller's thread)
        self.commit_handed_behind = False
        #: that COMMIT succeeded (set in the write's thread; read once it is joined)
        self.committed_behind = False

    @property
    def conn(self) -> Connection:
        if self._behind is not None or self._behind_error is not None:
            self.join_behind()
        return self._conn

    @property
    def raw(self) -> Any:
        if self._behind is not None or self._behind_error is not None:
            self.join_behind()
        return self._raw

    @property
    def cursor(self) -> Any:
        if self._behind is not None or self._behind_error is not None:
            self.join_behind()
        return self._cursor

    # --- a write behind the caller (issue 11: the client's CPU beside the server's) ---
    def write_behind(self, write: Callable[[], None], *, append: bool = False) -> bool:
        """Run ``write`` (bulk inserts of rows the caller will not change again) in a thread
        while the caller goes on, on this transaction's connection; the next use of the
        transaction waits for it. False, and nothing run, while the previous write is still
        running: the caller keeps its rows and offers them again later (it never waits
        here). On a backend whose transactions do not write behind (``writes_behind``;
        with ``append``, a write of the journal's rows: ``appends_behind``), ``write``
        runs at once.

        Why: on PostgreSQL the server inserting a batch's rows (the graph's COPY: index
        entries, foreign-key checks) and the client resolving the batch's records were two
        halves of each batch, one after the other, each using one of the two cores (the
        loader's CPU plus the server's was the wall time, measured). A batch written in
        parts, each while the client resolves the next records, overlaps them. It is
        still one transaction: what a lookup in it sees is the batch's rows written so far
        as well as the committed ones, which safe mode (each record written at once, in a
        savepoint) has always shown it, with the same answers (tests/test_write_behind.py
        compares the graphs, the answers and the DLQ).

        An error of the write is raised by the next use of the transaction, and by every
        use after it (the transaction is broken: it can only roll back), and by COMMIT:
        the batch rolls back, whatever the thread was doing when it surfaced."""
        if self._behind is not None:
            if self._behind.thread.is_alive():
                return False
            self.join_behind()
        if self._behind_error is not None:
            raise self._behind_error
        if not (self.appends_behind if append else self.writes_behind):
            write()
            return True
        self._behind = _WriteBehind(write)
        return True

    @property
    def behind_running(self) -> bool:
        """Is a write started by ``write_behind`` still running?"""
        return self._behind is not None and self._behind.thread.is_alive()

    def write_behind_queued(self, write: Callable[[], None]) -> None:
        """``write_behind``, but never refused: while the previous write still runs, the new
        one starts in a thread that first waits for it, and runs only if it succeeded (else
        it fails with its error), so the caller goes on at once either way. The connection
        still has one user at a time: the first write, then the queued one. Both count as
        the transaction's write behind: a use of the transaction from either thread does
        not wait for the other (``join_behind`` follows ``prev``; without that, the first
        write's next statement waited for the queued write, which waited for it:
        tests/test_write_behind.py, test_a_queued_write_runs_after_the_one_running...).
        Why: BatchCommitter._append_behind_and_plan_ahead."""
        prev = self._behind
        if prev is None or not prev.thread.is_alive() or not self.writes_behind:
            if not self.write_behind(write):
                self.join_behind()
                self.write_behind(write)
            return

        def after_prev() -> None:
            prev.thread.join()
            if prev.error is not None:
                raise prev.error
            write()

        self._behind = _WriteBehind(after_prev, prev)

    def commit_behind(self, write: Callable[[], None]) -> None:
        """Run ``write`` (a batch's journal rows, then the last checks before COMMIT), then
        COMMIT, in a thread, while the caller goes on without the transaction
        (``commits_behind``; see BatchCommitter._append_behind_and_plan_ahead for why and
        what pins it). The transaction is then over: the store's ``transaction()`` waits for
        the thread at its end and raises its error (nothing committed: COMMIT is the write's
        last step), and its own COMMIT finds nothing left to commit. ``committed_behind``
        says, once the thread is joined, whether this COMMIT succeeded."""
        if not self.commits_behind:
            raise TypeError(f"{type(self).__name__} does not commit behind")

        def write_and_commit() -> None:
            write()
            self._commit_in_thread()
            self.committed_behind = True

        self.commit_handed_behind = True
        if not self.write_behind(write_and_commit, append=True):
            self.join_behind()
            self.write_behind(write_and_commit, append=True)

    def _commit_in_thread(self) -> None:
        raise NotImplementedError

    def join_behind(self) -> None:
        """Wait for the write started by ``write_behind``; raise its error (again and again:
        the transaction is broken once a write failed). In that write's own thread a
        no-op: it is the one using the connection."""
        behind = self._behind
        if behind is not None:
            me = threading.current_thread()
            link: _WriteBehind | None = behind
            while link is not None:
                if link.thread is me:
                    return
                link = link.prev
            behind.thread.join()
            self._behind = None
            if behind.error is not None:
                self._behind_error = behind.error
        if self._behind_error is not None:
            raise self._behind_error

    def _settle_behind(self) -> None:
        """At a rollback: wait for a write still running (the connection is rolled back
        only once nobody else uses it); its error is not raised (the rollback has one)."""
        behind, self._behind = self._behind, None
        if behind is not None and behind.thread is not threading.current_thread():
            behind.thread.join()

    # --- SQLAlchemy (cold paths) ---
    def execute(self, sql: str | TextClause, params: Any = None) -> CursorResult[Any]:
        clause = _text(sql) if isinstance(sql, str) else sql
        return (
            self.conn.execute(clause, params) if params is not None else self.conn.execute(clause)
        )

    # --- the driver (hot paths); SQL with :name placeholders ---
    def driver_sql(self, sql: str) -> str:
        return sql

    # Driver calls classify their own errors, so code inside a transaction (a savepoint, the
    # graph's safe mode) sees journal-loader's kinds, not sqlite3's or psycopg's.
    def fetchall(self, sql: str, params: dict[str, Any] | Sequence[Any] = ()) -> list[Any]:
        try:
            self.cursor.execute(self.driver_sql(sql), params)
            rows: list[Any] = self.cursor.fetchall()
        except DB_ERRORS as e:
            raise classify(e, where=self.store.display_url) from e
        return rows

    def fetchone(self, sql: str, params: dict[str, Any] | Sequence[Any] = ()) -> Any:
        try:
            self.cursor.execute(self.driver_sql(sql), params)
            return self.cursor.fetchone()
        except DB_ERRORS as e:
            raise classify(e, where=self.store.display_url) from e

    def run(self, sql: str, params: dict[str, Any] | Sequence[Any] = ()) -> int:
        try:
            self.cursor.execute(self.driver_sql(sql), params)
        except DB_ERRORS as e:
            raise classify(e, where=self.store.display_url) from e
        rowcount: int = self.cursor.rowcount
        return rowcount

    def executemany(self, sql: str, rows: Sequence[Any]) -> None:
        if rows:
            try:
                self.cursor.executemany(self.driver_sql(sql), rows)
            except DB_ERRORS as e:
                raise classify(e, where=self.store.display_url) from e

    def insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Bulk insert: executemany on SQLite, COPY on PostgreSQL."""
        if rows:
            try:
                self._insert_rows(table, columns, rows)
            except DB_ERRORS as e:
                raise classify(e, where=self.store.display_url) from e

    def insert_journal(self, rows: JournalAppend) -> None:
        """A batch's journal rows: ``insert_rows`` here (COPY on PostgreSQL); SQLite writes
        them with one statement."""
        self.journal_insert(rows)()

    def journal_insert(self, rows: JournalAppend) -> Callable[[], None]:
        """``insert_journal`` in two halves: what is built here, in the caller's thread, and
        the write it returns, to run now or behind (``write_behind``: the Python work of a
        write behind would hold the GIL the thread planning the next batch needs)."""
        tuples = rows.rows()
        return lambda: self.insert_rows("journal", JOURNAL_COLUMNS, tuples)

    @abstractmethod
    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None: ...

    @abstractmethod
    def reserve_ids(self, table: str, n: int) -> list[int]:
        """n new primary keys for ``table`` (rows inserted later with explicit ids)."""

    def next_id(self, table: str) -> int:
        """One new primary key for ``table`` (the per-row hot path of reserve_ids)."""
        return self.reserve_ids(table, 1)[0]

    def reserve_ahead(self, wanted: dict[str, int]) -> None:
        """Make sure the next ``wanted[table]`` ids of each table need no query: where ids
        come from the server in blocks (PostgreSQL), fetch them now, before a write behind
        holds the connection (a refill would wait for it). Elsewhere nothing to do."""
        return

    @abstractmethod
    def reserve_positions(self, n: int) -> list[int]:
        """n journal positions, increasing, none ever handed out again. Not necessarily in
        commit order with other writers' (PostgreSQL): readers that must never later see an
        event below a position they passed stop at ``JournalStore.high_water``."""

    @abstractmethod
    def advisory_xact_lock(self, scope: str, names: Sequence[str]) -> None:
        """Lock these names (within ``scope``) until the transaction ends, all in one sorted
        order, so two transactions locking overlapping sets cannot deadlock. A caller that
        locks in phases gives each phase its own scope: no key of one phase is ever a key
        of another (the order between phases is then the callers' to keep)."""

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A savepoint on the driver connection: an error inside rolls back only what ran
        inside, and the transaction goes on."""
        self._savepoint_seq += 1
        name = f"jl_sp_{self._savepoint_seq}"
        self.cursor.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            self.cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
            self.cursor.execute(f"RELEASE SAVEPOINT {name}")
            raise
        else:
            self.cursor.execute(f"RELEASE SAVEPOINT {name}")

    def timestamp(self, value: dt.datetime) -> Any:
        """A timestamp as this driver wants it for a raw insert."""
        return value

    def graph_timestamp(self, value: dt.datetime) -> Any:
        """A timestamp for the graph's tables (``created_at``, ``updated_at``), as this
        backend stores it there; ``graph_time`` reads it back."""
        return value


class Store(ABC):
    """A journal-loader database: the journal, its projections and the embedded graph."""

    dialect: str

    def __init__(self, url: str, engine: Engine) -> None:
        self.url = url
        self.engine = engine

    @property
    def display_url(self) -> str:
        return mask_url(self.url)

    #: False when the store was opened read-only (a SQLite file that cannot be written).
    writable: bool = True
    #: True for a database server other applications can share with the journal (PostgreSQL:
    #: the worker queue's tables, a Propose API deployment); False for an embedded file.
    is_server: bool = False

    def exists(self) -> bool:
        """Does the database hold journal-loader's schema (any revision)?"""
        return self.current_revision() is not None

    def describe_missing(self) -> str:
        """Why ``exists()`` said no, for the message (e.g. the file that is not there)."""
        return ""

    # --- schema ---
    def current_revision(self) -> str | None:
        try:
            with self._read_connection() as conn:  # on SQLite, BEGIN DEFERRED: waits for no writer
                if not inspect(conn).has_table("alembic_version"):
                    return None
                row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
                return None if row is None else str(row[0])
        except JournalLoaderError:
            raise
        except Exception as e:
            raise classify(e, where=self.display_url) from e

    def ensure_schema(self, *, upgrade: bool = True) -> None:
        """Migrate on first use; refuse a schema from a newer journal-loader."""
        revision = self.current_revision()
        if revision == SCHEMA_HEAD:
            return
        if revision is not None and not _known_revision(revision):
            raise SchemaError(
                f"{self.display_url} has schema revision {revision}, unknown to this "
                f"journal-loader (head {SCHEMA_HEAD}): upgrade journal-loader"
            )
        if not upgrade:
            raise SchemaError(
                f"{self.display_url} is at schema revision {revision or 'none'}, "
                f"expected {SCHEMA_HEAD}: run `journal-loader db upgrade`"
            )
        self.upgrade()

    def upgrade(self) -> None:
        from journal_loader.storage.migrate import upgrade

        with self.migration_lock():
            # Checked again under the lock: processes that start on a new database together
            # all find no schema, and all but the first wait here while it migrates. Once
            # the lock is theirs the schema is at head, and Alembic would still begin a
            # write transaction to find that out, which on SQLite meant waiting in the busy
            # handler behind the first process's back-to-back batches: `jobs run --workers
            # 2` ran one job to its end before the other's first batch, 4 runs in 30
            # (tests/test_ops_jobs.py, the two registries side by side; pinned by
            # tests/test_storage_contract.py, test_upgrade_at_head_does_not_wait_for_a_writer).
            if self.current_revision() == SCHEMA_HEAD:
                return
            upgrade(self.engine)

    @abstractmethod
    def migration_lock(self) -> contextlib.AbstractContextManager[None]: ...

    # --- transactions ---
    @abstractmethod
    def _make_tx(self, conn: Connection) -> Tx: ...

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        """BEGIN ... COMMIT on a pooled connection; any error rolls back and is classified."""
        try:
            with self.engine.connect() as conn, conn.begin():
                tx = self._make_tx(conn)
                try:
                    yield tx
                except BaseException:
                    tx._settle_behind()
                    raise
                tx.join_behind()  # a failed write behind rolls the transaction back
        except DB_ERRORS as e:  # a loader's or our own exception passes through as it is
            raise classify(e, where=self.display_url) from e

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self._read_connection() as conn:
                yield conn
        except DB_ERRORS as e:
            raise classify(e, where=self.display_url) from e

    @contextlib.contextmanager
    def read_tx(self) -> Iterator[Tx]:
        """A ``Tx`` over a read connection, for the repositories' reads: no write lock (SQLite
        takes one at a write transaction's BEGIN), READ COMMITTED on PostgreSQL. Rolled back
        at the end; nothing written in it is kept."""
        with self.read() as conn:
            yield self._make_tx(conn)

    def _read_connection(self) -> contextlib.AbstractContextManager[Connection]:
        return self.engine.connect()

    # --- locks ---
    @abstractmethod
    def lock_source(self, name: str, holder: dict[str, Any]) -> SourceLock:
        """Take the source's lock or raise SourceLockedError naming the holder."""

    @abstractmethod
    def lock_is_free(self, name: str) -> bool:
        """True when nobody holds the lock (used to tell a dead run from a live one)."""

    @property
    def writes_behind(self) -> bool:
        """Do this store's write transactions write behind (``Tx.writes_behind``)?"""
        return False

    @property
    def appends_behind(self) -> bool:
        """Do they write a batch's journal rows behind (``Tx.appends_behind``)?"""
        return False

    def top_up_ids(self, wanted: dict[str, int]) -> None:
        """Outside any transaction: make sure the next ``wanted[table]`` ids of each table
        need no query (``Tx.reserve_ahead`` of the next batch then reads nothing). Where ids
        come from the server (PostgreSQL) they are fetched on a connection of their own;
        elsewhere nothing to do. Never raises: the batch's own reserve_ahead fetches what
        this did not."""
        return

    def dispose(self) -> None:
        self.engine.dispose()


_TEXT_CACHE: dict[str, TextClause] = {}


def _text(sql: str) -> TextClause:
    clause = _TEXT_CACHE.get(sql)
    if clause is None:
        clause = _TEXT_CACHE[sql] = text(sql)
    return clause


def _known_revision(revision: str) -> bool:
    from journal_loader.storage.migrate import known_revisions

    return revision in known_revisions()


__all__ = ["SCHEMA_HEAD", "SourceLock", "Store", "Tx", "lock_key", "to_pyformat", "utcnow"]
