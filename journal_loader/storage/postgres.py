"""PostgreSQL backend: the production store.

* Bulk writes use COPY (measured ~2x psycopg executemany, ~4x SQLAlchemy executemany).
* Journal positions come from the table's sequence, a block per batch reserved under a short
  session advisory lock (the append lock), which leaves behind a shared "in-flight" advisory
  mark that the batch's transaction holds to its end (``PostgresTx.reserve_positions``).
  So positions do not follow commit order (a batch may commit 1001 before another commits
  1000), and readers that must never later see an event below a position they have passed
  (``events_after``, export, ``--as-of`` a position) stop at the high water
  (``JournalStore.high_water``: the last position reserved, lowered below the first position
  of any batch still in flight). The append lock used to be held from reserving to COMMIT,
  which made positions follow commit order and serialised every batch of every concurrent
  loader. Why the mechanism is correct, and what a crash does: at ``reserve_positions``;
  pinned by tests/test_journal_order.py.
* The per-source lock is a session advisory lock on a dedicated autocommit connection; the
  server drops it when that connection ends (process killed, connection terminated). The
  connection's application_name names the run, so a second run can say who holds it.
* Lock keys include the database and schema, so tests (one schema each) never collide.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import Connection, create_engine, event, make_url, text

from journal_loader import faults
from journal_loader.errors import FatalError, JournalLoaderError, SourceLockedError
from journal_loader.secrets import scrub
from journal_loader.storage.base import SCHEMA_HEAD, SourceLock, Store, Tx, lock_key
from journal_loader.storage.errors import DB_ERRORS, classify
from journal_loader.storage.sql import int_array_literal

_ID_BLOCK = 5000
log = logging.getLogger("journal_loader.storage")
_HOLDER_SQL = """
SELECT a.application_name, a.pid, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %(hi)s AND l.objid::bigint = %(lo)s
"""


def _split_key(key: int) -> dict[str, int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF}


_PG_BINARY = {
    "BigInteger": "int8",
    "Integer": "int4",
    "SmallInteger": "int2",
    "String": "varchar",
    "Text": "text",
    "LargeBinary": "bytea",
    "Float": "float8",
    "Date": "date",
}


@functools.cache
def binary_copy_types(table: str, columns: tuple[str, ...]) -> list[str] | None:
    """psycopg binary COPY types of these columns, from the declared schema (None if any is
    unknown: then text COPY)."""
    from journal_loader.storage.schema import metadata

    t = metadata.tables.get(table)
    if t is None:
        return None
    out = []
    for name in columns:
        column = t.columns.get(name)
        if column is None:
            return None
        col_type = column.type
        kind = type(getattr(col_type, "impl", col_type)).__name__
        if kind == "Variant":  # BigInteger().with_variant(Integer(), "sqlite")
            kind = type(col_type.impl).__name__  # type: ignore[attr-defined]
        if kind == "DateTime":
            out.append("timestamptz" if getattr(col_type, "timezone", False) else "timestamp")
            continue
        mapped = _PG_BINARY.get(kind)
        if mapped is None:
            return None
        out.append(mapped)
    return out


# At most this many advisory locks per call of advisory_xact_lock (see there).
MAX_ADVISORY_LOCKS = 1024


@functools.cache
def bucket_key(namespace: str, scope: str, bucket: int) -> int:
    """The advisory lock key of one bucket of a scope (``advisory_xact_lock`` past
    MAX_ADVISORY_LOCKS names): public so that tests and operators reading pg_locks can
    name the keys a batch holds."""
    return lock_key(f"{namespace}:{scope}:lock-bucket:{bucket}")


class IdRuns:
    """Ids taken from a table's sequence and not handed out yet, as runs of consecutive
    values [start, stop), in the order taken.

    Why runs, not a deque of single ids: a batch of the example takes ~30,000 ids (one per
    node, attribute and relationship it creates, one per provenance row), one to four at a
    time. A row per id from the server, a deque entry per id, and popping them one by one
    cost the run's thread ~2% (py-spy, PostgreSQL, the example, 50,000 rows); a slice of a
    run is one ``range``. A refill is one statement, so its ids are consecutive unless
    another session takes values of the same sequence while it runs (or the sequence's
    increment is not 1): a refill is one run, or a few. The ids are handed out in exactly
    the order a deque of the same values would give (tests/test_id_runs.py, hypothesis)."""

    __slots__ = ("_next", "_runs", "_stop", "size")

    def __init__(self) -> None:
        self._next = self._stop = 0  # the run being handed out: _next.._stop-1
        self._runs: deque[tuple[int, int]] = deque()  # the runs after it
        self.size = 0

    def add(self, start: int, stop: int) -> None:
        """The ids start..stop-1, after every id held."""
        if stop <= start:
            return
        self.size += stop - start
        runs = self._runs
        if runs:
            last_start, last_stop = runs[-1]
            if last_stop == start:
                runs[-1] = (last_start, stop)
            else:
                runs.append((start, stop))
        elif self._next == self._stop:
            self._next, self._stop = start, stop
        elif self._stop == start:
            self._stop = stop
        else:
            runs.append((start, stop))

    def add_runs(self, other: IdRuns) -> None:
        """Every id ``other`` holds, in its order, after every id held."""
        self.add(other._next, other._stop)
        for start, stop in other._runs:
            self.add(start, stop)

    def take(self, n: int) -> list[int]:
        """The next ``n`` ids (at most ``size``)."""
        if n > self.size:
            raise ValueError(f"{n} ids wanted, {self.size} held")
        self.size -= n
        first = self._next
        if self._stop - first >= n:
            self._next = first + n
            return list(range(first, first + n))
        taken = list(range(first, self._stop))
        n -= len(taken)
        while True:  # n > 0, and the runs hold at least n ids
            start, stop = self._runs.popleft()
            if stop - start >= n:
                taken.extend(range(start, start + n))
                self._next, self._stop = start + n, stop
                return taken
            taken.extend(range(start, stop))
            n -= stop - start

    def take_one(self) -> int:
        """The next id (``size`` must be at least 1)."""
        first = self._next
        if first == self._stop:
            first, self._stop = self._runs.popleft()
        self._next = first + 1
        self.size -= 1
        return first


# n values of a sequence: the first and the last, and all of them only when they are not
# every value in between (another session took some meanwhile, or the increment is not 1).
# Why not a row a value: 20,000 rows cost the client 4 ms to read, this one row nothing.
# Why not runs computed by the server (a window over the values, grouped): that tripled
# the server's time for the statement (measured: 29 against 8 ms for 20,000 values); the
# aggregates here cost about a tenth more than the values alone.
_NEXT_VALUES = """
SELECT min(v), max(v),
       CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL ELSE array_agg(v) END
