"""PostgresProposeClient against a stand-in built like the real deployment (issue 14):
tests/sql/propose_deployment.sql. Ambiguous answers (``conflicts``, no actions, candidates),
partial writes behind them, ULID text ids, p_provenance_metadata ignored, tables named like
journal-loader's own and unqualified SQL, every exception answered as ``error``.

Every behaviour in both modes: the function in the journal's own database (its tables in a
schema of their own, as a deployment's public tables would be) and in another database.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from journal_loader import run
from journal_loader.errors import ConfigError
from journal_loader.graph.postgres_client import PostgresProposeClient
from journal_loader.journal.events import RecordFailed, decode
from journal_loader.storage import Store, open_store
from tests.support.audit import cli
from tests.support.graph import ScriptLoader, dlq, fact, propose_results, write_script
from tests.support.propose_client import (
    add_deployment_fault,
    deployment_schema,
    deployment_snapshot,
    install_deployment,
    install_propose_api,
    libpq,
    remote_schema,
)

pytestmark = pytest.mark.postgres

ULID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
TYPES = ["IN", "Legal_Counsel", "Opposing_Counsel"]


@dataclass
class Deployment:
    mode: str
    url: str  # where the deployment's tables are (its schema on the search_path)
    function: str
    journal_url: str

    def client(self, store: Store, **kwargs: Any) -> PostgresProposeClient:
        return PostgresProposeClient(
            store,
            url=self.url if self.mode == "separate" else None,
            function=self.function,
            source_name="Registry",
            source_type="reg",
            **kwargs,
        )

    def config(self) -> dict[str, Any]:
        section: dict[str, Any] = {"function": self.function, "source_name": "Registry",
                                   "source_type": "reg"}  # fmt: skip
        if self.mode == "separate":
            section["url"] = self.url
        return {"graph": {"propose_api": section}}

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(libpq(self.url)) as conn:
            return [tuple(r) for r in conn.execute(sql).fetchall()]


@pytest.fixture(params=["same", "separate"])
def deployment(request: pytest.FixtureRequest, pg_url: str) -> Iterator[Deployment]:
    """The deployment stand-in, with TYPES; opposing Legal_Counsel / Opposing_Counsel."""
    opposing = [("Opposing_Counsel", "Legal_Counsel")]
    if request.param == "same":
        with deployment_schema() as (url, schema):
            install_deployment(url, TYPES, opposing)
            yield Deployment("same", url, f"{schema}.propose_fact", pg_url)
    else:
        with remote_schema() as url:
            install_deployment(url, TYPES, opposing)
            yield Deployment("separate", url, "propose_fact", pg_url)


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    try:
        yield store
    finally:
        store.dispose()


def _run(dep: Deployment, store: Store, script: Path, **kwargs: Any) -> Any:
    config = {"processing": {"retry_delay": 0.01, "max_retries": 3}}
    with dep.client(store, **kwargs) as client:
        return run(ScriptLoader, script, config=config, store=store, graph=client)


def _names(dep: Deployment) -> set[str]:
    return {name for _type, name in deployment_snapshot(dep.url)["nodes"]}


# --- ambiguous answers and partial writes ------------------------------------------------------


def test_ambiguous_fact_fails_the_record_with_its_candidates_and_leaves_nothing(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "Acme"), ("City", "Des Moines"), "IN")],
            [fact(("Company", "Beta"), ("City", "WEST DES MOINES, IA"), "IN")],
            # a fact applied, then an ambiguous one: the record's first fact is undone too
            [
                fact(("Company", "Gamma"), ("City", "Springfield"), "IN"),
                fact(("Company", "Gamma"), ("City", "DES MOINES, IA"), "IN"),
            ],
            # the deployment creates Delta before it finds the city ambiguous
            [fact(("Company", "Delta"), ("City", "DES MOINES, IA"), "IN")],
            [fact(("Company", "Epsilon"), ("City", "Des Moines"), "IN")],
        ],
    )  # fmt: skip
    report = _run(deployment, pg_store, script)
    s = report.statistics
    assert (s.successful, s.failed, s.conflicts_detected) == (3, 2, 0)
    failures = dlq(pg_store)
    assert sorted(failures) == [2, 3]
    for offset in (2, 3):
        stage, error_type, message = failures[offset]
        assert (stage, error_type) == ("propose", "AmbiguousMatchError")
        assert "City 'DES MOINES, IA'" in message and "'Des Moines'" in message
        assert "'WEST DES MOINES, IA'" in message
    with pg_store.read() as conn:
        payload = conn.execute(
            text("SELECT payload FROM journal WHERE event_type = 'RecordFailed' "
                 "AND record_offset = 3")
        ).scalar_one()  # fmt: skip
    failed = decode(payload)
    assert isinstance(failed, RecordFailed)
    assert failed.details["side"] == "target"
    candidates = failed.details["candidates"]
    assert [c["name"] for c in candidates] == ["Des Moines", "WEST DES MOINES, IA"]
    assert all(ULID.match(c["id"]) for c in candidates)
    assert failed.details["source_alternatives"] == []
    # nothing of records 2 and 3 is left in the deployment: no Gamma, Springfield or Delta
    assert _names(deployment) == {"Acme", "Des Moines", "Beta", "WEST DES MOINES, IA",
                                  "Epsilon"}  # fmt: skip
    assert deployment.rows("SELECT count(*) FROM relationships") == [(3,)]


# --- ids -----------------------------------------------------------------------------------------


def test_ids_are_journaled_as_the_deployment_gives_them(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact({"type": "Company", "name": "Acme", "attributes": {"zip": "50309"}},
                  ("City", "Springfield"), "IN")],
            [fact(("Company", "Acme"), ("City", "Springfield"), "IN")],
        ],
    )  # fmt: skip
    report = _run(deployment, pg_store, script)
    assert report.statistics.successful == 2
    first, again = (propose_results(pg_store)[i][0] for i in (0, 1))
    node_ids = dict(deployment.rows("SELECT name, node_id FROM nodes"))
    (rel_id,) = deployment.rows("SELECT relationship_id FROM relationships")[0]
    prov_ids = {p for (p,) in deployment.rows("SELECT provenance_id FROM provenance")}
    assert first.source_entity_id == node_ids["Acme"]
    assert first.target_entity_id == node_ids["Springfield"]
    assert first.relationship_id == rel_id
    assert [a.entity_id for a in first.actions[:2]] == [node_ids["Acme"], node_ids["Springfield"]]
    assert [a.role for a in first.actions[:2]] == ["source", "target"]
    assert first.actions[2].relationship_id == rel_id
    assert len(first.provenance_ids) == 4 and set(first.provenance_ids) == prov_ids
    assert all(isinstance(i, str) and ULID.match(i) for i in first.provenance_ids)
    assert again.source_entity_id == node_ids["Acme"]
    assert again.actions[2].action == "relationship_duplicate"


def test_history_and_lineage_show_the_deployments_ids(
    deployment: Deployment, pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "Acme"), ("City", "Springfield"), "IN")],
            [fact(("Company", "Beta"), ("City", "Springfield"), "IN")],
        ],
    )
    _run(deployment, pg_store, script)
    node_ids = dict(deployment.rows("SELECT name, node_id FROM nodes"))
    (rel_id,) = deployment.rows(
        "SELECT r.relationship_id FROM relationships r JOIN nodes n "
        "ON n.node_id = r.source_node_id WHERE n.name = 'Beta'"
    )[0]

    history = cli("history", "1", "0", "--db", pg_url)
    assert history.exit_code == 0, history.output
    assert node_ids["Acme"] in history.output and node_ids["Springfield"] in history.output
    as_json = json.loads(cli("history", "1", "0", "--db", pg_url, "--json").stdout)
    answered = next(e for e in as_json["events"] if e["event_type"] == "ProposeSucceeded")
    assert answered["event"]["results"][0]["source_entity_id"] == node_ids["Acme"]

    # Springfield: created by record 0, matched by record 1 (the journal's answers)
    shown = cli("lineage", "node", node_ids["Springfield"], "--db", pg_url)
    assert shown.exit_code == 0, shown.output
    assert "asserted by 2 record(s)" in shown.output
    assert "entity_created" in shown.output and "entity_matched" in shown.output
    found = json.loads(
        cli("lineage", "node", node_ids["Springfield"], "--db", pg_url, "--json").stdout
    )
    assert [a["record_offset"] for a in found["assertions"]] == [0, 1]
    assert found["id"] == node_ids["Springfield"]
    assert found["assertions"][0]["actions"][0]["entity_id"] == node_ids["Springfield"]
    rel = json.loads(cli("lineage", "relationship", rel_id, "--db", pg_url, "--json").stdout)
    assert [(a["record_offset"], a["fact_index"]) for a in rel["assertions"]] == [(1, 0)]
    # with the config: also the deployment's own provenance (one row per source and subject)
    config = tmp_path / "loader.yaml"
    config.write_text(json.dumps({"database": {"url": pg_url}, **deployment.config()}))
    springfield = node_ids["Springfield"]
    both = json.loads(cli("lineage", "node", springfield, "-c", str(config), "--json").stdout)
    assert [a["record_offset"] for a in both["assertions"]] == [0, 1]
    (own,) = both["deployment_provenance"]
    assert own["node_id"] == springfield and ULID.match(own["source_id"])
    assert own["confidence"] == 0.9
    text_out = cli("lineage", "node", springfield, "-c", str(config)).output
    assert "the Propose API's own provenance: 1 row(s)" in text_out
    missing = cli("lineage", "node", "01ZZZZZZZZZZZZZZZZZZZZZZZZ", "--db", pg_url)
    assert missing.exit_code == 2 and "no node 01ZZZZZZZZZZZZZZZZZZZZZZZZ" in missing.output


# --- conflicts ------------------------------------------------------------------------------------


def test_opposing_conflict_names_the_relationship_it_opposes(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Firm", "F"), ("Company", "C"), "Legal_Counsel")],
            [fact(("Firm", "F"), ("Company", "C"), "Opposing_Counsel")],
        ],
    )
    report = _run(deployment, pg_store, script)
    assert (report.statistics.successful, report.statistics.conflicts_detected) == (2, 1)
    rels = dict(deployment.rows("SELECT relationship_type, relationship_id FROM relationships"))
    conflicted = propose_results(pg_store)[1][0]
    assert conflicted.status == "conflicts"
    (conflict,) = conflicted.conflicts
    assert conflict.type == "opposing_relationship"
    assert conflict.relationship_id == rels["Legal_Counsel"]
    assert conflict.relationship_type == "Legal_Counsel"
    assert conflicted.relationship_id == rels["Opposing_Counsel"]


# --- errors -----------------------------------------------------------------------------------------


def test_error_answers_fail_the_record_under_a_public_error_type(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "A"), ("City", "X"), "IN")],
            [fact(("Company", "B"), ("City", "Y"), "NO_SUCH_TYPE")],
        ],
    )
    report = _run(deployment, pg_store, script)
    assert (report.statistics.successful, report.statistics.failed) == (1, 1)
    stage, error_type, message = dlq(pg_store)[1]
    assert (stage, error_type) == ("propose", "ProposeAnswerError")
    assert "relationships_relationship_type_fkey" in message
    assert _names(deployment) == {"A", "X"}  # the function's own block undid B and Y


def test_an_error_answer_carrying_a_deadlock_is_retried_not_dlqd(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    """The function catches every exception, a deadlock too, and answers ``error`` with its
    message: the client knows a transient one by its text and the batch is retried."""
    add_deployment_fault(deployment.url, "Locked", "40P01", "deadlock detected", times=1)
    add_deployment_fault(
        deployment.url, "Busy", "40001",
        "could not serialize access due to concurrent update", times=1,
    )  # fmt: skip
    script = write_script(
        tmp_path / "facts.jsonl",
        [[fact(("Company", n), ("City", "X"), "IN")] for n in ("A", "Locked", "Busy", "D")],
    )
    report = _run(deployment, pg_store, script)
    assert report.status == "completed", report.message
    assert (report.statistics.successful, report.statistics.failed) == (4, 0)
    assert dlq(pg_store) == {}
    assert _names(deployment) == {"A", "Locked", "Busy", "D", "X"}


# --- the idempotency key ---------------------------------------------------------------------------


def test_whether_the_deployment_keeps_the_idempotency_key_is_detected(
    deployment: Deployment, pg_store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = write_script(tmp_path / "facts.jsonl", [[fact(("Company", "A"), ("City", "X"), "IN")]])
    with (
        caplog.at_level(logging.WARNING, logger="journal_loader.graph.propose_api"),
        deployment.client(pg_store) as client,
    ):
        run(ScriptLoader, script, store=pg_store, graph=client)
        assert client.keeps_idempotency_key is False
    assert "does not keep the idempotency key" in caplog.text
    # a config flag says it, and no probe overrides it
    with deployment.client(pg_store, keeps_idempotency_key=True) as client:
        run(ScriptLoader, script, store=pg_store, graph=client, force=True)
        assert client.keeps_idempotency_key is True


def test_the_keyed_stand_in_is_detected_as_keeping_the_key(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    install_propose_api(pg_url, node_types=["Company", "City"], relationship_types=["IN"])
    script = write_script(tmp_path / "facts.jsonl", [[fact(("Company", "A"), ("City", "X"), "IN")]])
    with PostgresProposeClient(pg_store) as client:
        run(ScriptLoader, script, store=pg_store, graph=client)
        assert client.keeps_idempotency_key is True


# --- tables named like journal-loader's, unqualified SQL ------------------------------------------


def test_same_database_calls_run_with_the_deployments_search_path(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    """The journal's schema (the URL's search_path) has tables named like the deployment's;
    the deployment's unqualified SQL must still read its own, and journal-loader's its own."""
    with deployment_schema() as (url, schema):
        install_deployment(url, TYPES)
        script = write_script(
            tmp_path / "facts.jsonl",
            [[fact(("Company", n), ("City", "X"), "IN")] for n in ("A", "B")],
        )
        with PostgresProposeClient(pg_store, function=f"{schema}.propose_fact") as client:
            report = run(ScriptLoader, script, store=pg_store, graph=client)
        assert (report.statistics.successful, report.statistics.failed) == (2, 0), dlq(pg_store)
        # a search_path given explicitly (the function unqualified)
        script2 = write_script(
            tmp_path / "facts2.jsonl", [[fact(("Company", "C"), ("City", "X"), "IN")]]
        )
        with PostgresProposeClient(pg_store, search_path=schema) as client:
            report = run(ScriptLoader, script2, store=pg_store, graph=client)
        assert report.statistics.successful == 1, dlq(pg_store)
        with psycopg.connect(libpq(url)) as conn:
            names = {n for (n,) in conn.execute("SELECT name FROM nodes").fetchall()}
        assert names == {"A", "B", "C", "X"}
    with pg_store.read() as conn:  # journal-loader's own nodes table: untouched
        assert conn.execute(text("SELECT count(*) FROM nodes")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM sources")).scalar_one() == 2


# --- relationship types -----------------------------------------------------------------------------


def test_config_relationship_types_are_checked_against_the_deployments_lookup_table(
    deployment: Deployment, pg_store: Store, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "facts.jsonl", [[fact(("Company", "A"), ("City", "X"), "IN")]])
    with (
        deployment.client(pg_store, relationship_types=["IN", "LEGAL_COUNSEL"]) as client,
        pytest.raises(ConfigError, match=r"LEGAL_COUNSEL \(did you mean Legal_Counsel\?\)"),
    ):
        run(ScriptLoader, script, store=pg_store, graph=client)
    with deployment.client(pg_store, relationship_types=["IN", "Legal_Counsel"]) as client:
        assert run(ScriptLoader, script, store=pg_store, graph=client).status == "completed"


def test_a_relationship_type_the_deployment_does_not_know_stops_run_before_it_starts(
    deployment: Deployment, pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    (tmp_path / "companies.csv").write_text("Name,City\nAcme,Springfield\n")
    config = {
        "loader": {"name": "companies"},
        "source": {"type": "companies", "file": "companies.csv"},
        "database": {"url": pg_url},
        "graph": {
            "node_types": ["Company", "City"],
            "relationship_types": ["OPPOSING_COUNSEL"],
            **deployment.config()["graph"],
        },
        "facts": [{"source": {"type": "Company", "name": "Name"},
                   "target": {"type": "City", "name": "City"},
                   "relationship": "OPPOSING_COUNSEL"}],
    }  # fmt: skip
    path = tmp_path / "companies.yaml"
    path.write_text(json.dumps(config))
    done = cli("run", str(path))
    assert done.exit_code == 2, done.output
    assert "OPPOSING_COUNSEL (did you mean Opposing_Counsel?)" in done.output
    with pg_store.read() as conn:  # nothing journaled: the run never started
        assert conn.execute(text("SELECT count(*) FROM journal")).scalar_one() == 0


# --- the same database as a real deployment: its tables in public ------------------------------


def _yaml_config(path: Path, url: str, **database: Any) -> Path:
    import yaml

    config = {
        "loader": {"name": "script"},
        "database": {"url": url, **database},
        "graph": {"propose_api": {"source_name": "Registry", "source_type": "reg"}},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_same_database_mode_runs_against_a_database_with_the_deployments_public_tables(
    tmp_path: Path,
) -> None:
    """The deployment's sources/nodes/attributes/relationships/provenance are in public;
    journal-loader's own go in a schema of their own (journal_loader by default), and the
    deployment's unqualified SQL runs with its own search_path."""
    from journal_loader.config import load_config
    from tests.support.propose_client import deployment_database

    with deployment_database() as base:
        install_deployment(base)
        url = base.replace("postgresql://", "postgresql+psycopg://", 1)
        config = load_config(_yaml_config(tmp_path / "same.yaml", url))
        script = write_script(
            tmp_path / "facts.jsonl",
            [
                [fact(("Company", "Acme"), ("City", "Springfield"), "LOCATED_IN")],
                [fact(("Company", "Beta"), ("City", "Springfield"), "LOCATED_IN")],
            ],
        )
        report = run(ScriptLoader, script, config=config)
        assert report.status == "completed", report.message
        assert report.statistics.successful == 2
        with psycopg.connect(base) as conn:
            schemas = dict(
                conn.execute(
                    "SELECT table_name, string_agg(table_schema, ',' ORDER BY table_schema) "
                    "FROM information_schema.tables WHERE table_name IN "
                    "('journal', 'nodes', 'sources') GROUP BY table_name"
                ).fetchall()
            )
            public_nodes = {n for (n,) in conn.execute("SELECT name FROM public.nodes")}
            (own_nodes,) = conn.execute("SELECT count(*) FROM journal_loader.nodes").fetchone()  # type: ignore[misc]
        assert schemas == {
            "journal": "journal_loader",
            "nodes": "journal_loader,public",
            "sources": "journal_loader,public",
        }
        assert public_nodes == {"Acme", "Beta", "Springfield"} and own_nodes == 0
        # every command given the config finds the same journal
        status = json.loads(cli("status", "-c", str(tmp_path / "same.yaml"), "--json").stdout)
        assert [(s["source_id"], s["records_imported"]) for s in status] == [(1, 2)]
        history = cli("history", "1", "0", "-c", str(tmp_path / "same.yaml"))
        assert history.exit_code == 0 and "source entity" in history.output
        assert "created (new_entity" in history.output
        # a schema named in the config
        other = load_config(_yaml_config(tmp_path / "other.yaml", url, schema="jl_own"))
        assert run(ScriptLoader, script, config=other).status == "completed"
        with psycopg.connect(base) as conn:
            (journals,) = conn.execute("SELECT count(*) FROM jl_own.journal").fetchone()  # type: ignore[misc]
        assert journals == 9


