"""What the embedded graph keeps: its caches of committed rows, the undo log of every change
to them, and the rows a batch has buffered (journal_loader/graph/embedded.py explains the
unit of work).

``GraphState`` holds it all; the parts of ``EmbeddedGraph`` (resolution, row building,
prefetch) are mixins over it, so the hot path reads plain attributes of one object, with no
layer in between.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from journal_loader.graph.fuzzy import TrigramIndex
from journal_loader.graph.protocol import ProposeResult
from journal_loader.graph.store import GraphStore, RowBuffers
from journal_loader.storage.base import Store, Tx

_MISSING: Any = object()
# (node id, external key, normalised name) per node found by a name or an alias
Candidate = tuple[int, str | None, str]
Candidates = tuple[Candidate, ...]


def _newer_half(mapping: dict[Any, Any]) -> dict[Any, Any]:
    """The entries added last, half of them, as a new (compact) dict."""
    return dict(islice(mapping.items(), len(mapping) // 2, None))


class _UndoLog:
    """Every cache change, so a record or a batch can be taken back.

    ``entries`` is flat: (mapping, key, old value) as three items, not a tuple per change. A
    batch makes ~20 changes a record and keeps them to its commit; a tuple each was a
    GC-tracked object, and untracking ~20,000 of them at once (``after_commit``) touched
    memory all over the heap (measured: 2.6% of a load's samples in that ``clear``)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[Any] = []

    def set(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self.entries += (mapping, key, mapping.get(key, _MISSING))
        mapping[key] = value

    def mark(self) -> int:
        return len(self.entries)

    def rollback_to(self, mark: int) -> None:
        entries = self.entries
        while len(entries) > mark:
            old = entries.pop()
            key = entries.pop()
            mapping = entries.pop()
            if old is _MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old


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
    # Provenance: the record's subjects so far, per kind (ids: no tuple per lookup), and
    # (subject id, provenance id, fact index, confidence) per subject, per kind: rows once the
    # record is done (RowBuilder._provenance_rows), when its last id is known. ``last_id``
    # and ``last_confidence``: the highest provenance id so far, and its subject's confidence.
    seen_nodes: set[int] = field(default_factory=set)
    seen_attributes: set[int] = field(default_factory=set)
    seen_relationships: set[int] = field(default_factory=set)
    provenance_nodes: list[tuple[int, int, int, float]] = field(default_factory=list)
    provenance_attributes: list[tuple[int, int, int, float]] = field(default_factory=list)
    provenance_relationships: list[tuple[int, int, int, float]] = field(default_factory=list)
    last_id: int = 0
    last_confidence: float = 0.0
    # (node id, id() of an entity's attributes dict) -> the attribute ids on the node: set
    # for collected facts only (EmbeddedGraph.propose_collected), whose dicts no loader code
    # can change between two facts, and whose entities live as long as the record
    attribute_memo: dict[tuple[int, int], list[int]] | None = None


class GraphState:
    """The embedded graph's state; its configuration is set by ``EmbeddedGraph``."""

    # configuration (EmbeddedGraph.__init__)
    store: Store
    node_types: frozenset[str] | None
    relationship_types: frozenset[str] | None
    # the relationship types this graph can propose or read (the config's, and the types
    # opposing them): None when the config does not restrict them
    _pair_types: frozenset[str] | None
    fuzzy: dict[str, float]
    opposites: dict[str, tuple[str, ...]]
    conflict_penalty: float
    alias_attribute: str
    cache_limit: int

    def __init__(self, store: Store, fuzzy_types: Iterable[str]) -> None:
        self._db = GraphStore(store)
        self._by_key: dict[tuple[str, str], int] = {}
        self._absent_keys: set[tuple[str, str]] = set()  # looked up in bulk, not there
        self._by_name: dict[tuple[str, str], Candidates] = {}
        self._by_alias: dict[tuple[str, str], Candidates] = {}
        self._key_of: dict[int, str] = {}  # keys this graph gave to keyless nodes
        self._attrs: dict[int, dict[tuple[str, str], int]] = {}
        self._attr_types: set[str] = set()  # attribute type names known to be valid
        self._rels: dict[tuple[int, str, int], tuple[int, float]] = {}
        self._pairs: set[tuple[int, int]] = set()  # (source, target): every rel type loaded
        self._new_nodes: dict[int, bool] = {}  # created in the open batch: nothing to look up
        # keyed nodes the open batch created where _by_name had no entry of their name
        # (Resolver._create_node); an entry made before the batch commits adds them
        self._new_keyed_by_name: dict[tuple[str, str], Candidates] = {}
        # For the open batch (PostgreSQL's prefetch): the keyless nodes of a name only
        # entities with a key have in it, and those with it as an alias; committed rows
        # read at the batch's start (Prefetcher._prefetch_nodes, Resolver._keyless_candidates)
        self._keyless_by_name: dict[tuple[str, str], Candidates] = {}
        self._keyless_aliases: dict[tuple[str, str], Candidates] = {}
        self._undo = _UndoLog()
        self._buf = RowBuffers()
        self._tx: Tx | None = None
        self._rec: _Record | None = None
        self._safe = False
        self._now: dt.datetime = dt.datetime.now(dt.UTC)
        self._stamp: Any = None
        # Fuzzy matching: per type, a trigram index of names (see journal_loader.graph.fuzzy).
        # With pg_trgm it holds only the open batch's new nodes (the database finds the
        # committed ones); without, every node of the type, loaded and kept up to date.
        self._fuzzy_index: dict[str, TrigramIndex] = {t: TrigramIndex() for t in fuzzy_types}
        self._fuzzy_pending: list[tuple[str, int]] = []  # (type, node id) added in the batch
        self._fuzzy_loaded: dict[str, int] = {}  # type -> highest committed id loaded
        self._fuzzy_refreshed: set[str] = set()  # types refreshed in the open batch
        self._pg_threshold_set = False
        self._pg_trgm = False  # fuzzy candidates from the database (EmbeddedGraph.__init__)
        # Alias lookups ride along the name lookup (one query), but only once the graph has an
        # alias at all: until then the plain name query, and one probe per batch.
        self._aliases_exist = False

    def _forget(self) -> None:
        """Drop the caches of committed rows (they are looked up again when needed)."""
        self._absent_keys.clear()
        self._by_key.clear()
        self._by_name.clear()
        self._by_alias.clear()
        self._attrs.clear()
        self._rels.clear()
        self._pairs.clear()

    def _cache_size(self) -> int:
        return len(self._by_name) + len(self._by_key) + len(self._attrs) + len(self._rels)

    def _evict(self) -> None:
        """Between batches (the undo log empty): drop the older half of each cache of
        committed rows, in the order its entries were added (what was first looked up or
        created longest ago), so the caches stay within ``cache_limit`` entries and the
        process's memory flat however long the file (issue 11). What is dropped is looked up
        again when needed: the answers stay the same. What ties the caches together stays
        true:

        * a name's candidates and its alias candidates are cached together (``_candidates``
          reads the second once it has the first): both go for the same names;
        * ``_pairs`` says every relationship between two nodes is in ``_rels``, and
          ``_absent_keys`` that a key is not in the database, which ``_by_key`` would
          contradict once the key is created: both are emptied (PostgreSQL's prefetch fills
          them again for each batch);
        * ``_key_of`` corrects the cached candidates of nodes this graph gave a key to: it
          is kept while any candidate may be older than it (``after_commit`` empties
          everything at once when it is large).
        """
        by_name, by_alias = self._by_name, self._by_alias
        old = list(islice(by_name, len(by_name) // 2))
        for name in old:
            by_alias.pop(name, None)
        self._by_name = _newer_half(by_name)
        self._by_alias = dict(by_alias)  # compacted
        self._by_key = _newer_half(self._by_key)
        self._attrs = _newer_half(self._attrs)
        self._rels = _newer_half(self._rels)
        self._pairs.clear()
        self._absent_keys.clear()

    def _require_record(self) -> _Record:
        if self._rec is None:
            raise RuntimeError("propose_fact() is called by a loader's propose(), inside a run")
        return self._rec

    def _require_tx(self) -> Tx:
        if self._tx is None:
            raise RuntimeError("the graph is used outside a batch transaction")
        return self._tx
