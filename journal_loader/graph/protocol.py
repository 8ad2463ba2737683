"""What a loader talks to: the Propose API, as a protocol.

A loader's ``propose(record, graph)`` calls ``graph.propose_fact(...)`` once per fact. The
embedded graph (``journal_loader.graph.embedded``) implements it in the journal's own database;
``journal_loader.graph.postgres_client`` calls an existing deployment's SQL function. Results
have the Propose API's shape (status, overall_confidence, actions, conflicts, provenance_ids)
and are msgspec Structs so they are journaled as they are, inside ``ProposeSucceeded``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol, runtime_checkable

import msgspec

STATUS_SUCCESS = "success"
STATUS_CONFLICTS = "conflicts"
STATUS_ERROR = "error"

#: An id as the graph gives it: the embedded graph's are integers; a Propose API deployment's
#: may be text (ULIDs) and are kept as they are, never coerced or dropped.
GraphId = int | str


class Entity(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One end of a fact: an entity of a type, by name, optionally with an external key.

    ``key`` is the registry's own identifier (a corp number): two entities with the same name
    and different keys stay two.
    """

    type: str
    name: str
    key: str | None = None
    attributes: dict[str, Any] = {}


EntityLike = Entity | tuple[str, str] | tuple[str, str, str | None]


def as_entity(value: EntityLike, attributes: dict[str, Any] | None = None) -> Entity:
    if isinstance(value, Entity):
        if attributes:
            return msgspec.structs.replace(value, attributes={**value.attributes, **attributes})
        return value
    if not isinstance(value, tuple) or len(value) not in (2, 3):
        raise TypeError(f"an entity is Entity(...) or (type, name[, key]), got {value!r}")
    key = value[2] if len(value) == 3 else None
    return Entity(type=value[0], name=value[1], key=key, attributes=attributes or {})


class Action(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One thing the graph did for a fact (the Propose API's ``actions`` entries).

    ``gc=False`` here and on ``ProposeResult``: a load makes ~20 of them a record and keeps
    them to the batch's end; the cyclic GC tracking each (linked in at creation, unlinked at
    the end, all over the heap) cost more than building them. They hold values and lists of
    values, never a cycle; reference counting frees them as before."""

    action: str  # entity_created | entity_matched | relationship_created | relationship_duplicate
    #              | relationship_updated | relationship_conflicted | error
    # match_reason (entity actions): external_key | exact_name_match | alias_match |
    #              fuzzy_match | new_entity
    role: str | None = None  # 'source' | 'target' for entity actions
    entity_id: GraphId | None = None
    relationship_id: GraphId | None = None
    confidence: float | None = None
    match_reason: str | None = None
    message: str | None = None


class Conflict(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One conflict of an answer. An opposing relationship: ``relationship_id`` and
    ``relationship_type`` name the relationship the fact opposes. From a Propose API
    deployment also ``type`` (``opposing_relationship``, ``ambiguous_entities``...), the
    candidates of an ambiguous match per side, and whatever else it said (``detail``)."""

    relationship_id: GraphId = 0
    relationship_type: str = ""
    source_entity_id: GraphId = 0
    target_entity_id: GraphId = 0
    type: str | None = None
    source_alternatives: list[dict[str, Any]] = []
    target_alternatives: list[dict[str, Any]] = []
    detail: dict[str, Any] = {}


class ProposeResult(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """The answer to one ``propose_fact`` call, shaped like the Propose API's response."""

    status: str
    overall_confidence: float = 0.0
    actions: list[Action] = []
    conflicts: list[Conflict] = []
    provenance_ids: list[GraphId] = []
    attribute_ids: list[int] = []
    source_entity_id: GraphId | None = None
    target_entity_id: GraphId | None = None
    relationship_id: GraphId | None = None
    # Set by a client of a remote Propose API: the key of the call (file sha256, record offset,
    # fact index), and whether the record was in doubt (proposed again after a crash between
    # the call and the journaling of its outcome: a duplicate answer is then the success it was;
    # its entity_matched may be the first, unjournaled call's creation: the answer is a replay).
    idempotency_key: str | None = None
    in_doubt: bool = False

    @property
    def ok(self) -> bool:
        return self.status != STATUS_ERROR

    @property
    def error_message(self) -> str | None:
        for a in self.actions:
            if a.action == "error":
                return a.message
        return None

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)


@runtime_checkable
class ProposeClient(Protocol):
    """The loader-facing side of a graph: one call per fact."""

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
    ) -> ProposeResult: ...
