"""The embedded knowledge graph: nodes, attributes, relationships and provenance, in the
journal's own database and in each batch's transaction.

Because the graph shares the journal's transaction, a crash can never leave a fact without
its event or an event without its fact (invariant 2; tests/test_crash.py kills runs to
prove it).

How a batch is written (the reason this module is more than a few INSERTs):

* **Unit of work.** ``propose_fact`` decides everything in Python (created or matched,
  duplicate or new relationship) against an in-process cache, asking the database only on a
  cache miss (one round trip), and buffers the inserts. Once ``write_behind_records``
  records are buffered, ``finish_record`` hands their rows to a write behind the resolver
  (``Tx.write_behind``: on PostgreSQL a thread, so the server inserts while the client
  resolves the next records; on SQLite at once), and ``flush`` writes the rest (COPY on
  PostgreSQL) before the journal's append. Ids are reserved up front (``Tx.reserve_ids``;
  on PostgreSQL for the whole batch, ``Tx.reserve_ahead``) so results can name them before
  the rows exist.
* **A batch at once** (issue 11). The runner collects every record's facts first (the
  loader's ``propose`` against ``graph/batch.py``'s collector), the batch's identities are
  looked up in a few bulk queries (``prefetch_collected``; PostgreSQL, where a lookup is a
  round trip), and
  ``propose_collected`` resolves each record's facts in order with the code ``propose_fact``
  runs, so a later fact sees what an earlier one created. Whatever the collector cannot stand
  for is proposed again fact by fact in its place: the answers, the DLQ and the journal's
  order are those of ``propose_fact`` (tests/test_graph_batch.py).
* **Record-level atomicity without a savepoint per record.** Every change a record makes to
  the caches goes through an undo log, and its buffered rows are a tail of the buffers;
  ``abort_record`` rolls both back, so a failing record leaves no trace and the batch goes on.
  A database error at flush (a value the database refuses) fails the whole flush: the runner
  rolls the batch back and redoes it in **safe mode**, where each record's rows are written
  inside its own savepoint at ``finish_record`` and only the guilty record fails.
* **Concurrency.** Lookups in the batch see committed data and the batch's own rows written
  so far (a write behind, or safe mode's per record): what they find of ours the caches
  already hold, so the answers are those of committed data alone (tests/test_write_behind.py
  compares). If another runner commits the same new entity first, our insert breaks a unique index
  (``uq_nodes_type_key`` / ``uq_nodes_type_name_unkeyed``): the runner rolls back and retries
  the batch; the rollback drops every cached "not there" answer, so the retry's lookups match
  the other runner's node. On SQLite a batch holds the write lock from BEGIN IMMEDIATE, so
  this cannot happen there. Pinned by
  tests/test_graph.py::test_concurrent_runners_create_one_node (PostgreSQL).
* After a rollback the undo log returns the caches to the last committed state, and the
  caches of negative answers are dropped.

The Propose API's semantics (results shaped like the API's response):

* **Entity resolution**, in order: external key (confidence 1.0, ``external_key``); exact
  normalised name within the type (1.0, ``exact_name_match``); alias through the
  ``nameAlias`` attributes (0.9, ``alias_match``); fuzzy name (the score, ``fuzzy_match``),
  only for the types the config turns it on for; otherwise a new entity (``new_entity``).
  An entity given with an external key only ever matches a node without a key by name, alias
  or fuzzily (and gives it its key): two entities with different keys stay two. Two or more
  candidates at the same step is an **ambiguous match** (``AmbiguousMatchError``, naming
  them): the record fails to the DLQ; nothing is merged silently.
  The exact-name and alias lookups are one query (one round trip per cache miss, as before),
  and the alias part joins it only once the graph has an alias (a probe per batch until then);
  fuzzy matching costs a lookup only for the types that have it (``journal_loader.graph.fuzzy``
  explains how its scores are the same on both backends).
* **Relationships**: same endpoints and type, same (or lower) strength: ``duplicate``; a
  higher strength: ``updated`` (the validity dates and metadata given replace the stored
  ones; those not given are kept).
* **Conflicts**: a relationship proposed between two entities that already have an opposing
  relationship (``opposing_relationships`` in the config; same direction) is stored with its
  strength times ``conflict_penalty``; the status is ``conflicts``, the opposing
  relationships are listed in ``conflicts`` and as ``relationship_conflicted`` actions. The
  lookup of opposing relationships and of the relationship itself is one query.
* **Types** come from the config; an unknown one fails the record at stage ``validate``.
* **Provenance**: one row per node, attribute and relationship per record that asserted it,
  with the record's (source, offset), the fact's index and the confidence given (the view
  ``provenance``; stored as a row per record and a short row per subject in its kind's
  table: ``storage/schema.py``).

Where each part lives: resolution and its answers in ``graph/resolution.py``; attributes,
relationships and provenance rows in ``graph/rows.py``; the bulk lookups and locks of a batch
in ``graph/prefetch.py``; the caches, undo log and buffers in ``graph/state.py``; the rules a
fact must keep in ``graph/checks.py``; and every query in ``graph/store.py`` (the graph's SQL
module; the pg_trgm index itself is built by migration 0005). ``EmbeddedGraph`` joins them:
the parts are mixins over one state, so the hot path calls no layer in between.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, cast

from journal_loader import faults
from journal_loader.errors import JournalLoaderError, ProposeError
from journal_loader.graph.batch import CollectedFact, FactCollector
from journal_loader.graph.checks import (
    MAX_NAME_CHARS,
    MAX_TYPE_CHARS,
    MAX_VALUE_BYTES,
    as_date,
    check_fact,
)
from journal_loader.graph.prefetch import Prefetcher
from journal_loader.graph.protocol import (
    STATUS_CONFLICTS,
    STATUS_SUCCESS,
    Action,
    Entity,
    EntityLike,
    GraphId,
    ProposeClient,
    ProposeResult,
    as_entity,
)
from journal_loader.graph.resolution import ALIAS_CONFIDENCE
from journal_loader.graph.rows import RowBuilder
from journal_loader.graph.state import Candidate, Candidates, _Record
from journal_loader.graph.store import (
    ATTRIBUTE_COLUMNS,
    FUZZY_INDEX_NAME,
    NODE_COLUMNS,
    PROVENANCE_RECORD_COLUMNS,
    PROVENANCE_SUBJECT_COLUMNS,
    RELATIONSHIP_COLUMNS,
    RowBuffers,
    alias_literal,
)
from journal_loader.graph.target import GraphTarget
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe, is_record_error

if TYPE_CHECKING:
    from journal_loader.config import Config, GraphSection

DEFAULT_CONFLICT_PENALTY = 0.7


class EmbeddedGraph(Prefetcher, RowBuilder, GraphTarget, ProposeClient):
    """``ProposeClient`` for loaders, ``GraphTarget`` for the runner."""

    #: Offer the buffered rows to a write behind the resolver (``_write_behind``) once this
    #: many records' rows are buffered (tests set 1: a write after every record).
    write_behind_records = 100

    def __init__(
        self,
        store: Store,
        *,
        node_types: Iterable[str] | None = None,
        relationship_types: Iterable[str] | None = None,
        fuzzy: Mapping[str, float] | None = None,
        opposing: Iterable[tuple[str, str]] = (),
        conflict_penalty: float = DEFAULT_CONFLICT_PENALTY,
        alias_attribute: str = "nameAlias",
        use_pg_trgm: bool = True,
        cache_limit: int = 200_000,
    ) -> None:
        self.store = store
        self.node_types = frozenset(node_types) if node_types else None
        self.relationship_types = frozenset(relationship_types) if relationship_types else None
        self.fuzzy = dict(fuzzy or {})
        for type_name, threshold in self.fuzzy.items():
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"fuzzy threshold for {type_name!r} must be in (0, 1]")
        self.opposites = {}
        for a, b in opposing:
            self.opposites[a] = (*self.opposites.get(a, ()), b)
            self.opposites[b] = (*self.opposites.get(b, ()), a)
        self._pair_types = (
            None
            if self.relationship_types is None
            else self.relationship_types.union(*self.opposites.values())
        )
        if not 0.0 < conflict_penalty <= 1.0:
            raise ValueError("conflict_penalty must be in (0, 1]")
        self.conflict_penalty = conflict_penalty
        alias_literal(alias_attribute)  # a ValueError now, not at the first lookup
        self.alias_attribute = alias_attribute
        self.cache_limit = cache_limit
        super().__init__(store, self.fuzzy)
        if self.fuzzy and use_pg_trgm and self._db.may_have_pg_trgm:
            self._pg_trgm = self._db.pg_trgm_ready(store)

    @classmethod
    def from_config(cls, store: Store, config: Config | GraphSection) -> EmbeddedGraph:
        """The embedded graph as a config's ``graph:`` section describes it."""
        from journal_loader.config import Config

        section = config.graph if isinstance(config, Config) else config
        return cls(
            store,
            node_types=section.node_types,
            relationship_types=section.relationship_types,
            fuzzy=section.fuzzy_thresholds(),
            opposing=section.opposing_relationships,
            conflict_penalty=section.conflict_penalty,
            alias_attribute=section.alias_attribute,
        )

    @property
    def fuzzy_backend(self) -> str | None:
        """'pg_trgm', 'memory', or None when no type has fuzzy matching."""
        if not self.fuzzy:
            return None
        return "pg_trgm" if self._pg_trgm else "memory"

    # --- GraphTarget -------------------------------------------------------------------
    def prepare(self) -> None:
        # The alias type's partial index (migration 0010 builds the default type's): built
        # once by the first run of another type, else a warning (GraphStore.ensure_alias_index).
        self._db.ensure_alias_index(self.store, self.alias_attribute)

    @property
    def client(self) -> ProposeClient:
        return self

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:
        self._tx = tx
        self._safe = safe_mode
        self._now = dt.datetime.now(dt.UTC)
        self._stamp = tx.graph_timestamp(self._now)
        self._fuzzy_refreshed.clear()
        self._pg_threshold_set = False
        if not self._aliases_exist:
            self._aliases_exist = self._db.any_alias(tx, self.alias_attribute)

    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None:
        self._rec = _Record(
            source_id,
            record_offset,
            run_id,
            self._undo.mark(),
            self._buf.marks(),
            len(self._fuzzy_pending),
        )

    def record_results(self) -> list[ProposeResult]:
        return self._rec.results if self._rec else []

    def finish_record(self) -> None:
        rec = self._require_record()
        self._provenance_rows(rec)
        if self._safe:
            tx = self._require_tx()
            try:
                with tx.savepoint():
                    self._db.write(tx, self._buf)
            except JournalLoaderError as e:
                self._abort(rec)
                if not _is_values_error(e):
                    raise
                raise ProposeError(str(e)) from e
            except Exception as e:
                self._abort(rec)
                classified = classify(e)
                if not _is_values_error(classified):
                    raise classified from e
                raise ProposeError(describe(e)) from e
            self._buf.clear()
        elif len(self._buf.provenance_records) >= self.write_behind_records:
            self._write_behind(self._require_tx())
        self._rec = None

    def _write_behind(self, tx: Tx) -> None:
        """Hand the rows of the records done so far to a write in the background
        (``Tx.write_behind``: PostgreSQL), and buffer the next records' anew. Only between
        records: a record that fails later is undone from the buffers it wrote to, which
        are never the ones handed over. If the previous write still runs, the rows stay
        and are offered again after the next record (the resolver never waits for the
        server here). Measured: bench/bench_load.py, issue 11's note."""
        buf = self._buf
        db = self._db

        def write() -> None:
            db.write(tx, buf)
            faults.point(faults.WRITE_BEHIND)

        if tx.write_behind(write):
            self._buf = RowBuffers()

    def abort_record(self) -> None:
        if self._rec is not None:
            self._abort(self._rec)
            self._rec = None

    def flush(self, tx: Tx) -> None:
        self._db.write(tx, self._buf)
        self._buf.clear()

    def take_flush(self, tx: Tx) -> Callable[[], None] | None:
        buf, db = self._buf, self._db
        self._buf = RowBuffers()

        def write() -> None:
            db.write(tx, buf)
            faults.point(faults.WRITE_BEHIND)

        return write

    def after_commit(self) -> None:
        self._undo.entries.clear()
        self._new_nodes.clear()
        self._new_keyed_by_name.clear()  # committed: a lookup finds them
        self._keyless_by_name.clear()  # the batch's (Prefetcher)
        self._keyless_aliases.clear()
        self._tx = None
        if self._pg_trgm:
            # committed: the database's trigram index finds them from now on
            self._drop_pending_fuzzy(0)
        else:
            self._fuzzy_pending.clear()  # committed: they stay in the in-process index
        if self._cache_size() > self.cache_limit:
            if len(self._key_of) <= self.cache_limit // 4:
                self._evict()  # the older half
            else:
                self._forget()
                self._key_of.clear()
                if not self._pg_trgm:
                    for index in self._fuzzy_index.values():
                        index.clear()
                    self._fuzzy_loaded.clear()

    def after_rollback(self) -> None:
        self._undo.rollback_to(0)
        self._buf.clear()
        self._drop_pending_fuzzy(0)
        self._new_nodes.clear()
        self._new_keyed_by_name.clear()
        self._keyless_by_name.clear()
        self._keyless_aliases.clear()
        self._rec = None
        self._tx = None
        # A rollback may come from another runner's commit (a unique key it took first):
        # whatever we cached as absent may be there now.
        self._forget()

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
        rec = self._require_record()
        tx = self._require_tx()
        src = as_entity(source_entity, source_attributes)
        tgt = as_entity(target_entity, target_attributes)
        if valid_from is not None or valid_to is not None:
            valid_from = as_date("valid_from", valid_from)
            valid_to = as_date("valid_to", valid_to)
        src_norm, tgt_norm = check_fact(
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
        return self._fact(
            rec,
            tx,
            src,
            tgt,
            src_norm,
            tgt_norm,
            relationship,
            strength,
            valid_from,
            valid_to,
            metadata,
            confidence,
        )

    # --- a batch's facts, collected first (journal_loader/graph/batch.py) ------------------
    @property
    def wants_batch(self) -> bool:
        # A subclass that intercepts propose_fact (a test's flaky target, a wrapper that
        # counts) expects every fact through it: it is proposed fact by fact.
        return type(self).propose_fact is EmbeddedGraph.propose_fact

    def collector(self) -> FactCollector:
        return FactCollector(self.node_types, self.relationship_types)

    def propose_collected(
        self, source_id: int, record_offset: int, run_id: str, facts: list[CollectedFact]
    ) -> list[ProposeResult]:
        """One record's collected facts, resolved in order: the answers ``propose_fact``
        would have given them. A fact the graph refuses undoes the record and raises."""
        if not facts:
            # Nothing to resolve, buffer, undo or write (in safe mode: no rows, so no
            # savepoint): a record without facts costs the graph no record state at all.
            # Journal-only loaders go this way for every record (issue 11, item 6).
            return []
        self.begin_record(source_id, record_offset, run_id)
        rec = self._require_record()
        tx = self._require_tx()
        # The record's facts were collected before any is resolved, so nothing changes an
        # entity's attributes between them: an entity given again (the example's company, in
        # three facts) has the ids its first fact found or created (only new values make
        # rows, and nothing is undone but the whole record).
        rec.attribute_memo = {}
        fact = self._fact
        try:
            # unpacked: a call with twelve arguments, not one through *f (a tuple per fact)
            for src, tgt, src_norm, tgt_norm, rel, strength, start, end, meta, conf in facts:
                fact(rec, tx, src, tgt, src_norm, tgt_norm, rel, strength, start, end, meta, conf)
        except BaseException:
            self.abort_record()
            raise
        results = rec.results
        self.finish_record()  # in safe mode this writes, and may fail the record
        return results

    def _fact(
        self,
        rec: _Record,
        tx: Tx,
        src: Entity,
        tgt: Entity,
        src_norm: str,
        tgt_norm: str,
        relationship: str,
        strength: float,
        valid_from: dt.date | None,
        valid_to: dt.date | None,
        metadata: dict[str, Any] | None,
        confidence: float,
    ) -> ProposeResult:
        """A checked fact, resolved against the graph as it stands (the open batch's rows
        included)."""
        fact_index = rec.facts
        rec.facts += 1

        source_id, source_action, source_key, source_norm = self._resolve(
            tx, src, src_norm, "source"
        )
        target_id, target_action, target_key, target_norm = self._resolve(
            tx, tgt, tgt_norm, "target"
        )
        attribute_ids: list[int] = []
        memo = rec.attribute_memo
        if src.attributes:
            if memo is None:
                attribute_ids = self._attributes(tx, source_id, source_key, source_norm, src)
            else:
                ids = memo.get((source_id, id(src.attributes)))
                if ids is None:
                    ids = self._attributes(tx, source_id, source_key, source_norm, src)
                    memo[source_id, id(src.attributes)] = ids
                attribute_ids = [*ids]
        if tgt.attributes:
            if memo is None:
                attribute_ids += self._attributes(tx, target_id, target_key, target_norm, tgt)
            else:
                ids = memo.get((target_id, id(tgt.attributes)))
                if ids is None:
                    ids = self._attributes(tx, target_id, target_key, target_norm, tgt)
                    memo[target_id, id(tgt.attributes)] = ids
                attribute_ids += ids
        rel_id, rel_action, conflicts = self._relationship(
            tx, source_id, relationship, target_id, strength, valid_from, valid_to, metadata
        )
        actions = [source_action, target_action, rel_action]
        if conflicts:
            actions += [
                Action(
                    action="relationship_conflicted",
                    relationship_id=c.relationship_id,
                    message=f"{c.relationship_type} opposes {relationship}",
                )
                for c in conflicts
            ]

        # provenance: one id per subject per record, for the first fact that asserts it (a
        # subject twice in one fact, a self-loop's node, gets two: each is checked against
        # the record's subjects before the fact's are added); the ids in subject order:
        # source node, target node, attributes, relationship
        seen_nodes = rec.seen_nodes
        new_source = source_id not in seen_nodes
        new_target = target_id not in seen_nodes
        seen_attributes = rec.seen_attributes
        if not attribute_ids or seen_attributes.isdisjoint(attribute_ids):
            new_attributes = attribute_ids  # empty, or all new (the common cases)
        else:
            new_attributes = [a for a in attribute_ids if a not in seen_attributes]
        new_relationship = rel_id not in rec.seen_relationships
        count = new_source + new_target + len(new_attributes) + new_relationship
        provenance_ids: list[int] = []
        if count:
            provenance_ids = tx.reserve_ids("provenance_records", count)
            i = 0
            if new_source:
                rec.provenance_nodes.append((source_id, provenance_ids[0], fact_index, confidence))
                i = 1
            if new_target:
                rec.provenance_nodes.append((target_id, provenance_ids[i], fact_index, confidence))
                i += 1
            if new_attributes:
                append = rec.provenance_attributes.append
                for attribute_id in new_attributes:
                    append((attribute_id, provenance_ids[i], fact_index, confidence))
                    i += 1
                seen_attributes.update(new_attributes)
            if new_relationship:
                rec.provenance_relationships.append(
                    (rel_id, provenance_ids[-1], fact_index, confidence)
                )
                rec.seen_relationships.add(rel_id)
            seen_nodes.add(source_id)
            seen_nodes.add(target_id)
            top = max(provenance_ids)
            if top > rec.last_id:
                rec.last_id, rec.last_confidence = top, confidence

        result = ProposeResult(
            status=STATUS_CONFLICTS if conflicts else STATUS_SUCCESS,
            overall_confidence=min(
                1.0 if source_action.confidence is None else source_action.confidence,
                1.0 if target_action.confidence is None else target_action.confidence,
            ),
            actions=actions,
            conflicts=conflicts,
            provenance_ids=cast("list[GraphId]", provenance_ids),  # ints: no copy per fact
            attribute_ids=attribute_ids,
            source_entity_id=source_id,
            target_entity_id=target_id,
            relationship_id=rel_id,
        )
        rec.results.append(result)
        return result

    def _abort(self, rec: _Record) -> None:
        self._undo.rollback_to(rec.undo_mark)
        self._buf.truncate(rec.buffer_marks)
        self._drop_pending_fuzzy(rec.fuzzy_mark)


def _is_values_error(error: JournalLoaderError) -> bool:
    return is_record_error(error)


__all__ = [
    "ALIAS_CONFIDENCE",
    "ATTRIBUTE_COLUMNS",
    "DEFAULT_CONFLICT_PENALTY",
    "FUZZY_INDEX_NAME",
    "MAX_NAME_CHARS",
    "MAX_TYPE_CHARS",
    "MAX_VALUE_BYTES",
    "NODE_COLUMNS",
    "PROVENANCE_RECORD_COLUMNS",
    "PROVENANCE_SUBJECT_COLUMNS",
    "RELATIONSHIP_COLUMNS",
    "Candidate",
    "Candidates",
    "EmbeddedGraph",
    "check_fact",
]
