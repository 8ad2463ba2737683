"""PostgresProposeClient against a real PL/pgSQL Propose API (tests/sql/propose_fact.sql).

Same database (the function in the journal's database, calls in the batch's transaction, a
savepoint per record) and separate database (another database, one autocommit connection):
call, parse, error answers to the DLQ, raised exceptions, transient errors retried and never
DLQ'd, one connection for the run, and loads through the runner.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from journal_loader import run
from journal_loader.config import load_config
from journal_loader.errors import FatalError, TransientError, ValidationError
from journal_loader.graph.postgres_client import PostgresProposeClient, parse_response
from journal_loader.graph.protocol import Entity
from journal_loader.storage import Store, open_store
from tests.support.example import EXAMPLE_CONFIG, generator
from tests.support.graph import ScriptLoader, dlq, fact, propose_results, write_script
from tests.support.pg import drop_pg_schema, make_pg_schema, pg_admin_url
from tests.support.propose_client import (
    add_fault,
    client_backends,
    client_name,
    install_propose_api,
    kg_count,
    kg_snapshot,
    libpq,
    remote_schema,
)
from tests.support.snapshots import sources_snapshot

pytestmark = pytest.mark.postgres

ROWS = 200  # one batch (the example config batches 1,000), with failures and skips


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture
def other_pg_url() -> Iterator[str]:
    """A second journal (another schema): for a run that must not see the first's."""
    url, schema = make_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def remote_url() -> Iterator[str]:
    with remote_schema() as url:
        yield url


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "business_registry_20251001.csv"
    generator().generate(path, ROWS)
    return path


def _client(store: Store, url: str | None = None, **kwargs: object) -> PostgresProposeClient:
    config = load_config(EXAMPLE_CONFIG)
    client = PostgresProposeClient(
        store,
        url=url,
        source_name=config.source.name or "",
        source_type=config.source.type,
        **kwargs,  # type: ignore[arg-type]
    )
    return client


def _record(client: PostgresProposeClient, offset: int = 0) -> None:
    client.begin_record(1, offset, "test-run")


# --- parsing: never a failure called a success ---------------------------------------------


def test_parse_response_shapes() -> None:
    ok = parse_response(
        (
            "success",
            Decimal("0.95"),
            [
                {"action": "entity_matched", "entity_id": 3, "confidence": 1.0,
                 "match_reason": "exact_name_match"},
                {"action": "entity_created", "entity_id": "4", "confidence": "1.0",
                 "match_reason": "new_entity"},
                {"action": "relationship_created", "relationship_id": 9},
            ],
            None,
            [1, "2", 3],
        )
    )  # fmt: skip
    assert ok.status == "success" and ok.ok
    assert ok.overall_confidence == 0.95
    assert (ok.source_entity_id, ok.target_entity_id, ok.relationship_id) == (3, 4, 9)
    assert ok.provenance_ids == [1, 2, 3]
    assert ok.actions[0].match_reason == "exact_name_match"

    conflicted = parse_response(
        ("conflicts", 0.7, [{"action": "relationship_conflicted", "entity_id": 12}],
         [{"relationship_id": 5, "relationship_type": "Opposing_Counsel",
           "source_entity_id": 1, "target_entity_id": 2}], [])
    )  # fmt: skip
    assert conflicted.status == "conflicts" and conflicted.relationship_id == 12
    assert conflicted.conflicts[0].relationship_type == "Opposing_Counsel"

    answered_error = parse_response(
        ("error", 0, [{"action": "error", "message": "check constraint broke"}], [], [])
    )
    assert not answered_error.ok and answered_error.error_message == "check constraint broke"

    for row in [
        ("error", None, None, None, None),  # no message: still an error
        ("failed", 1.0, [], [], []),  # a status nobody declared: an error, not a success
        ("", 1.0, [], [], []),
        (None, None, None, None, None),
        None,  # no row at all
    ]:
        result = parse_response(row)
        assert result.status == "error" and result.error_message, row


# --- separate database: the unit level -------------------------------------------------------


