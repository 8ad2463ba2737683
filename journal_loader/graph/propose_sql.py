"""The Propose API client's connection and SQL: the one module of the client that talks to
a database (journal_loader/graph/postgres_client.py describes the client).

* Where the function is and how to call it: the statement (``call_sql``: named arguments,
  the function's name as an identifier), the search_path its unqualified SQL needs in the
  journal's own database (``_resolve``), what its source says about the idempotency key
  (``_probe``), the config's relationship types against the deployment's lookup table.
* The call: same database, on the batch's connection inside one savepoint per record;
  another, on one connection of the run (reconnected after it is lost), one remote
  transaction per record.
* The outcome table (another database, opt-in): its rows written in the record's remote
  transaction, read back after a crash, deleted once journaled.
* The deployment's own provenance rows, for ``lineage``.

Errors are classified here (``journal_loader.storage.errors.classify``): the client sees
journal-loader's kinds (transient, fatal, a refused fact as an error answer), not psycopg's.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import psycopg.conninfo
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import text

from journal_loader.errors import ConfigError, TransientError
from journal_loader.graph.propose_answers import error_result, parse_response
from journal_loader.graph.protocol import GraphId, ProposeResult
from journal_loader.secrets import mask_url
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe, sqlstate

log = logging.getLogger("journal_loader.graph.propose_api")

_SAVEPOINT = "jl_propose"
_IDLE = psycopg.pq.TransactionStatus.IDLE
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
# The columns a relationship-type lookup table may name its types by, in this order.
_TYPE_COLUMNS = ("type_name", "name", "relationship_type", "type")


def call_sql(function: str) -> sql.Composed:
    parts = function.split(".")
    return sql.SQL(
        "SELECT status, overall_confidence, actions, conflicts, provenance_ids FROM {}("
        "p_source_node_type => %(source_type)s::varchar, "
        "p_source_node_name => %(source_name)s::varchar, "
        "p_target_node_type => %(target_type)s::varchar, "
        "p_target_node_name => %(target_name)s::varchar, "
        "p_relationship_type => %(relationship)s::varchar, "
        "p_source_name => %(data_source_name)s::varchar, "
        "p_source_type => %(data_source_type)s::varchar, "
        "p_source_attributes => %(source_attributes)s::jsonb, "
        "p_target_attributes => %(target_attributes)s::jsonb, "
        "p_relationship_strength => %(strength)s::numeric(3,2), "
        "p_relationship_valid_from => %(valid_from)s::date, "
        "p_relationship_valid_to => %(valid_to)s::date, "
        "p_relationship_metadata => %(metadata)s::jsonb, "
        "p_provenance_confidence => %(confidence)s::numeric(3,2), "
        "p_provenance_metadata => %(provenance_metadata)s::jsonb)"
    ).format(sql.Identifier(*parts))


def journal_can_host(store: Store | None) -> bool:
    """Can the function be called in the journal's own database (only PostgreSQL's)?"""
    return store is not None and store.dialect == "postgresql"


def search_path_value(path: str) -> str:
    """A search_path setting from a comma-separated list of schema names (each checked, so
    a config value cannot smuggle SQL into set_config)."""
    names = [p.strip() for p in path.split(",") if p.strip()]
    if not names or not all(IDENT.match(n) for n in names):
        raise ConfigError(
            f"propose_api.search_path {path!r}: give schema names separated by commas"
        )
    return ", ".join(f'"{n}"' for n in names)


class ProposeTransport:
    """The connection side of ``PostgresProposeClient`` (whose ``__init__`` sets all this)."""

    store: Store | None
    url: str | None
    _conninfo: str | None
    function: str
    search_path: str | None
    connect_timeout: int
    application_name: str
    keeps_idempotency_key: bool | None
    _key_declared: bool
    relationship_types: frozenset[str] | None
    relationship_type_table: str | None
    outcome_table: str | None
    _sql: sql.Composed
    _tx: Tx | None
    _conn: psycopg.Connection[Any] | None
    _savepoint_owner: object | None
    _hashes: dict[int, str]
    _call_path: str | None
    _journal_path: str | None
    _resolved: bool
    _prepared: bool

    @property
    def transactional(self) -> bool:
        """True when the calls run in the batch's transaction (same database)."""
        return self.url is None

    # --- start-up: where the function is, what the deployment keeps, its types -----------
    def _inspect(self) -> None:
        if self.transactional:
            assert self.store is not None
            with self.store.transaction() as tx:
                cursor = tx.cursor
                self._journal_path = _one(cursor, "SELECT current_setting('search_path')")
                self._resolve(cursor)
                if self._call_path is not None:
                    cursor.execute("SELECT set_config('search_path', %s, true)", (self._call_path,))
                self._probe(cursor)
        else:
            conn = self._connection()
            try:
                with conn.cursor() as cursor:
                    self._resolved = True
                    self._probe(cursor)
            except psycopg.Error as e:
                self._drop_connection_if_broken()
                raise classify(e) from e
            finally:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            if self.outcome_table is not None:
                self._create_outcome_table(conn)
        self._prepared = True

    def _resolve(self, cursor: Any) -> None:
        """Same database: the path the deployment's unqualified SQL needs. The config's
        ``search_path``; else the schema the function is qualified with; else, when the
        journal's own search_path does not find the function, ``public`` (a deployment's
        home). When it does find it in the journal's own schema, calls run as they are."""
        if self._resolved:
            return
        schema: str | None = None
        if self.search_path is not None:
            self._call_path = self.search_path
        else:
            parts = self.function.split(".")
            if len(parts) == 2:
                schema = parts[0]
            else:
                cursor.execute(
                    "SELECT n.nspname, n.nspname = current_schema() FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE p.proname = %s AND n.nspname = ANY (current_schemas(false)) "
                    "ORDER BY array_position(current_schemas(false), n.nspname) LIMIT 1",
                    (parts[0],),
                )
                found = cursor.fetchone()
                if found is None:
                    schema = "public"
                elif not found[1]:
                    schema = str(found[0])
            if schema is not None:
                self._call_path = search_path_value(
                    schema if schema == "public" else f"{schema}, public"
                )
                self.function = f"{schema}.{parts[-1]}"
                self._sql = call_sql(self.function)
        self._resolved = True
        if self._call_path is not None:
            log.info(
                "calling %s with search_path %s (journal-loader's own: %s)",
                self.function, self._call_path, self._journal_path,
            )  # fmt: skip

    def _probe(self, cursor: Any) -> None:
        parts = self.function.split(".")
        if not self._key_declared:
            cursor.execute(
                "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE p.proname = %s AND (n.nspname = %s OR (%s::text IS NULL AND "
                "n.nspname = ANY (current_schemas(false))))",
                (parts[-1], parts[0] if len(parts) == 2 else None,
                 parts[0] if len(parts) == 2 else None),
            )  # fmt: skip
            sources = [str(r[0] or "") for r in cursor.fetchall()]
            if sources:  # no function: the first call says so, as it always did
                self.keeps_idempotency_key = any(
                    "p_provenance_metadata" in s.lower() for s in sources
                )
                if not self.keeps_idempotency_key:
                    log.warning(
                        "the Propose API function %s does not keep the idempotency key (its "
                        "source never uses p_provenance_metadata): a record proposed again "
                        "after a crash is deduplicated only by the deployment's natural keys, "
                        "and its answer is journaled as a replay",
                        self.function,
                    )
        self._check_relationship_types(cursor)

    def _check_relationship_types(self, cursor: Any) -> None:
        table = self.relationship_type_table
        if table is None or self.relationship_types is None:
            return
        cursor.execute("SELECT to_regclass(%s)", (table,))
        regclass = cursor.fetchone()[0]
        column = None
        if regclass is not None:
            cursor.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            columns = {r[0] for r in cursor.fetchall()}
            column = next((c for c in _TYPE_COLUMNS if c in columns), None)
        if column is None:
            log.warning(
                "cannot check graph.relationship_types against the deployment: it has no "
                "table %s with a column %s (set propose_api.relationship_type_table)",
                table, " or ".join(_TYPE_COLUMNS),
            )  # fmt: skip
            return
        cursor.execute(
            sql.SQL("SELECT {}::text FROM {}").format(
                sql.Identifier(column), sql.Identifier(*table.split("."))
            )
        )
        known = sorted({str(r[0]) for r in cursor.fetchall()})
        missing = sorted(self.relationship_types.difference(known))
        if missing:
            lowered = {k.lower(): k for k in known}
            hints = []
            for name in missing:
                close = lowered.get(name.lower()) or next(
                    iter(difflib.get_close_matches(name, known, n=1)), None
                )
                hints.append(f"{name} (did you mean {close}?)" if close else name)
            raise ConfigError(
                "graph.relationship_types: the Propose API deployment does not know "
                f"{', '.join(hints)}; its types ({table}): {', '.join(known) or 'none'}"
            )

    # --- the deployment's own provenance (lineage) ---------------------------------------
    def deployment_provenance(
        self, kind: str, subject_id: GraphId, table: str = "provenance"
    ) -> list[dict[str, Any]] | None:
        """The deployment's provenance rows of one node, attribute or relationship (each as
        the deployment stores it), when it has a ``provenance`` table with a ``node_id`` /
        ``attribute_id`` / ``relationship_id`` column; None when it has none to read."""
        column = {"node": "node_id", "attribute": "attribute_id", "relationship": "relationship_id"}
        wanted = column.get(kind)
        if wanted is None:
            return None
        with self._deployment_cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", (table,))
            if cursor.fetchone()[0] is None:
                return None
            cursor.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                "AND attnum > 0 AND NOT attisdropped",
                (table,),
            )
            if wanted not in {r[0] for r in cursor.fetchall()}:
                return None
            cursor.execute(
                sql.SQL("SELECT to_jsonb(p) FROM {} p WHERE p.{}::text = %s").format(
                    sql.Identifier(table), sql.Identifier(wanted)
                ),
                (str(subject_id),),
            )
            return [dict(r[0]) for r in cursor.fetchall()]

    @contextlib.contextmanager
    def _deployment_cursor(self) -> Iterator[Any]:
        """A cursor that sees the deployment as its function does (for reads)."""
        try:
            if self.transactional:
                assert self.store is not None
                with self.store.transaction() as tx:
                    self._journal_path = _one(tx.cursor, "SELECT current_setting('search_path')")
                    self._resolve(tx.cursor)
                    if self._call_path is not None:
                        tx.cursor.execute(
                            "SELECT set_config('search_path', %s, true)", (self._call_path,)
                        )
                    yield tx.cursor  # reads only; SET LOCAL ends with the transaction
            else:
                conn = self._connection()
                try:
                    with conn.cursor() as cursor:
                        yield cursor
                finally:
                    with contextlib.suppress(psycopg.Error):
                        conn.rollback()
        except psycopg.Error as e:
            raise classify(e) from e

    # --- the call ------------------------------------------------------------------------
    def _call(self, rec: object, params: dict[str, Any]) -> ProposeResult:
        """One call of the function, for the record ``rec``. Same database: in the batch's
        transaction, inside the record's savepoint (taken at its first call), with the
        deployment's search_path; another: on the run's connection, in the record's remote
        transaction. The function refusing the fact's values is an error answer."""
        if self.transactional:
            tx = self._require_tx()
            cursor = tx.cursor
            try:
                if self._savepoint_owner is not rec:
                    cursor.execute(
                        f"RELEASE SAVEPOINT {_SAVEPOINT}; SAVEPOINT {_SAVEPOINT}"
                        if self._savepoint_owner is not None
                        else f"SAVEPOINT {_SAVEPOINT}"
                    )
                    self._savepoint_owner = rec
            except psycopg.Error as e:
                raise classify(e) from e
            try:
                if self._call_path is not None:
                    # the deployment's unqualified SQL must find its own tables, not the
                    # journal's namesakes; restored right after (and by a rollback)
                    cursor.execute("SELECT set_config('search_path', %s, true)", (self._call_path,))
                cursor.execute(self._sql, params)
                row = cursor.fetchone()
                if self._call_path is not None:
                    cursor.execute(
                        "SELECT set_config('search_path', %s, true)", (self._journal_path,)
                    )
            except psycopg.Error as e:
                if not _refused_fact(e):
                    raise classify(e) from e
                try:  # the transaction goes on without this record's effects
                    cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                except psycopg.Error as e2:
                    raise classify(e2) from e2
                return error_result(describe(e))
        else:
            conn = self._connection()
            try:
                row = conn.execute(self._sql, params).fetchone()
            except psycopg.Error as e:
                if not _refused_fact(e):
                    self._drop_connection_if_broken()
                    raise classify(e) from e
                return error_result(describe(e))
        return parse_response(row)

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._conn = None
        assert self._conninfo is not None
        try:
            # Not autocommit: a record's calls are one remote transaction (finish_record
            # commits it, abort_record rolls it back), so a record that fails leaves nothing.
            conn = psycopg.connect(
                self._conninfo,
                autocommit=False,
                connect_timeout=self.connect_timeout,
                application_name=self.application_name[:63],
            )
            if self.search_path is not None:
                conn.execute("SELECT set_config('search_path', %s, false)", (self.search_path,))
                conn.commit()
        except psycopg.Error as e:
            raise classify(e) from e
        log.info("connected to the Propose API at %s", mask_url(self.url or ""))
        self._conn = conn
        return conn

    def _drop_connection_if_broken(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken):
            self.close()

    def _rollback_remote(self) -> None:
        """Undo the record's calls in the other database (nothing of it was committed)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        self._drop_connection_if_broken()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _source_hash(self, source_id: int) -> str:
        """The file's sha256 (from the journal's ``sources``): a key that means the same in
        any database; the journal's source id when there is no journal to ask."""
        known = self._hashes.get(source_id)
        if known is not None:
            return known
        value = f"source-{source_id}"
        query = "SELECT file_hash FROM sources WHERE source_id = :source_id"
        row: Any = None
        if self._tx is not None:
            row = self._tx.fetchone(query, {"source_id": source_id})
        elif self.store is not None:
            with self.store.read() as conn:
                row = conn.execute(text(query), {"source_id": source_id}).first()
        if row is not None and row[0]:
            value = str(row[0])
        self._hashes[source_id] = value
        return value

    def _require_tx(self) -> Tx:
        if self._tx is None:
            raise RuntimeError("the Propose API client is used outside a batch transaction")
        return self._tx

    # --- the record's savepoint (same database) -----------------------------------------------
    def _rollback_savepoint(self, tx: Tx) -> None:
        """Take back the record's calls; the batch's transaction goes on."""
        try:
            tx.cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
        except psycopg.Error as e:
            raise classify(e) from e

    def _release_savepoint(self, tx: Tx) -> None:
        try:
            tx.cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        except psycopg.Error as e:
            raise classify(e) from e

    # --- the outcome table (another database) ------------------------------------------------
    def _create_outcome_table(self, conn: psycopg.Connection[Any]) -> None:
        assert self.outcome_table is not None
        try:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (record_key text NOT NULL, "
                    "attempt text NOT NULL, results jsonb NOT NULL, "
                    "recorded_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (record_key, attempt))"
                ).format(sql.Identifier(*self.outcome_table.split(".")))
            )
            conn.commit()
        except psycopg.Error as e:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            self._drop_connection_if_broken()
            error = classify(e)
            if isinstance(error, TransientError):
                raise error from e
            raise ConfigError(
                f"propose_api.outcome_table: cannot create {self.outcome_table} in the "
                f"Propose API's database: {error}"
            ) from e

    def _remote_in_transaction(self) -> bool:
        """Another database: has the record's remote transaction done anything yet?"""
        conn = self._conn
        return conn is not None and conn.info.transaction_status != _IDLE

    def _commit_remote(self, outcome: tuple[str, str, list[ProposeResult]] | None) -> None:
        """Commit the record's remote transaction; with ``outcome`` (record key, attempt,
        answers), in the outcome table first, in the same transaction: present if and only
        if the calls committed."""
        conn = self._conn
        assert conn is not None
        try:
            if outcome is not None:
                assert self.outcome_table is not None
                key, attempt, results = outcome
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (record_key, attempt, results) "
                        "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
                    ).format(sql.Identifier(*self.outcome_table.split("."))),
                    (key, attempt, Jsonb(msgspec.to_builtins(results))),
                )
            conn.commit()
        except psycopg.Error as e:
            self._drop_connection_if_broken()
            raise classify(e) from e

    def _read_outcomes(self, keys: list[str]) -> list[Any]:
        """(record key, attempt, answers as JSON) of the outcome rows of these records."""
        assert self.outcome_table is not None
        conn = self._connection()
        try:
            rows: list[Any] = conn.execute(
                sql.SQL(
                    "SELECT record_key, attempt, results FROM {} WHERE record_key = ANY(%s)"
                ).format(sql.Identifier(*self.outcome_table.split("."))),
                (keys,),
            ).fetchall()
        except psycopg.Error as e:
            self._drop_connection_if_broken()
            raise classify(e) from e
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        return rows

    def _delete_outcomes(self, keys: list[str]) -> None:
        """Best effort: rows left behind are never matched again (their attempts are spent)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken or self.outcome_table is None:
            return
        try:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE record_key = ANY(%s)").format(
                    sql.Identifier(*self.outcome_table.split("."))
                ),
                (keys,),
            )
            conn.commit()
        except psycopg.Error as e:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            self._drop_connection_if_broken()
            log.warning("could not clear %d rows of %s: %s", len(keys), self.outcome_table, e)


def _one(cursor: Any, query: str) -> str:
    cursor.execute(query)
    return str(cursor.fetchone()[0])


def _refused_fact(error: psycopg.Error) -> bool:
    """The function refused this fact's values (a data or integrity error, or a RAISE in
    PL/pgSQL): an error answer for the record, not a reason to stop or retry."""
    state = sqlstate(error) or ""
    return state[:2] in ("22", "23") or state.startswith("P0")


def libpq_url(url: str) -> str:
    """A URL (``postgresql://`` or SQLAlchemy's ``postgresql+psycopg://``) as a libpq
    connection string. Built from the parsed parts, not re-rendered: a rendered URL writes
    spaces as "+", which libpq does not decode (``options=-csearch_path=x -clock_timeout=1``)."""
    from sqlalchemy import make_url

    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"invalid Propose API URL {mask_url(url)!r}: {type(e).__name__}") from e
    if not parsed.drivername.startswith("postgres"):
        raise ConfigError(f"the Propose API URL {mask_url(url)!r} is not a PostgreSQL URL")
    parts: dict[str, Any] = {
        "host": parsed.host,
        "port": parsed.port,
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password,
    }
    for name, value in parsed.query.items():
        parts[name] = value if isinstance(value, str) else ",".join(value)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v is not None})
