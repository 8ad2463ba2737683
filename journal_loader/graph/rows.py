"""What a fact adds to the embedded graph besides its nodes: attribute values, the
relationship (created, a duplicate, or updated to a higher strength; opposing relationships
as conflicts) and its provenance (a row per record, a row per subject per record in its
kind's table).

Each decision is made against the caches (a miss costs one query, ``GraphStore``), and its
rows are appended to the batch's buffers in their table's column order
(``journal_loader.graph.store``); every cache change goes through the undo log, so a record
that fails takes them all back.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from journal_loader.errors import ValidationError
from journal_loader.graph.checks import MAX_VALUE_BYTES, attribute_values, has_nul
from journal_loader.graph.normalize import normalize_value
from journal_loader.graph.protocol import Action, Conflict, Entity
from journal_loader.graph.resolution import Resolver
from journal_loader.graph.state import _MISSING, Candidate, _Record
from journal_loader.storage.base import Tx

# A text value of at most this many characters is at most MAX_VALUE_BYTES in UTF-8 (4 bytes
# a character at most): no need to encode it to know.
_SAFE_CHARS = MAX_VALUE_BYTES // 4


class RowBuilder(Resolver):
    """Attributes, relationships and provenance of a fact, as buffered rows."""

    # --- attributes --------------------------------------------------------------------
    def _attribute_map(self, tx: Tx, node_id: int) -> dict[tuple[str, str], int]:
        existing = self._attrs.get(node_id)
        if existing is None:
            rows = self._db.find_attributes(tx, node_id)
            existing = {(t, v): i for i, t, v in rows}
            self._attrs[node_id] = existing  # committed rows: no undo needed
        return existing

    def _attributes(
        self, tx: Tx, node_id: int, node_key: str | None, node_norm: str, e: Entity
    ) -> list[int]:
        """The ids of the entity's attribute values on its node, created where new.
        ``node_key``, ``node_norm``: the node's external key and normalised name, as far as
        known."""
        ids: list[int] = []
        existing = self._attribute_map(tx, node_id)
        undo = self._undo.entries
        rows = self._buf.attributes
        checked = self._attr_types
        for attr_type, value in e.attributes.items():
            if type(value) is str:  # the common case: text, checked inline
                if not value:
                    continue
                key = (attr_type, value)
                attr_id = existing.get(key)
                if attr_id is not None:
                    ids.append(attr_id)
                    continue
                if attr_type in checked and "\x00" not in value and len(value) <= _SAFE_CHARS:
                    texts: list[str] = [value]
                else:
                    texts = attribute_values(attr_type, value)
            else:
                texts = attribute_values(attr_type, value)
            checked.add(attr_type)  # attribute_values checked the type's name
            for text_value in texts:
                key = (attr_type, text_value)
                attr_id = existing.get(key)
                if attr_id is None:
                    attr_id = tx.next_id("attributes")
                    norm_value = normalize_value(text_value)
                    rows.append((attr_id, node_id, attr_type, text_value, norm_value, self._stamp))
                    undo += (existing, key, _MISSING)
                    existing[key] = attr_id
                    if attr_type == self.alias_attribute and norm_value:
                        self._add_alias(tx, e.type, norm_value, (node_id, node_key, node_norm))
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
                for rel_id, other_type, other_strength in self._db.find_relationships_between(
                    tx, source_id, target_id, self._pair_types
                ):
                    self._rels.setdefault(
                        (source_id, other_type, target_id), (rel_id, float(other_strength))
                    )
                self._pairs.add((source_id, target_id))  # committed rows: no undo needed
                found = self._rels.get(key)
            elif found is None:
                row = self._db.find_relationship(tx, source_id, rel_type, target_id)
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
        if meta is not None and "\\u0000" in meta and has_nul(metadata):
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
            # _UndoLog.set, inline: the key is not in the cache (found is None)
            self._undo.entries += (self._rels, key, _MISSING)
            self._rels[key] = (rel_id, strength)
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
    def _provenance_rows(self, rec: _Record) -> None:
        """The record's provenance as rows: one for the record (its id and confidence its
        last subject's), and per subject either the row the record created (its creating
        record's columns, ``CREATED_BY_COLUMNS``, filled in here) or, for a subject that
        was there before the record, a row in its kind's table (storage/schema.py,
        ``provenance_records``), with a confidence only where it is not the record's.

        Why on the created row: 10.8 of the example's 18.4 provenance rows a record named a
        subject the record had just created (issue 11; migration 0011 says what the view
        ``provenance`` shows, unchanged). The rows a record created are those its buffers
        gained since it began (``_Record.buffer_marks``: buffers are handed to a write only
        between records), each given its columns here, when the record's id (its last
        provenance id) is known. A subject asserted twice by one record (a self-loop's
        node) keeps its first assertion on its row and the second in the table, as two
        rows of the view before."""
        record_id, confidence = rec.last_id, rec.last_confidence
        b = self._buf
        marks = rec.buffer_marks
        kinds = (
            (b.nodes, marks[0], rec.provenance_nodes, b.provenance_nodes),
            (b.attributes, marks[2], rec.provenance_attributes, b.provenance_attributes),
            (b.relationships, marks[3], rec.provenance_relationships, b.provenance_relationships),
        )
        if not (rec.provenance_nodes or rec.provenance_attributes or rec.provenance_relationships):
            for created, mark, _, _ in kinds:  # (no subject: no rows either, in practice)
                if len(created) > mark:
                    created[mark:] = [row + _NOT_CREATED_BY for row in created[mark:]]
            return
        b.provenance_records.append(
            (record_id, rec.source_id, rec.record_offset, rec.run_id, self._stamp, confidence)
        )
        for created, mark, subjects, rows in kinds:
            if len(created) == mark:  # nothing of this kind created: all in the table
                rows += [
                    (sid, pid, record_id, fi, None if conf == confidence else conf)
                    for sid, pid, fi, conf in subjects
                ]
                continue
            new = {row[0] for row in created[mark:]}
            on_row: dict[int, tuple[Any, ...]] = {}
            for sid, pid, fi, conf in subjects:
                if sid in new and sid not in on_row:
                    on_row[sid] = (pid, record_id, fi, None if conf == confidence else conf)
                else:
                    rows.append((sid, pid, record_id, fi, None if conf == confidence else conf))
            created[mark:] = [row + on_row.get(row[0], _NOT_CREATED_BY) for row in created[mark:]]


# The creating record's columns of a row no subject of its record names (none in practice:
# a record asserts what it creates)
_NOT_CREATED_BY: tuple[None, None, None, None] = (None, None, None, None)
