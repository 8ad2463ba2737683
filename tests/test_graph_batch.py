"""A batch resolved set-based (the loader's facts collected first, looked up at once, then
resolved in order: journal_loader/graph/batch.py) gives what proposing fact by fact gives:
the same graph by content, the same journaled answers, the same DLQ, on both backends.

The file has records that create, reuse (within a batch and from committed rows), adopt,
match by alias and fuzzily, conflict, and fail every way a record can fail at propose: a
value the collector's checks refuse, one only resolution refuses (an attribute, metadata), an
ambiguous match, a loader that raises after a fact, a loader that catches the graph's error
and proposes something else, and one that reads an answer inside propose (after which the
run proposes fact by fact). The company, one Entity in up to three facts of a record, has a
list of values with one twice (a collected record reuses its attribute ids)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import run
from journal_loader.config import load_config
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.journal.events import ProposeSucceeded, decode
from journal_loader.storage import Store, open_store
from tests.support.loaders import write_csv
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.snapshots import dlq_snapshot, graph_snapshot


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batch.db'}", f"sqlite:///{tmp_path / 'per_fact.db'}"
        return
    (a, schema_a), (b, schema_b) = make_pg_schema(), make_pg_schema()
    try:
        yield a, b
    finally:
        drop_pg_schema(schema_a)
        drop_pg_schema(schema_b)


def _identities(store: Store) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
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


def _answers(store: Store) -> list[tuple[int, int, Any]]:
    """(source, offset, answers) of every record in journal order, its ids replaced by what
    they name."""
    nodes, rels, attrs = _identities(store)
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


def _journal(store: Store) -> list[tuple[str, int | None]]:
    """Every event's type and record, in journal order."""
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT event_type, record_offset FROM journal ORDER BY position")
        ).all()
    return [(str(t), None if o is None else int(o)) for t, o in rows]


def _load(url: str, graph_class: type[EmbeddedGraph], data: Path, config: Path) -> Store:
    store = open_store(url)
    cfg = load_config(config)
    for i in range(2):  # the second load (--force) finds everything committed
        graph = graph_class.from_config(store, cfg)
        report = run(config=config, file=data, store=store, graph=graph, batch_size=6, force=i > 0)
        assert report.status == "completed", report.message
    return store


# "later": one more row before the Reader, so that the batch after the switch to fact by
# fact holds three records; on PostgreSQL it takes the prefetch path, which once journaled
# all of a batch's RecordParsed before their outcomes.
@pytest.mark.parametrize("shift", ["", "later"])
def test_a_batch_resolved_at_once_equals_fact_by_fact(
    two_urls: tuple[str, str], tmp_path: Path, shift: str
) -> None:
    rows = list(ROWS)
    if shift:
        rows.insert(rows.index(next(r for r in ROWS if r[6] == "read")), ROWS[0])
    data = write_csv(
        tmp_path / "mixed.csv", ["name", "key", "alias", "city", "rel", "strength", "mode"], rows
    )
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    batch = _load(two_urls[0], EmbeddedGraph, data, config)
    per_fact = _load(two_urls[1], PerFact, data, config)
    try:
        assert graph_snapshot(batch) == graph_snapshot(per_fact)
        assert _answers(batch) == _answers(per_fact)
        assert dlq_snapshot(batch) == dlq_snapshot(per_fact)
        assert _journal(batch) == _journal(per_fact)  # each record's events together
        # the file does what it says: every way of failing, and the answers it names
        failures = {(r[1], r[3], r[4]) for r in dlq_snapshot(batch)}
        assert {f[2] for f in failures} == {"AmbiguousMatchError", "ValidationError", "ValueError"}
        assert len(failures) == 6  # ambiguous, 3 bad values, the loader's error, unknown type
        actions = {
            a[0] if a[0] != "entity_matched" else a[2]
            for _source, _offset, answers in _answers(batch)
            for r in answers
            for a in r[2]
        }
        assert {
            "alias_match",
            "fuzzy_match",
            "external_key",
            "exact_name_match",
            "entity_created",
            "relationship_created",
            "relationship_duplicate",
            "relationship_updated",
            "relationship_conflicted",
        } <= actions
        assert any(n[1].endswith("unresolved") for n in _identities(batch)[0].values())
    finally:
        batch.dispose()
        per_fact.dispose()


def test_records_without_facts_answer_as_fact_by_fact(
    two_urls: tuple[str, str], tmp_path: Path
) -> None:
    """A record that proposes nothing skips the graph's record state (every record of a
    journal-only loader does): the same journal, answers and DLQ as fact by fact, next to
    every other kind of record, failing ones included."""
    nothing = ["Nothing", "", "", "Boston", "", "", "none"]
    rows = [nothing]
    for row in ROWS:
        if row[6] != "read":  # no switch to fact by fact: every batch is collected
            rows += [row, nothing]
    data = write_csv(
        tmp_path / "mixed.csv", ["name", "key", "alias", "city", "rel", "strength", "mode"], rows
    )
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    batch = _load(two_urls[0], EmbeddedGraph, data, config)
    per_fact = _load(two_urls[1], PerFact, data, config)
    try:
        assert graph_snapshot(batch) == graph_snapshot(per_fact)
        assert _answers(batch) == _answers(per_fact)
        assert dlq_snapshot(batch) == dlq_snapshot(per_fact)
        assert _journal(batch) == _journal(per_fact)
        empty = [answers for _source, _offset, answers in _answers(batch) if not answers]
        assert len(empty) == 2 * sum(1 for r in rows if r is nothing)  # both loads
    finally:
        batch.dispose()
        per_fact.dispose()


class SmallCache(EmbeddedGraph):
    """Caches of committed rows kept within ``limit`` entries: over it at (nearly) every
    commit, so the older half is dropped (``_evict``), or everything when the graph has
    given keys to more nodes than a quarter of the limit (``_forget``)."""

    limit = 4
    evictions = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "cache_limit": self.limit})

    def _evict(self) -> None:
        type(self).evictions += 1
        super()._evict()


class SmallerCache(SmallCache):
    limit = 1  # a quarter of it is 0: every adoption empties the caches at once


@pytest.mark.parametrize("small", [SmallCache, SmallerCache])
def test_bounded_caches_answer_as_unbounded(
    two_urls: tuple[str, str], tmp_path: Path, small: type[SmallCache]
) -> None:
    """Issue 11: the caches of committed rows stay within ``cache_limit`` (the older half
    dropped between batches), and that changes no answer: the same graph, answers, DLQ and
    journal as with caches that keep everything of this file. The file three times over,
    the reader last: every name, alias, key and pair comes back after the caches dropped
    it, or while they still have it."""
    rows = [r for r in ROWS if r[6] != "read"] * 3 + [r for r in ROWS if r[6] == "read"]
    data = write_csv(
        tmp_path / "mixed.csv", ["name", "key", "alias", "city", "rel", "strength", "mode"], rows
    )
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    small.evictions = 0
    bounded = _load(two_urls[0], small, data, config)
    unbounded = _load(two_urls[1], EmbeddedGraph, data, config)
    try:
        assert graph_snapshot(bounded) == graph_snapshot(unbounded)
        assert _answers(bounded) == _answers(unbounded)
        assert dlq_snapshot(bounded) == dlq_snapshot(unbounded)
        assert _journal(bounded) == _journal(unbounded)
        if small is SmallCache:
            assert small.evictions > 3
    finally:
        bounded.dispose()
        unbounded.dispose()
