"""The embedded graph speaks the Propose API (issue 3 §1), on SQLite and PostgreSQL.

Every test takes ``store`` (or ``db_url``): it runs on both backends. Entity resolution in
order (external key, exact name, alias, fuzzy, new), ambiguous matches to the DLQ, duplicate
and updated relationships, conflicts with their penalty, unknown types, provenance lineage,
and the caches' undo (a failed record, a rolled-back batch, another runner's commit).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from pathlib import Path

import pytest

from journal_loader import run
from journal_loader.config import config_from_dict
from journal_loader.errors import AmbiguousMatchError, IntegrityConflictError, ValidationError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.fuzzy import similarity
from journal_loader.graph.protocol import Entity
from journal_loader.storage import Store, open_store
from tests.support.graph import Direct, ScriptLoader, dlq, fact, propose_results, rows, write_script

TYPES = ["Company", "Person", "City", "Firm"]
RELS = ["LOCATED_IN", "OWNS", "EMPLOYS", "Legal_Counsel", "Opposing_Counsel"]


def _graph(store: Store, **kwargs: object) -> EmbeddedGraph:
    return EmbeddedGraph(store, node_types=TYPES, relationship_types=RELS, **kwargs)  # type: ignore[arg-type]


def _reasons(result: object) -> list[tuple[str, str | None, float | None]]:
    return [(a.action, a.match_reason, a.confidence) for a in result.actions[:2]]  # type: ignore[attr-defined]


def _nodes(store: Store) -> list[tuple[object, ...]]:
    return rows(store, "SELECT node_type, name, external_key FROM nodes ORDER BY id")


# --- entity resolution, in order ---------------------------------------------------------


def test_external_key_wins_over_the_name(store: Store) -> None:
    d = Direct(_graph(store), store)
    first = d.propose(("Company", "Acme Widgets", "C1"), ("City", "Springfield"), "LOCATED_IN")
    again = d.propose(("Company", "ACME WIDGETS (renamed)", "C1"), ("City", "Springfield"), "OWNS")
    assert first.actions[0].match_reason == "new_entity"
    assert again.source_entity_id == first.source_entity_id
    assert _reasons(again)[0] == ("entity_matched", "external_key", 1.0)
    assert again.overall_confidence == 1.0
    assert len(_nodes(store)) == 2


def test_exact_normalised_name_within_the_type(store: Store) -> None:
    d = Direct(_graph(store), store)
    first = d.propose(("Company", "Acme Widgets, Inc."), ("City", "Springfield"), "LOCATED_IN")
    again = d.propose(("Company", "ACME  WIDGETS INC"), ("City", "SPRINGFIELD"), "LOCATED_IN")
    other_type = d.propose(("Firm", "Acme Widgets Inc"), ("City", "Springfield"), "LOCATED_IN")
    assert again.source_entity_id == first.source_entity_id
    assert _reasons(again) == [
        ("entity_matched", "exact_name_match", 1.0),
        ("entity_matched", "exact_name_match", 1.0),
    ]
    assert other_type.source_entity_id != first.source_entity_id  # names match within a type
    assert other_type.actions[0].match_reason == "new_entity"


def test_keyed_entity_adopts_the_keyless_node_of_its_name(store: Store) -> None:
    d = Direct(_graph(store), store)
    agent = d.propose(("Company", "CT Corporation System"), ("Company", "Acme", "C1"), "OWNS")
    own = d.propose(("Company", "CT CORPORATION SYSTEM", "C9"), ("City", "Chicago"), "LOCATED_IN")
    assert own.source_entity_id == agent.source_entity_id
    assert own.actions[0].match_reason == "exact_name_match"
    assert ("Company", "CT Corporation System", "C9") in _nodes(store)


def test_same_name_different_keys_stay_two_and_a_keyless_mention_is_ambiguous(
    store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "Acme", "C1"), ("City", "Springfield"), "LOCATED_IN")],
            [fact(("Company", "ACME", "C2"), ("City", "Shelbyville"), "LOCATED_IN")],
            [fact(("Person", "Jo"), ("Company", "Acme"), "EMPLOYS")],
        ],
    )
    report = run(ScriptLoader, script, store=store, graph=_graph(store))
    assert report.statistics.successful == 2 and report.statistics.failed == 1
    stage, error_type, message = dlq(store)[2]
    assert (stage, error_type) == ("propose", "AmbiguousMatchError")
    assert "matches 2 entities by exact name" in message
    assert "'C1'" in message and "'C2'" in message  # the candidates are named
    assert len([n for n in _nodes(store) if n[0] == "Company"]) == 2
    assert not rows(store, "SELECT 1 FROM nodes WHERE node_type = 'Person'")  # undone


def _cache_story(d: Direct) -> list[tuple[object, ...]]:
    """Names, aliases, adoption and relationships coming back batch after batch: each
    answer's match reasons and node ids, and the relationship's action."""
    script: list[tuple[object, object, str, float]] = [
        (
            Entity(
                type="Company",
                name="Intl Business Machines",
                key="C1",
                attributes={"nameAlias": ["IBM", "Big Blue"]},
            ),
            ("City", "Armonk"),
            "LOCATED_IN",
            0.5,
        ),
        (("Company", "ibm."), ("City", "Armonk"), "LOCATED_IN", 0.5),  # alias, duplicate
        (("Company", "CT Corp"), ("City", "Chicago"), "LOCATED_IN", 0.5),
        (("Company", "Big Blue"), ("City", "Armonk"), "LOCATED_IN", 0.8),  # alias, updated
        (("Company", "CT CORP", "C9"), ("City", "Chicago"), "LOCATED_IN", 0.5),  # adopts
        (("Company", "IBM"), ("City", "Armonk"), "OWNS", 0.5),  # alias again
        (("Company", "ct corp", "C10"), ("City", "Chicago"), "LOCATED_IN", 0.5),  # C9's: new
        (("Company", "ct corp"), ("City", "Chicago"), "LOCATED_IN", 0.5),  # ambiguous: C9, C10
        (("Company", "X", "C1"), ("City", "armonk"), "LOCATED_IN", 0.9),  # key, updated
        (("Company", "big blue"), ("City", "Chicago"), "LOCATED_IN", 0.5),
        (("Company", "Intl Business Machines"), ("City", "Armonk"), "OWNS", 0.5),
    ]
    out: list[tuple[object, ...]] = []
    for _round in range(2):
        for source, target, rel, strength in script:
            try:
                r = d.propose(source, target, rel, strength=strength)
            except AmbiguousMatchError:
                out.append(("ambiguous",))
                continue
            out.append(
                (
                    [(a.action, a.match_reason) for a in r.actions],
                    r.source_entity_id,
                    r.target_entity_id,
                )
            )
    return out


def test_bounded_caches_give_the_same_answers(tmp_path: Path) -> None:
    """Issue 11: past ``cache_limit`` entries the caches of committed rows drop their older
    half between batches (everything, once the graph has given keys to many nodes); the
    answers stay those of caches that keep everything. Each fact is a batch of its own, so
    the caches are cut after nearly every one, at every limit below."""
    answers = {}
    for limit in (1, 3, 5, 8, 13, 1_000_000):
        store = open_store(f"sqlite:///{tmp_path / f'limit{limit}.db'}")
        try:
            answers[limit] = _cache_story(Direct(_graph(store, cache_limit=limit), store))
        finally:
            store.dispose()
    reasons = {a[1] for answer in answers[1_000_000] if len(answer) > 1 for a in answer[0]}
    assert {"alias_match", "exact_name_match", "external_key", "new_entity"} <= reasons
    assert ("ambiguous",) in answers[1_000_000]
    for limit, got in answers.items():
        assert got == answers[1_000_000], limit


def test_alias_match_through_name_alias_attributes(store: Store) -> None:
    d = Direct(_graph(store), store)
    created = d.propose(
        Entity(
            type="Company",
            name="International Business Machines",
            key="C1",
            attributes={"nameAlias": ["IBM", "Big Blue"]},
        ),
        ("City", "Armonk"),
        "LOCATED_IN",
    )
    by_alias = d.propose(("Company", "ibm."), ("City", "Armonk"), "LOCATED_IN")
    assert by_alias.source_entity_id == created.source_entity_id
    assert _reasons(by_alias)[0] == ("entity_matched", "alias_match", 0.9)
    assert by_alias.overall_confidence == 0.9
    # in the same batch as the alias's creation too (the alias is in the cache, not committed)
    with d.batch() as g:
        with d.record():
            g.propose_fact(
                Entity(type="Person", name="Robert Smith", attributes={"nameAlias": "Bob Smith"}),
                ("City", "Armonk"),
                "LOCATED_IN",
            )
        with d.record():
            same = g.propose_fact(("Person", "BOB SMITH"), ("City", "Armonk"), "LOCATED_IN")
    assert same.actions[0].match_reason == "alias_match"
    assert [n for n in _nodes(store) if n[0] == "Person"] == [("Person", "Robert Smith", None)]


def test_alias_matches_after_the_exact_name_and_a_keyed_entity_takes_only_keyless_nodes(
    store: Store,
) -> None:
    d = Direct(_graph(store), store)
    d.propose(
        Entity(type="Company", name="Alpha", attributes={"nameAlias": "Beta"}),
        ("City", "X"),
        "LOCATED_IN",
    )
    exact = d.propose(("Company", "Beta Two"), ("City", "X"), "LOCATED_IN")
    assert exact.actions[0].match_reason == "new_entity"
    keyed = d.propose(("Company", "Beta", "K7"), ("City", "X"), "LOCATED_IN")
    assert keyed.actions[0].match_reason == "alias_match"  # Alpha had no key: it gets K7
    assert ("Company", "Alpha", "K7") in _nodes(store)
    other_key = d.propose(("Company", "Beta", "K8"), ("City", "X"), "LOCATED_IN")
    assert other_key.actions[0].match_reason == "new_entity"  # Alpha is K7 now


def test_ambiguous_alias_goes_to_the_dlq(store: Store, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [
                fact(
                    {"type": "Company", "name": "Alpha", "attributes": {"nameAlias": "AB"}},
                    ("City", "X"),
                    "LOCATED_IN",
                ),
                fact(
                    {"type": "Company", "name": "Bravo", "attributes": {"nameAlias": "Ab."}},
                    ("City", "X"),
                    "LOCATED_IN",
                ),
            ],
            [fact(("Company", "ab"), ("City", "X"), "LOCATED_IN")],
        ],
    )
    report = run(ScriptLoader, script, store=store, graph=_graph(store))
    assert report.statistics.failed == 1
    _stage, error_type, message = dlq(store)[1]
    assert error_type == "AmbiguousMatchError" and "by alias" in message
    assert "'alpha'" in message and "'bravo'" in message


def test_fuzzy_matching_is_off_unless_the_config_turns_it_on(store: Store) -> None:
    d = Direct(_graph(store), store)
    d.propose(("Company", "Acme Widgets Incorporated"), ("City", "X"), "LOCATED_IN")
    near = d.propose(("Company", "Acme Widget Incorporated"), ("City", "X"), "LOCATED_IN")
    assert near.actions[0].match_reason == "new_entity"
    assert _graph(store).fuzzy_backend is None


def test_fuzzy_match_per_type_with_its_threshold(store: Store) -> None:
    graph = _graph(store, fuzzy={"Company": 0.8, "Person": 0.95})
    d = Direct(graph, store)
    a = "Acme Widgets Incorporated"
    b = "Acme Widget Incorporated"
    score = similarity(a, b)
    assert 0.8 <= score < 0.95
    first = d.propose(("Company", a), ("City", "X"), "LOCATED_IN")
    near = d.propose(("Company", b), ("City", "X"), "LOCATED_IN")
    assert near.source_entity_id == first.source_entity_id
    assert _reasons(near)[0] == ("entity_matched", "fuzzy_match", round(score, 6))
    assert near.overall_confidence == round(score, 6)
    # the same pair of names on a type with a higher threshold: two entities
    d.propose(("Person", a), ("City", "X"), "LOCATED_IN")
    person = d.propose(("Person", b), ("City", "X"), "LOCATED_IN")
    assert person.actions[0].match_reason == "new_entity"
    # far below the threshold: a new entity
    far = d.propose(("Company", "Acme Gadgets Limited"), ("City", "X"), "LOCATED_IN")
    assert far.actions[0].match_reason == "new_entity"
    # accents fold: "Núñez" and "Nunez" are fuzzily (here: exactly) the same key
    d.propose(("Company", "Núñez Properties LLC"), ("City", "X"), "LOCATED_IN")
    folded = d.propose(("Company", "Nunez Properties LLC"), ("City", "X"), "LOCATED_IN")
    assert _reasons(folded)[0] == ("entity_matched", "fuzzy_match", 1.0)
    if store.dialect == "postgresql":
        assert graph.fuzzy_backend == "pg_trgm"
    else:
        assert graph.fuzzy_backend == "memory"


def test_fuzzy_names_outside_latin_script_are_never_fuzzily_merged(store: Store) -> None:
    d = Direct(_graph(store, fuzzy={"Company": 0.5}), store)
    d.propose(("Company", "北京 Trading"), ("City", "X"), "LOCATED_IN")
    other = d.propose(("Company", "上海 Trading"), ("City", "X"), "LOCATED_IN")
    assert other.actions[0].match_reason == "new_entity"
    exact = d.propose(("Company", "北京  TRADING"), ("City", "X"), "LOCATED_IN")
    assert exact.actions[0].match_reason == "exact_name_match"


def test_fuzzy_ambiguous_match_goes_to_the_dlq_with_the_candidates(
    store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "Acme Widgets Incorporated"), ("City", "X"), "LOCATED_IN")],
            [fact(("Company", "Acme Widgetz Incorporated", "C2"), ("City", "X"), "LOCATED_IN")],
            [fact(("Company", "Acme Widget Incorporated"), ("City", "X"), "LOCATED_IN")],
        ],
    )
    graph = _graph(store, fuzzy={"Company": 0.7})
    report = run(ScriptLoader, script, store=store, graph=graph)
    # record 1 has a key: it may only adopt a keyless node, and record 0's is one: adopted
    results = propose_results(store)
    assert results[1][0].actions[0].match_reason == "fuzzy_match"
    assert report.statistics.failed == 0
    # now two keyed candidates of one name family: a keyless near-name is ambiguous
    script2 = write_script(
        tmp_path / "facts2.jsonl",
        [
            [fact(("Company", "Bolt Fasteners Company", "B1"), ("City", "X"), "LOCATED_IN")],
            [fact(("Company", "Bolt Fastener Company", "B2"), ("City", "X"), "LOCATED_IN")],
            [fact(("Company", "Bolt Fasteners Compan"), ("City", "X"), "LOCATED_IN")],
        ],
    )
    report = run(ScriptLoader, script2, store=store, graph=_graph(store, fuzzy={"Company": 0.7}))
    assert report.statistics.failed == 1 and report.statistics.successful == 2
    stage, error_type, message = dlq(store)[2]
    assert (stage, error_type) == ("propose", "AmbiguousMatchError")
    assert "fuzzily (similarity >= 0.7)" in message
    assert "'B1'" in message and "'B2'" in message
    assert not rows(store, "SELECT 1 FROM nodes WHERE norm_name = 'bolt fasteners compan'")


def test_fuzzy_scores_are_the_same_on_both_backends(store: Store) -> None:
    """The same names, the same decisions and confidences, whatever the backend: every
    confidence equals the pure-Python similarity (which equals pg_trgm's, see
    test_graph_fuzzy.py)."""
    graph = _graph(store, fuzzy={"Company": 0.6})
    d = Direct(graph, store)
    names = [
        "Riverside Dental Group",
        "Riverside Dental Grp",
        "Riverside Dentl Group",
        "Lakeside Dental Group",
        "Riverside Dental Group of Ohio",
        "R1verside Dental Group",
    ]
    seen: list[tuple[str, str | None, float | None]] = []
    for name in names:
        with d.batch() as g, d.record():
            result = g.propose_fact(("Company", name), ("City", "X"), "LOCATED_IN")
        action = result.actions[0]
        seen.append((name, action.match_reason, action.confidence))
        if action.match_reason == "fuzzy_match":
            target = rows(store, "SELECT name FROM nodes WHERE id = :i", i=result.source_entity_id)
            assert action.confidence == round(similarity(name, target[0][0]), 6)
    expected = [
        ("Riverside Dental Group", "new_entity", 1.0),
        ("Riverside Dental Grp", "fuzzy_match", round(similarity(names[1], names[0]), 6)),
        ("Riverside Dentl Group", "fuzzy_match", round(similarity(names[2], names[0]), 6)),
        ("Lakeside Dental Group", "new_entity", 1.0),  # 0.55 from the first: below 0.6
        ("Riverside Dental Group of Ohio", "fuzzy_match", round(similarity(names[4], names[0]), 6)),
        ("R1verside Dental Group", "fuzzy_match", round(similarity(names[5], names[0]), 6)),
    ]
    assert seen == expected


# --- relationships -----------------------------------------------------------------------


def test_duplicate_and_updated_relationships_keep_validity_and_metadata(store: Store) -> None:
    d = Direct(_graph(store), store)
    src, tgt = ("Person", "Jo"), ("Company", "Acme")
    created = d.propose(
        src,
        tgt,
        "EMPLOYS",
        strength=0.5,
        valid_from=dt.date(2020, 1, 1),
        metadata={"title": "CFO"},
    )
    dup = d.propose(src, tgt, "EMPLOYS", strength=0.5)
    lower = d.propose(src, tgt, "EMPLOYS", strength=0.2, valid_to=dt.date(2021, 1, 1))
    updated = d.propose(src, tgt, "EMPLOYS", strength=0.9, valid_to=dt.date(2022, 6, 30))
    assert created.actions[2].action == "relationship_created"
    assert dup.actions[2].action == "relationship_duplicate"
    assert lower.actions[2].action == "relationship_duplicate"
    assert updated.actions[2].action == "relationship_updated"
    assert created.relationship_id == dup.relationship_id == updated.relationship_id
    (rel,) = rows(store, "SELECT strength, valid_from, valid_to, metadata FROM relationships")
    assert rel[0] == 0.9
    assert str(rel[1]) == "2020-01-01"  # kept: the update did not give one
    assert str(rel[2]) == "2022-06-30"  # replaced by the update
    assert json.loads(rel[3]) == {"title": "CFO"}


def test_relationship_statistics_through_the_runner(store: Store, tmp_path: Path) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Person", "Jo"), ("Company", "Acme"), "EMPLOYS", strength=0.5)],
            [fact(("Person", "Jo"), ("Company", "Acme"), "EMPLOYS", strength=0.5)],
            [fact(("Person", "Jo"), ("Company", "Acme"), "EMPLOYS", strength=0.8)],
        ],
    )
    report = run(ScriptLoader, script, store=store, graph=_graph(store))
    s = report.statistics
    assert (s.relationships_created, s.relationships_duplicate, s.relationships_updated) == (
        1,
        1,
        1,
    )
    assert (s.entities_created, s.entities_matched) == (2, 4)


def test_opposing_relationship_is_a_conflict_stored_with_the_penalty(
    store: Store, tmp_path: Path
) -> None:
    config = config_from_dict(
        {
            "graph": {
                "node_types": TYPES,
                "relationship_types": RELS,
                "opposing_relationships": [["Legal_Counsel", "Opposing_Counsel"]],
                "conflict_penalty": 0.6,
            }
        }
    )
    firm, client = ("Firm", "Dewey & Partners"), ("Company", "Acme")
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(firm, client, "Legal_Counsel", strength=1.0)],
            [fact(firm, client, "Opposing_Counsel", strength=0.5)],
            [fact(firm, client, "Opposing_Counsel", strength=0.5)],  # same: a duplicate
            [fact(client, firm, "Opposing_Counsel")],  # the other direction: no conflict
        ],
    )
    graph = EmbeddedGraph.from_config(store, config)
    report = run(ScriptLoader, script, store=store, graph=graph)
    results = propose_results(store)
    assert results[0][0].status == "success"
    conflicted = results[1][0]
    assert conflicted.status == "conflicts"
    legal_id = results[0][0].relationship_id
    assert [c.relationship_id for c in conflicted.conflicts] == [legal_id]
    assert conflicted.conflicts[0].relationship_type == "Legal_Counsel"
    assert [a.action for a in conflicted.actions[2:]] == [
        "relationship_created",
        "relationship_conflicted",
    ]
    assert results[2][0].status == "conflicts"
    assert results[2][0].actions[2].action == "relationship_duplicate"
    assert results[3][0].status == "success"
    strengths = dict(rows(store, "SELECT rel_type, strength FROM relationships WHERE strength < 1"))
    assert strengths == {"Opposing_Counsel": pytest.approx(0.5 * 0.6)}
    assert report.statistics.conflicts_detected == 2
    assert report.statistics.successful == 4  # a conflict is stored, not a failure


def test_conflict_within_one_batch_and_default_penalty(store: Store) -> None:
    graph = _graph(store, opposing=[("Legal_Counsel", "Opposing_Counsel")])
    d = Direct(graph, store)
    with d.batch() as g:
        with d.record():
            g.propose_fact(("Firm", "F"), ("Company", "C"), "Opposing_Counsel", strength=0.8)
        with d.record():
            r = g.propose_fact(("Firm", "F"), ("Company", "C"), "Legal_Counsel")
    assert r.status == "conflicts" and len(r.conflicts) == 1
    assert rows(store, "SELECT strength FROM relationships WHERE rel_type = 'Legal_Counsel'") == [
        (pytest.approx(0.7),)
    ]


# --- types ---------------------------------------------------------------------------------


def test_unknown_types_fail_the_record_at_validate_with_a_clear_message(
    store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "Acme"), ("City", "X"), "LOCATED_IN")],
            [fact(("Planet", "Mars"), ("City", "X"), "LOCATED_IN")],
            [
                fact(("Company", "Beta"), ("City", "Y"), "LOCATED_IN"),
                fact(("Company", "Beta"), ("City", "Y"), "ORBITS"),
            ],
        ],
    )
    report = run(ScriptLoader, script, store=store, graph=_graph(store))
    assert report.statistics.successful == 1 and report.statistics.failed == 2
    failures = dlq(store)
    assert failures[1][:2] == ("validate", "ValidationError")
    assert "unknown node type 'Planet'" in failures[1][2] and "Company" in failures[1][2]
    assert failures[2][:2] == ("validate", "ValidationError")
    assert "unknown relationship type 'ORBITS'" in failures[2][2]
    assert not rows(store, "SELECT 1 FROM nodes WHERE name = 'Beta'")  # the record is undone


def test_values_the_fact_breaks_are_validation_errors(store: Store) -> None:
    d = Direct(_graph(store), store)
    for bad in (
        {"strength": 1.5},
        {"confidence": -0.1},
        {"valid_from": dt.date(2021, 1, 1), "valid_to": dt.date(2020, 1, 1)},
        {"valid_from": "not a date"},
    ):
        with pytest.raises(ValidationError):
            d.propose(("Company", "A"), ("City", "X"), "LOCATED_IN", **bad)  # type: ignore[arg-type]
    ok = d.propose(("Company", "A"), ("City", "X"), "LOCATED_IN", valid_from="2020-02-03")  # type: ignore[arg-type]
    assert ok.status == "success"
    assert [str(r[0]) for r in rows(store, "SELECT valid_from FROM relationships")] == [
        "2020-02-03"
    ]


# --- provenance ----------------------------------------------------------------------------


def test_provenance_traces_every_subject_to_each_record_with_its_confidence(
    store: Store, tmp_path: Path
) -> None:
    company = {"type": "Company", "name": "Acme", "key": "C1", "attributes": {"sector": "tools"}}
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(company, ("City", "X"), "LOCATED_IN", confidence=0.75)],
            [
                fact(("Person", "Jo"), ("Company", "Acme", "C1"), "EMPLOYS", confidence=0.6),
                fact(company, ("City", "X"), "LOCATED_IN", confidence=0.95),
            ],
        ],
    )
    report = run(ScriptLoader, script, store=store, graph=_graph(store))
    source_id = report.source_id
    lineage = rows(
        store,
        """SELECT p.subject_kind, COALESCE(n.name, an.name || '.' || a.attr_type, r.rel_type),
                  p.source_id, p.record_offset, p.fact_index, p.confidence
           FROM provenance p
           LEFT JOIN nodes n ON p.subject_kind = 'node' AND n.id = p.subject_id
           LEFT JOIN attributes a ON p.subject_kind = 'attribute' AND a.id = p.subject_id
           LEFT JOIN nodes an ON an.id = a.node_id
           LEFT JOIN relationships r ON p.subject_kind = 'relationship' AND r.id = p.subject_id
           ORDER BY p.record_offset, p.fact_index, p.subject_kind, 2""",
    )
    assert lineage == [
        ("attribute", "Acme.sector", source_id, 0, 0, 0.75),
        ("node", "Acme", source_id, 0, 0, 0.75),
        ("node", "X", source_id, 0, 0, 0.75),
        ("relationship", "LOCATED_IN", source_id, 0, 0, 0.75),
        ("node", "Acme", source_id, 1, 0, 0.6),
        ("node", "Jo", source_id, 1, 0, 0.6),
        ("relationship", "EMPLOYS", source_id, 1, 0, 0.6),
        ("attribute", "Acme.sector", source_id, 1, 1, 0.95),
        ("node", "X", source_id, 1, 1, 0.95),
        ("relationship", "LOCATED_IN", source_id, 1, 1, 0.95),
    ]
    # the results name the provenance rows they wrote
    results = propose_results(store)
    prov_ids = {r[0] for r in rows(store, "SELECT id FROM provenance")}
    written = [i for rs in results.values() for r in rs for i in r.provenance_ids]
    assert sorted(written) == sorted(prov_ids)


def test_a_subject_twice_in_one_fact_has_provenance_twice(store: Store, tmp_path: Path) -> None:
    """A self-loop's node, and a value given twice, are each subjects twice in the fact
    that first asserts them: a provenance id (and row) each time; a later fact of the record
    asserts them again without one. Pinned as it was before the record's provenance was kept
    per kind (the ids reserved in the fact's subject order: source node, target node,
    attributes, relationship)."""
    acme = {"type": "Company", "name": "Acme", "attributes": {"tag": ["a", "a"], "sector": "x"}}
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [
                fact(acme, acme, "OWNS", confidence=0.5),
                fact(acme, ("City", "X"), "LOCATED_IN", confidence=0.9),
            ]
        ],
    )
    run(ScriptLoader, script, store=store, graph=_graph(store))
    [first, second] = propose_results(store)[0]
    acme_id, x_id = first.source_entity_id, second.target_entity_id
    assert first.target_entity_id == acme_id
    tag, sector = first.attribute_ids[:3:2]
    assert first.attribute_ids == [tag, tag, sector, tag, tag, sector]
    p = first.provenance_ids
    assert len(p) == 9 and p == sorted(p)
    q = second.provenance_ids
    assert len(q) == 2 and p[-1] < q[0] < q[1]
    record = q[1]
    assert rows(store, "SELECT id, record_offset, confidence FROM provenance_records") == [
        (record, 0, 0.9)
    ]
    subjects = [
        ("node", acme_id, p[0], 0, 0.5),
        ("node", acme_id, p[1], 0, 0.5),
        *(("attribute", a, i, 0, 0.5) for a, i in zip(first.attribute_ids, p[2:8], strict=True)),
        ("relationship", first.relationship_id, p[8], 0, 0.5),
        ("node", x_id, q[0], 1, None),
        ("relationship", second.relationship_id, record, 1, None),
    ]
    stored = []
    for kind in ("node", "attribute", "relationship"):
        # the kind's table, and the created rows' own columns (the creating record's
        # assertion, migration 0011): stored once each, the confidence only where it differs
        stored += [
            (kind, *r)
            for r in rows(
                store,
                f"SELECT subject_id, id, fact_index, confidence FROM provenance_{kind}s "
                "WHERE record_id = :r "
                f"UNION ALL SELECT id, prov_id, prov_fact_index, prov_confidence FROM {kind}s "
                "WHERE prov_record_id = :r ORDER BY 2",
                r=record,
            )
        ]
    assert sorted(stored, key=lambda r: r[2]) == subjects


# --- caches: undo, rollback, other runners -------------------------------------------------


def test_a_failed_record_leaves_no_alias_and_no_fuzzy_name_behind(store: Store) -> None:
    graph = _graph(store, fuzzy={"Company": 0.8})
    d = Direct(graph, store)
    with d.batch() as g:
        with pytest.raises(ValidationError), d.record():
            g.propose_fact(
                Entity(type="Company", name="Zephyr Holdings", attributes={"nameAlias": "ZH"}),
                ("City", "X"),
                "LOCATED_IN",
            )
            g.propose_fact(("Company", "Zephyr Holdings"), ("City", "X"), "NOPE")
        with d.record():
            alias = g.propose_fact(("Company", "ZH"), ("City", "X"), "LOCATED_IN")
        with d.record():
            near = g.propose_fact(("Company", "Zephyr Holding"), ("City", "X"), "LOCATED_IN")
    assert alias.actions[0].match_reason == "new_entity"
    assert near.actions[0].match_reason == "new_entity"
    assert sorted(n[1] for n in _nodes(store) if n[0] == "Company") == ["ZH", "Zephyr Holding"]


def test_a_rolled_back_batch_leaves_nothing_in_the_caches(store: Store) -> None:
    graph = _graph(store, fuzzy={"Company": 0.7})
    d = Direct(graph, store)
    with pytest.raises(RuntimeError), d.batch() as g:
        with d.record():
            g.propose_fact(
                Entity(
                    type="Company",
                    name="Quillon Laboratories",
                    key="Q1",
                    attributes={"nameAlias": "QL"},
                ),
                ("City", "X"),
                "LOCATED_IN",
            )
        raise RuntimeError("the batch fails after the record")
    for name, key in (("QL", None), ("Quillon Laboratory", None), ("Other", "Q1")):
        r = d.propose(("Company", name, key), ("City", "X"), "LOCATED_IN")
        assert r.actions[0].match_reason == "new_entity", name


def test_stale_cache_heals_after_another_runner_commits_the_same_entity(
    db_url: str,
) -> None:
    """Runner A cached "no such node"; runner B then created it; A's insert breaks the
    unique index, the batch rolls back, and the retry matches B's node."""
    store_a, store_b = open_store(db_url), open_store(db_url)
    try:
        a, b = Direct(_graph(store_a), store_a), Direct(_graph(store_b), store_b)
        # A looks "Acme" up (absent) in a record that then fails: the record's node is taken
        # back, the answer "absent" stays cached, and A's batch commits
        with a.batch() as g, contextlib.suppress(RuntimeError), a.record():
            g.propose_fact(("Company", "Acme"), ("City", "X"), "LOCATED_IN")
            raise RuntimeError("the record fails after its lookup")
        assert not rows(store_a, "SELECT 1 FROM nodes")
        b.propose(("Company", "Acme"), ("City", "X"), "LOCATED_IN")
        with pytest.raises(IntegrityConflictError), a.batch() as g, a.record():
            g.propose_fact(("Company", "Acme"), ("City", "Y"), "LOCATED_IN")
        retry = a.propose(("Company", "Acme"), ("City", "Y"), "LOCATED_IN")
        assert retry.actions[0].match_reason == "exact_name_match"
        assert len(rows(store_a, "SELECT 1 FROM nodes WHERE name = 'Acme'")) == 1
    finally:
        store_a.dispose()
        store_b.dispose()


