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
  the batch, whose lookups now match the other runner's node. On SQLite a batch holds the
  write lock from BEGIN IMMEDIATE, so this cannot happen there.
  Pinned by tests/test_graph.py::test_concurrent_runners_create_one_node (PostgreSQL).
* After a rollback the undo log returns the caches to the last committed state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from journal_loader.errors import (
    AmbiguousMatchError,
    JournalLoaderError,
    ProposeError,
    ValidationError,
)
from journal_loader.graph.normalize import normalize_name
from journal_loader.graph.protocol import (
    STATUS_SUCCESS,
    Action,
    Entity,
    EntityLike,
    ProposeClient,
    ProposeResult,
    as_entity,
)
from journal_loader.graph.target import GraphTarget
from journal_loader.storage.base import Store, Tx
from journal_loader.storage.errors import classify, describe
from journal_loader.storage.sql import load_queries

MAX_NAME_CHARS = 1000
MAX_VALUE_BYTES = 2000  # PostgreSQL's btree entries cap out near 2.7 kB

NODE_COLUMNS = ("id", "node_type", "name", "norm_name", "external_key", "created_at", "updated_at")
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
Candidates = tuple[tuple[int, str | None], ...]  # (node id, external key) per node of a name


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
        cache_limit: int = 1_000_000,
    ) -> None:
        self.store = store
        self.node_types = frozenset(node_types) if node_types else None
        self.relationship_types = frozenset(relationship_types) if relationship_types else None
        self.cache_limit = cache_limit
        self._q = load_queries(Path(__file__).with_name("embedded.sql"), store.dialect)
        self._by_key: dict[tuple[str, str], int] = {}
        self._by_name: dict[tuple[str, str], Candidates] = {}
        self._attrs: dict[int, dict[tuple[str, str], int]] = {}
        self._rels: dict[tuple[int, str, int], tuple[int, float]] = {}
        self._new_nodes: dict[int, bool] = {}  # created in the open batch: nothing to look up
        self._undo = _UndoLog()
        self._buf = _Buffers()
        self._tx: Tx | None = None
        self._rec: _Record | None = None
        self._safe = False
        self._now: dt.datetime = dt.datetime.now(dt.UTC)
        self._stamp: Any = None

    # --- GraphTarget -------------------------------------------------------------------
    @property
    def client(self) -> ProposeClient:
        return self

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:
        self._tx = tx
        self._safe = safe_mode
        self._now = dt.datetime.now(dt.UTC)
        self._stamp = tx.timestamp(self._now)

    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None:
        self._rec = _Record(source_id, record_offset, run_id, self._undo.mark(), self._buf.marks())

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
        if len(self._by_name) + len(self._rels) + len(self._attrs) > self.cache_limit:
            self._by_key.clear()
            self._by_name.clear()
            self._attrs.clear()
            self._rels.clear()

    def after_rollback(self) -> None:
        self._undo.rollback_to(0)
        self._buf.clear()
        self._new_nodes.clear()
        self._rec = None
        self._tx = None

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
        self._check_fact(src, tgt, relationship, strength, valid_from, valid_to, confidence)
        fact_index = rec.facts
        rec.facts += 1
        prov_before = len(self._buf.provenance)

        actions: list[Action] = []
        source_id, source_action = self._resolve(tx, src, "source")
        target_id, target_action = self._resolve(tx, tgt, "target")
        actions += [source_action, target_action]
        attribute_ids = self._attributes(tx, source_id, src.attributes)
        attribute_ids += self._attributes(tx, target_id, tgt.attributes)
        rel_id, rel_action = self._relationship(
            tx, source_id, relationship, target_id, strength, valid_from, valid_to, metadata
        )
        actions.append(rel_action)

        prov = self._provenance
        prov(rec, "node", source_id, fact_index, confidence)
        prov(rec, "node", target_id, fact_index, confidence)
        for attribute_id in attribute_ids:
            prov(rec, "attribute", attribute_id, fact_index, confidence)
        prov(rec, "relationship", rel_id, fact_index, confidence)

        result = ProposeResult(
            status=STATUS_SUCCESS,
            overall_confidence=min(
                source_action.confidence or 1.0, target_action.confidence or 1.0
            ),
            actions=actions,
            provenance_ids=[row[0] for row in self._buf.provenance[prov_before:]],
            attribute_ids=attribute_ids,
            source_entity_id=source_id,
            target_entity_id=target_id,
            relationship_id=rel_id,
        )
        rec.results.append(result)
        return result

    # --- resolution --------------------------------------------------------------------
    def _candidates(self, tx: Tx, node_type: str, norm: str, key: str | None) -> Candidates:
        """Nodes of the type with this name; also loads the keyed node into the key cache."""
        cached = self._by_name.get((node_type, norm))
        if cached is not None and (key is None or (node_type, key) in self._by_key):
            return cached
        rows = tx.fetchall(
            self._q["find_nodes"],
            {"node_type": node_type, "norm_name": norm, "external_key": key},
        )
        by_name: list[tuple[int, str | None]] = []
        for node_id, ext_key, node_norm in rows:
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
            if node_norm == norm:
                by_name.append((node_id, ext_key))
        if cached is None:
            # nodes created in this batch are in the cache already; rows are committed ones
            candidates = tuple(sorted(by_name))
            self._by_name[(node_type, norm)] = candidates
            return candidates
        return cached

    def _resolve(self, tx: Tx, e: Entity, role: str) -> tuple[int, Action]:
        norm = normalize_name(e.name)
        node_type = e.type
        if e.key is not None:
            node_id = self._by_key.get((node_type, e.key))
            if node_id is None:
                candidates = self._candidates(tx, node_type, norm, e.key)
                node_id = self._by_key.get((node_type, e.key))
            if node_id is not None:
                return node_id, Action(
                    action="entity_matched",
                    role=role,
                    entity_id=node_id,
                    confidence=1.0,
                    match_reason="external_key",
                )
            keyless = [c for c in candidates if c[1] is None]
            if keyless:
                # Named before (say as a registered agent) without its key: this is it.
                node_id = keyless[0][0]
                self._undo.set(self._by_key, (node_type, e.key), node_id)
                self._undo.set(
                    self._by_name,
                    (node_type, norm),
                    tuple(sorted((i, e.key if i == node_id else k) for i, k in candidates)),
                )
                self._buf.key_updates.append(
                    {"id": node_id, "external_key": e.key, "updated_at": self._stamp}
                )
                return node_id, Action(
                    action="entity_matched",
                    role=role,
                    entity_id=node_id,
                    confidence=1.0,
                    match_reason="exact_name_match",
                )
            return self._create_node(tx, e, norm, candidates, role), Action(
                action="entity_created",
                role=role,
                entity_id=self._last_node_id,
                confidence=1.0,
                match_reason="new_entity",
            )
        candidates = self._candidates(tx, node_type, norm, None)
        if len(candidates) == 1:
            node_id = candidates[0][0]
            return node_id, Action(
                action="entity_matched",
                role=role,
                entity_id=node_id,
                confidence=1.0,
                match_reason="exact_name_match",
            )
        if len(candidates) > 1:
            ids = ", ".join(str(c[0]) for c in candidates[:10])
            raise AmbiguousMatchError(
                f"{node_type} {e.name!r} matches {len(candidates)} entities (ids {ids}); "
                "give an external key to say which",
                details={"candidates": [c[0] for c in candidates]},
            )
        node_id = self._create_node(tx, e, norm, candidates, role)
        return node_id, Action(
            action="entity_created",
            role=role,
            entity_id=node_id,
            confidence=1.0,
            match_reason="new_entity",
        )

    def _create_node(self, tx: Tx, e: Entity, norm: str, candidates: Candidates, role: str) -> int:
        node_id = tx.reserve_ids("nodes", 1)[0]
        self._last_node_id = node_id
        self._buf.nodes.append((node_id, e.type, e.name, norm, e.key, self._stamp, self._stamp))
        self._undo.set(self._new_nodes, node_id, True)
        self._undo.set(
            self._by_name, (e.type, norm), tuple(sorted((*candidates, (node_id, e.key))))
        )
        if e.key is not None:
            self._undo.set(self._by_key, (e.type, e.key), node_id)
        self._undo.set(self._attrs, node_id, {})
        return node_id

    _last_node_id: int = 0

    # --- attributes --------------------------------------------------------------------
    def _attribute_map(self, tx: Tx, node_id: int) -> dict[tuple[str, str], int]:
        existing = self._attrs.get(node_id)
        if existing is None:
            rows = tx.fetchall(self._q["find_attributes"], {"node_id": node_id})
            existing = {(t, v): i for i, t, v in rows}
            self._attrs[node_id] = existing  # committed rows: no undo needed
        return existing

    def _attributes(self, tx: Tx, node_id: int, attributes: dict[str, Any]) -> list[int]:
        if not attributes:
            return []
        ids: list[int] = []
        existing = self._attribute_map(tx, node_id)
        for attr_type, value in attributes.items():
            for text_value in _attribute_values(attr_type, value):
                key = (attr_type, text_value)
                attr_id = existing.get(key)
                if attr_id is None:
                    attr_id = tx.reserve_ids("attributes", 1)[0]
                    self._buf.attributes.append(
                        (
                            attr_id,
                            node_id,
                            attr_type,
                            text_value,
                            normalize_name(text_value),
                            self._stamp,
                        )
                    )
                    self._undo.set(existing, key, attr_id)
                ids.append(attr_id)
        return ids

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
    ) -> tuple[int, Action]:
        key = (source_id, rel_type, target_id)
        found = self._rels.get(key)
        if found is None and source_id not in self._new_nodes and target_id not in self._new_nodes:
            row = tx.fetchone(
                self._q["find_relationship"],
                {"source_node_id": source_id, "rel_type": rel_type, "target_node_id": target_id},
            )
            if row is not None:
                found = (row[0], float(row[1]))
                self._rels[key] = found  # committed row: no undo needed
        meta = None if metadata is None else msgspec.json.encode(metadata).decode()
        if found is None:
            rel_id = tx.reserve_ids("relationships", 1)[0]
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
            return rel_id, Action(action="relationship_created", relationship_id=rel_id)
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
            return rel_id, Action(action="relationship_updated", relationship_id=rel_id)
        return rel_id, Action(action="relationship_duplicate", relationship_id=rel_id)

    # --- provenance ----------------------------------------------------------------------
    def _provenance(
        self, rec: _Record, kind: str, subject_id: int, fact_index: int, confidence: float
    ) -> None:
        if (kind, subject_id) in rec.provenanced:
            return
        rec.provenanced.add((kind, subject_id))
        prov_id = self._require_tx().reserve_ids("provenance", 1)[0]
        self._buf.provenance.append(
            (
                prov_id,
                kind,
                subject_id,
                rec.source_id,
                rec.record_offset,
                fact_index,
                rec.run_id,
                confidence,
                self._stamp,
            )
        )

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

    # --- checks ----------------------------------------------------------------------------
    def _check_fact(
        self,
        src: Entity,
        tgt: Entity,
        relationship: str,
        strength: float,
        valid_from: dt.date | None,
        valid_to: dt.date | None,
        confidence: float,
    ) -> None:
        for e in (src, tgt):
            if self.node_types is not None and e.type not in self.node_types:
                raise ValidationError(
                    f"unknown node type {e.type!r} (allowed: {', '.join(sorted(self.node_types))})"
                )
            _check_text("entity name", e.name, MAX_NAME_CHARS)
            if not e.name.strip() or not normalize_name(e.name):
                raise ValidationError(f"{e.type} entity has an empty name")
            if e.key is not None:
                _check_text("external key", e.key, MAX_NAME_CHARS)
        if self.relationship_types is not None and relationship not in self.relationship_types:
            raise ValidationError(
                f"unknown relationship type {relationship!r} "
                f"(allowed: {', '.join(sorted(self.relationship_types))})"
            )
        if not (0.0 <= strength <= 1.0):
            raise ValidationError(f"relationship strength {strength} is outside 0..1")
        if not (0.0 <= confidence <= 1.0):
            raise ValidationError(f"confidence {confidence} is outside 0..1")
        if valid_from and valid_to and valid_from > valid_to:
            raise ValidationError(f"valid_from {valid_from} is after valid_to {valid_to}")

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


def _check_text(what: str, value: str, max_chars: int) -> None:
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters long (at most {max_chars})")
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL byte")


def _attribute_values(attr_type: str, value: Any) -> list[str]:
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


def _is_values_error(error: JournalLoaderError) -> bool:
    from journal_loader.storage.errors import is_record_error

    return is_record_error(error)
