"""An entity with a key looks up its key and only the keyless nodes of its name (issue 11).

A keyed entity can match by name only a node without a key (the resolution rules in
journal_loader/graph/embedded.py), so its lookup (``GraphStore.find_keyless_nodes``) does
not read the keyed nodes of its name, whose number grows with the graph where names repeat:
at a million rows of the example, 15.6 companies a name (bench/HISTORY.md). What that
changes inside the graph: a keyed node created where the cache had no entry of its name
waits in ``_new_keyed_by_name`` until its batch commits, and an entry of the name read
before then includes it. These tests pin the answers on both backends, in one batch, with
the batch's rows written or not yet, and after a record is undone.
"""

from __future__ import annotations

from typing import Any

import pytest

from journal_loader.errors import AmbiguousMatchError, ValidationError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.store import GraphStore
from journal_loader.storage import Store
from tests.support.graph import Direct, rows

TYPES = ["Company", "City"]
RELS = ["LOCATED_IN"]


def _graph(store: Store, *, written_every: int = 100) -> EmbeddedGraph:
    graph = EmbeddedGraph(store, node_types=TYPES, relationship_types=RELS)
    # the batch's rows are written after this many records (before: only in the cache)
    graph.write_behind_records = written_every
    return graph


def _companies(store: Store) -> list[tuple[Any, ...]]:
    return rows(
        store, "SELECT id, name, external_key FROM nodes WHERE node_type = 'Company' ORDER BY id"
    )


@pytest.mark.parametrize("written_every", [1, 100], ids=["written", "not-yet-written"])
def test_a_keyless_mention_matches_the_keyed_node_its_batch_created(
    store: Store, written_every: int
) -> None:
    """No entry of "acme" is cached when the keyed entity creates its node; the keyless
    mention later in the batch reads one, which must hold that node whether the batch has
    written its row yet or not (and hold it once when it has)."""
    d = Direct(_graph(store, written_every=written_every), store)
    with d.batch() as g:
        with d.record():
            keyed = g.propose_fact(("Company", "Acme", "C1"), ("City", "X"), "LOCATED_IN")
        with d.record():
            keyless = g.propose_fact(("Company", "ACME"), ("City", "Y"), "LOCATED_IN")
    assert keyed.actions[0].match_reason == "new_entity"
    assert keyless.source_entity_id == keyed.source_entity_id
    assert keyless.actions[0].match_reason == "exact_name_match"
    assert _companies(store) == [(keyed.source_entity_id, "Acme", "C1")]


def test_within_one_record_too(store: Store) -> None:
    d = Direct(_graph(store), store)
    with d.batch() as g, d.record():
        keyed = g.propose_fact(("Company", "Acme", "C1"), ("City", "X"), "LOCATED_IN")
        keyless = g.propose_fact(("Company", "acme"), ("City", "X"), "LOCATED_IN")
    assert keyless.source_entity_id == keyed.source_entity_id


@pytest.mark.parametrize("written_every", [1, 100], ids=["written", "not-yet-written"])
def test_two_keyed_nodes_of_a_name_created_in_a_batch_make_a_keyless_mention_ambiguous(
    store: Store, written_every: int
) -> None:
    d = Direct(_graph(store, written_every=written_every), store)
    with d.batch() as g:
        for key in ("C1", "C2"):
            with d.record():
                g.propose_fact(("Company", "Acme", key), ("City", "X"), "LOCATED_IN")
        with pytest.raises(AmbiguousMatchError) as e, d.record():
            g.propose_fact(("Company", "ACME"), ("City", "X"), "LOCATED_IN")
    assert "'C1'" in str(e.value) and "'C2'" in str(e.value)
    assert [c[2] for c in _companies(store)] == ["C1", "C2"]


def test_a_keyed_node_of_an_undone_record_is_not_a_candidate(store: Store) -> None:
    """The record that created the keyed node fails afterwards: its node is taken back, and
    with it the node's place in ``_new_keyed_by_name`` (the undo log)."""
    d = Direct(_graph(store), store)
    with d.batch() as g:
        with pytest.raises(ValidationError), d.record():
            g.propose_fact(("Company", "Acme", "C1"), ("City", "X"), "LOCATED_IN")
            g.propose_fact(("Company", "Acme", "C1"), ("City", "X"), "NOT_A_TYPE")
        with d.record():
            keyless = g.propose_fact(("Company", "ACME"), ("City", "X"), "LOCATED_IN")
    assert keyless.actions[0].match_reason == "new_entity"
    assert _companies(store) == [(keyless.source_entity_id, "ACME", None)]


def test_the_keyed_nodes_of_its_name_are_not_read_for_a_keyed_entity(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyed entity's lookup reads its key and the keyless nodes of its name, not the
    30 keyed ones: it still adopts the keyless node, a new key still makes a new node, and
    a keyless mention still sees all of them (ambiguous)."""
    d = Direct(_graph(store), store)
    with d.batch() as g:
        for i in range(30):
            with d.record():
                g.propose_fact(("Company", "Acme", f"C{i}"), ("City", "X"), "LOCATED_IN")
        with d.record():  # a keyless node of another name, adopted below
            agent = g.propose_fact(("Company", "Beta"), ("City", "X"), "LOCATED_IN")
    read: list[int] = []
    for name in ("find_nodes", "find_keyless_nodes"):
        original = getattr(GraphStore, name)

        def counted(self: GraphStore, *a: Any, _o: Any = original, **kw: Any) -> Any:
            found = _o(self, *a, **kw)
            read.append(len(found))
            return found

        monkeypatch.setattr(GraphStore, name, counted)

    d = Direct(_graph(store), store)  # cold caches
    new = d.propose(("Company", "ACME", "C99"), ("City", "X"), "LOCATED_IN")
    assert new.actions[0].match_reason == "new_entity"
    assert read[0] == 0  # not 30: neither the key nor a keyless "acme" exists
    adopted = d.propose(("Company", "BETA", "B1"), ("City", "X"), "LOCATED_IN")
    assert adopted.source_entity_id == agent.source_entity_id
    assert adopted.actions[0].match_reason == "exact_name_match"
    with pytest.raises(AmbiguousMatchError, match="matches 31 entities"):
        d.propose(("Company", "acme"), ("City", "X"), "LOCATED_IN")
    assert len(_companies(store)) == 32
