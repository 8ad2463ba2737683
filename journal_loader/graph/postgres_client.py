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

The parts: this module is the client's logic (the runner's lifecycle, records, outcomes and
recovery); ``graph/propose_sql.py`` its connection and every statement it runs;
``graph/propose_answers.py`` the mapping of requests and answers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg.types.json import Jsonb

from journal_loader.errors import ConfigError, JournalLoaderError, TransientError
from journal_loader.graph.checks import as_date, check_fact
from journal_loader.graph.propose_answers import (
    APPLIED_ACTIONS,
    KNOWN_STATUSES,
    applied,
    attributes_json,
    error_result,
    not_applied,
    numeric,
    parse_response,
)
from journal_loader.graph.propose_sql import (
    IDENT,
    ProposeTransport,
    call_sql,
    journal_can_host,
    libpq_url,
    search_path_value,
)
from journal_loader.graph.protocol import (
    STATUS_ERROR,
    EntityLike,
    ProposeClient,
    ProposeResult,
    as_entity,
)
from journal_loader.graph.target import GraphTarget
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import is_transient_message

if TYPE_CHECKING:
    import datetime as dt

    import psycopg

    from journal_loader.config import Config

log = logging.getLogger("journal_loader.graph.propose_api")


class _Record:
    __slots__ = ("facts", "failed", "offset", "results", "run_id", "source_id")

    def __init__(self, source_id: int, offset: int, run_id: str) -> None:
        self.source_id = source_id
        self.offset = offset
        self.run_id = run_id
        self.facts = 0
        self.results: list[ProposeResult] = []
        self.failed: str | None = None


class PostgresProposeClient(ProposeTransport, GraphTarget, ProposeClient):
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
        if url is None and not journal_can_host(store):
            raise ConfigError(
                "the Propose API in the journal's own database needs a PostgreSQL journal; "
                "for another database give its url"
            )
        self.store = store
        self.url = url
        self._conninfo = libpq_url(url) if url is not None else None
        self.function = function
        self.source_name = source_name
        self.source_type = source_type
        self.node_types = frozenset(node_types) if node_types else None
        self.relationship_types = frozenset(relationship_types) if relationship_types else None
        self.connect_timeout = connect_timeout
        self.application_name = application_name
        self.search_path = search_path_value(search_path) if search_path else None
        #: Does the deployment keep p_provenance_metadata (the idempotency key)? None: not
        #: known yet; ``prepare`` reads it from the function's source unless this says.
        self.keeps_idempotency_key = keeps_idempotency_key
        self._key_declared = keeps_idempotency_key is not None
        if relationship_type_table is not None and not all(
            IDENT.match(p) for p in relationship_type_table.split(".")
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
            if not all(IDENT.match(p) for p in outcome_table.split(".")):
                raise ConfigError(
                    f"propose_api.outcome_table {outcome_table!r} is not a table name"
                )
        #: Another database: a table of journal-loader's there, written in each record's
        #: remote transaction, so that after a crash the answers of what committed are read
        #: back and what did not commit is known (``stored_outcomes``). Opt-in: it needs
        #: CREATE (once) and INSERT in the deployment's database.
        self.outcome_table = outcome_table
        self.in_doubt = False  # set by the runner for a record proposed again after a crash
        self._sql = call_sql(function)
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

    # --- start-up: where the function is, what the deployment keeps, its types -----------
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
        if not self.transactional and self._remote_in_transaction():
            outcome = None
            if self.outcome_table is not None and rec is not None and self.attempt:
                key = f"{self._source_hash(rec.source_id)}:{rec.offset}"
                outcome = (key, self.attempt, rec.results)
            self._commit_remote(outcome)
            if outcome is not None:
                self._stored_keys.append(outcome[0])

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
        rows = self._read_outcomes(list(keys))
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
            self._rollback_savepoint(self._require_tx())

    def flush(self, tx: Tx) -> None:
        if self._savepoint_owner is not None:
            self._savepoint_owner = None
            self._release_savepoint(tx)

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
        self._delete_outcomes(keys)

    def after_rollback(self) -> None:
        self._tx = None
        self._savepoint_owner = None
        self._rec = None
        self._stored_keys = []  # still needed: the batch is retried or resumed
        if not self.transactional:
            self._rollback_remote()

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
            result = error_result(f"not proposed: an earlier fact failed ({rec.failed})")
        else:
            params = {
                "source_type": src.type,
                "source_name": src.name,
                "target_type": tgt.type,
                "target_name": tgt.name,
                "relationship": relationship,
                "data_source_name": self.source_name,
                "data_source_type": self.source_type,
                "source_attributes": Jsonb(attributes_json(src)),
                "target_attributes": Jsonb(attributes_json(tgt)),
                "strength": numeric(strength),
                "valid_from": valid_from,
                "valid_to": valid_to,
                "metadata": None if metadata is None else Jsonb(metadata),
                "confidence": numeric(confidence),
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
            elif not applied(result):
                rec.failed = "not applied"
                result.idempotency_key = key
                result.in_doubt = self.in_doubt
                raise not_applied(src, tgt, relationship, result)
        result.idempotency_key = key
        if self.in_doubt:
            result.in_doubt = True
        rec.results.append(result)
        return result


__all__ = ["APPLIED_ACTIONS", "KNOWN_STATUSES", "PostgresProposeClient", "parse_response"]
