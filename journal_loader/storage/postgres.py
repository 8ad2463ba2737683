"""PostgreSQL backend: the production store.

* Bulk writes use COPY (measured ~2x psycopg executemany, ~4x SQLAlchemy executemany).
* Journal positions come from the table's sequence, taken under a transaction-scoped
  advisory lock (``reserve_positions``). Why: sequence values are handed out at INSERT time,
  not at COMMIT, so without the lock a batch could commit position 1000 after another batch
  committed 1001, and a reader that saw 1001 would never see 1000 ("as of position N" would
  lie). Holding the lock from reserving to COMMIT makes positions follow commit order. It is
  taken at the very end of a batch (after the graph writes), so concurrent runners of
  different sources serialise only for the short journal append.
  Pinned by tests/test_storage_contract.py::test_positions_follow_commit_order.
* The per-source lock is a session advisory lock on a dedicated autocommit connection; the
  server drops it when that connection ends (process killed, connection terminated). The
  connection's application_name names the run, so a second run can say who holds it.
* Lock keys include the database and schema, so tests (one schema each) never collide.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import Connection, create_engine, event, make_url, text

from journal_loader.errors import JournalLoaderError, SourceLockedError
from journal_loader.storage.base import SourceLock, Store, Tx, lock_key
from journal_loader.storage.errors import DB_ERRORS, classify

_ID_BLOCK = 5000
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
def _binary_types(table: str, columns: tuple[str, ...]) -> list[str] | None:
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
def _bucket_key(namespace: str, scope: str, bucket: int) -> int:
    return lock_key(f"{namespace}:{scope}:lock-bucket:{bucket}")


class PostgresTx(Tx):
    store: PostgresStore

    def driver_sql(self, sql: str) -> str:
        from journal_loader.storage.sql import to_pyformat

        return to_pyformat(sql)

    def _insert_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        # Binary COPY when the declared schema knows the columns' types (measured: 11 us a
        # journal row against 18.5 for text COPY, which escapes every JSON payload).
        types = _binary_types(table, tuple(columns))
        fmt = " (FORMAT BINARY)" if types else ""
        with self.cursor.copy(f"COPY {table} ({','.join(columns)}) FROM STDIN{fmt}") as copy:
            if types:
                copy.set_types(types)
            write_row = copy.write_row
            for row in rows:
                write_row(row)

    def reserve_ids(self, table: str, n: int) -> list[int]:
        pool = self.store._id_pools.setdefault(table, deque())
        if len(pool) < n:
            sequence = self.store._sequences.get(table)
            if sequence is None:  # once: per generated row it cost 8x the nextval itself
                self.cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,))
                sequence = self.store._sequences[table] = self.cursor.fetchone()[0]
            self.cursor.execute(
                "SELECT nextval(%s::regclass) FROM generate_series(1, %s)",
                (sequence, max(n - len(pool), _ID_BLOCK)),
            )
            pool.extend(r[0] for r in self.cursor.fetchall())
        return [pool.popleft() for _ in range(n)]

    def next_id(self, table: str) -> int:
        pool = self.store._id_pools.get(table)
        if pool:
            return pool.popleft()
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
            keys = sorted({_bucket_key(namespace, scope, k % MAX_ADVISORY_LOCKS) for k in keys})
        if keys:
            try:
                self.cursor.execute(
                    "SELECT count(pg_advisory_xact_lock(k)) "
                    "FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS sorted_keys",
                    (keys,),
                )
                self.cursor.fetchone()
            except DB_ERRORS as e:
                raise classify(e, where=self.store.display_url) from e

    def reserve_positions(self, n: int) -> list[int]:
        # Under the append lock nobody else takes positions, so one setval reserves a block
        # (measured: 1 ms for 20,000 positions, against 127 ms fetching 20,000 nextvals).
        self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.store.journal_append_key,))
        self.cursor.execute(
            "SELECT setval(pg_get_serial_sequence('journal', 'position'), "
            "nextval(pg_get_serial_sequence('journal', 'position')) + %s - 1)",
            (n,),
        )
        last = int(self.cursor.fetchone()[0])
        return list(range(last - n + 1, last + 1))


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
        event.listen(engine, "connect", _c_bytea_dumper)
        super().__init__(url, engine)
        self._id_pools: dict[str, deque[int]] = {}
        self._sequences: dict[str, str] = {}
        self._namespace: str | None = None

    def _make_tx(self, conn: Connection) -> Tx:
        return PostgresTx(self, conn)

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
            if self.current_revision() is None:
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