def test_a_journal_never_goes_into_a_schema_holding_another_applications_tables() -> None:
    """Without a schema of its own, journal-loader would create its tables next to the
    deployment's namesakes: a clear error instead of DuplicateTable and a traceback."""
    from journal_loader.errors import SchemaError
    from tests.support.propose_client import deployment_database

    with deployment_database() as base:
        install_deployment(base)
        url = base.replace("postgresql://", "postgresql+psycopg://", 1)
        with pytest.raises(SchemaError, match=r"nodes, provenance.*database\.schema"):
            open_store(url)
        with psycopg.connect(base) as conn:
            (tables,) = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = 'journal'"
            ).fetchone()  # type: ignore[misc]
        assert tables == 0


def test_the_journals_schema_precedence() -> None:
    """The URL's own search_path wins; then database.schema; then journal_loader for the
    same-database Propose API mode; otherwise the server's default (as before)."""
    from sqlalchemy import make_url

    from journal_loader.config import config_from_dict, resolve_database_url

    base = "postgresql+psycopg://loader@db/graph"
    explicit = base + "?options=-csearch_path%3Dmine"

    def search_path(url: str) -> str | None:
        options = make_url(url).query.get("options")
        return str(options) if options else None

    same = config_from_dict({"graph": {"propose_api": {}}})
    separate = config_from_dict({"graph": {"propose_api": {"url": "postgresql://x@y/z"}}})
    named = config_from_dict({"database": {"schema": "jl"}, "graph": {"propose_api": {}}})
    embedded = config_from_dict({})
    assert search_path(resolve_database_url(explicit, same)) == "-csearch_path=mine"
    assert search_path(resolve_database_url(explicit, named)) == "-csearch_path=mine"
    assert search_path(resolve_database_url(base, named)) == "-csearch_path=jl"
    assert search_path(resolve_database_url(base, same)) == "-csearch_path=journal_loader"
    assert search_path(resolve_database_url(base, separate)) is None
    assert search_path(resolve_database_url(base, embedded)) is None
    assert resolve_database_url("sqlite:///j.db", same) == "sqlite:///j.db"
    kept = resolve_database_url(base + "?options=-clock_timeout%3D5000", same)
    assert search_path(kept) == "-clock_timeout=5000 -csearch_path=journal_loader"
    with pytest.raises(ConfigError, match=r"database\.schema"):
        config_from_dict({"database": {"schema": "x; DROP TABLE journal"}})


