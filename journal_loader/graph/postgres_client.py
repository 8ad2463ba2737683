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
  never apply a fact twice (exactly once). ``transactional`` is True.
* **Separate database** (``url``): one connection for the whole run (reconnected only after
  it is lost), autocommit: each call commits its own effect in the remote database.
  ``transactional`` is False: the runner journals ``ProposeAttempted`` before the calls and
  the outcomes after (see the runner), and proposes "in doubt" records again on resume with
  ``in_doubt`` set; their results carry ``in_doubt=True``. Every call passes an idempotency
  key (the file's sha256, the record's offset, the fact's index) in
  ``p_provenance_metadata``, so a deployment can recognise a repeat.

Answers: ``status`` ``error`` is a failed record (the runner puts it in the DLQ with the
message), never a success; a status the client does not know is treated as an error too. An
exception raised by the function for the fact's values (SQLSTATE classes 22 and 23, and
PL/pgSQL's P0: ``RAISE EXCEPTION``) is an error answer as well. Lost connections,
serialization failures, deadlocks, lock timeouts, too many connections, shutdowns
(``journal_loader.storage.errors.classify``) raise ``TransientError``: the runner retries
with backoff and never puts the record in the DLQ. Anything else (a missing function, no
privilege) raises ``FatalError`` and stops the run.

The Propose API resolves entities by type and name: an ``Entity.key`` is not sent (put it in
the entity's attributes if the deployment should keep it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.conninfo
from psycopg import sql
from psycopg.types.json import Jsonb

from journal_loader.errors import ConfigError
from journal_loader.graph.embedded import _as_date, _attribute_values, check_fact
from journal_loader.graph.protocol import (
    STATUS_CONFLICTS,
    STATUS_ERROR,
    STATUS_SUCCESS,
    Action,
    Conflict,
    Entity,
    EntityLike,
    ProposeClient,
    ProposeResult,
    as_entity,
)
from journal_loader.graph.target import GraphTarget
from journal_loader.secrets import mask_url
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe, sqlstate

if TYPE_CHECKING:
    from journal_loader.config import Config

log = logging.getLogger("journal_loader.graph.propose_api")

KNOWN_STATUSES = (STATUS_SUCCESS, STATUS_CONFLICTS, STATUS_ERROR)
_SAVEPOINT = "jl_propose"
_TWO_PLACES = Decimal("0.01")


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
        self.in_doubt = False  # set by the runner for a record proposed again after a crash
        self._sql = _call_sql(function)
        self._tx: Tx | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._rec: _Record | None = None
        self._savepoint_owner: _Record | None = None
        self._hashes: dict[int, str] = {}

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
        )

    @property
    def transactional(self) -> bool:
        """True when the calls run in the batch's transaction (same database)."""
        return self.url is None

    # --- GraphTarget -------------------------------------------------------------------
    @property
    def client(self) -> ProposeClient:
        return self

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:
        self._tx = tx if self.transactional else None
        self._savepoint_owner = None
        self.in_doubt = False

    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None:
        self._rec = _Record(source_id, record_offset, run_id)

    def record_results(self) -> list[ProposeResult]:
        return self._rec.results if self._rec else []

    def finish_record(self) -> None:
        # The record's savepoint is released lazily, with the next record's SAVEPOINT (one
        # round trip) or at flush.
        self._rec = None
        self.in_doubt = False

    def abort_record(self) -> None:
        rec, self._rec = self._rec, None
        self.in_doubt = False
        if rec is not None and self._savepoint_owner is rec:
            self._savepoint_owner = None
            tx = self._require_tx()
            try:
                tx.cursor.execute(
                    f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}"
                )
            except psycopg.Error as e:
                raise classify(e) from e

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

    def after_rollback(self) -> None:
        self._tx = None
        self._savepoint_owner = None
        self._rec = None

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
        valid_from = _as_date("valid_from", valid_from)
        valid_to = _as_date("valid_to", valid_to)
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
                rec.failed = result.error_message or "error"
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
                cursor.execute(self._sql, params)
                row = cursor.fetchone()
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
            conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name=self.application_name[:63],
            )
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
        provenance_ids=[i for i in (_int(p) for p in _as_list(provenance_json)) if i is not None],
    )
    entities = [a for a in actions if a.action.startswith("entity_")]
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
    relationship_id = _int(raw.get("relationship_id"))
    entity_id = _int(raw.get("entity_id"))
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


def _conflict(raw: Any) -> Conflict:
    c = raw if isinstance(raw, dict) else {}
    return Conflict(
        relationship_id=_int(c.get("relationship_id", c.get("id"))) or 0,
        relationship_type=str(c.get("relationship_type") or c.get("type") or ""),
        source_entity_id=_int(c.get("source_entity_id")) or 0,
        target_entity_id=_int(c.get("target_entity_id")) or 0,
    )


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
        for text in _attribute_values(attr_type, value)
    ]


def _numeric(value: float) -> Decimal:
    return Decimal(str(value)).quantize(_TWO_PLACES, rounding=ROUND_HALF_UP)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, float | Decimal) and value == int(value):
        return int(value)
    return None


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