def test_separate_database_call_parse_and_one_connection(remote_url: str) -> None:
    install_propose_api(remote_url)
    app = client_name()
    with PostgresProposeClient(
        url=remote_url, source_name="Registry", source_type="reg", application_name=app
    ) as c:
        assert c.transactional is False
        _record(c)
        first = c.propose_fact(
            Entity(type="Company", name="Acme Widgets", attributes={"corp_number": "C1"}),
            ("City", "Springfield, IL"),
            "LOCATED_IN",
            strength=0.456,
            metadata={"via": "test"},
            confidence=0.8,
        )
        pids = client_backends(app)
        assert len(pids) == 1
        c.finish_record()
        _record(c, 1)
        again = c.propose_fact(
            ("Company", "ACME  widgets"), ("City", "Springfield, IL"), "LOCATED_IN", strength=0.3
        )
        c.finish_record()
        assert client_backends(app) == pids  # one connection, the same
    assert first.status == "success"
    assert [a.action for a in first.actions] == [
        "entity_created",
        "entity_created",
        "relationship_created",
    ]
    assert first.idempotency_key == "source-1:0:0"
    assert again.source_entity_id == first.source_entity_id
    assert again.actions[0].match_reason == "exact_name_match"
    assert again.actions[2].action == "relationship_duplicate"
    with psycopg.connect(libpq(remote_url)) as conn:
        strength, meta = conn.execute("SELECT strength, metadata FROM kg_relationships").fetchone()  # type: ignore[misc]
        assert strength == Decimal("0.46") and meta == {"via": "test"}
        prov = conn.execute(
            "SELECT DISTINCT source_name, source_type, confidence, metadata->>'idempotency_key'"
            " FROM kg_provenance ORDER BY 4"
        ).fetchall()
    assert prov == [
        ("Registry", "reg", Decimal("0.80"), "source-1:0:0"),
        ("Registry", "reg", Decimal("0.90"), "source-1:1:0"),
    ]
    assert kg_count(remote_url, "kg_attributes") == 1


def test_separate_database_error_answers_and_refusals_are_error_results(remote_url: str) -> None:
    install_propose_api(remote_url)
    add_fault(remote_url, "Divider", "22012")  # division_by_zero inside the function
    add_fault(remote_url, "Raiser", "P0001")  # RAISE EXCEPTION
    with PostgresProposeClient(url=remote_url) as c:
        _record(c)
        unknown = c.propose_fact(("Planet", "Mars"), ("City", "X"), "LOCATED_IN")
        after = c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN")
        c.abort_record()
        _record(c, 1)
        divided = c.propose_fact(("Company", "Divider"), ("City", "X"), "LOCATED_IN")
        c.abort_record()
        _record(c, 2)
        raised = c.propose_fact(("Company", "Raiser"), ("City", "X"), "LOCATED_IN")
        c.abort_record()
    assert unknown.status == "error" and unknown.error_message == "unknown node type: Planet"
    # the record has failed: its next fact is not sent
    assert after.status == "error" and "earlier fact failed" in (after.error_message or "")
    assert divided.status == "error" and "[22012]" in (divided.error_message or "")
    assert raised.status == "error" and "injected fault P0001" in (raised.error_message or "")
    assert kg_count(remote_url, "kg_nodes") == 0


def test_separate_database_transient_and_fatal_errors_raise(remote_url: str) -> None:
    install_propose_api(remote_url)
    add_fault(remote_url, "Busy", "40001", times=1)
    add_fault(remote_url, "Deadlocked", "40P01", times=1)
    app = client_name()
    c = PostgresProposeClient(url=remote_url, application_name=app)
    try:
        for name in ("Busy", "Deadlocked"):
            _record(c)
            with pytest.raises(TransientError):
                c.propose_fact(("Company", name), ("City", "X"), "LOCATED_IN")
            c.abort_record()
        # the connection is lost: transient, and the next call reconnects
        _record(c)
        c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN")
        (pid,) = client_backends(app)
        with psycopg.connect(pg_admin_url(), autocommit=True) as admin:
            # with a timeout: returns once the backend is gone (and out of pg_stat_activity)
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
        with pytest.raises(TransientError):
            c.propose_fact(("Company", "B"), ("City", "X"), "LOCATED_IN")
        c.abort_record()
        _record(c, 1)
        ok = c.propose_fact(("Company", "Busy"), ("City", "X"), "LOCATED_IN")  # fault spent
        assert ok.status == "success"
        (reconnected,) = client_backends(app)  # one connection, a new one
        assert reconnected != pid
        c.finish_record()
    finally:
        c.close()
    # a lock the function waits on past lock_timeout (55P03): transient
    options = make_url(remote_url).query["options"]
    locked_url = (
        make_url(remote_url)
        .update_query_dict({"options": f"{options} -clock_timeout=200"})
        .render_as_string(hide_password=False)
    )
    with psycopg.connect(libpq(remote_url)) as holder:
        holder.execute("LOCK TABLE kg_nodes IN ACCESS EXCLUSIVE MODE")
        with PostgresProposeClient(url=locked_url) as c:
            _record(c)
            with pytest.raises(TransientError) as caught:
                c.propose_fact(("Company", "Z"), ("City", "X"), "LOCATED_IN")
            assert "55P03" in str(caught.value)
    # no such function (a wrong name, a missing deployment): fatal, the run stops
    with PostgresProposeClient(url=remote_url, function="public.no_such_propose_fact") as c:
        _record(c)
        with pytest.raises(FatalError):
            c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN")


