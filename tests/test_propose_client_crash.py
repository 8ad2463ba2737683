"""Crash a load into a Propose API (SIGKILL at several boundaries), rerun it, and the
stand-in's graph equals one clean run's while ``sources`` counts every record once.

Same database: the calls are in the batch's transaction, so nothing of an unfinished batch
survives (exactly once). Separate database: the calls commit remotely before the batch does;
the rerun proposes those records again, and the stand-in's idempotency (provenance keyed by
the idempotency key, relationships deduplicated) makes the repeat a no-op (effectively
once). With the runner's two-phase protocol the records attempted without an outcome are
journaled (``ProposeAttempted``) and proposed again in doubt: their results say so.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from journal_loader.journal.events import ProposeSucceeded, decode
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_CONFIG, generator
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.propose_client import (
    deployment_schema,
    deployment_snapshot,
    install_deployment,
    install_propose_api,
    kg_snapshot,
    remote_schema,
)
from tests.support.snapshots import dlq_snapshot, sources_snapshot, terminal_counts

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
ROWS = 300
BATCH = 50
CRASHES = ["before_propose:37", "after_propose:61", "before_commit:2", "after_commit:1"]

SCRIPT = """
import sys
from journal_loader import run
from journal_loader.graph.postgres_client import PostgresProposeClient
from journal_loader.storage import open_store

journal, remote, data, config, batch, function, outcomes = sys.argv[1:8]
store = open_store(journal)
client = PostgresProposeClient(
    store, url=remote or None, source_name="registry", source_type="business_registry",
    function=function, outcome_table=outcomes or None,
)
try:
    report = run(config=config, file=data, store=store, graph=client, batch_size=int(batch))
finally:
    client.close()
    store.dispose()
