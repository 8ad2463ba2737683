"""The runner on both backends: idempotent, resumable, every record accounted for."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import Loader, ProposeClient, ProposeResult, run
from journal_loader.errors import ProposeError, SourceFileError
from journal_loader.journal.events import decode
from journal_loader.projections import rebuild
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_CONFIG, EXAMPLE_DATA, LoadedExample
from tests.support.loaders import PairLoader, write_csv
from tests.support.snapshots import dlq_snapshot, graph_snapshot, sources_snapshot, terminal_counts

HEADER = ["name", "city"]


def _count(url: str, table: str) -> int:
    store = open_store(url)
    try:
        with store.read() as conn:
            return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
    finally:
        store.dispose()


def _rows(n: int, bad_every: int = 0, skip_every: int = 0) -> list[list[str]]:
    rows = []
    for i in range(n):
        if skip_every and i % skip_every == skip_every - 1:
            rows.append([f"# comment {i}", "X"])
        elif bad_every and i % bad_every == bad_every - 1:
            rows.append([f"Company {i}", "BAD"])
        else:
            rows.append([f"Company {i}", f"City {i % 7}"])
    return rows


def _counts(url: str) -> dict[str, int]:
    return {
        t: _count(url, t)
        for t in ("journal", "nodes", "relationships", "attributes", "provenance", "failed_records")
    }


def test_example_loads_with_every_record_accounted_for(example_journal: LoadedExample) -> None:
    db_url, report = example_journal  # run(config=EXAMPLE_CONFIG, db=db_url), shared
    s = report.statistics
    assert report.status == "completed" and report.exit_code == 0
    assert report.records_in_file == 3000 == s.total_processed
    assert s.successful + s.failed + s.skipped == 3000
    # the example is a fixed file: its figures are exact (the README's quick start shows them)
    assert (s.successful, s.failed, s.skipped) == (2964, 21, 15)
    assert (s.entities_created, s.relationships_created) == (7377, 9923)
    store = open_store(db_url)
    try:
        terminals = terminal_counts(store)
        assert sorted(terminals) == list(range(3000))  # every offset ...
        assert set(terminals.values()) == {1}  # ... exactly one terminal event (invariant 3)
        src = sources_snapshot(store)[0]
        assert src[2:] == ("completed", 3000, 3000, s.successful, s.failed, s.skipped)
        assert len(dlq_snapshot(store)) == s.failed
        assert rebuild(store, check=True).ok  # invariant 4
        with store.read() as conn:
            # Shared agents and addresses are one node each, and two streets with the same
            # text in different cities are two addresses.
            shared = conn.execute(
                text(
                    "SELECT COUNT(*) FROM relationships r JOIN nodes n ON n.id = r.source_node_id "
                    "WHERE r.rel_type = 'REGISTERED_AGENT_OF' GROUP BY n.id ORDER BY 1 DESC LIMIT 1"
                )
            ).scalar_one()
            assert shared == 350
            # Rows repeating a corp number (name spelled differently) are one company.
            ok = {
                int(o)
                for o in conn.execute(
                    text("SELECT record_offset FROM journal WHERE event_type = 'ProposeSucceeded'")
                ).scalars()
            }
            with EXAMPLE_DATA.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            expected = len({rows[o]["Corp Number"] for o in ok})
            assert (
                conn.execute(
                    text(
                        "SELECT COUNT(*) FROM nodes WHERE node_type = 'Company' AND external_key IS NOT NULL"
                    )
                ).scalar_one()
                == expected
                < s.successful
            )
    finally:
        store.dispose()


def test_rerun_of_a_completed_file_writes_nothing(db_url: str) -> None:
    first = run(config=EXAMPLE_CONFIG, db=db_url)
    before = _counts(db_url)
    again = run(config=EXAMPLE_CONFIG, db=db_url)
    assert again.status == "already_processed" and again.exit_code == 0
    assert "already processed" in again.message and again.source_id == first.source_id
    assert _counts(db_url) == before


def test_force_reloads_as_a_new_load_without_duplicating_facts(db_url: str) -> None:
    run(config=EXAMPLE_CONFIG, db=db_url)
    store = open_store(db_url)
    graph_before = graph_snapshot(store)
    report = run(config=EXAMPLE_CONFIG, db=db_url, force=True)
    assert report.status == "completed" and report.statistics.total_processed == 3000
    assert report.statistics.entities_created == 0  # everything matched the first load
    after = graph_snapshot(store)
    for table in ("nodes", "attributes", "relationships"):
        assert after[table] == graph_before[table]
    assert sources_snapshot(store)[0][4] == 3000  # counts are of the current load
    assert rebuild(store, check=True).ok
    store.dispose()


def test_limit_leaves_partial_and_the_next_run_finishes(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", HEADER, _rows(250, bad_every=10, skip_every=25))
    first = run(PairLoader, path, db=db_url, limit=100, batch_size=30)
    assert first.status == "partial" and first.exit_code == 0
    assert first.statistics.total_processed == 100
    store = open_store(db_url)
    assert sources_snapshot(store)[0][2:5] == ("partial", None, 100)
    second = run(PairLoader, path, db=db_url, batch_size=30)
    assert second.status == "completed" and second.resumed_from == 100
    assert second.statistics.total_processed == 150
    assert set(terminal_counts(store).values()) == {1} and len(terminal_counts(store)) == 250
    src = sources_snapshot(store)[0]
    # 10 comment rows skipped; 25 BAD rows, 5 of which are comments: 20 fail
    assert src[2:] == ("completed", 250, 250, 220, 20, 10)
    assert rebuild(store, check=True).ok
    store.dispose()


def test_limit_ending_exactly_at_the_end_is_completed(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", HEADER, _rows(40))
    report = run(PairLoader, path, db=db_url, limit=40)
    assert report.status == "completed" and report.records_in_file == 40


def test_resume_seeks_to_the_checkpoint(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", HEADER, _rows(90))
    run(PairLoader, path, db=db_url, limit=60, batch_size=20)
    store = open_store(db_url)
    with store.read() as conn:
        payload = conn.execute(
            text(
                "SELECT payload FROM journal WHERE event_type = 'BatchCommitted' "
                "ORDER BY position DESC LIMIT 1"
            )
        ).scalar_one()
    checkpoint = decode(payload)
    data = path.read_bytes()
    # The checkpoint's byte is exactly where record 60 (line 62) starts.
    assert data[checkpoint.next_byte :].startswith(b"Company 60,")  # type: ignore[attr-defined]
    assert checkpoint.next_line == 62  # type: ignore[attr-defined]
    second = run(PairLoader, path, db=db_url)
    assert second.resumed_from == 60 and second.statistics.total_processed == 30
    with store.read() as conn:
        started = decode(
            conn.execute(
                text(
                    "SELECT payload FROM journal WHERE event_type = 'RunStarted' "
                    "ORDER BY position DESC LIMIT 1"
                )
            ).scalar_one()
        )
    assert (started.mode, started.resume_offset, started.resume_byte) == (  # type: ignore[attr-defined]
        "resume",
        60,
        checkpoint.next_byte,
    )  # type: ignore[attr-defined]
    store.dispose()


def test_start_from_skips_and_journals_the_records_before(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pairs.csv", HEADER, _rows(50))
    report = run(PairLoader, path, db=db_url, start_from=20)
    assert report.status == "completed"
    assert report.statistics.skipped == 20 and report.statistics.successful == 30
    store = open_store(db_url)
    with store.read() as conn:
        reasons = conn.execute(
            text("SELECT DISTINCT payload FROM journal WHERE event_type = 'RecordSkipped'")
        ).scalars()
        assert {decode(p).reason for p in reasons} == {"before --start-from 20"}  # type: ignore[attr-defined]
    store.dispose()


def test_two_files_with_the_same_version_label_both_load(db_url: str, tmp_path: Path) -> None:
    a = write_csv(tmp_path / "registry_20251001.csv", HEADER, _rows(10))
    b = write_csv(tmp_path / "registry_extra_20251015.csv", HEADER, _rows(12))
    cfg = {"source": {"type": "pairs", "update_frequency": "quarterly"}}
    ra = run(PairLoader, a, db=db_url, config=cfg)
    rb = run(PairLoader, b, db=db_url, config=cfg)
    assert ra.version_label == rb.version_label == "2025-Q4"
    assert ra.source_id != rb.source_id and ra.status == rb.status == "completed"
    # The same content under another name is the same source: not loaded again.
    c = tmp_path / "copy_of_a.csv"
    shutil.copy(a, c)
    assert run(PairLoader, c, db=db_url, config=cfg).status == "already_processed"


def test_a_record_whose_propose_fails_leaves_no_facts(db_url: str, tmp_path: Path) -> None:
    class HalfFails(Loader):
        name = source_type = "half"

        def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
            first = graph.propose_fact(("Company", record["name"]), ("City", "Nowhere"), "IN")
            if record["name"].endswith("3"):
                raise ProposeError("the second fact of this record is refused")
            return [first]

    path = write_csv(tmp_path / "h.csv", HEADER, _rows(20))
    report = run(HalfFails, path, db=db_url)
    assert report.statistics.failed == 2 and report.statistics.successful == 18
    store = open_store(db_url)
    names = {row[1] for row in graph_snapshot(store)["nodes"]}
    assert "Company 3" not in names and "Company 13" not in names and "Company 4" in names
    assert {r[3] for r in dlq_snapshot(store)} == {"propose"}
    store.dispose()


def test_loader_bug_fails_the_record_not_the_run(db_url: str, tmp_path: Path) -> None:
    class Buggy(PairLoader):
        def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
            if raw["name"] == "Company 5":
                raise KeyError("no such column")
            return super().parse(raw)

    path = write_csv(tmp_path / "b.csv", HEADER, _rows(10))
    report = run(Buggy, path, db=db_url)
    assert report.status == "completed" and report.statistics.failed == 1
    store = open_store(db_url)
    row = dlq_snapshot(store)[0]
    assert row[1:5] == (5, 7, "parse", "KeyError")
    assert bytes(row[6]) == b"Company 5,City 5\n"
    store.dispose()


def test_unknown_node_type_is_a_validation_failure(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", HEADER, _rows(5))
    report = run(PairLoader, path, db=db_url, config={"graph": {"node_types": ["Company"]}})
    assert report.statistics.failed == 5
    store = open_store(db_url)
    assert {(r[3], r[4]) for r in dlq_snapshot(store)} == {("validate", "ValidationError")}
    assert "unknown node type 'City'" in dlq_snapshot(store)[0][5]
    store.dispose()


def test_an_unreadable_input_file_stops_with_a_clear_error(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match="no such file"):
        run(PairLoader, tmp_path / "missing.csv", db=db_url)
    with pytest.raises(SourceFileError, match="directory"):
        run(PairLoader, tmp_path, db=db_url)


def test_run_from_python_equals_run_from_the_cli(
    tmp_path: Path, example_journal: LoadedExample
) -> None:
    import subprocess
    import sys

    other = f"sqlite:///{tmp_path / 'cli.db'}"
    db_url, py = example_journal  # run(config=EXAMPLE_CONFIG, db=db_url), shared
    done = subprocess.run(
        [sys.executable, "-m", "journal_loader", "run", str(EXAMPLE_CONFIG), "--db", other],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert f"succeeded      {py.statistics.successful:,}" in done.stdout
    s_py, s_cli = open_store(db_url), open_store(other)
    assert graph_snapshot(s_py) == graph_snapshot(s_cli)
    assert sources_snapshot(s_py) == sources_snapshot(s_cli)
    assert dlq_snapshot(s_py) == dlq_snapshot(s_cli)
    s_py.dispose()
    s_cli.dispose()
    assert EXAMPLE_DATA.exists()


def test_statistics_count_a_remote_conflicted_relationship_as_created(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A Propose API deployment answers a new relationship that conflicts with
    `relationship_conflicted` alone (the embedded graph adds `relationship_created`)."""
    from journal_loader.graph.protocol import Action, Conflict
    from journal_loader.graph.target import RecordingTarget

    class Remote(RecordingTarget):
        def propose_fact(self, *args: Any, **kwargs: Any) -> ProposeResult:
            result = ProposeResult(
                status="conflicts",
                actions=[
                    Action(action="entity_matched"),
                    Action(action="entity_created"),
                    Action(action="relationship_conflicted", relationship_id=7),
                ],
                conflicts=[
                    Conflict(
                        relationship_id=3,
                        relationship_type="OPPOSING_COUNSEL",
                        source_entity_id=1,
                        target_entity_id=2,
                    )
                ],
            )
            self._results.append(result)
            return result

    path = write_csv(tmp_path / "p.csv", HEADER, _rows(4))
    report = run(PairLoader, path, db=sqlite_url, graph=Remote())
    s = report.statistics
    assert (s.relationships_created, s.conflicts_detected, s.entities_created) == (4, 4, 4)


def test_a_parsed_record_that_cannot_be_journaled_fails_alone(db_url: str, tmp_path: Path) -> None:
    class Odd(PairLoader):
        def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
            record = dict(raw)
            if raw["name"] == "Company 2":
                record["handle"] = object()  # nothing a journal can hold
            return record

    path = write_csv(tmp_path / "odd.csv", HEADER, _rows(5))
    report = run(Odd, path, db=db_url)
    assert (report.statistics.successful, report.statistics.failed) == (4, 1)
    store = open_store(db_url)
    (row,) = dlq_snapshot(store)
    assert row[1] == 2 and row[3] == "parse" and bytes(row[6]) == b"Company 2,City 2\n"
    assert "encode" in row[5].lower() or "serializ" in row[5].lower() or "object" in row[5]
    store.dispose()