def test_in_doubt_duplicate_is_the_success_it_was(remote_url: str) -> None:
    """A record proposed again after a crash between the remote commit and the journal:
    the answer is a duplicate, marked in doubt, and the graph is as after one call."""
    install_propose_api(remote_url)
    with PostgresProposeClient(url=remote_url) as c:
        _record(c, 7)
        first = c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN")
        c.finish_record()  # ... and the process dies before journaling the outcome
        before = kg_snapshot(remote_url)
        _record(c, 7)
        c.in_doubt = True  # the runner sets it for an in-doubt record
        again = c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN")
        c.finish_record()
        assert c.in_doubt is False  # per record
    assert first.in_doubt is False and again.in_doubt is True
    assert again.idempotency_key == first.idempotency_key == "source-1:7:0"
    assert again.status == "success" and again.actions[2].action == "relationship_duplicate"
    assert kg_snapshot(remote_url) == before  # not applied twice, provenance included


def test_types_from_the_config_are_checked_before_calling(remote_url: str) -> None:
    install_propose_api(remote_url)
    app = client_name()
    with PostgresProposeClient(
        url=remote_url,
        node_types=["Company", "City"],
        relationship_types=["LOCATED_IN"],
        application_name=app,
    ) as c:
        _record(c)
        with pytest.raises(ValidationError, match="unknown node type 'Person'"):
            c.propose_fact(("Person", "Jo"), ("City", "X"), "LOCATED_IN")
        with pytest.raises(ValidationError, match="strength"):
            c.propose_fact(("Company", "A"), ("City", "X"), "LOCATED_IN", strength=2)
        assert client_backends(app) == []  # nothing was sent: not even connected


# --- same database: through the runner -------------------------------------------------------


def test_same_database_load_through_the_runner(
    pg_url: str, pg_store: Store, registry: Path
) -> None:
    install_propose_api(pg_url)
    client = _client(pg_store)
    assert client.transactional is True
    report = run(config=EXAMPLE_CONFIG, file=registry, store=pg_store, graph=client)
    assert report.status == "completed", report.message
    s = report.statistics
    assert s.total_processed == ROWS
    assert s.successful + s.failed + s.skipped == ROWS
    assert (s.failed, s.skipped) == (2, 1)  # the generator's bad rows (fixed seed)
    assert all(stage == "validate" for stage, *_ in dlq(pg_store).values())
    results = propose_results(pg_store)
    facts = sum(len(r) for r in results.values())
    keys = {r.idempotency_key for rs in results.values() for r in rs}
    assert len(keys) == facts  # one key per fact
    with psycopg.connect(libpq(pg_url)) as conn:
        (prov_keys,) = conn.execute(
            "SELECT count(DISTINCT idempotency_key) FROM kg_provenance"
        ).fetchone()  # type: ignore[misc]
        (file_hash,) = conn.execute("SELECT file_hash FROM sources").fetchone()  # type: ignore[misc]
    assert prov_keys == facts
    assert all(k.startswith(file_hash + ":") for k in keys)  # type: ignore[union-attr]
    assert s.entities_created == kg_count(pg_url, "kg_nodes")
    assert s.relationships_created == kg_count(pg_url, "kg_relationships")
    # a rerun of the same file is already processed: nothing is proposed again
    again = run(config=EXAMPLE_CONFIG, file=registry, store=pg_store, graph=_client(pg_store))
    assert again.status == "already_processed"