@pytest.mark.postgres
def test_concurrent_runners_create_one_node(pg_url: str) -> None:
    """Two batches open at once both decide to create "Acme"; the second to commit is refused
    by uq_nodes_type_name_unkeyed, rolls back, and its retry matches the first's node."""
    store_a, store_b = open_store(pg_url), open_store(pg_url)
    try:
        a, b = Direct(_graph(store_a), store_a), Direct(_graph(store_b), store_b)
        with pytest.raises(IntegrityConflictError), a.batch() as ga, a.record():
            ga.propose_fact(("Company", "Acme"), ("City", "X"), "LOCATED_IN")
            b.propose(("Company", "Acme"), ("City", "Y"), "LOCATED_IN")  # commits first
        retry = a.propose(("Company", "Acme"), ("City", "X"), "LOCATED_IN")
        assert retry.actions[0].match_reason == "exact_name_match"
        assert len(rows(store_a, "SELECT 1 FROM nodes WHERE node_type = 'Company'")) == 1
    finally:
        store_a.dispose()
        store_b.dispose()


def test_ambiguous_error_carries_the_candidates_in_its_details(store: Store) -> None:
    d = Direct(_graph(store), store)
    d.propose(("Company", "Twin", "T1"), ("City", "X"), "LOCATED_IN")
    d.propose(("Company", "Twin", "T2"), ("City", "X"), "LOCATED_IN")
    with pytest.raises(AmbiguousMatchError) as caught:
        d.propose(("Company", "TWIN"), ("City", "X"), "LOCATED_IN")
    details = caught.value.details
    assert details["match_reason"] == "exact_name_match"
    assert sorted(c["external_key"] for c in details["candidates"]) == ["T1", "T2"]


def test_an_alias_another_runner_committed_is_found(db_url: str) -> None:
    store_a, store_b = open_store(db_url), open_store(db_url)
    try:
        b = Direct(_graph(store_b), store_b)
        b.propose(("Company", "Acme"), ("City", "X"), "LOCATED_IN")  # B knows of no alias yet
        a = Direct(_graph(store_a), store_a)
        a.propose(
            Entity(type="Company", name="Widget Holdings", attributes={"nameAlias": "WH"}),
            ("City", "X"),
            "LOCATED_IN",
        )
        found = b.propose(("Company", "wh"), ("City", "X"), "LOCATED_IN")
        assert found.actions[0].match_reason == "alias_match"
    finally:
        store_a.dispose()
        store_b.dispose()
