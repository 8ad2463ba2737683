"""Loaders without code (issue 3 §3): the YAML ``facts:`` mapping (journal_loader/facts.py).

The business-registry example written both ways (loader.py and facts.yaml) builds the same
graph on both backends; every kind of value, condition, check and skip does what the
docstring says; a mapping that names something that does not exist is refused when the
config is loaded, with the place named.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text

from journal_loader import run
from journal_loader.config import config_from_dict
from journal_loader.errors import ConfigError
from journal_loader.factory import loader_from_config
from journal_loader.facts import FactsLoader
from journal_loader.journal.events import RecordParsed
from journal_loader.journal.queries import events_after
from journal_loader.storage import Store, open_store
from tests.support.example import EXAMPLE_DATA, EXAMPLE_DIR, LoadedExample
from tests.support.graph import dlq, propose_results, rows
from tests.support.loaders import write_csv
from tests.support.snapshots import dlq_snapshot, graph_snapshot, sources_snapshot

FACTS_CONFIG = EXAMPLE_DIR / "facts.yaml"


def _parsed_records(store: Store) -> list[tuple[int, Any]]:
    """Each RecordParsed's record, as the journal's readers see it (a version-3 payload
    leaves out a record its text rebuilds: journal_loader/journal/parsed.py)."""
    with store.transaction() as tx:
        events = events_after(tx, 0, limit=1_000_000)
    out = [
        (int(e.record_offset), e.event.record)
        for e in events
        if e.event_type == "RecordParsed"
        and isinstance(e.event, RecordParsed)
        and e.record_offset is not None
    ]
    return sorted(out, key=lambda pair: pair[0])


def _skips(store: Store) -> list[tuple[int, str]]:
    with store.read() as conn:
        out = conn.execute(
            text(
                "SELECT record_offset, payload FROM journal WHERE event_type = 'RecordSkipped' "
                "ORDER BY record_offset"
            )
        )
        return [(int(o), json.loads(p)["reason"]) for o, p in out]


def test_the_example_both_ways_builds_the_same_graph(
    example_journal: LoadedExample, tmp_path: Path
) -> None:
    python_db, by_python = example_journal  # run(config=EXAMPLE_CONFIG, ...), shared
    if python_db.startswith("sqlite"):
        yaml_db = f"sqlite:///{tmp_path / 'facts.db'}"
        cleanup = None
    else:
        from tests.support.pg import drop_pg_schema, make_pg_schema

        yaml_db, cleanup = make_pg_schema()
    try:
        by_yaml = run(config=FACTS_CONFIG, file=EXAMPLE_DATA, db=yaml_db)
        assert by_python.status == by_yaml.status == "completed"
        assert by_yaml.statistics == by_python.statistics
        assert (by_yaml.statistics.failed, by_yaml.statistics.skipped) == (21, 15)
        a, b = open_store(python_db), open_store(yaml_db)
        try:
            graph_a, graph_b = graph_snapshot(a), graph_snapshot(b)
            for table in ("nodes", "attributes", "relationships", "provenance"):
                assert graph_a[table], table
                assert graph_a[table] == graph_b[table], table
            assert dlq_snapshot(a) == dlq_snapshot(b)  # same records, stages and messages
            assert sources_snapshot(a) == sources_snapshot(b)
            assert _parsed_records(a) == _parsed_records(b)  # the same records, field by field
            assert _skips(a) == _skips(b)
        finally:
            a.dispose()
            b.dispose()
    finally:
        if cleanup:
            drop_pg_schema(cleanup)


def test_a_facts_section_makes_the_loader(tmp_path: Path) -> None:
    config = config_from_dict(yaml.safe_load(FACTS_CONFIG.read_text()), base_dir=EXAMPLE_DIR)
    loader = loader_from_config(config)
    assert isinstance(loader, FactsLoader)
    assert (loader.name, loader.source_type) == ("business_registry", "business_registry")


# --- the short form, values, conditions ------------------------------------------------------


def _load(
    tmp_path: Path, facts: Any, header: list[str], data: list[list[str]], **config: Any
) -> tuple[Any, Store]:
    path = write_csv(tmp_path / "input.csv", header, data)
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    report = run(config={"facts": facts, **config}, file=path, db=db)
    return report, open_store(db)


def test_the_short_form_is_a_list_of_facts_over_columns(tmp_path: Path) -> None:
    facts = [
        {
            "source": {"type": "Company", "name": "Legal Name", "key": "Corp Number"},
            "target": {"type": "City", "name": "{City}, {State}"},
            "relationship": "LOCATED_IN",
            "when": {"present": ["City", "State"]},
        }
    ]
    report, store = _load(
        tmp_path,
        facts,
        ["Corp Number", "Legal Name", "City", "State"],
        [["C1", "  Acme   Widgets ", "Springfield", "IL"], ["", "Beta", "", "IL"]],
    )
    try:
        assert report.statistics.successful == 2
        assert rows(store, "SELECT node_type, name, external_key FROM nodes ORDER BY id") == [
            ("Company", "Acme Widgets", "C1"),  # whitespace collapsed
            ("City", "Springfield, IL", None),
        ]
        assert propose_results(store)[1] == []  # the fact's `when` did not hold
    finally:
        store.dispose()


def test_values_modifiers_and_fact_options(tmp_path: Path) -> None:
    facts = {
        "fields": {
            "person": "Name",
            "firm": {"column": "Firm", "upper": True},
            "kind": {"column": "Kind", "default": "employee", "lower": True},
            "since": {"column": "Since", "date": "MM/DD/YYYY"},
            "score": "Score",
            "label": {"template": "{Name} ({Firm})"},
            "parts": {"join": ["Name", {"value": "x"}, "Empty", "Firm"], "sep": "|"},
            "raw": {"column": "Name", "raw": True},
        },
        "facts": [
            {
                "source": {
                    "type": {"field": "firm", "matches": "(?i)\\bLLP$", "then": "Firm",
                             "else": "Company"},
                    "name": "firm",
                    "attributes": {"label": "label", "parts": "parts", "raw": "raw"},
                },
                "target": {"type": "Person", "name": "person",
                           "attributes": {"kind": "kind", "fixed": {"value": 7}}},
                "relationship": "EMPLOYS",
                "strength": "score",
                "confidence": 0.5,
                "valid_from": "since",
                "metadata": {"since": "since", "source": {"value": "hr"}},
            }
        ],
    }  # fmt: skip
    report, store = _load(
        tmp_path,
        facts,
        ["Name", "Firm", "Kind", "Since", "Score", "Empty"],
        [
            ["  Jo  Smith", "dewey & partners llp", "", "03/04/2020", "0.75", ""],
            ["Al", "acme inc", "CONTRACTOR", "", "1", ""],
        ],
    )
    try:
        assert report.statistics.successful == 2, dlq(store)
        nodes = rows(store, "SELECT node_type, name FROM nodes ORDER BY id")
        assert nodes == [
            ("Firm", "DEWEY & PARTNERS LLP"),
            ("Person", "Jo Smith"),
            ("Company", "ACME INC"),
            ("Person", "Al"),
        ]
        attrs = dict(
            (f"{n}.{t}", v)
            for n, t, v in rows(
                store,
                "SELECT n.name, a.attr_type, a.value FROM attributes a "
                "JOIN nodes n ON n.id = a.node_id",
            )
        )
        # in fields:, templates and joins read the row's columns (not the upper-cased field)
        assert attrs["DEWEY & PARTNERS LLP.label"] == "Jo Smith (dewey & partners llp)"
        assert attrs["DEWEY & PARTNERS LLP.parts"] == "Jo Smith|x|dewey & partners llp"
        assert attrs["DEWEY & PARTNERS LLP.raw"] == "  Jo  Smith"
        assert attrs["Jo Smith.kind"] == "employee" and attrs["Al.kind"] == "contractor"
        assert attrs["Jo Smith.fixed"] == "7"
        rels = rows(store, "SELECT strength, valid_from, metadata FROM relationships ORDER BY id")
        assert rels[0][0] == 0.75 and str(rels[0][1]) == "2020-03-04"
        assert json.loads(rels[0][2]) == {"since": "2020-03-04", "source": "hr"}
        assert rels[1][0] == 1.0 and rels[1][1] is None
        assert {r[0] for r in rows(store, "SELECT DISTINCT confidence FROM provenance")} == {0.5}
    finally:
        store.dispose()


def test_conditions_skips_and_checks(tmp_path: Path) -> None:
    facts = {
        "fields": {"name": "Name", "city": "City", "zip": "Zip", "country": "Country",
                   "opened": "Opened"},
        "skip": [
            {"when": {"empty": "name"}, "reason": "no name"},
            {"when": {"matches": {"name": "^#"}}, "reason": "a comment row"},
        ],
        "checks": [
            {"field": "zip", "matches": "^\\d{5}$", "when": {"equals": {"country": "US"}},
             "message": "zip {value!r} is not a US zip"},
            {"field": "opened", "date": "YYYY-MM-DD"},
        ],
        "facts": [
            {"source": {"type": "Company", "name": "name"},
             "target": {"type": "City", "name": "city"},
             "relationship": "LOCATED_IN",
             "when": {"present": "city", "not": {"equals": {"country": "XX"}}}},
        ],
    }  # fmt: skip
    report, store = _load(
        tmp_path,
        facts,
        ["Name", "City", "Zip", "Country", "Opened"],
        [
            ["Acme", "Springfield", "62701", "US", "2020-01-02"],  # 0 ok
            ["", "Springfield", "62701", "US", ""],  # 1 skipped: no name
            ["# note", "", "", "", ""],  # 2 skipped: comment
            ["Beta", "Lyon", "69001-X", "FR", ""],  # 3 ok: zip checked only in the US
            ["Gamma", "Austin", "7870", "US", ""],  # 4 fails: zip
            ["Delta", "Austin", "78701", "US", "02/01/2020"],  # 5 fails: date
            ["Eps", "Nowhere", "", "XX", ""],  # 6 ok, no fact: not(country XX) fails
        ],
    )
    try:
        s = report.statistics
        assert (s.successful, s.skipped, s.failed) == (3, 2, 2)
        assert _skips(store) == [(1, "no name"), (2, "a comment row")]
        failures = dlq(store)
        assert failures[4] == ("validate", "ValidationError", "zip '7870' is not a US zip")
        assert failures[5][2] == "opened '02/01/2020' is not a date in the format YYYY-MM-DD"
        assert propose_results(store)[6] == []
        assert len(propose_results(store)[3]) == 1
    finally:
        store.dispose()


def test_a_bad_date_in_a_value_fails_the_record_at_validate(tmp_path: Path) -> None:
    facts = [
        {
            "source": {"type": "Company", "name": "Name",
                       "attributes": {"since": {"column": "Since", "date": "MM/DD/YYYY"}}},
            "target": {"type": "City", "name": "City"},
            "relationship": "LOCATED_IN",
        }
    ]  # fmt: skip
    report, store = _load(
        tmp_path, facts, ["Name", "City", "Since"], [["A", "X", "13/45/2020"], ["B", "X", ""]]
    )
    try:
        assert (report.statistics.successful, report.statistics.failed) == (1, 1)
        stage, _type, message = dlq(store)[0]
        assert stage == "validate" and "'13/45/2020' is not a date in the format MM/DD/YYYY" in (
            message
        )
    finally:
        store.dispose()


def test_a_column_the_file_does_not_have_stops_the_run_with_its_name(tmp_path: Path) -> None:
    facts = [
        {
            "source": {"type": "Company", "name": "Legal Nmae"},
            "target": {"type": "City", "name": "City"},
            "relationship": "LOCATED_IN",
        }
    ]
    report, store = _load(tmp_path, facts, ["Legal Name", "City"], [["A", "X"]])
    store.dispose()
    assert report.status == "failed"
    assert "no column 'Legal Nmae'" in report.message and "'Legal Name'" in report.message


# --- refused when loaded -----------------------------------------------------------------------


def _config(facts: Any, **graph: Any) -> dict[str, Any]:
    return {"facts": facts, **({"graph": graph} if graph else {})}


FACT = {"source": "a", "target": "b", "relationship": "R"}
ENTITIES = {"a": {"type": "Company", "name": "n"}, "b": {"type": "City", "name": "c"}}


@pytest.mark.parametrize(
    ("facts", "graph", "expected"),
    [
        ({"fields": {"n": "N"}, "entities": ENTITIES, "facts": [FACT]}, {},
         "facts.entities.b.name: unknown field 'c'"),
        ({"fields": {"n": "N", "c": "C"}, "entities": ENTITIES,
          "facts": [{**FACT, "target": "nope"}]}, {},
         "facts.facts[0].target: unknown entity 'nope'"),
        ({"entities": ENTITIES, "facts": [FACT]}, {"node_types": ["Company"]},
         "facts.entities.b.type: 'City' is not one of graph.node_types"),
        ({"entities": ENTITIES, "facts": [FACT]}, {"relationship_types": ["S"]},
         "facts.facts[0].relationship: 'R' is not one of graph.relationship_types"),
        ({"entities": ENTITIES, "facts": [{**FACT, "when": {"matches": {"n": "("}}}]}, {},
         "invalid regular expression"),
        ({"entities": {**ENTITIES, "a": {"type": "Company", "name": "{n"}}, "facts": [FACT]},
         {}, "facts.entities.a.name: unbalanced brace"),
        ({"fields": {"x": {"field": "y"}}, "facts": [FACT]}, {},
         "fields are computed from the row's columns"),
        ({"entities": ENTITIES, "facts": [FACT],
          "checks": [{"field": "n", "matches": "x", "message": "{value.__class__}"}]}, {},
         "only {value} and {field} can be used"),
        ({"entities": ENTITIES, "facts": [FACT], "checks": [{"field": "n"}]}, {},
         "either matches (a regex) or date"),
        ({"entities": {**ENTITIES, "a": {"type": "Company", "name": {"field": "n",
                                                                     "column": "m"}}},
          "facts": [FACT]}, {}, "exactly one of field, column, template, join or value"),
        ({"facts": []}, {}, "facts.facts: List should have at least 1 item"),
        ({"facts": [{**FACT, "colour": "red"}], "entities": ENTITIES}, {},
         "facts.facts.0.colour: unknown key"),
    ],
)  # fmt: skip
def test_mappings_that_name_what_does_not_exist_are_refused(
    facts: Any, graph: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        FactsLoader(config_from_dict(_config(facts, **graph)))
    assert expected in str(caught.value)


def test_dates_from_jsonl_values_and_literals(tmp_path: Path) -> None:
    """JSONL values that are not text (numbers, null) pass through; templates render them."""
    path = tmp_path / "input.jsonl"
    path.write_text(
        json.dumps({"name": "Acme", "employees": 12, "since": None, "score": 0.4}) + "\n"
    )
    facts = [
        {
            "source": {"type": "Company", "name": "name",
                       "attributes": {"size": "{employees} people", "since": "since"}},
            "target": {"type": "City", "name": {"value": "Unknown"}},
            "relationship": "LOCATED_IN",
            "strength": "score",
        }
    ]  # fmt: skip
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    report = run(config={"facts": facts}, file=path, db=db)
    store = open_store(db)
    try:
        assert report.statistics.successful == 1, dlq(store)
        assert rows(store, "SELECT attr_type, value FROM attributes") == [("size", "12 people")]
        assert rows(store, "SELECT strength FROM relationships") == [(0.4,)]
    finally:
        store.dispose()
