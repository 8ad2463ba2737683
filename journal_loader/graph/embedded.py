"""The embedded knowledge graph: nodes, attributes, relationships and provenance, in the
journal's own database and in each batch's transaction.

Because the graph shares the journal's transaction, a crash can never leave a fact without
its event or an event without its fact (invariant 2; tests/test_crash.py kills runs to
prove it).

How a batch is written (the reason this module is more than a few INSERTs):

* **Unit of work.** ``propose_fact`` decides everything in Python (created or matched,
  duplicate or new relationship) against an in-process cache, asking the database only on a
  cache miss (one round trip), and buffers the inserts. ``flush`` writes them in bulk (COPY
  on PostgreSQL) before the journal's append. Ids are reserved up front (``Tx.reserve_ids``)
  so results can name them before the rows exist.
* **Record-level atomicity without a savepoint per record.** Every change a record makes to
  the caches goes through an undo log, and its buffered rows are a tail of the buffers;
  ``abort_record`` rolls both back, so a failing record leaves no trace and the batch goes on.
  A database error at flush (a value the database refuses) fails the whole flush: the runner
  rolls the batch back and redoes it in **safe mode**, where each record's rows are written
  inside its own savepoint at ``finish_record`` and only the guilty record fails.
* **Concurrency.** Lookups in the batch see committed data only (our rows are written at the
  end). If another runner commits the same new entity first, our insert breaks a unique index
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
  with the record's (source, offset), the fact's index and the confidence given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import msgspec

from journal_loader.errors import (
    AmbiguousMatchError,
    JournalLoaderError,
    ProposeError,
    ValidationError,
)
from journal_loader.graph.fuzzy import (
    PG_THRESHOLD_SLACK,
    TrigramIndex,
    best_matches,
    fuzzy_key,
    trigram_similarity,
    trigrams,
)
from journal_loader.graph.normalize import normalize_name
from journal_loader.graph.protocol import (
    STATUS_CONFLICTS,
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
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe
from journal_loader.storage.sql import load_queries
from journal_loader.suggest import did_you_mean

if TYPE_CHECKING:
    from journal_loader.config import Config, GraphSection

log = logging.getLogger("journal_loader.graph")

MAX_NAME_CHARS = 1000
MAX_VALUE_BYTES = 2000  # PostgreSQL's btree entries cap out near 2.7 kB
MAX_TYPE_CHARS = 100  # node_type, rel_type, attr_type: VARCHAR(100)
ALIAS_CONFIDENCE = 0.9
DEFAULT_CONFLICT_PENALTY = 0.7
FUZZY_INDEX_NAME = "ix_nodes_fuzzy_key_trgm"

NODE_COLUMNS = (
    "id",
    "node_type",
    "name",
    "norm_name",
    "external_key",
    "created_at",
    "updated_at",
    "fuzzy_key",
)
ATTRIBUTE_COLUMNS = ("id", "node_id", "attr_type", "value", "norm_value", "created_at")
RELATIONSHIP_COLUMNS = (
    "id",
    "source_node_id",
    "rel_type",
    "target_node_id",
    "strength",
    "valid_from",
    "valid_to",
    "metadata",
    "created_at",
    "updated_at",
)
PROVENANCE_COLUMNS = (
    "id",
    "subject_kind",
    "subject_id",
    "source_id",
    "record_offset",
    "fact_index",
    "run_id",
    "confidence",
    "created_at",
)

_MISSING: Any = object()
# (node id, external key, normalised name) per node found by a name or an alias
Candidate = tuple[int, str | None, str]
Candidates = tuple[Candidate, ...]


class _UndoLog:
    """Every cache change, so a record or a batch can be taken back."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[tuple[dict[Any, Any], Any, Any]] = []

    def set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self.entries.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def mark(self) -> int:
        return len(self.entries)

    def rollback_to(self, mark: int) -> None:
        entries = self.entries
        while len(entries) > mark:
            mapping, key, old = entries.pop()
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old


@dataclass(slots=True)
class _Buffers:
    nodes: list[tuple[Any, ...]] = field(default_factory=list)
    key_updates: list[dict[str, Any]] = field(default_factory=list)
    attributes: list[tuple[Any, ...]] = field(default_factory=list)
    relationships: list[tuple[Any, ...]] = field(default_factory=list)
    rel_updates: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[tuple[Any, ...]] = field(default_factory=list)

    def marks(self) -> tuple[int, ...]:
        return (
            len(self.nodes),
            len(self.key_updates),
            len(self.attributes),
            len(self.relationships),
            len(self.rel_updates),
            len(self.provenance),
        )

    def truncate(self, marks: tuple[int, ...]) -> None:
        for buf, mark in zip(self._all(), marks, strict=True):
            del buf[mark:]

    def clear(self) -> None:
        for buf in self._all():
            buf.clear()

    def _all(self) -> tuple[list[Any], ...]:
        return (
            self.nodes,
            self.key_updates,
            self.attributes,
            self.relationships,
            self.rel_updates,
            self.provenance,
        )


@dataclass(slots=True)
class _Record:
    source_id: int
    record_offset: int
    run_id: str
    undo_mark: int
    buffer_marks: tuple[int, ...]
    fuzzy_mark: int
    facts: int = 0
    results: list[ProposeResult] = field(default_factory=list)
    provenanced: set[tuple[str, int]] = field(default_factory=set)