# --- in doubt: only what reached the deployment ------------------------------------------------


def test_a_retried_batch_marks_in_doubt_only_the_records_that_reached_the_deployment(
    pg_store: Store, tmp_path: Path
) -> None:
    """Records 0 and 1 commit in the deployment, record 2's call answers a deadlock: the batch
    is retried. 0 and 1 are proposed again as replays (in doubt); 2 (rolled back) and 3
    (never sent) are not in doubt: the deployment never had them."""
    with remote_schema() as url:
        install_deployment(url, TYPES)
        add_deployment_fault(url, "Locked", "40P01", "deadlock detected", times=1)
        dep = Deployment("separate", url, "propose_fact", "")
        script = write_script(
            tmp_path / "facts.jsonl",
            [[fact(("Company", n), ("City", "X"), "IN")] for n in ("A", "B", "Locked", "D")],
        )
        report = _run(dep, pg_store, script)
    assert report.status == "completed" and report.statistics.successful == 4
    assert report.statistics.records_replayed == 2
    results = propose_results(pg_store)
    assert {o: r[0].in_doubt for o, r in results.items()} == {
        0: True,
        1: True,
        2: False,
        3: False,
    }
    # the replays' answers: matches of what the first, unjournaled calls created
    assert results[0][0].actions[0].action == "entity_matched"
    assert results[2][0].actions[0].action == "entity_created"
    with pg_store.read() as conn:
        flags = conn.execute(
            text("SELECT record_offset, payload FROM journal "
                 "WHERE event_type = 'ProposeAttempted' ORDER BY position")
        ).all()  # fmt: skip
    attempted = [(int(o), json.loads(p)["in_doubt"] if "in_doubt" in p else False)
                 for o, p in flags]  # fmt: skip
    assert attempted == [(0, False), (1, False), (2, False), (3, False),
                         (0, True), (1, True), (2, False), (3, False)]  # fmt: skip