sys.exit(0 if report.status == "completed" else 3)
"""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("registry") / "business_registry_20251001.csv"
    generator().generate(path, ROWS)
    return path


@pytest.fixture
def journal_urls() -> Iterator[tuple[str, str]]:
    """Two journals: one for the crashed load, one for the clean one."""
    (a, sa), (b, sb) = make_pg_schema(), make_pg_schema()
    try:
        yield a, b
    finally:
        drop_pg_schema(sa)
        drop_pg_schema(sb)


def _load(
    journal: str,
    remote: str,
    data: Path,
    crash: str | None,
    function: str = "propose_fact",
    outcomes: str = "",
) -> int:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_LOADER_CRASH_AT"}
    if crash:
        env["JOURNAL_LOADER_CRASH_AT"] = crash
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, journal, remote, str(data), str(EXAMPLE_CONFIG),
         str(BATCH), function, outcomes],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert done.returncode in (0, -signal.SIGKILL), done.stderr
    return done.returncode


def _crash_then_finish(
    journal: str, remote: str, data: Path, function: str = "propose_fact"
) -> list[int]:
    codes = [_load(journal, remote, data, crash, function) for crash in CRASHES]
    assert _load(journal, remote, data, None, function) == 0
    return codes


def _journal_state(url: str) -> dict[str, object]:
    store = open_store(url)
    try:
        terminals = terminal_counts(store)
        return {
            "sources": sources_snapshot(store),
            "offsets": sorted(terminals),
            "terminal_counts": set(terminals.values()),
        }
    finally:
        store.dispose()


def _assert_equal_to_clean(crashed: dict[str, object], clean: dict[str, object]) -> None:
    assert crashed["terminal_counts"] == {1}, "a record has more than one terminal event"
    assert crashed["offsets"] == list(range(ROWS))
    assert crashed["sources"] == clean["sources"]


def test_same_database_crashes_then_rerun_equal_one_clean_run(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    crashed, clean = journal_urls
    install_propose_api(crashed)
    install_propose_api(clean)
    codes = _crash_then_finish(crashed, "", registry)
    assert codes.count(-signal.SIGKILL) == len(CRASHES)  # every crash point was reached
    assert _load(clean, "", registry, None) == 0
    assert kg_snapshot(crashed) == kg_snapshot(clean)
    _assert_equal_to_clean(_journal_state(crashed), _journal_state(clean))


def test_separate_database_crashes_then_rerun_equal_one_clean_run(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    crashed, clean = journal_urls
    with remote_schema() as remote_crashed, remote_schema() as remote_clean:
        install_propose_api(remote_crashed)
        install_propose_api(remote_clean)
        codes = _crash_then_finish(crashed, remote_crashed, registry)
        assert codes.count(-signal.SIGKILL) == len(CRASHES)
        assert _load(clean, remote_clean, registry, None) == 0
        assert kg_snapshot(remote_crashed) == kg_snapshot(remote_clean)
    _assert_equal_to_clean(_journal_state(crashed), _journal_state(clean))


def test_separate_database_in_doubt_records_are_journaled_and_marked(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    """Killed after proposing records of the first batch (remote effects committed, the batch
    not): ProposeAttempted for that batch is in the journal; on resume its records are
    proposed again with in_doubt set, their results say so (duplicates: the success they
    were), and every record is counted once."""
    crashed, clean = journal_urls
    with remote_schema() as remote_crashed, remote_schema() as remote_clean:
        install_propose_api(remote_crashed)
        install_propose_api(remote_clean)
        assert _load(crashed, remote_crashed, registry, "after_propose:20") == -signal.SIGKILL
        assert _load(crashed, remote_crashed, registry, None) == 0
        assert _load(clean, remote_clean, registry, None) == 0
        assert kg_snapshot(remote_crashed) == kg_snapshot(remote_clean)
    _assert_equal_to_clean(_journal_state(crashed), _journal_state(clean))
    store = open_store(crashed)
    try:
        with store.read() as conn:
            attempted = conn.execute(
                text("SELECT count(*) FROM journal WHERE event_type = 'ProposeAttempted'")
            ).scalar_one()
            rows = conn.execute(
                text(
                    "SELECT record_offset, payload FROM journal "
                    "WHERE event_type = 'ProposeSucceeded' ORDER BY position"
                )
            ).all()
    finally:
        store.dispose()
    assert attempted > 0
    marked: dict[int, bool] = {}
    for offset, payload in rows:
        event = decode(payload)
        assert isinstance(event, ProposeSucceeded)
        if event.results:
            marked[int(offset)] = all(r.in_doubt for r in event.results)
            assert all(r.idempotency_key for r in event.results)
    first_batch = {o: m for o, m in marked.items() if o < BATCH}
    assert first_batch and all(first_batch.values())
    assert not any(m for o, m in marked.items() if o >= BATCH)


# --- against the deployment-like stand-in (tests/sql/propose_deployment.sql): ULID ids, no
# idempotency key (repeats absorbed by natural keys only), ambiguous answers that fail records
# and leave a partial write the client must undo.


def _journal_and_dlq(url: str) -> dict[str, object]:
    """The journal's state and the DLQ, the deployment's ids (ULIDs) in messages masked."""
    store = open_store(url)
    try:
        dlq = [
            (*row[:5], re.sub(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", "<id>", row[5]), *row[6:])
            for row in dlq_snapshot(store)
        ]
        return {**_journal_state(url), "dlq": dlq}
    finally:
        store.dispose()


def test_separate_database_crashes_against_the_deployment_equal_one_clean_run(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    crashed, clean = journal_urls
    with remote_schema() as remote_crashed, remote_schema() as remote_clean:
        install_deployment(remote_crashed)
        install_deployment(remote_clean)
        codes = _crash_then_finish(crashed, remote_crashed, registry)
        assert codes.count(-signal.SIGKILL) == len(CRASHES)
        assert _load(clean, remote_clean, registry, None) == 0
        assert deployment_snapshot(remote_crashed) == deployment_snapshot(remote_clean)
    a, b = _journal_and_dlq(crashed), _journal_and_dlq(clean)
    _assert_equal_to_clean(a, b)
    assert a["dlq"] == b["dlq"] and b["dlq"]  # the same records failed (ambiguous ones)


def test_same_database_crashes_against_the_deployment_equal_one_clean_run(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    crashed, clean = journal_urls
    with (
        deployment_schema() as (url_crashed, crashed_schema),
        deployment_schema() as (
            url_clean,
            clean_schema,
        ),
    ):
        install_deployment(url_crashed)
        install_deployment(url_clean)
        function = f"{crashed_schema}.propose_fact"
        codes = _crash_then_finish(crashed, "", registry, function)
        assert codes.count(-signal.SIGKILL) == len(CRASHES)
        assert _load(clean, "", registry, None, f"{clean_schema}.propose_fact") == 0
        assert deployment_snapshot(url_crashed) == deployment_snapshot(url_clean)
    a, b = _journal_and_dlq(crashed), _journal_and_dlq(clean)
    _assert_equal_to_clean(a, b)
    assert a["dlq"] == b["dlq"] and b["dlq"]


def _answers(url: str) -> tuple[dict[int, list[tuple[str, str | None]]], list[int], bool]:
    """Per record, the actions of its last answer (ids aside); the recovered records; and
    whether any answer is a replay."""
    store = open_store(url)
    try:
        with store.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT record_offset, payload FROM journal "
                    "WHERE event_type = 'ProposeSucceeded' ORDER BY position"
                )
            ).all()
    finally:
        store.dispose()
    actions: dict[int, list[tuple[str, str | None]]] = {}
    recovered, replayed = [], False
    for offset, payload in rows:
        event = decode(payload)
        assert isinstance(event, ProposeSucceeded)
        actions[int(offset)] = [
            (a.action, a.match_reason) for r in event.results for a in r.actions
        ]
        replayed = replayed or any(r.in_doubt for r in event.results)
        if event.recovered:
            recovered.append(int(offset))
    return actions, recovered, replayed


def test_with_an_outcome_table_a_crash_leaves_the_answers_of_one_clean_run(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    """Killed after proposing 20 records of the first batch: on resume those 20 are read
    back from the outcome table (the answers the calls got: creations stay creations), the
    rest of the batch is proposed as new; nothing is in doubt, and every answer and
    statistic equals a clean run's."""
    crashed, clean = journal_urls
    with remote_schema() as remote_crashed, remote_schema() as remote_clean:
        install_deployment(remote_crashed)
        install_deployment(remote_clean)
        killed = _load(crashed, remote_crashed, registry, "after_propose:20", outcomes="jl_out")
        assert killed == -signal.SIGKILL
        assert _load(crashed, remote_crashed, registry, None, outcomes="jl_out") == 0
        assert _load(clean, remote_clean, registry, None) == 0
        assert deployment_snapshot(remote_crashed) == deployment_snapshot(remote_clean)
    _assert_equal_to_clean(_journal_state(crashed), _journal_state(clean))
    (crashed_actions, recovered, replayed), (clean_actions, _, _) = (
        _answers(crashed),
        _answers(clean),
    )
    assert crashed_actions == clean_actions
    assert not replayed
    assert recovered and all(o < BATCH for o in recovered)


def test_an_attempt_made_without_the_outcome_table_stays_in_doubt(
    journal_urls: tuple[str, str], registry: Path
) -> None:
    """Killed while the outcome table was not configured, resumed with it: nothing says
    whether those calls committed, so the first batch's records are replays (in doubt)."""
    crashed, _clean = journal_urls
    with remote_schema() as remote:
        install_deployment(remote)
        assert _load(crashed, remote, registry, "after_propose:20") == -signal.SIGKILL
        assert _load(crashed, remote, registry, None, outcomes="jl_out") == 0
    _actions, recovered, replayed = _answers(crashed)
    assert replayed and not recovered