class EmbeddedGraph(GraphTarget, ProposeClient):
    """``ProposeClient`` for loaders, ``GraphTarget`` for the runner."""

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
        cache_limit: int = 1_000_000,
    ) -> None:
        self.store = store
        self.node_types = frozenset(node_types) if node_types else None
        self.relationship_types = frozenset(relationship_types) if relationship_types else None
        self.fuzzy: dict[str, float] = dict(fuzzy or {})
        for type_name, threshold in self.fuzzy.items():
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"fuzzy threshold for {type_name!r} must be in (0, 1]")
        self.opposites: dict[str, tuple[str, ...]] = {}
        for a, b in opposing:
            self.opposites[a] = (*self.opposites.get(a, ()), b)
            self.opposites[b] = (*self.opposites.get(b, ()), a)
        if not 0.0 < conflict_penalty <= 1.0:
            raise ValueError("conflict_penalty must be in (0, 1]")
        self.conflict_penalty = conflict_penalty
        self.alias_attribute = alias_attribute
        self.cache_limit = cache_limit
        self._q = load_queries(Path(__file__).with_name("embedded.sql"), store.dialect)
        self._by_key: dict[tuple[str, str], int] = {}
        self._absent_keys: set[tuple[str, str]] = set()  # looked up in bulk, not there
        self._by_name: dict[tuple[str, str], Candidates] = {}
        self._by_alias: dict[tuple[str, str], Candidates] = {}
        self._key_of: dict[int, str] = {}  # keys this graph gave to keyless nodes
        self._attrs: dict[int, dict[tuple[str, str], int]] = {}
        self._rels: dict[tuple[int, str, int], tuple[int, float]] = {}
        self._pairs: set[tuple[int, int]] = set()  # (source, target): every rel type loaded
        self._new_nodes: dict[int, bool] = {}  # created in the open batch: nothing to look up
        self._undo = _UndoLog()
        self._buf = _Buffers()
        self._tx: Tx | None = None
        self._rec: _Record | None = None
        self._safe = False
        self._now: dt.datetime = dt.datetime.now(dt.UTC)
        self._stamp: Any = None
        # Fuzzy matching: per type, a trigram index of names (see journal_loader.graph.fuzzy).
        # With pg_trgm it holds only the open batch's new nodes (the database finds the
        # committed ones); without, every node of the type, loaded and kept up to date.
        self._fuzzy_index: dict[str, TrigramIndex] = {t: TrigramIndex() for t in self.fuzzy}
        self._fuzzy_pending: list[tuple[str, int]] = []  # (type, node id) added in the batch
        self._fuzzy_loaded: dict[str, int] = {}  # type -> highest committed id loaded
        self._fuzzy_refreshed: set[str] = set()  # types refreshed in the open batch
        self._pg_threshold_set = False
        # Alias lookups ride along the name lookup (one query), but only once the graph has an
        # alias at all: until then the plain name query, and one probe per batch.
        self._aliases_exist = False
        self._trgm_sql: str | None = None
        if self.fuzzy and use_pg_trgm and store.dialect == "postgresql":
            self._trgm_sql = _prepare_pg_trgm(store, self._q["find_fuzzy_pg_trgm"])

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
        return "pg_trgm" if self._trgm_sql else "memory"

    # --- GraphTarget -------------------------------------------------------------------
    @property
    def client(self) -> ProposeClient:
        return self

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:
        self._tx = tx
        self._safe = safe_mode
        self._now = dt.datetime.now(dt.UTC)
        self._stamp = tx.timestamp(self._now)
        self._fuzzy_refreshed.clear()
        self._pg_threshold_set = False
        if not self._aliases_exist:
            probe = tx.fetchone(self._q["any_alias"], {"alias_type": self.alias_attribute})
            self._aliases_exist = probe is not None

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
        if self._safe:
            tx = self._require_tx()
            try:
                with tx.savepoint():
                    self._write_buffers(tx)
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
        self._rec = None

    def abort_record(self) -> None:
        if self._rec is not None:
            self._abort(self._rec)
            self._rec = None

    def flush(self, tx: Tx) -> None:
        self._write_buffers(tx)
        self._buf.clear()

    def after_commit(self) -> None:
        self._undo.entries.clear()
        self._new_nodes.clear()
        self._tx = None
        if self._trgm_sql is not None:
            # committed: the database's trigram index finds them from now on
            self._drop_pending_fuzzy(0)
        else:
            self._fuzzy_pending.clear()  # committed: they stay in the in-process index
        size = len(self._by_name) + len(self._by_alias) + len(self._rels) + len(self._attrs)
        if size > self.cache_limit:
            self._forget()
            self._key_of.clear()
            if self._trgm_sql is None:
                for index in self._fuzzy_index.values():
                    index.clear()
                self._fuzzy_loaded.clear()

    def after_rollback(self) -> None:
        self._undo.rollback_to(0)
        self._buf.clear()
        self._drop_pending_fuzzy(0)
        self._new_nodes.clear()
        self._rec = None
        self._tx = None
        # A rollback may come from another runner's commit (a unique key it took first):
        # whatever we cached as absent may be there now.
        self._forget()

    def _forget(self) -> None:
        self._absent_keys.clear()
        self._by_key.clear()
        self._by_name.clear()
        self._by_alias.clear()
        self._attrs.clear()
        self._rels.clear()
        self._pairs.clear()

    # --- prefetch (PostgreSQL) ----------------------------------------------------------
    @property
    def wants_prefetch(self) -> bool:
        # A lookup is a round trip on PostgreSQL (measured here: 90 us for SELECT 1, 145 for
        # find_nodes), in-process on SQLite (a few us): only PostgreSQL gains from looking up
        # a batch's entities in bulk before proposing it.
        return self.store.dialect == "postgresql"

    def prefetch(
        self, tx: Tx, entities: list[Entity], facts: list[tuple[Entity, str, Entity]]
    ) -> None:
        """Warm the caches for a batch in a few queries (nodes by name and by key, aliases,
        attributes of the nodes found, relationships between them), and lock what the batch
        may create. What is found goes where a single lookup would have put it, and keys
        found absent are remembered like the names found absent: the answers are the same as
        without it, minus the round trips.

        Concurrency (issue: two loaders of different sources sharing entities on one
        PostgreSQL). Without locks, two batches that both decide "Acme is new" both insert it;
        the second is refused by a unique index at flush (or deadlocks, when each waits for a
        key the other inserted), rolls back and redoes the whole batch, which collides again
        with the other runner's next batch: 9 of 12 runs gave up. So, before it proposes, a
        batch takes transaction-scoped locks on the identities it may create, in one sorted
        order (no deadlock between batches), and only then looks those identities up again:
        a runner that created one has committed before our lock is granted, and READ
        COMMITTED shows its row to the statement after the lock. Two phases:

        1. entities that do not resolve without doubt from committed rows (new names, new
           keys, keyless nodes a keyed entity would adopt): a lock on ``(type, name)`` and
           on ``(type, key)``;
        2. then, for nodes that exist, the relationships and attribute values the batch
           would add to them: a lock on each ``(source, type, target)`` and
           ``(node, attribute, value)``.

        A phase-1 holder waits only for phase-1 locks, a phase-2 holder only for phase-2
        locks (each phase is a lock scope of its own, so their keys never coincide, also when
        a large batch's names share bucket locks: Tx.advisory_xact_lock), and each phase
        takes its locks in one statement in key order, so no cycle can form. Existing
        entities take no lock, so a refresh load does not wait at all.
        What the planning pass did not see (a loader whose ``propose`` is not deterministic)
        is still caught by the unique indexes: a conflict, retried narrowly by the runner.
        Pinned by tests/test_concurrency.py (2 and 4 loaders sharing entities, both
        backends, graph equal to the sequential load).
        """
        names, keys = self._identities_to_look_up(entities)
        if names or keys:
            self._prefetch_nodes(tx, names, keys)
        # phase 1: lock what may be created, then look it up again
        new_names, new_keys = self._unresolved(entities)
        if new_names or new_keys:
            tx.advisory_xact_lock(
                "graph-entities",
                [f"name:{t}:{n}" for t, n in new_names] + [f"key:{t}:{k}" for t, k in new_keys],
            )
            for name in new_names:
                self._by_name.pop(name, None)
                self._by_alias.pop(name, None)
            for key in new_keys:
                self._by_key.pop(key, None)
                self._absent_keys.discard(key)
            self._prefetch_nodes(tx, new_names, new_keys)
        known = {id(e): self._known_node(e) for e in entities}
        wanted = {known[id(e)] for e in entities if e.attributes} - {None} - set(self._attrs)
        if wanted:
            self._prefetch_attributes(tx, sorted(i for i in wanted if i is not None))
        pairs = set()
        for src, _rel, tgt in facts:
            s_id, t_id = known.get(id(src)), known.get(id(tgt))
            if s_id is not None and t_id is not None and (s_id, t_id) not in self._pairs:
                pairs.add((s_id, t_id))
        if pairs:
            self._prefetch_relationships(tx, pairs)
        # phase 2: lock what the batch would add to existing nodes, then look it up again
        new_rels: set[tuple[int, str, int]] = set()
        for src, rel, tgt in facts:
            s_id, t_id = known.get(id(src)), known.get(id(tgt))
            if s_id is not None and t_id is not None and (s_id, rel, t_id) not in self._rels:
                new_rels.add((s_id, rel, t_id))
        new_attrs: set[tuple[int, str, str]] = set()
        for e in entities:
            node_id = known.get(id(e))
            if node_id is not None and e.attributes:
                existing = self._attrs.get(node_id, {})
                for attr_type, value in e.attributes.items():
                    try:
                        values = _attribute_values(attr_type, value)
                    except ValidationError:
                        continue  # the real pass fails the record
                    new_attrs.update(
                        (node_id, attr_type, v) for v in values if (attr_type, v) not in existing
                    )
        if new_rels or new_attrs:
            tx.advisory_xact_lock(
                "graph-facts",
                [f"rel:{s}:{r}:{t}" for s, r, t in new_rels]
                + [f"attr:{n}:{a}:{v}" for n, a, v in new_attrs],
            )
            self._prefetch_attributes(tx, sorted({n for n, _a, _v in new_attrs}), refresh=True)
            self._prefetch_relationships(tx, {(s, t) for s, _r, t in new_rels}, refresh=True)

    def _identities_to_look_up(
        self, entities: list[Entity]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """(type, normalised name) and (type, key) pairs of the batch the caches don't know.
        Values the real pass will refuse (a NUL byte, not text, too long) are left out: that
        record alone fails at validation; here it would fail the batch's query."""
        names: set[tuple[str, str]] = set()
        keys: set[tuple[str, str]] = set()
        for e in entities:
            if not _lookup_text(e.type) or not _lookup_text(e.name):
                continue
            norm = normalize_name(e.name)
            if not norm:
                continue
            if (e.type, norm) not in self._by_name:
                names.add((e.type, norm))
            key = (e.type, e.key)
            if e.key is not None and not _lookup_text(e.key):
                continue
            if isinstance(e.key, str) and key not in self._by_key and key not in self._absent_keys:
                keys.add((e.type, e.key))
        return names, keys

    def _unresolved(
        self, entities: list[Entity]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """The identities a batch may create or change: a keyed entity whose key no committed
        node has (it creates a node, or gives its key to a keyless one), a keyless entity
        that does not match exactly one node by name (it creates one, or is ambiguous)."""
        names: set[tuple[str, str]] = set()
        keys: set[tuple[str, str]] = set()
        for e in entities:
            if not _lookup_text(e.type) or not _lookup_text(e.name):
                continue
            if e.key is not None and not _lookup_text(e.key):
                continue
            norm = normalize_name(e.name)
            if not norm:
                continue
            if isinstance(e.key, str):
                if (e.type, e.key) not in self._by_key:
                    keys.add((e.type, e.key))
                    names.add((e.type, norm))
            else:
                candidates = self._by_name.get((e.type, norm))
                if candidates is None or len(candidates) != 1:
                    names.add((e.type, norm))
        return names, keys

    def _prefetch_attributes(self, tx: Tx, ids: list[int], *, refresh: bool = False) -> None:
        if not ids:
            return
        found: dict[int, dict[tuple[str, str], int]] = {i: {} for i in ids}
        for node_id, attr_id, attr_type, value in tx.fetchall(
            self._q["prefetch_attributes"], {"ids": ids}
        ):
            found[node_id][(attr_type, value)] = attr_id
        for node_id, attrs in found.items():  # committed rows: no undo needed
            if refresh:
                self._attrs[node_id] = attrs
            else:
                self._attrs.setdefault(node_id, attrs)

    def _prefetch_relationships(
        self, tx: Tx, pairs: set[tuple[int, int]], *, refresh: bool = False
    ) -> None:
        """Every relationship between each pair (committed rows: no undo needed)."""
        if not pairs:
            return
        ordered = sorted(pairs)
        if refresh:
            stale = [k for k in self._rels if (k[0], k[2]) in pairs]
            for k in stale:
                del self._rels[k]
        for s_id, t_id, rel_id, rel_type, strength in tx.fetchall(
            self._q["prefetch_relationships"],
            {"sources": [p[0] for p in ordered], "targets": [p[1] for p in ordered]},
        ):
            self._rels[(s_id, rel_type, t_id)] = (rel_id, float(strength))
        self._pairs.update(pairs)  # every relationship between them is known now

    def _prefetch_nodes(
        self, tx: Tx, names: set[tuple[str, str]], keys: set[tuple[str, str]]
    ) -> None:
        by_name: dict[tuple[str, str], list[Candidate]] = {n: [] for n in names}
        found_keys: set[tuple[str, str]] = set()
        name_list, key_list = sorted(names), sorted(keys)
        rows = tx.fetchall(
            self._q["prefetch_nodes"],
            {
                "types": [n[0] for n in name_list],
                "norms": [n[1] for n in name_list],
                "key_types": [k[0] for k in key_list],
                "keys": [k[1] for k in key_list],
            },
        )
        for node_id, ext_key, node_norm, node_type, _via in rows:
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
                found_keys.add((node_type, ext_key))
            bucket = by_name.get((node_type, node_norm))
            if bucket is not None and all(c[0] != node_id for c in bucket):
                bucket.append((node_id, ext_key, node_norm))
        aliases: dict[tuple[str, str], dict[int, Candidate]] = {n: {} for n in names}
        if self._aliases_exist and name_list:
            for node_id, ext_key, node_norm, node_type, alias in tx.fetchall(
                self._q["prefetch_aliases"],
                {
                    "types": [n[0] for n in name_list],
                    "norms": [n[1] for n in name_list],
                    "alias_type": self.alias_attribute,
                },
            ):
                aliases[(node_type, alias)][node_id] = (node_id, ext_key, node_norm)
        for name, candidates in by_name.items():
            if name not in self._by_name:
                self._by_name[name] = tuple(sorted(candidates))
                self._by_alias.setdefault(name, tuple(sorted(aliases[name].values())))
        self._absent_keys.update(keys - found_keys)

    def _known_node(self, e: Entity) -> int | None:
        """The committed node an entity resolves to without doubt, if the caches know it."""
        if isinstance(e.key, str):
            node_id = self._by_key.get((e.type, e.key))
            if node_id is not None or (e.type, e.key) not in self._absent_keys:
                return node_id
        if not isinstance(e.name, str):
            return None
        candidates = self._by_name.get((e.type, normalize_name(e.name)))
        if candidates and len(candidates) == 1 and (e.key is None or candidates[0][1] is None):
            return candidates[0][0]
        return None

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
            valid_from = _as_date("valid_from", valid_from)
            valid_to = _as_date("valid_to", valid_to)
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
        fact_index = rec.facts
        rec.facts += 1

        source_id, source_action, *source_node = self._resolve(tx, src, src_norm, "source")
        target_id, target_action, *target_node = self._resolve(tx, tgt, tgt_norm, "target")
        attribute_ids = self._attributes(tx, source_id, source_node, src)
        attribute_ids += self._attributes(tx, target_id, target_node, tgt)
        rel_id, rel_action, conflicts = self._relationship(
            tx, source_id, relationship, target_id, strength, valid_from, valid_to, metadata
        )
        actions = [source_action, target_action, rel_action]
        actions += [
            Action(
                action="relationship_conflicted",
                relationship_id=c.relationship_id,
                message=f"{c.relationship_type} opposes {relationship}",
            )
            for c in conflicts
        ]

        subjects = [("node", source_id), ("node", target_id)]
        if attribute_ids:
            subjects += [("attribute", attribute_id) for attribute_id in attribute_ids]
        subjects.append(("relationship", rel_id))
        provenance_ids = self._provenance(tx, rec, subjects, fact_index, confidence)

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

    # --- resolution --------------------------------------------------------------------
    def _candidates(self, tx: Tx, node_type: str, norm: str, key: str | None) -> Candidates:
        """Nodes of the type with this name (and, cached alongside, the nodes with it as an
        alias); also loads the keyed node into the key cache. One query."""
        cached = self._by_name.get((node_type, norm))
        if cached is not None and (
            key is None or (node_type, key) in self._by_key or (node_type, key) in self._absent_keys
        ):
            return cached
        if self._aliases_exist:
            rows = tx.fetchall(
                self._q["find_nodes_and_aliases"],
                {
                    "node_type": node_type,
                    "norm_name": norm,
                    "external_key": key,
                    "alias_type": self.alias_attribute,
                },
            )
        else:
            rows = tx.fetchall(
                self._q["find_nodes"],
                {"node_type": node_type, "norm_name": norm, "external_key": key},
            )
        by_name: list[Candidate] = []
        by_alias: dict[int, Candidate] = {}
        for node_id, ext_key, node_norm, via_alias in rows:
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
            if via_alias:
                by_alias[node_id] = (node_id, ext_key, node_norm)
            elif node_norm == norm:
                by_name.append((node_id, ext_key, node_norm))
        if cached is None:
            # nodes created in this batch are in the cache already; rows are committed ones
            candidates = tuple(sorted(by_name))
            self._by_name[(node_type, norm)] = candidates
            self._by_alias.setdefault((node_type, norm), tuple(sorted(by_alias.values())))
            return candidates
        return cached

    def _keyless(self, candidate: Candidate) -> bool:
        return candidate[1] is None and candidate[0] not in self._key_of

    def _resolve(
        self, tx: Tx, e: Entity, norm: str, role: str
    ) -> tuple[int, Action, str | None, str]:
        """(node id, action, the node's external key and normalised name as far as known)."""
        node_type = e.type
        key = e.key
        names: Candidates | None = None
        if key is not None:
            node_id = self._by_key.get((node_type, key))
            if node_id is None:
                names = self._candidates(tx, node_type, norm, key)
                node_id = self._by_key.get((node_type, key))
            if node_id is not None:
                return node_id, _matched(role, node_id, 1.0, "external_key"), key, norm
        if names is None:
            names = self._candidates(tx, node_type, norm, key)

        # exact normalised name (with a key: only a node that has none)
        if key is None and len(names) == 1:  # the common case, first
            node_id = names[0][0]
            found = names[0]
            return node_id, _matched(role, node_id, 1.0, "exact_name_match"), found[1], found[2]
        eligible = names if key is None else tuple(c for c in names if self._keyless(c))
        if eligible:
            found = self._one(e, eligible, "exact_name_match")
            return self._adopt(e, found, 1.0, "exact_name_match", role)

        # alias (the nameAlias attributes)
        aliases = self._by_alias.get((node_type, norm), ())
        if key is not None:
            aliases = tuple(c for c in aliases if self._keyless(c))
        if aliases:
            found = self._one(e, aliases, "alias_match")
            return self._adopt(e, found, ALIAS_CONFIDENCE, "alias_match", role)

        # fuzzy, for the types that have it
        threshold = self.fuzzy.get(node_type)
        if threshold is not None:
            fuzzy = self._fuzzy(tx, e, threshold)
            if fuzzy is not None:
                found, score = fuzzy
                return self._adopt(e, found, round(score, 6), "fuzzy_match", role)

        node_id = self._create_node(tx, e, norm, names)
        action = Action(
            action="entity_created",
            role=role,
            entity_id=node_id,
            confidence=1.0,
            match_reason="new_entity",
        )
        return node_id, action, key, norm

    def _one(self, e: Entity, candidates: Candidates, reason: str) -> Candidate:
        unique = {c[0]: c for c in candidates}
        if len(unique) > 1:
            _ambiguous(e, [(*c, None) for c in sorted(unique.values())], reason)
        return next(iter(unique.values()))

    def _adopt(
        self, e: Entity, found: Candidate, confidence: float, reason: str, role: str
    ) -> tuple[int, Action, str | None, str]:
        """A node matched by name, alias or fuzzily. For an entity with a key, the node had
        none (only keyless nodes match a keyed entity that way): it gets the key."""
        node_id = found[0]
        node_key = found[1] if found[1] is not None else self._key_of.get(node_id)
        if e.key is not None:
            self._undo.set(self._by_key, (e.type, e.key), node_id)
            self._undo.set(self._key_of, node_id, e.key)
            self._buf.key_updates.append(
                {"id": node_id, "external_key": e.key, "updated_at": self._stamp}
            )
            node_key = e.key
        return node_id, _matched(role, node_id, confidence, reason), node_key, found[2]

    def _create_node(self, tx: Tx, e: Entity, norm: str, candidates: Candidates) -> int:
        node_id = tx.next_id("nodes")
        key = fuzzy_key(e.name, norm)
        self._buf.nodes.append(
            (node_id, e.type, e.name, norm, e.key, self._stamp, self._stamp, key)
        )
        self._undo.set(self._new_nodes, node_id, True)
        self._undo.set(
            self._by_name, (e.type, norm), tuple(sorted((*candidates, (node_id, e.key, norm))))
        )
        if e.key is not None:
            self._undo.set(self._by_key, (e.type, e.key), node_id)
        self._undo.set(self._attrs, node_id, {})
        index = self._fuzzy_index.get(e.type)
        if index is not None and key is not None:
            index.add(node_id, key, (e.key, norm))
            self._fuzzy_pending.append((e.type, node_id))
        return node_id

    # --- fuzzy matching ------------------------------------------------------------------
    def _fuzzy(self, tx: Tx, e: Entity, threshold: float) -> tuple[Candidate, float] | None:
        key = fuzzy_key(e.name)
        if key is None:
            return None  # letters outside Latin script: exact and alias matching only
        index = self._fuzzy_index[e.type]
        scored: dict[int, tuple[float, str | None, str]] = {}
        if self._trgm_sql is not None:
            if not self._pg_threshold_set:
                limit = max(0.0, min(self.fuzzy.values()) - PG_THRESHOLD_SLACK)
                tx.fetchone(self._q["set_trgm_threshold"], {"limit": str(limit)})
                self._pg_threshold_set = True
            query = trigrams(key)
            for node_id, ext_key, node_norm, node_key in tx.fetchall(
                self._trgm_sql, {"node_type": e.type, "fuzzy_key": key}
            ):
                score = trigram_similarity(query, trigrams(node_key))
                if score >= threshold:
                    scored[node_id] = (score, ext_key, node_norm)
        else:
            self._refresh_fuzzy(tx, e.type)
        for node_id, score in index.candidates(key, threshold):
            ext_key, node_norm = index.payload(node_id)
            scored[node_id] = (score, ext_key, node_norm)
        if e.key is not None:
            scored = {i: s for i, s in scored.items() if s[1] is None and i not in self._key_of}
        if not scored:
            return None
        ranked = best_matches((i, s[0]) for i, s in scored.items())
        if len(ranked) > 1:
            _ambiguous(
                e,
                [(i, scored[i][1], scored[i][2], score) for i, score in ranked],
                "fuzzy_match",
                threshold,
            )
        node_id, score = ranked[0]
        return (node_id, scored[node_id][1], scored[node_id][2]), score

    def _refresh_fuzzy(self, tx: Tx, node_type: str) -> None:
        """Without pg_trgm: load the type's committed names not in the index yet (once per
        batch). On SQLite ids grow in commit order (one writer at a time), so "after the
        highest id loaded" is exactly what others committed since; on PostgreSQL without
        pg_trgm a concurrent runner's node can be missed (a near-duplicate node, never a
        wrong merge: docs/propose_api.md)."""
        if node_type in self._fuzzy_refreshed:
            return
        index = self._fuzzy_index[node_type]
        after = self._fuzzy_loaded.get(node_type, 0)
        rows = tx.fetchall(self._q["load_fuzzy"], {"node_type": node_type, "after": after})
        for node_id, ext_key, node_norm, node_key in rows:
            if node_id not in self._new_nodes:  # safe mode writes our rows early
                index.add(node_id, node_key, (ext_key, node_norm))
            after = max(after, node_id)
        self._fuzzy_loaded[node_type] = after
        self._fuzzy_refreshed.add(node_type)

    def _drop_pending_fuzzy(self, mark: int) -> None:
        pending = self._fuzzy_pending
        while len(pending) > mark:
            type_name, node_id = pending.pop()
            self._fuzzy_index[type_name].remove(node_id)

    # --- attributes --------------------------------------------------------------------
    def _attribute_map(self, tx: Tx, node_id: int) -> dict[tuple[str, str], int]:
        existing = self._attrs.get(node_id)
        if existing is None:
            rows = tx.fetchall(self._q["find_attributes"], {"node_id": node_id})
            existing = {(t, v): i for i, t, v in rows}
            self._attrs[node_id] = existing  # committed rows: no undo needed
        return existing

    def _attributes(self, tx: Tx, node_id: int, node: list[Any], e: Entity) -> list[int]:
        """``node``: [external key, normalised name] of the node, as far as known."""
        attributes = e.attributes
        if not attributes:
            return []
        ids: list[int] = []
        existing = self._attribute_map(tx, node_id)
        for attr_type, value in attributes.items():
            if type(value) is str:  # the common case: a known text value, one lookup
                if not value:
                    continue
                known = existing.get((attr_type, value))
                if known is not None:
                    ids.append(known)
                    continue
            for text_value in _attribute_values(attr_type, value):
                key = (attr_type, text_value)
                attr_id = existing.get(key)
                if attr_id is None:
                    attr_id = tx.next_id("attributes")
                    norm_value = normalize_name(text_value)
                    self._buf.attributes.append(
                        (attr_id, node_id, attr_type, text_value, norm_value, self._stamp)
                    )
                    self._undo.set(existing, key, attr_id)
                    if attr_type == self.alias_attribute and norm_value:
                        self._add_alias(tx, e.type, norm_value, (node_id, node[0], node[1]))
                ids.append(attr_id)
        return ids

    def _add_alias(self, tx: Tx, node_type: str, norm_value: str, node: Candidate) -> None:
        self._aliases_exist = True  # (a record undone leaves it set: lookups stay right)
        self._candidates(tx, node_type, norm_value, None)  # loads the committed aliases
        known = self._by_alias.get((node_type, norm_value), ())
        if any(c[0] == node[0] for c in known):
            return
        self._undo.set(self._by_alias, (node_type, norm_value), tuple(sorted((*known, node))))

    # --- relationships -----------------------------------------------------------------
    def _relationship(
        self,
        tx: Tx,
        source_id: int,
        rel_type: str,
        target_id: int,
        strength: float,
        valid_from: dt.date | None,
        valid_to: dt.date | None,
        metadata: dict[str, Any] | None,
    ) -> tuple[int, Action, list[Conflict]]:
        key = (source_id, rel_type, target_id)
        opposites = self.opposites.get(rel_type, ())
        committed = source_id not in self._new_nodes and target_id not in self._new_nodes
        found = self._rels.get(key)
        if committed and (source_id, target_id) not in self._pairs:
            if opposites:
                # one query for the relationship and its opposites: every type between them
                for rel_id, other_type, other_strength in tx.fetchall(
                    self._q["find_relationships_between"],
                    {"source_node_id": source_id, "target_node_id": target_id},
                ):
                    self._rels.setdefault(
                        (source_id, other_type, target_id), (rel_id, float(other_strength))
                    )
                self._pairs.add((source_id, target_id))  # committed rows: no undo needed
                found = self._rels.get(key)
            elif found is None:
                row = tx.fetchone(
                    self._q["find_relationship"],
                    {
                        "source_node_id": source_id,
                        "rel_type": rel_type,
                        "target_node_id": target_id,
                    },
                )
                if row is not None:
                    found = (row[0], float(row[1]))
                    self._rels[key] = found  # committed row: no undo needed

        conflicts: list[Conflict] = []
        for other in opposites:
            opposing = self._rels.get((source_id, other, target_id))
            if opposing is not None:
                conflicts.append(
                    Conflict(
                        relationship_id=opposing[0],
                        relationship_type=other,
                        source_entity_id=source_id,
                        target_entity_id=target_id,
                    )
                )
        if conflicts:
            strength = strength * self.conflict_penalty

        meta = None if metadata is None else msgspec.json.encode(metadata).decode()
        if meta is not None and "\\u0000" in meta and _has_nul(metadata):
            # JSON could carry it escaped, but no consumer of the graph's text wants it (a
            # cast to jsonb refuses it): refused like a NUL byte anywhere else in a fact.
            raise ValidationError("relationship metadata contains a NUL byte")
        if found is None:
            rel_id = tx.next_id("relationships")
            self._buf.relationships.append(
                (
                    rel_id,
                    source_id,
                    rel_type,
                    target_id,
                    strength,
                    valid_from,
                    valid_to,
                    meta,
                    self._stamp,
                    self._stamp,
                )
            )
            self._undo.set(self._rels, key, (rel_id, strength))
            action = Action(action="relationship_created", relationship_id=rel_id)
            return rel_id, action, conflicts
        rel_id, old_strength = found
        if strength > old_strength:
            self._buf.rel_updates.append(
                {
                    "id": rel_id,
                    "strength": strength,
                    "valid_from": valid_from,
                    "valid_to": valid_to,
                    "metadata": meta,
                    "updated_at": self._stamp,
                }
            )
            self._undo.set(self._rels, key, (rel_id, strength))
            return rel_id, Action(action="relationship_updated", relationship_id=rel_id), conflicts
        action = Action(action="relationship_duplicate", relationship_id=rel_id)
        return rel_id, action, conflicts

    # --- provenance ----------------------------------------------------------------------
    def _provenance(
        self,
        tx: Tx,
        rec: _Record,
        subjects: list[tuple[str, int]],
        fact_index: int,
        confidence: float,
    ) -> list[int]:
        """One row per subject per record (the first fact of the record that asserted it);
        returns the ids of the rows written."""
        done = rec.provenanced
        new = [subject for subject in subjects if subject not in done]
        if not new:
            return []
        done.update(new)
        ids = tx.reserve_ids("provenance", len(new))
        stamp = self._stamp
        source_id, offset, run_id = rec.source_id, rec.record_offset, rec.run_id
        self._buf.provenance.extend(
            [
                (
                    prov_id,
                    kind,
                    subject_id,
                    source_id,
                    offset,
                    fact_index,
                    run_id,
                    confidence,
                    stamp,
                )
                for prov_id, (kind, subject_id) in zip(ids, new, strict=True)
            ]
        )
        return ids

    # --- writing ---------------------------------------------------------------------------
    def _write_buffers(self, tx: Tx) -> None:
        b = self._buf
        tx.insert_rows("nodes", NODE_COLUMNS, b.nodes)
        tx.executemany(self._q["assign_external_key"], b.key_updates)
        tx.insert_rows("attributes", ATTRIBUTE_COLUMNS, b.attributes)
        tx.insert_rows(
            "relationships", RELATIONSHIP_COLUMNS, [_rel_row(tx, r) for r in b.relationships]
        )
        tx.executemany(
            self._q["update_relationship"],
            [
                {
                    **u,
                    "valid_from": _date(tx, u["valid_from"]),
                    "valid_to": _date(tx, u["valid_to"]),
                }
                for u in b.rel_updates
            ],
        )
        tx.insert_rows("provenance", PROVENANCE_COLUMNS, b.provenance)

    # --- helpers ---------------------------------------------------------------------------
    def _require_record(self) -> _Record:
        if self._rec is None:
            raise RuntimeError("propose_fact() is called by a loader's propose(), inside a run")
        return self._rec

    def _require_tx(self) -> Tx:
        if self._tx is None:
            raise RuntimeError("the graph is used outside a batch transaction")
        return self._tx

    def _abort(self, rec: _Record) -> None:
        self._undo.rollback_to(rec.undo_mark)
        self._buf.truncate(rec.buffer_marks)
        self._drop_pending_fuzzy(rec.fuzzy_mark)


def _matched(role: str, node_id: int, confidence: float, reason: str) -> Action:
    return Action(
        action="entity_matched",
        role=role,
        entity_id=node_id,
        confidence=confidence,
        match_reason=reason,
    )


def _ambiguous(
    e: Entity,
    candidates: list[tuple[int, str | None, str, float | None]],
    reason: str,
    threshold: float | None = None,
) -> NoReturn:
    how = {
        "exact_name_match": "by exact name",
        "alias_match": "by alias",
        "fuzzy_match": f"fuzzily (similarity >= {threshold})",
    }[reason]
    shown = []
    for node_id, ext_key, norm, score in candidates[:10]:
        text = f"{node_id} {norm!r}"
        if ext_key is not None:
            text += f" key {ext_key!r}"
        if score is not None:
            text += f" {score:.3f}"
        shown.append(text)
    more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
    raise AmbiguousMatchError(
        f"{e.type} {e.name!r} matches {len(candidates)} entities {how}: "
        f"{'; '.join(shown)}{more}; not merged: give an external key to say which",
        details={
            "match_reason": reason,
            "candidates": [
                {"id": i, "name": n, "external_key": k, **({"score": s} if s is not None else {})}
                for i, k, n, s in candidates
            ],
        },
    )


def _prepare_pg_trgm(store: Store, query_template: str) -> str | None:
    """The fuzzy candidate query through pg_trgm, or None to use the in-process index.

    Needs the extension (migration 0002 installs it when it can) and its GIN index over
    ``nodes.fuzzy_key``, which is built here, CONCURRENTLY (writers are not blocked), the
    first time fuzzy matching is used. The index is optional, so it is not in the declared
    schema (``storage.schema.OPTIONAL_INDEXES``)."""
    try:
        with store.read() as conn:
            raw: Any = conn.connection.driver_connection
            row = raw.execute(
                "SELECT n.nspname FROM pg_extension e "
                "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            ).fetchone()
            if row is None:
                log.info("pg_trgm is not installed: fuzzy candidates come from an in-process index")
                return None
            schema = _quote_ident(row[0])
            valid = raw.execute(
                "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
                (FUZZY_INDEX_NAME,),
            ).fetchone()
            raw.rollback()
        if valid is None or not valid[0]:
            _build_trgm_index(store, schema, rebuild=valid is not None)
    except Exception as e:  # no privilege to build it, or the extension is unusable
        log.warning(
            "fuzzy matching without pg_trgm (%s): candidates come from an in-process index",
            describe(e),
        )
        return None
    return query_template.replace("{pg_trgm}", schema)


def _build_trgm_index(store: Store, schema: str, *, rebuild: bool) -> None:
    """On a connection of its own (detached from the pool: its settings die with it)."""
    pooled = store.engine.raw_connection()
    raw: Any = pooled.driver_connection
    pooled.detach()
    try:
        raw.rollback()
        raw.autocommit = True
        # CREATE INDEX CONCURRENTLY waits for the transactions already open on nodes; one
        # that never ends (this process's own, say) must not hang the run: give up, and
        # fuzzy matching uses the in-process index.
        raw.execute("SET lock_timeout = '60s'")
        if rebuild:  # an interrupted CREATE INDEX CONCURRENTLY leaves an invalid index
            raw.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {FUZZY_INDEX_NAME}")
        log.info("building %s (GIN, pg_trgm) over nodes.fuzzy_key", FUZZY_INDEX_NAME)
        raw.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {FUZZY_INDEX_NAME} "
            f"ON nodes USING gin (fuzzy_key {schema}.gin_trgm_ops)"
        )
    finally:
        with contextlib.suppress(Exception):
            raw.close()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def check_fact(
    node_types: frozenset[str] | None,
    relationship_types: frozenset[str] | None,
    src: Entity,
    tgt: Entity,
    relationship: str,
    strength: float,
    valid_from: dt.date | None,
    valid_to: dt.date | None,
    confidence: float,
) -> tuple[str, str]:
    """Refuses a fact that breaks a rule (ValidationError: the record fails at stage
    validate); returns the normalised names of its two entities. Shared by every target."""
    if node_types is None:
        _check_type("node type", src.type)
        _check_type("node type", tgt.type)
    elif src.type not in node_types or tgt.type not in node_types:
        unknown = src.type if src.type not in node_types else tgt.type
        raise ValidationError(
            f"unknown node type {unknown!r} (allowed: {', '.join(sorted(node_types))})"
            + did_you_mean(unknown, sorted(node_types))
        )
    if relationship_types is None:
        _check_type("relationship type", relationship)
    elif relationship not in relationship_types:
        raise ValidationError(
            f"unknown relationship type {relationship!r} "
            f"(allowed: {', '.join(sorted(relationship_types))})"
            + did_you_mean(relationship, sorted(relationship_types))
        )
    src_norm, tgt_norm = _checked_norm(src), _checked_norm(tgt)
    if strength.__class__ is not float or not 0.0 <= strength <= 1.0:
        _check_number("relationship strength", strength)
    if confidence.__class__ is not float or not 0.0 <= confidence <= 1.0:
        _check_number("confidence", confidence)
    if valid_from and valid_to and valid_from > valid_to:
        raise ValidationError(f"valid_from {valid_from} is after valid_to {valid_to}")
    return src_norm, tgt_norm


def _checked_norm(e: Entity) -> str:
    """The entity's normalised name, after checking its name and key."""
    name = e.name
    if name.__class__ is not str or len(name) > MAX_NAME_CHARS or "\x00" in name:
        _check_text("entity name", name, MAX_NAME_CHARS)
    norm = normalize_name(name)
    if not norm:
        raise ValidationError(f"{e.type} entity has an empty name")
    key = e.key
    if key is not None and (key.__class__ is not str or len(key) > MAX_NAME_CHARS or "\x00" in key):
        _check_text("external key", key, MAX_NAME_CHARS)
    return norm


def _check_type(what: str, value: Any) -> None:
    """A type name the graph can store on both backends (node_type, rel_type and attr_type
    are VARCHAR(100); PostgreSQL text refuses NUL bytes, SQLite would keep them)."""
    if type(value) is not str or not value or len(value) > MAX_TYPE_CHARS or "\x00" in value:
        if isinstance(value, str) and not value:
            raise ValidationError(f"{what} is empty")
        _check_text(what, value, MAX_TYPE_CHARS)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _check_number(what: str, value: Any) -> None:
    """Refuses anything but a number in 0..1 (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValidationError(f"{what} {value!r} is outside 0..1")


def _check_text(what: str, value: str, max_chars: int) -> None:
    if type(value) is str and len(value) <= max_chars and "\x00" not in value:
        return
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters long (at most {max_chars})")
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL byte")


def _as_date(what: str, value: Any) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(f"{what} {value!r} is not a date (a date or YYYY-MM-DD)")


def _attribute_values(attr_type: str, value: Any) -> list[str]:
    _check_type("attribute type", attr_type)
    values = value if isinstance(value, list | tuple | set | frozenset) else [value]
    out = []
    for v in values:
        if v is None or v == "":
            continue
        if isinstance(v, bool):
            text = "true" if v else "false"
        elif isinstance(v, dt.date):
            text = v.isoformat()
        else:
            text = str(v)
        if "\x00" in text:
            raise ValidationError(f"attribute {attr_type!r} contains a NUL byte")
        if len(text.encode()) > MAX_VALUE_BYTES:
            raise ValidationError(
                f"attribute {attr_type!r} is {len(text.encode())} bytes long "
                f"(at most {MAX_VALUE_BYTES})"
            )
        out.append(text)
    return out


def _date(tx: Tx, value: dt.date | None) -> Any:
    if value is None or tx.store.dialect != "sqlite":
        return value
    return value.isoformat()


def _rel_row(tx: Tx, row: tuple[Any, ...]) -> tuple[Any, ...]:
    if tx.store.dialect != "sqlite" or (row[5] is None and row[6] is None):
        return row
    return (*row[:5], _date(tx, row[5]), _date(tx, row[6]), *row[7:])


def _lookup_text(value: Any) -> bool:
    """Text a lookup query can carry (PostgreSQL text refuses NUL bytes)."""
    return type(value) is str and len(value) <= MAX_NAME_CHARS and "\x00" not in value


def _is_values_error(error: JournalLoaderError) -> bool:
    from journal_loader.storage.errors import is_record_error

    return is_record_error(error)