def test_same_database_error_answer_fails_the_record_and_undoes_it(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    install_propose_api(pg_url, node_types=["Company", "City"], relationship_types=["IN"])
    add_fault(pg_url, "Checked", "23514")  # a check constraint inside the function
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Company", "A"), ("City", "X"), "IN")],
            [
                fact(("Company", "B"), ("City", "Y"), "IN"),
                fact(("Company", "B"), ("Planet", "Z"), "IN"),
            ],
            [
                fact(("Company", "C"), ("City", "X"), "IN"),
                fact(("Company", "Checked"), ("City", "X"), "IN"),
            ],
            [fact(("Company", "D"), ("City", "X"), "IN")],
        ],
    )  # fmt: skip
    report = run(ScriptLoader, script, store=pg_store, graph=_client(pg_store))
    assert (report.statistics.successful, report.statistics.failed) == (2, 2)
    failures = dlq(pg_store)
    assert (failures[1][0], failures[1][2]) == ("propose", "unknown node type: Planet")
    assert failures[2][0] == "propose" and "[23514]" in failures[2][2]
    names = {n for _, n, _ in kg_snapshot(pg_url)["nodes"]}
    assert names == {"A", "X", "D"}  # B, Y and C were undone with their records' savepoints


def test_same_database_transient_error_is_retried_never_dlqd(
    pg_url: str, pg_store: Store, tmp_path: Path
) -> None:
    install_propose_api(pg_url, node_types=["Company", "City"], relationship_types=["IN"])
    add_fault(pg_url, "Flaky", "40001", times=2)  # serialization failure, twice
    script = write_script(
        tmp_path / "facts.jsonl",
        [[fact(("Company", n), ("City", "X"), "IN")] for n in ("A", "Flaky", "C")],
    )
    config = {"processing": {"retry_delay": 0.01, "max_retries": 5}}
    report = run(ScriptLoader, script, config=config, store=pg_store, graph=_client(pg_store))
    assert report.status == "completed"
    assert (report.statistics.successful, report.statistics.failed) == (3, 0)
    assert dlq(pg_store) == {}
    assert kg_count(pg_url, "kg_relationships") == 3
    assert kg_count(pg_url, "kg_provenance") == 9  # each fact applied once


def test_conflicts_through_the_runner(pg_url: str, pg_store: Store, tmp_path: Path) -> None:
    install_propose_api(
        pg_url,
        node_types=["Firm", "Company"],
        relationship_types=["Legal_Counsel", "Opposing_Counsel"],
        opposing=[("Opposing_Counsel", "Legal_Counsel")],
    )
    script = write_script(
        tmp_path / "facts.jsonl",
        [
            [fact(("Firm", "F"), ("Company", "C"), "Legal_Counsel")],
            [fact(("Firm", "F"), ("Company", "C"), "Opposing_Counsel")],
        ],
    )
    report = run(ScriptLoader, script, store=pg_store, graph=_client(pg_store))
    results = propose_results(pg_store)
    assert results[1][0].status == "conflicts"
    assert results[1][0].conflicts[0].relationship_type == "Legal_Counsel"
    assert report.statistics.conflicts_detected == 1
    assert report.statistics.successful == 2
    strengths = {r[2]: r[5] for r in kg_snapshot(pg_url)["relationships"]}
    assert strengths == {"Legal_Counsel": "1.00", "Opposing_Counsel": "0.70"}


# --- separate database: through the runner ---------------------------------------------------


def test_separate_database_load_equals_the_same_database_load(
    pg_url: str, pg_store: Store, remote_url: str, other_pg_url: str, registry: Path
) -> None:
    install_propose_api(pg_url)
    install_propose_api(remote_url)
    same = run(config=EXAMPLE_CONFIG, file=registry, store=pg_store, graph=_client(pg_store))
    journal = open_store(other_pg_url)
    try:
        app = client_name()
        with _client(journal, url=remote_url, application_name=app) as client:
            separate = run(config=EXAMPLE_CONFIG, file=registry, store=journal, graph=client)
            assert len(client_backends(app)) == 1  # one connection, kept open after the run
        assert separate.status == same.status == "completed"
        assert separate.statistics == same.statistics
        assert sources_snapshot(journal) == sources_snapshot(pg_store)
    finally:
        journal.dispose()
    a, b = kg_snapshot(pg_url), kg_snapshot(remote_url)
    for table in ("nodes", "attributes", "relationships"):
        assert a[table] == b[table], table
    strip = lambda rows: sorted(r[:4] for r in rows)  # noqa: E731 - keys name the source file
    assert strip(a["provenance"]) == strip(b["provenance"])
