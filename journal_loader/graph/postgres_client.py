"""A client for an existing Propose API deployment: the ``propose_fact`` SQL function.

    propose_fact(p_source_node_type varchar, p_source_node_name varchar,
                 p_target_node_type varchar, p_target_node_name varchar,
                 p_relationship_type varchar, p_source_name varchar, p_source_type varchar,
                 p_source_attributes jsonb DEFAULT '[]', p_target_attributes jsonb DEFAULT '[]',
                 p_relationship_strength numeric(3,2) DEFAULT 1.0,
                 p_relationship_valid_from date DEFAULT NULL,
                 p_relationship_valid_to date DEFAULT NULL,
                 p_relationship_metadata jsonb DEFAULT NULL,
                 p_provenance_confidence numeric(3,2) DEFAULT 0.9,
                 p_provenance_metadata jsonb DEFAULT NULL)
      RETURNS propose_api_response  -- (status, overall_confidence, actions, conflicts,
                                    --  provenance_ids)

``PostgresProposeClient`` is a ``ProposeClient`` for loaders and a ``GraphTarget`` for the
runner, like the embedded graph, in one of two modes:

* **Same database** (no ``url``): the function lives in the journal's database. Every call
  runs on the batch's own connection, inside the batch's transaction, one savepoint per
  record: the facts and the journal's events commit together or not at all, so a crash can
  never apply a fact twice (exactly once). ``transactional`` is True. A deployment's tables
  are named like journal-loader's and its SQL is unqualified, so the journal lives in a
  schema of its own (``journal_loader.config.journal_schema``) and each call runs with the
  deployment's search_path (``SET LOCAL``, the journal's restored right after; see
  ``_resolve`` for which path).
* **Separate database** (``url``): one connection for the whole run (reconnected only after
  it is lost); a record's calls are one remote transaction, committed by ``finish_record``
  and rolled back by ``abort_record``, so a failed record leaves nothing there.
  ``transactional`` is False: the runner journals ``ProposeAttempted`` before the calls and
  the outcomes after (see the runner), and proposes "in doubt" records again on resume with
  ``in_doubt`` set; their results carry ``in_doubt=True`` (a replay). Every call passes an
  idempotency key (the file's sha256, the record's offset, the fact's index) in
  ``p_provenance_metadata``, so a deployment that keeps it can recognise a repeat;
  ``prepare`` reads from the function's source whether it does. With ``outcome_table``
  (opt-in) each record's answers are also stored there, in its remote transaction, so that
  after a crash the runner reads back what committed instead of proposing it again
  (``stored_outcomes``).

Answers: ``status`` ``error`` is a failed record (the runner puts it in the DLQ with the
message, as ``ProposeAnswerError``), never a success; a status the client does not know is
treated as an error too, and so is ``conflicts`` that applied nothing: an ambiguous match
(no actions, an ``ambiguous_entities`` conflict) raises ``AmbiguousMatchError`` naming the
side and the candidates. An exception raised by the function for the fact's values (SQLSTATE
classes 22 and 23, and PL/pgSQL's P0: ``RAISE EXCEPTION``) is an error answer as well. Lost
connections, serialization failures, deadlocks, lock timeouts, too many connections,
shutdowns (``journal_loader.storage.errors.classify``), and error answers whose text carries
one of them (a function that catches every exception), raise ``TransientError``: the runner
retries with backoff and never puts the record in the DLQ. Anything else (a missing
function, no privilege) raises ``FatalError`` and stops the run. Ids are kept as the
deployment gives them (integers, or text such as ULIDs).

The Propose API resolves entities by type and name: an ``Entity.key`` is not sent (put it in
the entity's attributes if the deployment should keep it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import logging
import re
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import msgspec
import psycopg
import psycopg.conninfo
from psycopg import sql
from psycopg.types.json import Jsonb

from journal_loader.errors import (
    AmbiguousMatchError,
    ConfigError,
    JournalLoaderError,
    ProposeAnswerError,
    TransientError,
)
from journal_loader.graph.checks import as_date, attribute_values, check_fact
from journal_loader.graph.protocol import (
    STATUS_CONFLICTS,
    STATUS_ERROR,
    STATUS_SUCCESS,
    Action,
    Conflict,
    Entity,
    EntityLike,
    GraphId,
    ProposeClient,
    ProposeResult,
    as_entity,
)
from journal_loader.graph.target import GraphTarget
from journal_loader.secrets import mask_url
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe, is_transient_message, sqlstate

if TYPE_CHECKING:
    from journal_loader.config import Config

log = logging.getLogger("journal_loader.graph.propose_api")

KNOWN_STATUSES = (STATUS_SUCCESS, STATUS_CONFLICTS, STATUS_ERROR)
APPLIED_ACTIONS = frozenset(
    {
        "relationship_created",
        "relationship_duplicate",
        "relationship_updated",
        "relationship_conflicted",
    }
)
_SAVEPOINT = "jl_propose"
_TWO_PLACES = Decimal("0.01")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
# The columns a relationship-type lookup table may name its types by, in this order.
_TYPE_COLUMNS = ("type_name", "name", "relationship_type", "type")


def _call_sql(function: str) -> sql.Composed:
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


def _search_path_value(path: str) -> str:
    """A search_path setting from a comma-separated list of schema names (each checked, so
    a config value cannot smuggle SQL into set_config)."""
    names = [p.strip() for p in path.split(",") if p.strip()]
    if not names or not all(_IDENT.match(n) for n in names):
        raise ConfigError(
            f"propose_api.search_path {path!r}: give schema names separated by commas"
        )
    return ", ".join(f'"{n}"' for n in names)


class _Record:
    __slots__ = ("facts", "failed", "offset", "results", "run_id", "source_id")

    def __init__(self, source_id: int, offset: int, run_id: str) -> None:
        self.source_id = source_id
        self.offset = offset
        self.run_id = run_id
        self.facts = 0
        self.results: list[ProposeResult] = []
        self.failed: str | None = None


class PostgresProposeClient(GraphTarget, ProposeClient):
    """Calls an existing deployment's ``propose_fact``; see the module docstring."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        url: str | None = None,
        function: str = "propose_fact",
        source_name: str = "journal-loader",
        source_type: str = "journal-loader",
        node_types: list[str] | None = None,
        relationship_types: list[str] | None = None,
        connect_timeout: int = 10,
        application_name: str = "journal-loader propose-api",
        search_path: str | None = None,
        keeps_idempotency_key: bool | None = None,
        relationship_type_table: str | None = "relationship_types",
        outcome_table: str | None = None,
    ) -> None:
        if url is None and (store is None or store.dialect != "postgresql"):
            raise ConfigError(
                "the Propose API in the journal's own database needs a PostgreSQL journal; "
                "for another database give its url"
            )
        self.store = store
        self.url = url
        self._conninfo = _libpq_url(url) if url is not None else None
        self.function = function
        self.source_name = source_name
        self.source_type = source_type
        self.node_types = frozenset(node_types) if node_types else None
        self.relationship_types = frozenset(relationship_types) if relationship_types else None
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self.search_path = _search_path_value(search_path) if search_path else None
        #: Does the deployment keep p_provenance_metadata (the idempotency key)? None: not
        #: known yet; ``prepare`` reads it from the function's source unless this says.
        self.keeps_idempotency_key = keeps_idempotency_key
        self._key_declared = keeps_idempotency_key is not None
        if relationship_type_table is not None and not all(
            _IDENT.match(p) for p in relationship_type_table.split(".")
        ):
            raise ConfigError(
                f"propose_api.relationship_type_table {relationship_type_table!r} is not a "
                "table name"
            )
        self.relationship_type_table = relationship_type_table
        if outcome_table is not None:
            if url is None:
                raise ConfigError(
                    "propose_api.outcome_table is for a deployment in another database (in "
                    "the journal's own, a record's calls and its events commit together)"
                )
            if not all(_IDENT.match(p) for p in outcome_table.split(".")):
                raise ConfigError(
                    f"propose_api.outcome_table {outcome_table!r} is not a table name"
                )
        #: Another database: a table of journal-loader's there, written in each record's
        #: remote transaction, so that after a crash the answers of what committed are read
        #: back and what did not commit is known (``stored_outcomes``). Opt-in: it needs
        #: CREATE (once) and INSERT in the deployment's database.
        self.outcome_table = outcome_table
        self.in_doubt = False  # set by the runner for a record proposed again after a crash
        self._sql = _call_sql(function)
        self._tx: Tx | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._rec: _Record | None = None
        self._savepoint_owner: _Record | None = None
        self._hashes: dict[int, str] = {}
        # Same database: the search_path the calls run with, and the journal's to restore
        # after each (None: the journal's session path finds the function; no switch).
        self._call_path: str | None = None
        self._journal_path: str | None = None
        self._resolved = False
        self._prepared = False
        self._stored_keys: list[str] = []  # outcome rows of the batch (outcome_table)

    @classmethod
    def from_config(cls, store: Store, config: Config) -> PostgresProposeClient:
        """The client a config's ``graph.propose_api`` section describes."""
        section = config.graph.propose_api
        if section is None:
            raise ConfigError("the config has no graph.propose_api section")
        return cls(
            store,
            url=section.url,
            function=section.function,
            source_name=section.source_name or config.source.name or config.source.type,
            source_type=section.source_type or config.source.type,
            node_types=config.graph.node_types,
            relationship_types=config.graph.relationship_types,
            connect_timeout=section.connect_timeout,
            search_path=section.search_path,
            keeps_idempotency_key=section.keeps_idempotency_key,
            relationship_type_table=section.relationship_type_table,
            outcome_table=section.outcome_table,
        )

    @property
    def transactional(self) -> bool:
        """True when the calls run in the batch's transaction (same database)."""
        return self.url is None

    # --- start-up: where the function is, what the deployment keeps, its types -----------
    def prepare(self) -> None:
        """Before the run: find the function and the search_path to call it with, read from
        its source whether it keeps p_provenance_metadata, and check the config's
        relationship types against the deployment's lookup table. A config error raises; a
        database that does not answer now is asked again at the first batch."""
        if self._prepared:
            return
        try:
            self._inspect()
        except ConfigError:
            raise
        except JournalLoaderError as e:
            log.warning("could not inspect the Propose API deployment yet (%s); again at the "
                        "first batch", e)  # fmt: skip

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
                self._call_path = _search_path_value(
                    schema if schema == "public" else f"{schema}, public"
                )
                self.function = f"{schema}.{parts[-1]}"
                self._sql = _call_sql(self.function)
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

    # --- GraphTarget -------------------------------------------------------------------
    @property
    def client(self) -> ProposeClient:
        return self

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:
        self._tx = tx if self.transactional else None
        self._savepoint_owner = None
        self.in_doubt = False
        if not self._prepared:  # prepare() was not called, or the database did not answer
            self._inspect()

    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None:
        self._rec = _Record(source_id, record_offset, run_id)

    def record_results(self) -> list[ProposeResult]:
        return self._rec.results if self._rec else []

    def finish_record(self) -> None:
        # Same database: the record's savepoint is released lazily, with the next record's
        # SAVEPOINT (one round trip) or at flush. Another database: the record's calls are
        # one remote transaction, committed now that every fact of it was applied.
        rec, self._rec = self._rec, None
        self.in_doubt = False
        if not self.transactional:
            conn = self._conn
            if conn is not None and conn.info.transaction_status != _IDLE:
                try:
                    if self.outcome_table is not None and rec is not None and self.attempt:
                        # in the calls' own transaction: present if and only if they committed
                        conn.execute(
                            sql.SQL(
                                "INSERT INTO {} (record_key, attempt, results) "
                                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
                            ).format(sql.Identifier(*self.outcome_table.split("."))),
                            (
                                f"{self._source_hash(rec.source_id)}:{rec.offset}",
                                self.attempt,
                                Jsonb(msgspec.to_builtins(rec.results)),
                            ),
                        )
                        self._stored_keys.append(f"{self._source_hash(rec.source_id)}:{rec.offset}")
                    conn.commit()
                except psycopg.Error as e:
                    self._drop_connection_if_broken()
                    raise classify(e) from e

    @property
    def keeps_outcomes(self) -> bool:
        return self.outcome_table is not None and not self.transactional

    def stored_outcomes(
        self, source_id: int, attempts: dict[int, set[str]]
    ) -> dict[int, list[ProposeResult]] | None:
        """With an outcome table: the answers each in-doubt record's attempt committed in the
        deployment (absent: its calls never committed). Without one: None (cannot tell)."""
        if self.outcome_table is None or self.transactional or not attempts:
            return None
        prefix = self._source_hash(source_id)
        keys = {f"{prefix}:{offset}": offset for offset in attempts}
        conn = self._connection()
        try:
            rows = conn.execute(
                sql.SQL(
                    "SELECT record_key, attempt, results FROM {} WHERE record_key = ANY(%s)"
                ).format(sql.Identifier(*self.outcome_table.split("."))),
                (list(keys),),
            ).fetchall()
        except psycopg.Error as e:
            self._drop_connection_if_broken()
            raise classify(e) from e
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        found: dict[int, list[ProposeResult]] = {}
        for key, attempt, results in rows:
            offset = keys[key]
            if attempt in attempts[offset]:
                found[offset] = msgspec.convert(results, list[ProposeResult])
                self._stored_keys.append(key)  # journaled with this batch: then not needed
        return found

    def abort_record(self) -> None:
        rec, self._rec = self._rec, None
        self.in_doubt = False
        if not self.transactional:
            self._rollback_remote()
            return
        if rec is not None and self._savepoint_owner is rec:
            self._savepoint_owner = None
            tx = self._require_tx()
            try:
                tx.cursor.execute(
                    f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}"
                )
            except psycopg.Error as e:
                raise classify(e) from e

    def _rollback_remote(self) -> None:
        """Undo the record's calls in the other database (nothing of it was committed)."""
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
        self._drop_connection_if_broken()

    def flush(self, tx: Tx) -> None:
        if self._savepoint_owner is not None:
            self._savepoint_owner = None
            try:
                tx.cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            except psycopg.Error as e:
                raise classify(e) from e

    def after_commit(self) -> None:
        self._tx = None
        self._savepoint_owner = None
        if self._stored_keys:
            self._forget_outcomes()

    def _forget_outcomes(self) -> None:
        """The batch's outcomes are in the journal now: their rows in the outcome table are
        not needed any more. (Left behind by a crash right here, they are never matched
        again: their attempt tokens are spent.)"""
        keys, self._stored_keys = self._stored_keys, []
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

    def after_rollback(self) -> None:
        self._tx = None
        self._savepoint_owner = None
        self._rec = None
        self._stored_keys = []  # still needed: the batch is retried or resumed
        if not self.transactional:
            self._rollback_remote()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresProposeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ProposeClient -----------------------------------------------------------------
    def propose_fact(
        self,
        source_entity: EntityLike,
        target_entity: EntityLike,
        relationship: str,
        *,
        source_attributes: dict[str, Any] | None = None,
        target_attributes: dict[str, Any] | None = None,
        strength: float = 1.0,
        valid_from: dt.date | None = None,
        valid_to: dt.date | None = None,
        metadata: dict[str, Any] | None = None,
        confidence: float = 0.9,
    ) -> ProposeResult:
        rec = self._rec
        if rec is None:
            raise RuntimeError("propose_fact() is called by a loader's propose(), inside a run")
        src = as_entity(source_entity, source_attributes)
        tgt = as_entity(target_entity, target_attributes)
        valid_from = as_date("valid_from", valid_from)
        valid_to = as_date("valid_to", valid_to)
        check_fact(
            self.node_types,
            self.relationship_types,
            src,
            tgt,
            relationship,
            strength,
            valid_from,
            valid_to,
            confidence,
        )
        fact_index = rec.facts
        rec.facts += 1
        key = f"{self._source_hash(rec.source_id)}:{rec.offset}:{fact_index}"
        if rec.failed is not None:
            # an earlier fact of this record failed: the record fails; do not call again
            result = _error_result(f"not proposed: an earlier fact failed ({rec.failed})")
        else:
            params = {
                "source_type": src.type,
                "source_name": src.name,
                "target_type": tgt.type,
                "target_name": tgt.name,
                "relationship": relationship,
                "data_source_name": self.source_name,
                "data_source_type": self.source_type,
                "source_attributes": Jsonb(_attributes(src)),
                "target_attributes": Jsonb(_attributes(tgt)),
                "strength": _numeric(strength),
                "valid_from": valid_from,
                "valid_to": valid_to,
                "metadata": None if metadata is None else Jsonb(metadata),
                "confidence": _numeric(confidence),
                "provenance_metadata": Jsonb(
                    {
                        "idempotency_key": key,
                        "journal_source_id": rec.source_id,
                        "record_offset": rec.offset,
                        "fact_index": fact_index,
                        "run_id": rec.run_id,
                    }
                ),
            }
            result = self._call(rec, params)
            if result.status == STATUS_ERROR:
                message = result.error_message or "error"
                if is_transient_message(message):
                    # The function caught a deadlock (or the like) and answered `error`:
                    # the same call can succeed a moment later. The batch is retried.
                    raise TransientError(f"the Propose API answered error: {message}")
                rec.failed = message
            elif not _applied(result):
                rec.failed = "not applied"
                result.idempotency_key = key
                result.in_doubt = self.in_doubt
                raise _not_applied(src, tgt, relationship, result)
        result.idempotency_key = key
        if self.in_doubt:
            result.in_doubt = True
        rec.results.append(result)
        return result

    # --- the call ------------------------------------------------------------------------
    def _call(self, rec: _Record, params: dict[str, Any]) -> ProposeResult:
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
                return _error_result(describe(e))
        else:
            conn = self._connection()
            try:
                row = conn.execute(self._sql, params).fetchone()
            except psycopg.Error as e:
                if not _refused_fact(e):
                    self._drop_connection_if_broken()
                    raise classify(e) from e
                return _error_result(describe(e))
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
            from sqlalchemy import text

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


