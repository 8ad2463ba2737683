"""What a load built, without SQL: read-only views of the embedded graph (``journal-loader
graph stats|node|neighbours``), on both backends.

* ``stats``: nodes per type, relationships per type, attributes per type, provenance rows,
  and conflicts: pairs of nodes that hold two relationships a config declares opposing
  (``graph.opposing_relationships``; the graph does not store which types oppose, so
  conflicts are counted only when the config is given).
* ``node``: one node (by id, by name within its type or every type, or by external key)
  with its attributes, its relationships in and out (counts per type, and the first
  ``limit`` of each), and its provenance: the records that asserted it, each with its source,
  record offset, line and byte range (the same join as ``lineage``).
* ``neighbours``: the nodes within ``depth`` relationships of one node, either direction,
  breadth first, each with the relationship that reached it; at most ``limit`` of them.

The queries are in ``browse.sql``, run by ``journal_loader.graph.store`` (the graph's SQL
module); every per-node lookup is an index search, so a node with a million neighbours costs
its counts and ``limit`` rows, not a million. Reads only, in a read transaction (on SQLite a
deferred one: a running load is not held up).

An existing Propose API database (``graph.propose_api``) keeps its graph in its own tables:
these views do not read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import Connection

from journal_loader.errors import UnknownIdError, UsageError
from journal_loader.graph.normalize import normalize_name
from journal_loader.graph.store import browse_alias_rows, browse_rows
from journal_loader.storage.base import Store, graph_time

DEFAULT_LIMIT = 20


class GraphLookupError(UnknownIdError):
    """No such node (exit 2, like ``lineage`` for an unknown id)."""


def _rows(conn: Connection, store: Store, name: str, **params: Any) -> list[Any]:
    return browse_rows(conn, store.dialect, name, params)


# --- stats ---------------------------------------------------------------------------------


@dataclass(slots=True)
class GraphStats:
    nodes: dict[str, int]
    relationships: dict[str, int]
    attributes: dict[str, int]
    provenance: dict[str, int]
    # (rel_type, opposing type) -> node pairs holding both; None: no config was given
    conflicts: dict[tuple[str, str], int] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": {"total": sum(self.nodes.values()), "by_type": self.nodes},
            "relationships": {
                "total": sum(self.relationships.values()),
                "by_type": self.relationships,
            },
            "attributes": {"total": sum(self.attributes.values()), "by_type": self.attributes},
            "provenance": {"total": sum(self.provenance.values()), "by_kind": self.provenance},
            "conflicts": None
            if self.conflicts is None
            else {
                "total": sum(self.conflicts.values()),
                "by_pair": [
                    {"relationship_type": a, "opposing_type": b, "node_pairs": n}
                    for (a, b), n in self.conflicts.items()
                ],
            },
        }


def stats(store: Store, opposing: Iterable[tuple[str, str]] | None = None) -> GraphStats:
    """Counts per type. ``opposing``: the config's opposing relationship types, to count
    conflicts (None: not counted)."""
    with store.read() as conn:

        def counts(name: str) -> dict[str, int]:
            return {str(k): int(n) for k, n in _rows(conn, store, name)}

        conflicts = None
        if opposing is not None:
            conflicts = {}
            for a, b in opposing:
                (row,) = _rows(conn, store, "opposing_pairs", rel_type=a, other_type=b)
                conflicts[(a, b)] = int(row[0])
        return GraphStats(
            nodes=counts("node_counts"),
            relationships=counts("relationship_counts"),
            attributes=counts("attribute_counts"),
            provenance=counts("provenance_counts"),
            conflicts=conflicts,
        )


# --- one node ------------------------------------------------------------------------------


def _node_ref(row: Any) -> dict[str, Any]:
    return {"id": int(row[0]), "type": row[1], "name": row[2], "key": row[3]}


def describe(ref: Mapping[str, Any]) -> str:
    """``Company 'ACME LLC' [C1]`` (the key when there is one)."""
    return f"{ref['type']} {ref['name']!r}" + (f" [{ref['key']}]" if ref.get("key") else "")


@dataclass(slots=True)
class Provenance:
    source_id: int
    file_name: str | None
    source_type: str | None
    record_offset: int
    line: int | None
    byte_start: int | None
    byte_end: int | None
    fact_index: int
    run_id: str
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "file_name": self.file_name,
            "source_type": self.source_type,
            "record_offset": self.record_offset,
            "line": self.line,
            "byte_start": self.byte_start,
            "byte_end": self.byte_end,
            "fact_index": self.fact_index,
            "run_id": self.run_id,
            "confidence": self.confidence,
        }


@dataclass(slots=True)
class NodeView:
    node: dict[str, Any]
    attributes: list[dict[str, Any]]
    out_counts: dict[str, int]
    in_counts: dict[str, int]
    relationships_out: list[dict[str, Any]]
    relationships_in: list[dict[str, Any]]
    provenance_total: int
    provenance: list[Provenance] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.node,
            "attributes": self.attributes,
            "relationships_out": {
                "total": sum(self.out_counts.values()),
                "by_type": self.out_counts,
                "shown": self.relationships_out,
            },
            "relationships_in": {
                "total": sum(self.in_counts.values()),
                "by_type": self.in_counts,
                "shown": self.relationships_in,
            },
            "provenance": {
                "total": self.provenance_total,
                "shown": [p.to_json() for p in self.provenance],
            },
        }


class _Coordinates(msgspec.Struct):
    """The part of a RecordParsed payload provenance shows (the rest is not decoded)."""

    line: int = 0
    byte_start: int = 0
    byte_end: int = 0


_coordinates = msgspec.json.Decoder(_Coordinates)


def find_nodes(
    store: Store,
    *,
    name: str | None = None,
    key: str | None = None,
    node_type: str | None = None,
    alias_attribute: str = "nameAlias",
) -> list[dict[str, Any]]:
    """Nodes by name (normalised as the graph resolves them: case, spacing and punctuation
    folded; then by alias when no name matches) or by external key, in one type or all."""
    if (name is None) == (key is None):
        raise UsageError("give a node ID, or --name NAME, or --key KEY")
    with store.read() as conn:
        types = [node_type] if node_type else [str(r[0]) for r in _rows(conn, store, "node_types")]
        found: list[dict[str, Any]] = []
        if key is not None:
            for t in types:
                found += [_node_ref(r) for r in _rows(conn, store, "nodes_by_key", node_type=t,
                                                      external_key=key)]  # fmt: skip
            return found
        assert name is not None
        norm = normalize_name(name)
        for t in types:
            found += [_node_ref(r) for r in _rows(conn, store, "nodes_by_name", node_type=t,
                                                  norm_name=norm)]  # fmt: skip
        if not found:
            for t in types:
                params = {"node_type": t, "norm_name": norm}
                rows = browse_alias_rows(
                    conn, store.dialect, "nodes_by_alias", alias_attribute, params
                )
                found += [_node_ref(r) for r in rows]
        return found


def node(store: Store, node_id: int, *, limit: int = DEFAULT_LIMIT) -> NodeView:
    """One node with its attributes, relationships and provenance (at most ``limit``
    relationships each way and ``limit`` provenance rows; the totals are counted)."""
    with store.read() as conn:
        found = _rows(conn, store, "node", id=node_id)
        if not found:
            raise GraphLookupError(f"no node {node_id} in {store.display_url}")
        row = found[0]
        head = {**_node_ref(row), "created_at": _time(row[4]), "updated_at": _time(row[5])}
        attributes = [
            {
                "id": int(a[0]),
                "attr_type": a[1],
                "value": a[2],
                "assertions": int(a[3]),
                "first_source_id": None if a[4] is None else int(a[4]),
                "first_record_offset": None if a[5] is None else int(a[5]),
            }
            for a in _rows(conn, store, "node_attributes", id=node_id)
        ]

        def rels(query: str, end: str) -> list[dict[str, Any]]:
            return [
                {
                    "id": int(r[0]),
                    "rel_type": r[1],
                    "strength": float(r[2]),
                    end: _node_ref(r[3:7]),
                }
                for r in _rows(conn, store, query, id=node_id, limit=limit)
            ]

        (total,) = _rows(conn, store, "node_provenance_count", id=node_id)
        return NodeView(
            node=head,
            attributes=attributes,
            out_counts={str(t): int(n) for t, n in _rows(conn, store, "out_counts", id=node_id)},
            in_counts={str(t): int(n) for t, n in _rows(conn, store, "in_counts", id=node_id)},
            relationships_out=rels("relationships_out", "target"),
            relationships_in=rels("relationships_in", "source"),
            provenance_total=int(total[0]),
            provenance=provenance(conn, store, "node", node_id, limit),
        )


def provenance(
    conn: Connection, store: Store, kind: str, subject_id: int, limit: int
) -> list[Provenance]:
    out: list[Provenance] = []
    seen: set[int] = set()
    for r in _rows(conn, store, "provenance", kind=kind, id=subject_id, limit=limit):
        if r[0] in seen:  # one row per assertion, however many RecordParsed its run wrote
            continue
        seen.add(r[0])
        where = _coordinates.decode(r[8]) if r[8] is not None else None
        out.append(
            Provenance(
                source_id=int(r[1]),
                file_name=r[6],
                source_type=r[7],
                record_offset=int(r[2]),
                line=where.line if where else None,
                byte_start=where.byte_start if where else None,
                byte_end=where.byte_end if where else None,
                fact_index=int(r[3]),
                run_id=str(r[4]),
                confidence=float(r[5]),
            )
        )
    return out


# --- neighbours ----------------------------------------------------------------------------


@dataclass(slots=True)
class Neighbour:
    node: dict[str, Any]
    depth: int
    # the relationship that reached it: id, type, and its two ends' ids
    via: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.node, "depth": self.depth, "via": self.via}


@dataclass(slots=True)
class Neighbourhood:
    node: dict[str, Any]
    depth: int
    limit: int
    neighbours: list[Neighbour]
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "depth": self.depth,
            "limit": self.limit,
            "truncated": self.truncated,
            "neighbours": [n.to_json() for n in self.neighbours],
        }


def neighbours(store: Store, node_id: int, *, depth: int = 1, limit: int = 100) -> Neighbourhood:
    """The nodes within ``depth`` relationships (either direction), breadth first, the
    nearest first; at most ``limit`` (``truncated`` says whether more were in reach)."""
    if depth < 1:
        raise UsageError("--depth must be at least 1")
    with store.read() as conn:
        found = _rows(conn, store, "node", id=node_id)
        if not found:
            raise GraphLookupError(f"no node {node_id} in {store.display_url}")
        start = _node_ref(found[0])
        seen = {node_id}
        result: list[Neighbour] = []
        frontier = [node_id]
        truncated = False
        for level in range(1, depth + 1):
            following: list[int] = []
            for current in frontier:
                # edges back to nodes already seen come too: ask for enough to see past them
                want = limit - len(result) + len(seen) + 1
                for query, outgoing in (("relationships_out", True), ("relationships_in", False)):
                    rows = _rows(conn, store, query, id=current, limit=want)
                    if len(rows) == want:
                        truncated = True
                    for r in rows:
                        other = _node_ref(r[3:7])
                        if other["id"] in seen:
                            continue
                        if len(result) >= limit:
                            truncated = True
                            break
                        seen.add(other["id"])
                        following.append(other["id"])
                        result.append(
                            Neighbour(
                                node=other,
                                depth=level,
                                via={
                                    "relationship_id": int(r[0]),
                                    "rel_type": r[1],
                                    "source_id": current if outgoing else other["id"],
                                    "target_id": other["id"] if outgoing else current,
                                },
                            )
                        )
            frontier = following
            if not frontier:
                break
        return Neighbourhood(start, depth, limit, result, truncated)


def _time(value: Any) -> str | None:
    """A graph timestamp as ISO 8601 in UTC, the same text on both backends."""
    stamp = graph_time(value)
    return None if stamp is None else stamp.isoformat()
