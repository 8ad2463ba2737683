"""The mixed file: a loader, config and rows whose records create, reuse, adopt, match by
alias and fuzzily, conflict and fail every way a record can fail at propose (described in
tests/test_graph_batch.py), and what to compare two loads of it by: the answers with their
ids replaced by what they name, and the journal's order. Shared by the tests that compare
two ways of writing the graph (tests/test_graph_batch.py, tests/test_write_behind.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.journal.events import ProposeSucceeded, decode
from journal_loader.storage import Store
from tests.support.loaders import write_csv

COLUMNS = ["name", "key", "alias", "city", "rel", "strength", "mode"]


class PerFact(EmbeddedGraph):
    """The reference: every fact proposed through propose_fact, no lookups in bulk."""

    @property
    def wants_batch(self) -> bool:
        return False

    @property
    def wants_prefetch(self) -> bool:
        return False


LOADER = """
from journal_loader import Entity, Loader
from journal_loader.errors import AmbiguousMatchError

class MixedLoader(Loader):
    name = source_type = "mixed"

    def propose(self, record, graph):
        mode = record["mode"]
        if mode == "none":  # a journal-only record: no facts at all
            return []
        attributes = {"nameAlias": record["alias"]} if record["alias"] else {}
        attributes["sector"] = ["s", record["city"], "s"]  # a value twice; in up to 3 facts
        if mode == "bad_attr":
            attributes["note"] = "x\\x00y"  # refused at resolution (the attribute's value)
        company = Entity(type="Company", name=record["name"], key=record["key"] or None,
                         attributes=attributes)
        city = ("City", record["city"])
        results = []
        if mode == "catch":
            try:
                results.append(graph.propose_fact(company, city, "LOCATED_IN"))
            except AmbiguousMatchError:
                company = Entity(type="Company", name=record["name"] + " (unresolved)")
                results.append(graph.propose_fact(company, city, "LOCATED_IN"))
            return results
        strength = 1.5 if mode == "bad_strength" else float(record["strength"] or 1.0)
        metadata = {"note": "a\\x00b"} if mode == "bad_meta" else {"row": record["name"]}
        results.append(graph.propose_fact(company, city, "LOCATED_IN", strength=strength,
                                          metadata=metadata, confidence=0.8))
        results.append(graph.propose_fact(city, ("State", "XX"), "IN_STATE"))
        if mode == "raise_after":
            raise ValueError("the loader gives up after two facts")
        if mode == "read" and results[0].actions[0].match_reason == "nothing":
            raise AssertionError("never")
        if record["rel"]:
            results.append(graph.propose_fact(company, ("Company", record["city"] + " Bank"),
                                              record["rel"], strength=0.9))
        if mode == "unknown_type":
            results.append(graph.propose_fact(("Planet", "Mars"), city, "LOCATED_IN"))
        return results
"""

CONFIG = """
loader:
  class: mixed_loader.py:MixedLoader
source:
  type: mixed
graph:
  node_types: [Company, City, State]
  relationship_types: [LOCATED_IN, IN_STATE, LENDS_TO, OWES]
  opposing_relationships: [[LENDS_TO, OWES]]
  fuzzy_matching: {City: 0.75}