_IDLE = psycopg.pq.TransactionStatus.IDLE


def _one(cursor: Any, query: str) -> str:
    cursor.execute(query)
    return str(cursor.fetchone()[0])


def _applied(result: ProposeResult) -> bool:
    """A ``conflicts`` answer was applied only when it stored (or found) the relationship; an
    ambiguous match, for one, answers with no actions at all."""
    if result.status != STATUS_CONFLICTS:
        return True
    return any(a.action in APPLIED_ACTIONS for a in result.actions)


def _not_applied(
    src: Entity, tgt: Entity, relationship: str, result: ProposeResult
) -> JournalLoaderError | AmbiguousMatchError | ProposeAnswerError:
    """The record's failure for an answer that applied nothing: an ambiguous match names the
    side(s) and the candidates, as the embedded graph does."""
    answer = _answer_json(result)
    for c in result.conflicts:
        if c.type != "ambiguous_entities":
            continue
        sides = [
            (side, entity, alternatives)
            for side, entity, alternatives in (
                ("source", src, c.source_alternatives),
                ("target", tgt, c.target_alternatives),
            )
            if alternatives
        ]
        parts = []
        for _side, entity, alternatives in sides:
            shown = "; ".join(_candidate_text(a) for a in alternatives[:10])
            more = f" and {len(alternatives) - 10} more" if len(alternatives) > 10 else ""
            parts.append(
                f"{entity.type} {entity.name!r} matches {len(alternatives)} "
                f"{'entity' if len(alternatives) == 1 else 'entities'} of the Propose API "
                f"ambiguously: {shown}{more}"
            )
        side = "both" if len(sides) == 2 else (sides[0][0] if sides else "unknown")
        message = "; ".join(parts) or f"ambiguous entities in {src.name!r} -> {tgt.name!r}"
        return AmbiguousMatchError(
            f"{message}; not merged: nothing of this record was applied",
            details={
                "side": side,
                "candidates": [a for _s, _e, alts in sides for a in alts],
                "source_alternatives": c.source_alternatives,
                "target_alternatives": c.target_alternatives,
                "fact": {
                    "source": [src.type, src.name],
                    "relationship": relationship,
                    "target": [tgt.type, tgt.name],
                },
                "answer": answer,
            },
        )
    return ProposeAnswerError(
        f"the Propose API answered {result.status} without applying "
        f"{src.type} {src.name!r} -{relationship}-> {tgt.type} {tgt.name!r}: "
        f"{_conflicts_text(result)}",
        details={"answer": answer},
    )