def test_with_an_outcome_table_a_retried_batch_reads_back_what_committed(
    pg_store: Store, tmp_path: Path
) -> None:
    """propose_api.outcome_table: each record's answers are stored with its calls, in their
    remote transaction. Retried after record 2's deadlock, records 0 and 1 are not proposed
    again: their answers are read back (the creations they were), nothing is in doubt."""
    with remote_schema() as url:
        install_deployment(url, TYPES)
        add_deployment_fault(url, "Locked", "40P01", "deadlock detected", times=1)
        dep = Deployment("separate", url, "propose_fact", "")
        script = write_script(
            tmp_path / "facts.jsonl",
            [[fact(("Company", n), ("City", "X"), "IN")] for n in ("A", "B", "Locked", "D")],
        )
        report = _run(dep, pg_store, script, outcome_table="jl_outcomes")
        stored = dep.rows("SELECT record_key, attempt FROM jl_outcomes ORDER BY recorded_at")
    s = report.statistics
    assert report.status == "completed" and s.successful == 4
    assert (s.entities_created, s.entities_matched, s.records_replayed) == (5, 3, 0)
    results = propose_results(pg_store)
    assert [r[0].actions[0].action for r in results.values()] == ["entity_created"] * 4
    assert not any(r[0].in_doubt for r in results.values())
    with pg_store.read() as conn:
        recovered = [
            int(o)
            for o, p in conn.execute(
                text("SELECT record_offset, payload FROM journal "
                     "WHERE event_type = 'ProposeSucceeded' ORDER BY position")
            )
            if json.loads(p).get("recovered")
        ]  # fmt: skip
    assert recovered == [0, 1]
    assert stored == []  # each batch's rows are cleared once its outcomes are journaled