"""

# name, key, alias, city, rel, strength, mode
ROWS = [
    ["Acme Incorporated", "K9", "ACMECO", "Springfield", "LENDS_TO", "0.5", ""],
    ["AcmeCo", "", "", "Boston", "", "", ""],  # the alias of a node of this batch
    ["ACME", "", "", "Springfield", "OWES", "", ""],  # a keyless ACME: its own node
    ["Acme Inc", "K1", "Acme", "Springfield", "", "0.7", ""],
    ["ACME", "K1", "", "Boston", "", "0.9", ""],  # K1 exists: matched by key; stronger
    ["Acme Inc", "K1", "", "Springfielld", "OWES", "", ""],  # fuzzy city
    ["Acme Incorporated", "K9", "", "Springfield", "OWES", "", ""],  # opposes LENDS_TO
    ["Twin", "T1", "", "Springfield", "", "", ""],
    ["Twin", "T2", "", "Springfield", "", "", ""],
    ["twin", "", "", "Boston", "", "", ""],  # ambiguous: two keyed Twins (DLQ)
    ["twin", "", "", "Boston", "", "", "catch"],  # ambiguous, caught: another fact instead
    ["Solo", "", "", "Springfield", "", "", ""],
    ["SOLO", "S1", "", "Boston", "", "", ""],  # adopts the keyless Solo
    ["Broken", "B1", "", "Springfield", "", "", "bad_attr"],  # DLQ at resolution
    ["Broken", "B2", "", "Springfield", "", "", "bad_meta"],  # DLQ at resolution
    ["Broken", "B3", "", "Springfield", "", "", "bad_strength"],  # DLQ when collected
    ["Halfway", "H1", "", "Lowell", "", "", "raise_after"],  # DLQ, its facts undone
    ["Halfway", "H1", "", "Lowell", "", "", ""],  # creates what the failure did not
    ["Mars Co", "M1", "", "Springfield", "", "", "unknown_type"],  # DLQ
    ["Solo", "S1", "", "Springfield", "LENDS_TO", "", ""],
    ["Acme Incorporated", "K9", "", "Springfield", "LENDS_TO", "0.6", ""],  # updated
    ["Acme Incorporated", "K9", "", "Springfield", "LENDS_TO", "0.4", ""],  # duplicate
    ["Reader", "R1", "", "Boston", "", "", "read"],  # reads an answer: fact by fact from here
    ["Late", "L1", "", "Springfield", "OWES", "", ""],
    ["Twin", "", "", "Springfield", "", "", "catch"],
]


def identities(store: Store) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    """Node, relationship and attribute ids -> what they are (ids themselves may differ)."""
    with store.read() as conn:
        nodes = {
            int(i): (t, n, k)
            for i, t, n, k in conn.execute(
                text("SELECT id, node_type, norm_name, external_key FROM nodes")
            )
        }
        rels = {
            int(i): (nodes[int(s)], t, nodes[int(o)])
            for i, s, t, o in conn.execute(
                text("SELECT id, source_node_id, rel_type, target_node_id FROM relationships")
            )
        }
        attrs = {
            int(i): (nodes[int(n)], t, v)
            for i, n, t, v in conn.execute(
                text("SELECT id, node_id, attr_type, value FROM attributes")
            )
        }
    return nodes, rels, attrs


def answers(store: Store) -> list[tuple[int, int, Any]]:
    """(source, offset, answers) of every record in journal order, its ids replaced by what
    they name."""
    nodes, rels, attrs = identities(store)
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT source_id, record_offset, payload FROM journal "
                "WHERE event_type = 'ProposeSucceeded' ORDER BY position"
            )
        ).all()
    out: list[tuple[int, int, Any]] = []
    for source_id, offset, payload in rows:
        event = decode(payload)
        assert isinstance(event, ProposeSucceeded)
        answers = [
            (
                r.status,
                r.overall_confidence,
                [
                    (
                        a.action,
                        a.role,
                        a.match_reason,
                        a.confidence,
                        a.message,
                        None if a.entity_id is None else nodes[int(a.entity_id)],
                        None if a.relationship_id is None else rels[int(a.relationship_id)],
                    )
                    for a in r.actions
                ],
                [(rels[int(c.relationship_id)], c.relationship_type) for c in r.conflicts],
                len(r.provenance_ids),
                sorted(attrs[int(i)] for i in r.attribute_ids),
                nodes[int(r.source_entity_id or 0)],
                nodes[int(r.target_entity_id or 0)],
                rels[int(r.relationship_id or 0)],
            )
            for r in event.results
        ]
        out.append((int(source_id), int(offset), answers))
    return out


def journal(store: Store) -> list[tuple[str, int | None]]:
    """Every event's type and record, in journal order."""
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT event_type, record_offset FROM journal ORDER BY position")
        ).all()
    return [(str(t), None if o is None else int(o)) for t, o in rows]


def debt_loads(tmp_path: Path) -> list[tuple[Path, Path]]:
    """Three (file, config) loads onto one graph, between the same companies and banks:
    OWES and GUARANTEES; then LENDS_TO under a config that knows neither; then LENDS_TO
    again (duplicates) under one where OWES opposes it (conflicts). For the lookups of the
    relationships between two nodes by the config's types (graph/store.py)."""
    loader = tmp_path / "debt_loader.py"
    loader.write_text("""
from journal_loader import Loader

class DebtLoader(Loader):
    name = source_type = "debts"

    def propose(self, record, graph):
        company = ("Company", record["name"])
        return [graph.propose_fact(company, ("Bank", record["bank"]), record["rel"]),
                graph.propose_fact(company, ("City", "Springfield"), "LOCATED_IN")]
""")
    names = [f"Company {i}" for i in range(12)]
    loads: list[tuple[Path, Path]] = []
    for n, (rels, types, opposing) in enumerate(
        [
            (["OWES", "GUARANTEES"], "[LOCATED_IN, OWES, GUARANTEES]", "[]"),
            (["LENDS_TO"], "[LOCATED_IN, LENDS_TO]", "[]"),
            (["LENDS_TO"], "[LOCATED_IN, LENDS_TO, OWES]", "[[LENDS_TO, OWES]]"),
        ]
    ):
        rows = [[name, f"Bank {i % 3}", rel, n] for i, name in enumerate(names) for rel in rels]
        data = write_csv(tmp_path / f"debts_{n}.csv", ["name", "bank", "rel", "load"], rows)
        config = tmp_path / f"debts_{n}.yaml"
        config.write_text(
            "loader:\n  class: debt_loader.py:DebtLoader\nsource:\n  type: debts\n"
            f"graph:\n  relationship_types: {types}\n  opposing_relationships: {opposing}\n"
        )
        loads.append((data, config))
    return loads