def _candidate_text(raw: dict[str, Any]) -> str:
    text = f"{raw.get('id', raw.get('entity_id', raw.get('node_id', '?')))} {raw.get('name')!r}"
    score = raw.get("similarity", raw.get("score", raw.get("confidence")))
    return f"{text} {score}" if score is not None else text


def _conflicts_text(result: ProposeResult) -> str:
    return "; ".join(c.type or c.relationship_type or "conflict" for c in result.conflicts) or (
        "no actions"
    )


def _answer_json(result: ProposeResult) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(result)
    return out


# --- the answer --------------------------------------------------------------------------


def parse_response(row: Any) -> ProposeResult:
    """A ``propose_api_response`` row -> ProposeResult; anything but a clear success or
    conflict is an error (never a success by default)."""
    if row is None:
        return _error_result("the Propose API returned no row")
    status, overall, actions_json, conflicts_json, provenance_json = row
    actions = [_action(a) for a in _as_list(actions_json)]
    status_text = str(status).strip().lower() if status is not None else ""
    if status_text not in KNOWN_STATUSES:
        message = f"the Propose API answered status {status!r}"
        detail = next((a.message for a in actions if a.message), None)
        return _error_result(f"{message}: {detail}" if detail else message, actions)
    if status_text == STATUS_ERROR and not any(a.action == "error" for a in actions):
        actions.append(Action(action="error", message="the Propose API answered error"))
    result = ProposeResult(
        status=status_text,
        overall_confidence=_float(overall) or 0.0,
        actions=actions,
        conflicts=[_conflict(c) for c in _as_list(conflicts_json)],
        provenance_ids=[i for i in (_id(p) for p in _as_list(provenance_json)) if i is not None],
    )
    entities = [a for a in actions if a.action.startswith("entity_")]
    if len(entities) == 2 and not any(a.role for a in entities):
        # the deployment lists the source's resolution, then the target's, without saying so
        entities[0].role, entities[1].role = "source", "target"
    by_role = {a.role: a.entity_id for a in entities if a.role}
    result.source_entity_id = by_role.get(
        "source", entities[0].entity_id if len(entities) > 0 else None
    )
    result.target_entity_id = by_role.get(
        "target", entities[1].entity_id if len(entities) > 1 else None
    )
    for a in actions:
        if a.action.startswith("relationship_") and a.relationship_id is not None:
            result.relationship_id = a.relationship_id
            break
    return result