FROM (SELECT nextval(%s::regclass) AS v FROM generate_series(1, %s)) AS taken
"""


def _refill_ids(cursor: Any, store: PostgresStore, table: str, pool: IdRuns, n: int) -> None:
    """At least ``n`` ids in ``pool`` (a block of _ID_BLOCK at least), from the table's
    sequence, through ``cursor``."""
    sequence = store._sequences.get(table)
    if sequence is None:  # once: per generated row it cost 8x the nextval itself
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
        sequence = store._sequences[table] = cursor.fetchone()[0]
    cursor.execute(_NEXT_VALUES, (sequence, max(n - pool.size, _ID_BLOCK)))
    first, last, values = cursor.fetchone()
    if values is None:  # every value from first to last (the usual case)
        pool.add(first, last + 1)
        return
    values.sort()
    start = stop = values[0]
    for v in values:
        if v != stop:
            pool.add(start, stop)
            start = v
        stop = v + 1
    pool.add(start, stop)


class PostgresTx(Tx):
    store: PostgresStore
    writes_behind = True  # the server inserts while the client resolves (Tx.write_behind)
    appends_behind = True

    def driver_sql(self, sql: str) -> str:
        from journal_loader.storage.sql import to_pyformat

        return to_pyformat(sql)

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # Binary COPY when the declared schema knows the columns' types (measured: 11 us a
        # journal row against 18.5 for text COPY, which escapes every JSON payload).
        types = binary_copy_types(table, tuple(columns))
        fmt = " (FORMAT BINARY)" if types else ""
        with self.cursor.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN{fmt}") as copy:
            if types:
                copy.set_types(types)
            write_row = copy.write_row
            for row in rows:
                write_row(row)

    def reserve_ids(self, table: str, n: int) -> list[int]:
        pool = self.store._id_pools.get(table)
        if pool is None:
            pool = self.store._id_pools[table] = IdRuns()
        if pool.size < n:
            self.store.take_topped_up_ids()
            if pool.size < n:
                self._refill(table, pool, n)
        return pool.take(n)

    def _refill(self, table: str, pool: IdRuns, n: int) -> None:
        _refill_ids(self.cursor, self.store, table, pool, n)

    def reserve_ahead(self, wanted: dict[str, int]) -> None:
        # Ids left over at the end of a run are never used: gaps, as with any sequence.
        self.store.take_topped_up_ids()
        pools = self.store._id_pools
        for table, n in wanted.items():
            pool = pools.get(table)
            if pool is None:
                pool = pools[table] = IdRuns()
            if pool.size < n:
                self._refill(table, pool, n)

    def next_id(self, table: str) -> int:
        pool = self.store._id_pools.get(table)
        if pool is not None and pool.size:
            return pool.take_one()
        return self.reserve_ids(table, 1)[0]

    def advisory_xact_lock(self, scope: str, names: Sequence[str]) -> None:
        # Keys sorted in Python and taken in that order by one statement: the subquery's
        # ORDER BY feeds the aggregate row by row, so lock k+1 is requested only once lock k
        # is granted. Scoped to database.schema like every lock key here.
        namespace = self.store.namespace
        keys = sorted({lock_key(f"{namespace}:{scope}:{name}") for name in names})
        if len(keys) > MAX_ADVISORY_LOCKS:
            # Advisory locks live in the server's shared lock table, sized by
            # max_locks_per_transaction x max_connections (about 12,000 here, shared by every
            # session): a first-load batch of 5,000 records names ~20,000 identities and got
            # "out of shared memory". Past the cap, names share one of MAX_ADVISORY_LOCKS
            # bucket locks of the same scope (phases never share a key): two batches may then
            # wait for each other without need, never exclude each other less. Pinned by
            # tests/test_storage_contract.py::test_advisory_locks_are_capped_per_call.
            keys = sorted({bucket_key(namespace, scope, k % MAX_ADVISORY_LOCKS) for k in keys})
        if keys:
            try:
                self.cursor.execute(
                    "SELECT count(pg_advisory_xact_lock(k)) "
                    "FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS sorted_keys",
                    (int_array_literal(keys),),
                )
                self.cursor.fetchone()
            except DB_ERRORS as e:
                raise classify(e, where=self.store.display_url) from e

    def reserve_positions(self, n: int) -> list[int]:
        # Why not simply nextval: sequence values are handed out when taken, not when their
        # transaction commits. Batch A takes 1000, batch B takes 1001 and commits; a reader
        # that read up to 1001 moves its cursor past 1000, and when A commits, 1000 appears
        # below a position the reader has passed: a consumer of events_after skips it, an
        # export resumed from 1002 leaves it out, "as of position 1001" changes afterwards.
        #
        # The old cure held an exclusive advisory lock from here to COMMIT, so positions
        # followed commit order; it serialised the COPY and the commit of every batch of
        # every loader (bench/bench_scale.py --modes journal, 2 loaders: the lock was held
        # in 46-56% of the samples and 12-14% of the loaders' active samples waited on it;
        # with the lock around the reservation alone, 0% and 0%).
        # Now the lock covers the reservation only, and readers stop at the high-water mark
        # (JournalStore.high_water, queries/journal.postgresql.sql), the highest position
        # below which nothing is still in flight. One statement, evaluated bottom-up (each
        # level is a subquery whose volatile outputs the planner can neither pull up nor
        # drop, and a level runs once its child has produced its row):
        #
        # 1. pg_advisory_lock(append key): a SESSION lock, so that it can be released at the
        #    end of this statement rather than at COMMIT. Under it nobody else moves the
        #    journal's sequence, so one setval reserves the whole block (measured: 1 ms for
        #    20,000 positions, against 127 ms fetching 20,000 nextvals).
        # 2. pg_advisory_xact_lock_shared(mark base + the first position the block will
        #    get): the in-flight mark, transaction-scoped, so the server drops it at COMMIT,
        #    at ROLLBACK, and when the connection or the process dies. Shared, because
        #    nobody ever waits for it: readers only look it up in pg_locks. One bigint key,
        #    the namespace's 23-bit prefix above a 40-bit position (2^40 positions), so a
        #    reader finds the lowest in-flight first position with one MIN over pg_locks.
        #    It is taken BEFORE the sequence moves, from the sequence's current value + 1
        #    (pg_sequence_last_value; a sequence never called yet gives 1, which is what
        #    nextval then hands out; a mark can only be at or below the block, never above).
        # 3. setval(nextval + n - 1): the block becomes visible to readers of the sequence.
        # 4. pg_advisory_unlock(append key).
        #
        # Why the mark comes before the sequence moves, and why high_water reads the
        # sequence BEFORE pg_locks: a position p <= the value a reader read was reserved
        # before that read, so its mark existed before it too; when the reader then looks at
        # pg_locks, p's transaction either still holds its mark (the high water stays below
        # it) or has ended. And a transaction that ended has either committed, and then is
        # visible to every snapshot taken afterwards (CommitTransaction in PostgreSQL's
        # xact.c leaves the running set, ProcArrayEndTransaction, after recording the
        # commit and, in its words, "_before_ releasing locks we hold"), or rolled back,
        # and p will never exist. In the other order (pg_locks first) a batch could reserve and
        # mark between the two reads and the reader would count its positions as settled.
        # The reader's own read of the events must take its snapshot after high_water
        # (READ COMMITTED: a later statement), never inside an older REPEATABLE READ one.
        #
        # What a crash does: a batch whose process or connection dies loses its mark with
        # its session; its positions become a gap and the high water moves past it, as it
        # does past a rolled-back batch's. A statement that fails after step 1 (a cancel,
        # "out of shared memory" on the mark) would leave the session lock held by a pooled
        # connection, blocking every writer: the aborted transaction cannot run the unlock,
        # so the connection is closed instead (invalidate) and the server drops its session
        # locks with it. A crash of the server drops every lock, and its in-flight batches
        # never commit.
        #
        # Pinned by tests/test_journal_order.py: test_a_tailing_reader_sees_every_event_once
        # (writers committing out of position order, a reader following events_after; its
        # "planted" variant, a high water without the marks, misses events), and, one piece
        # each, test_a_batch_in_flight_holds_the_high_water_below_it,
        # test_high_water_reads_the_sequence_before_the_marks (a batch reserving between
        # the two reads), test_a_rolled_back_batch_leaves_a_gap_that_does_not_hold_the_high_water,
        # test_a_killed_writer_leaves_no_mark and
        # test_a_failed_reservation_does_not_keep_the_append_lock.
        store = self.store
        params = {
            "append": store.journal_append_key,
            "mark_base": store.journal_mark_base,
            "n": n,
        }
        try:
            self.cursor.execute(_RESERVE_POSITIONS, params)
            last = int(self.cursor.fetchone()[0])
        except BaseException as e:
            self.conn.invalidate()
            if isinstance(e, DB_ERRORS):
                raise classify(e, where=store.display_url) from e
            raise
        if last >= 1 << MARK_POSITION_BITS:  # its mark's key would name another namespace
            raise FatalError(
                f"{store.display_url}: journal position {last} is past 2^{MARK_POSITION_BITS}, "
                "the most an in-flight mark's key holds (storage/postgres.py)"
            )
        return list(range(last - n + 1, last + 1))


# See PostgresTx.reserve_positions: every level runs after the level inside it.
_RESERVE_POSITIONS = """
SELECT r.last, pg_advisory_unlock(%(append)s)
FROM (
    SELECT setval(m.seq, nextval(m.seq) + %(n)s - 1) AS last
    FROM (
        SELECT l.seq, pg_advisory_xact_lock_shared(
                   %(mark_base)s + COALESCE(pg_sequence_last_value(l.seq), 0) + 1) AS marked
        FROM (
            SELECT pg_get_serial_sequence('journal', 'position')::regclass AS seq,
                   pg_advisory_lock(%(append)s) AS locked
            OFFSET 0
        ) AS l
        OFFSET 0
    ) AS m
    OFFSET 0
) AS r
"""

#: Bits of a journal position in an in-flight mark's key (PostgresStore.journal_mark_base).
MARK_POSITION_BITS = 40


class _AdvisoryLock(SourceLock):
    def __init__(self, name: str, key: int, dbapi_conn: Any) -> None:
        self.name = name
        self.key = key
        self._conn: Any = dbapi_conn

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def is_held(self) -> bool:
        if self._conn is None:
            return False
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND objsubid = 1 "
                "AND classid::bigint = %(hi)s AND objid::bigint = %(lo)s",
                _split_key(self.key),
            ).fetchone()
        except Exception:
            return False
        return bool(row and row[0])


def _first_schema(url: str) -> str | None:
    from journal_loader.storage import url_search_path

    first = (url_search_path(url) or "").split(",")[0].strip().strip('"')
    return first or None


def _c_bytea_dumper(dbapi_connection: Any, _record: Any) -> None:
    """psycopg's dbapi20 module registers its Binary wrapper's dumper for bytea last, so a
    binary COPY that names its types (``_insert_rows``) dumped every bytes value through
    that Python class: the journal's two hashes per row. Registering the bytes dumper again
    gives bytea back to the C one (measured: a journal-like row 0.61 -> 0.25 us of COPY);
    only the lookup by type oid changes, and this project passes no ``psycopg.Binary``."""
    dbapi_connection.adapters.register_dumper(bytes, BytesBinaryDumper)


# Why JIT is off on journal-loader's connections. PostgreSQL compiles a query with LLVM once
# the planner's estimate of its cost passes jit_above_cost (100,000 by default), and every
# statement journal-loader runs is short: index probes of a batch's names and ids, COPY,
# journal pages. Their estimates pass that mark when the graph's tables have no statistics
# (never analysed: autovacuum off, or a first load outrunning it): a batch's attribute
# lookup of 1,500 nodes among 5 million attributes was estimated at 8.5 million rows and
# spent 44 ms compiling to run in 14 (EXPLAIN ANALYZE, PostgreSQL 15), every batch, more as
# the graph grew. No statement here runs long enough to pay a compilation back, so the
# setting follows what the queries are, not what the statistics say. Only these sessions
# change; a server without JIT (before PostgreSQL 11) has no such setting and is left as it
# is. Pinned by tests/test_graph_plans.py (the store's sessions run with jit off).
_JIT_OFF = "SELECT set_config('jit', 'off', false) WHERE current_setting('jit', true) IS NOT NULL"


def _session_settings(dbapi_connection: Any, record: Any) -> None:
    """Each new connection: the C dumper for bytea (``_c_bytea_dumper``), JIT off (above)."""
    _c_bytea_dumper(dbapi_connection, record)
    with dbapi_connection.cursor() as cur:
        cur.execute(_JIT_OFF)
    dbapi_connection.commit()  # a SET is undone with the transaction it ran in


class PostgresStore(Store):
    dialect = "postgresql"
    is_server = True

    def __init__(self, url: str) -> None:
        sa_url = make_url(url)
        if sa_url.drivername in ("postgresql", "postgres"):
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        app = sa_url.query.get("application_name") or "journal-loader"
        engine = create_engine(
            sa_url,
            pool_pre_ping=True,
            pool_size=2,
            max_overflow=4,
            connect_args={"application_name": app, "connect_timeout": 10},
        )
        event.listen(engine, "connect", _session_settings)
        super().__init__(url, engine)
        self._id_pools: dict[str, IdRuns] = {}
        self._topping_up: tuple[threading.Thread, dict[str, IdRuns]] | None = None
        self._sequences: dict[str, str] = {}
        self._namespace: str | None = None

    @property
    def writes_behind(self) -> bool:
        return PostgresTx.writes_behind

    @property
    def appends_behind(self) -> bool:
        return PostgresTx.appends_behind

    def _make_tx(self, conn: Connection) -> Tx:
        return PostgresTx(self, conn)

    def top_up_ids(self, wanted: dict[str, int]) -> None:
        # Why, and why this way. The committer calls this after the next batch is planned,
        # while this batch's last rows are still written behind on the batch's connection:
        # the run's thread then waits for that write, and at the next batch's start it used
        # to wait once more, for that batch's ids (3% of the run's thread, py-spy, the
        # example). So the ids are fetched now, on a connection of their own, by a thread,
        # while the run's thread waits for the write anyway. Fetched in the run's thread on
        # that connection instead, the wait for them (4% of the thread) ate the gain.
        #
        # The thread fills IdRuns of its own, never the pools: the run's thread adds them to
        # the pools (``take_topped_up_ids``, after joining the thread) before it next needs
        # an id it does not hold, so the pools are only ever touched by one thread, and the
        # ids are handed out in the order they were taken, as without a top-up. Sequences
        # are not transactional: the values are the run's to use in any transaction, and a
        # value left unused (a run that ends, a batch rolled back) is a gap, as it always
        # was. A top-up that fails is logged and changes nothing: the batch's own
        # reserve_ahead fetches what is missing. Pinned by tests/test_id_runs.py (the same
        # ids, graph and answers as a load without top-ups, also when every top-up fails)
        # and tests/test_crash.py (killed in the thread, ``ids_topped_up``: one clean run).
        self.take_topped_up_ids()
        pools = self._id_pools
        held = {t: p.size if (p := pools.get(t)) else 0 for t in wanted}
        short = {t: n - held[t] for t, n in wanted.items() if n > held[t]}
        if not short:
            return
        fetched = {t: IdRuns() for t in short}
        thread = threading.Thread(
            target=self._top_up, args=(short, fetched), name="journal-loader ids", daemon=True
        )
        self._topping_up = (thread, fetched)
        thread.start()

    def _top_up(self, short: dict[str, int], fetched: dict[str, IdRuns]) -> None:
        """(In its own thread) at least ``short[table]`` new ids of each table, into
        ``fetched``, on a connection of its own."""
        try:
            with self.engine.connect() as conn:
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                for table, n in short.items():
                    _refill_ids(cursor, self, table, fetched[table], n)
                conn.rollback()
            faults.point(faults.IDS_TOPPED_UP)  # (a kill here: the values are gaps)
        except Exception as e:  # what it fetched before is kept; the batch fetches the rest
            log.debug("topping up ids on a connection of their own failed: %s", scrub(str(e)))

    def take_topped_up_ids(self) -> None:
        """Wait for the top-up in flight, if any, and add the ids it fetched to the pools,
        after the ids they hold (the run's thread: see ``top_up_ids``)."""
        topping_up = self._topping_up
        if topping_up is None:
            return
        self._topping_up = None
        thread, fetched = topping_up
        thread.join()
        for table, runs in fetched.items():
            pool = self._id_pools.get(table)
            if pool is None:
                pool = self._id_pools[table] = IdRuns()
            pool.add_runs(runs)

    def dispose(self) -> None:
        self.take_topped_up_ids()  # its connection back to the pool before the pool ends
        super().dispose()

    @property
    def namespace(self) -> str:
        """database.schema: lock names are scoped to it. A schema the URL names that does not
        exist yet counts as that schema (the first run creates it): every process agrees."""
        if self._namespace is None:
            with self.read() as conn:
                row = conn.execute(text("SELECT current_database(), current_schema()")).one()
            self._namespace = f"{row[0]}.{row[1] or _first_schema(self.url)}"
        return self._namespace

    def upgrade(self) -> None:
        """Also, under the migration lock (so concurrent first runs agree): create the schema
        the URL's search_path names when it does not exist yet, and never migrate into a
        schema that holds another application's tables named like ours (a Propose API
        deployment's public sources, nodes, ...)."""
        from journal_loader.storage.migrate import upgrade

        with self.migration_lock():
            revision = self.current_revision()
            if revision == SCHEMA_HEAD:
                return  # another process migrated while this one waited (see Store.upgrade)
            if revision is None:
                self._prepare_own_schema()
            upgrade(self.engine)

    def _prepare_own_schema(self) -> None:
        from journal_loader.errors import SchemaError
        from journal_loader.storage.schema import VIEW_NAMES, metadata

        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT current_schema()")).scalar()
                if current is None:
                    wanted = _first_schema(self.url)
                    if not wanted or not wanted.replace("_", "a").isalnum():
                        return  # the migration says what is wrong
                    conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{wanted}"'))
                    conn.commit()
                    return
                # Views too: a deployment's `provenance` table would take the name of ours.
                ours = sorted({t for t in metadata.tables if "." not in t} | set(VIEW_NAMES))
                clashing = [
                    r[0]
                    for r in conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = :schema AND table_name = ANY(:names) "
                            "ORDER BY table_name"
                        ),
                        {"schema": current, "names": ours},
                    )
                ]
        except JournalLoaderError:
            raise
        except Exception as e:
            raise classify(e, where=self.display_url) from e
        if clashing:
            raise SchemaError(
                f"{self.display_url}: schema {current} has no journal-loader journal but "
                f"already has tables named like journal-loader's ({', '.join(clashing)}), "
                "another application's (a Propose API deployment?). Give journal-loader a "
                "schema of its own: database.schema in the config (a Propose API in the same "
                "database uses journal_loader by default), or options=-csearch_path=NAME in "
                "the URL"
            )

    @property
    def journal_append_key(self) -> int:
        return lock_key(f"{self.namespace}:journal-append")

    @property
    def journal_mark_base(self) -> int:
        """The in-flight marks' keys are this + a batch's first position (see
        ``PostgresTx.reserve_positions``): a 23-bit prefix of the namespace's own, so the key
        stays a positive bigint and the position below it sorts as the key does. Two
        namespaces of one database whose prefixes collide (about 1 in 8 million) see each
        other's marks: their high waters lag behind while the other's batches are in
        flight, never ahead."""
        prefix = lock_key(f"{self.namespace}:journal-in-flight") & 0x7FFFFF
        return prefix << MARK_POSITION_BITS

    def _lock_connection(self, application_name: str) -> Any:
        try:
            pooled = self.engine.raw_connection()
            dbapi_conn: Any = pooled.driver_connection
            pooled.detach()  # this connection lives exactly as long as the lock
            dbapi_conn.rollback()
            dbapi_conn.autocommit = True
            dbapi_conn.execute(
                "SELECT set_config('application_name', %s, false)", (application_name[:63],)
            )
            return dbapi_conn
        except JournalLoaderError:
            raise
        except Exception as e:
            raise classify(e, where=self.display_url) from e

    def lock_source(self, name: str, holder: dict[str, Any]) -> SourceLock:
        key = lock_key(f"{self.namespace}:{name}")
        conn = self._lock_connection(f"journal-loader run {holder.get('run_id', '?')}")
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
            if not got:
                rows = conn.execute(_HOLDER_SQL, _split_key(key)).fetchall()
                who = (
                    f"{rows[0][0] or 'unknown application'}, backend pid {rows[0][1]}, "
                    f"connected since {rows[0][2]:%Y-%m-%d %H:%M:%S %Z}"
                    if rows
                    else "holder unknown"
                )
                conn.close()
                raise SourceLockedError(
                    f"{name} is being loaded by another run ({who}); try again when it has finished"
                )
        except JournalLoaderError:
            raise
        except Exception as e:
            conn.close()
            raise classify(e) from e
        return _AdvisoryLock(name, key, conn)

    def lock_is_free(self, name: str) -> bool:
        key = lock_key(f"{self.namespace}:{name}")
        with self.read() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            rows = raw.execute(_HOLDER_SQL, _split_key(key)).fetchall()
        return not rows

    @contextlib.contextmanager
    def migration_lock(self) -> Iterator[None]:
        conn = self._lock_connection("journal-loader migrate")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(f"{self.namespace}:migrate"),))
            yield
        finally:
            conn.close()
