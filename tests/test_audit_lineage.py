"""Lineage: from a node, attribute or relationship back to the records (file, line, bytes,
run, time, raw input) that asserted it, oldest first, on both backends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import Entity, Loader, ProposeClient, ProposeResult, run
from journal_loader.audit.lineage import Assertion, lineage
from journal_loader.storage import Store, open_store
from tests.support.audit import cli, write_pairs_csv
from tests.support.loaders import PairLoader

ROWS = [
    ("Acme", "Springfield"),
    ("Beta", "Springfield"),
    ("Bad", "BAD"),
    ("Acme", "Springfield"),  # the same fact again
    ("Gamma", "Shelbyville"),
]


class KeyedLoader(Loader):
    """Columns corp, name, zip: Company(key corp, attribute zip) -LOCATED_IN-> Zip."""

    name = "keyed"
    source_type = "keyed"

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        company = Entity(
            type="Company",
            name=record["name"],
            key=record["corp"],
            attributes={"zip": record["zip"]},
        )
        return [graph.propose_fact(company, ("Zip", record["zip"]), "LOCATED_IN")]


def one_id(store: Store, sql: str, **params: Any) -> int:
    with store.read() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def acme_in_springfield(store: Store) -> int:
    return one_id(
        store,
        "SELECT r.id FROM relationships r JOIN nodes s ON s.id = r.source_node_id "
        "JOIN nodes t ON t.id = r.target_node_id "
        "WHERE s.name = 'Acme' AND t.name = 'Springfield' AND r.rel_type = 'LOCATED_IN'",
    )


@pytest.fixture
def loaded(db_url: str, tmp_path: Path) -> tuple[str, Path, list[str]]:
    """Two loads of the same file (the second one --force): run ids in order."""
    path = write_pairs_csv(tmp_path / "pairs.csv", ROWS)
    first = run(PairLoader, path, db=db_url, batch_size=2)
    second = run(PairLoader, path, db=db_url, batch_size=2, force=True)
    assert first.status == second.status == "completed"
    return db_url, path, [str(first.run_id), str(second.run_id)]


def test_lineage_of_a_relationship(loaded: tuple[str, Path, list[str]], store: Store) -> None:
    _, path, runs = loaded
    rel = acme_in_springfield(store)
    result = lineage(store, "relationship", rel)
    assert result.subject["description"] == "Company 'Acme' -LOCATED_IN-> City 'Springfield'"
    assert result.total == 4
    a = result.assertions
    # oldest first: each load asserted it at records 0 and 3 (lines 2 and 5)
    assert [(x.run_id, x.record_offset, x.line) for x in a] == [
        (runs[0], 0, 2),
        (runs[0], 3, 5),
        (runs[1], 0, 2),
        (runs[1], 3, 5),
    ]
    assert [x.position for x in a] == sorted(x.position or 0 for x in a)
    assert [x.recorded_at for x in a] == sorted(x.recorded_at for x in a if x.recorded_at)
    data = path.read_bytes()
    for x in a:
        assert x.raw == data[x.byte_start : x.byte_end] == b"Acme,Springfield\n"
        assert x.file_name == "pairs.csv" and x.source_type == "pairs" and x.source_id == 1
        assert x.file_path == str(path.resolve()) and x.record == {
            "name": "Acme",
            "city": "Springfield",
        }
    assert [[act["action"] for act in x.actions] for x in a] == [
        ["relationship_created"],
        ["relationship_duplicate"],
        ["relationship_duplicate"],
        ["relationship_duplicate"],
    ]


def test_lineage_of_a_node_and_limit(loaded: tuple[str, Path, list[str]], store: Store) -> None:
    city = one_id(store, "SELECT id FROM nodes WHERE name = 'Springfield'")
    result = lineage(store, "node", city, limit=2)
    assert result.total == 6  # records 0, 1, 3 in each of the two loads
    assert [x.record_offset for x in result.assertions] == [0, 1]
    assert result.assertions[0].actions[0]["action"] == "entity_created"
    assert result.assertions[1].actions[0]["action"] == "entity_matched"


def test_lineage_of_an_attribute(db_url: str, tmp_path: Path, store: Store) -> None:
    from tests.support.loaders import write_csv

    path = write_csv(
        tmp_path / "keyed.csv",
        ["corp", "name", "zip"],
        [["C1", "Acme", "62701"], ["C2", "Beta", "62702"], ["C1", "ACME", "62701"]],
    )
    assert run(KeyedLoader, path, db=db_url).status == "completed"
    attr = one_id(store, "SELECT id FROM attributes WHERE attr_type = 'zip' AND value = '62701'")
    result = lineage(store, "attribute", attr)
    assert result.subject["node"]["key"] == "C1"
    assert "zip = '62701'" in result.subject["description"]
    assert [(x.record_offset, x.line) for x in result.assertions] == [(0, 2), (2, 4)]
    # what the graph answered for the node that carries the attribute
    assert [x.actions[0]["match_reason"] for x in result.assertions] == [
        "new_entity",
        "external_key",
    ]


def test_lineage_cli(loaded: tuple[str, Path, list[str]], store: Store) -> None:
    db_url, _, runs = loaded
    rel = acme_in_springfield(store)
    out = cli("lineage", "relationship", str(rel), "--db", db_url)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == f"relationship {rel}: Company 'Acme' -LOCATED_IN-> City 'Springfield'"
    assert lines[1] == "asserted by 4 record(s), oldest first"
    assert "record 3, line 5, bytes 52-69" in out.stdout
    assert "raw:   Acme,Springfield" in out.stdout
    assert f"run {runs[1][:8]}" in out.stdout

    data = json.loads(cli("lineage", "relationship", str(rel), "--db", db_url, "--json").stdout)
    assert data["kind"] == "relationship" and data["id"] == rel and data["total_assertions"] == 4
    first = data["assertions"][0]
    assert (first["line"], first["byte_start"], first["byte_end"]) == (2, 10, 27)
    assert first["raw"] == "Acme,Springfield\n" and "raw_base64" not in first
    assert first["file_sha256"] == store_file_hash(store)

    limited = json.loads(
        cli("lineage", "node", "1", "--db", db_url, "--json", "--limit", "1").stdout
    )
    assert len(limited["assertions"]) == 1 and limited["total_assertions"] == 4


def store_file_hash(store: Store) -> str:
    with store.read() as conn:
        return str(conn.execute(text("SELECT file_hash FROM sources")).scalar_one())


def test_lineage_checks_the_source_file(loaded: tuple[str, Path, list[str]], store: Store) -> None:
    db_url, path, _ = loaded
    rel = acme_in_springfield(store)
    checked = json.loads(
        cli("lineage", "relationship", str(rel), "--db", db_url, "--json", "--check-files").stdout
    )
    assert {a["file_check"] for a in checked["assertions"]} == {"match"}
    path.write_bytes(path.read_bytes().replace(b"Acme", b"Acne"))
    changed = lineage(store, "relationship", rel, check_files=True)
    assert {a.file_check for a in changed.assertions} == {"file changed since it was loaded"}
    path.unlink()
    text_out = cli("lineage", "relationship", str(rel), "--db", db_url, "--check-files")
    assert "file:  file missing" in text_out.stdout


@pytest.mark.parametrize("kind", ["node", "relationship", "attribute"])
def test_lineage_of_an_unknown_subject(sqlite_url: str, kind: str) -> None:
    open_store(sqlite_url).dispose()  # lineage reads a database; it never creates one
    result = cli("lineage", kind, "424242", "--db", sqlite_url)
    assert result.exit_code == 2  # an id that does not exist is a usage error
    assert result.stderr.startswith(f"error: no {kind} 424242 in ")


def test_raw_that_is_not_utf8_is_also_base64() -> None:
    def raw_json(raw: bytes | None) -> dict[str, object]:
        """The raw fields of an assertion's JSON (what `lineage --json` prints)."""
        assertion = Assertion(
            source_id=1,
            source_type="pairs",
            source_name=None,
            file_name="pairs.csv",
            file_path=None,
            file_hash=None,
            version=None,
            record_offset=0,
            fact_index=0,
            run_id="run",
            confidence=1.0,
            raw=raw,
        )
        return {k: v for k, v in assertion.to_json().items() if k.startswith("raw")}

    assert raw_json(b"caf\xe9\n") == {"raw": "caf\\xe9\n", "raw_base64": "Y2Fm6Qo="}
    assert raw_json("café\n".encode()) == {"raw": "café\n"}
    assert raw_json(None) == {"raw": None}