def _action(raw: Any) -> Action:
    if not isinstance(raw, dict):
        return Action(action=str(raw))
    action = str(raw.get("action") or "unknown")
    relationship_id = _id(raw.get("relationship_id"))
    entity_id = _id(raw.get("entity_id"))
    if relationship_id is None and action.startswith("relationship_"):
        relationship_id, entity_id = entity_id, None
    message = raw.get("message")
    role = raw.get("role")
    reason = raw.get("match_reason")
    return Action(
        action=action,
        role=str(role) if role is not None else None,
        entity_id=entity_id,
        relationship_id=relationship_id,
        confidence=_float(raw.get("confidence")),
        match_reason=str(reason) if reason is not None else None,
        message=str(message) if message is not None else None,
    )


_CONFLICT_KEYS = {
    "type",
    "relationship_id",
    "id",
    "relationship_type",
    "existing_relationship_id",
    "existing_relationship_type",
    "opposing_relationship_id",
    "opposing_relationship_type",
    "source_entity_id",
    "target_entity_id",
    "source_alternatives",
    "target_alternatives",
}


def _conflict(raw: Any) -> Conflict:
    """A conflict as the deployment gave it: the relationship it opposes (under whichever of
    the usual names), the candidates of an ambiguous match, and any other key in ``detail``."""
    c = raw if isinstance(raw, dict) else {"value": raw}
    opposed_id = next(
        (
            i
            for k in ("existing_relationship_id", "opposing_relationship_id", "relationship_id",
                      "id")
            if (i := _id(c.get(k))) is not None
        ),
        0,
    )  # fmt: skip
    opposed_type = next(
        (
            str(t)
            for k in ("existing_relationship_type", "opposing_relationship_type",
                      "relationship_type")
            if (t := c.get(k))
        ),
        "",
    )  # fmt: skip
    kind = c.get("type")
    return Conflict(
        relationship_id=opposed_id,
        # an older shape put the kind where the type goes: keep it readable there
        relationship_type=opposed_type or (str(kind) if kind and opposed_id == 0 else ""),
        source_entity_id=_id(c.get("source_entity_id")) or 0,
        target_entity_id=_id(c.get("target_entity_id")) or 0,
        type=str(kind) if kind is not None else None,
        source_alternatives=_alternatives(c.get("source_alternatives")),
        target_alternatives=_alternatives(c.get("target_alternatives")),
        detail={k: v for k, v in c.items() if k not in _CONFLICT_KEYS},
    )


def _alternatives(value: Any) -> list[dict[str, Any]]:
    return [a if isinstance(a, dict) else {"id": a} for a in _as_list(value)]


def _error_result(message: str, actions: list[Action] | None = None) -> ProposeResult:
    return ProposeResult(
        status=STATUS_ERROR,
        actions=[*(actions or []), Action(action="error", message=message)],
    )


def _refused_fact(error: psycopg.Error) -> bool:
    """The function refused this fact's values (a data or integrity error, or a RAISE in
    PL/pgSQL): an error answer for the record, not a reason to stop or retry."""
    state = sqlstate(error) or ""
    return state[:2] in ("22", "23") or state.startswith("P0")


def _attributes(e: Entity) -> list[dict[str, str]]:
    return [
        {"type": attr_type, "value": text}
        for attr_type, value in e.attributes.items()
        for text in attribute_values(attr_type, value)
    ]


def _numeric(value: float) -> Decimal:
    return Decimal(str(value)).quantize(_TWO_PLACES, rounding=ROUND_HALF_UP)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _id(value: Any) -> GraphId | None:
    """An id as the deployment gave it: an integer stays one (also written as canonical
    decimal text), any other text (a ULID, a UUID, "007") stays the text it is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", text):
            return int(text)
        return text
    if isinstance(value, float | Decimal) and value == int(value):
        return int(value)
    return str(value)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _libpq_url(url: str) -> str:
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
