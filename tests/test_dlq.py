"""The DLQ's life cycle on both backends: list, show, retry (without the file), resolve;
failure limits; and the projections still equal their rebuild after all of it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from journal_loader import run
from journal_loader.api import make_target
from journal_loader.cli import main
from journal_loader.config import Config
from journal_loader.dlq import DlqError, list_entries, resolve, retry, show_entry
from journal_loader.errors import SourceLockedError
from journal_loader.projections import rebuild
from journal_loader.storage import Store, open_store
from tests.support.loaders import PairLoader, write_csv
from tests.support.snapshots import dlq_snapshot, sources_snapshot

HEADER = ["name", "city"]


class Strict(PairLoader):
    """Fails every city called BAD (validate)."""


class Lenient(PairLoader):
    """The loader after the fix: BAD is a city after all."""

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        return []


def _load(db_url: str, tmp_path: Path, n: int = 30) -> tuple[Store, Path]:
    rows = [[f"Company {i}", "BAD" if i % 5 == 0 else f"City {i % 4}"] for i in range(n)]
    path = write_csv(tmp_path / "pairs.csv", HEADER, rows)
    report = run(Strict, path, db=db_url)
    assert report.statistics.failed == n // 5
    return open_store(db_url), path


def test_list_and_show(db_url: str, tmp_path: Path) -> None:
    store, _ = _load(db_url, tmp_path)
    entries = list_entries(store, source_id=1)
    assert [e["record_offset"] for e in entries] == [0, 5, 10, 15, 20, 25]
    assert list_entries(store, stage="parse") == []
    assert len(list_entries(store, error_type="ValidationError")) == 6
    shown = show_entry(store, entries[1]["id"])
    assert shown["raw_input"] == "Company 5,BAD\n" and shown["line_number"] == 7
    assert shown["parsed_record"] == {"name": "Company 5", "city": "BAD"}
    assert [a["stage"] for a in shown["attempts"]] == ["validate"]
    with pytest.raises(DlqError, match="no DLQ entry 999999"):
        show_entry(store, 999999)
    store.dispose()


def test_retry_without_the_file_with_fixed_loader_code(db_url: str, tmp_path: Path) -> None:
    store, path = _load(db_url, tmp_path)
    path.unlink()  # the retry works from the journal alone
    ids = [e["id"] for e in list_entries(store)]

    dry = retry(store, Lenient(Config()), make_target(store, Config()), source_id=1, dry_run=True)
    assert {o.outcome for o in dry.outcomes} == {"would retry"}
    assert len(list_entries(store)) == 6  # a dry run writes nothing

    still = retry(store, Strict(Config()), make_target(store, Config()), entry_ids=ids[:2])
    assert [o.outcome for o in still.outcomes] == ["failed", "failed"]
    assert [e["attempts"] for e in list_entries(store)][:3] == [2, 2, 1]

    fixed = retry(store, Lenient(Config()), make_target(store, Config()), source_id=1)
    assert [o.outcome for o in fixed.outcomes] == ["succeeded"] * 6
    assert list_entries(store) == []
    assert sources_snapshot(store)[0][2:] == ("completed", 30, 30, 30, 0, 0)
    assert rebuild(store, check=True).ok
    # the retried records point at the failure they answer
    shown_events = show_entry_events(store, 1, 5)
    assert shown_events[-1]["event_type"] == "ProposeSucceeded"
    assert shown_events[-1]["retry_of"] is not None
    store.dispose()


def show_entry_events(store: Store, source_id: int, offset: int) -> list[dict[str, Any]]:
    import msgspec

    from journal_loader.journal.queries import record_events

    with store.transaction() as tx:
        return [
            {"event_type": e.event_type, **msgspec.to_builtins(e.event)}
            for e in record_events(tx, source_id, offset)
        ]


def test_resolve_journals_who_and_why(db_url: str, tmp_path: Path) -> None:
    store, _ = _load(db_url, tmp_path)
    entry = list_entries(store)[0]
    with pytest.raises(DlqError, match="note"):
        resolve(store, entry["id"], "  ")
    position = resolve(store, entry["id"], "not a real company", resolved_by="auditor@example")
    assert entry["id"] not in [e["id"] for e in list_entries(store)]
    events = show_entry_events(store, 1, entry["record_offset"])
    assert events[-1]["event_type"] == "RecordResolved"
    assert events[-1]["note"] == "not a real company"
    assert events[-1]["resolved_by"] == "auditor@example" and position > entry["id"]
    assert sources_snapshot(store)[0][6] == 6  # still counted as failed
    assert rebuild(store, check=True).ok
    store.dispose()


def test_dlq_commands_respect_the_source_lock(db_url: str, tmp_path: Path) -> None:
    store, _ = _load(db_url, tmp_path)
    from sqlalchemy import text

    with store.read() as conn:
        file_hash = conn.execute(text("SELECT file_hash FROM sources")).scalar_one()
    lock = store.lock_source(f"pairs:{file_hash}", {"run_id": "a-running-load"})
    try:
        with pytest.raises(SourceLockedError, match="a-running-load"):
            resolve(store, list_entries(store)[0]["id"], "x")
        with pytest.raises(SourceLockedError):
            retry(store, Lenient(Config()), make_target(store, Config()), source_id=1)
    finally:
        lock.release()
    store.dispose()


def test_cli_list_show_retry_resolve(db_url: str, tmp_path: Path) -> None:
    store, _ = _load(db_url, tmp_path)
    cfg = tmp_path / "lenient.yaml"
    loader_file = tmp_path / "lenient_loader.py"
    loader_file.write_text("from tests.test_dlq import Lenient\n", encoding="utf-8")
    cfg.write_text(f"loader:\n  class: {loader_file.name}:Lenient\nsource:\n  type: pairs\n")
    cli = CliRunner()
    listed = cli.invoke(main, ["dlq", "list", "--db", db_url])
    assert listed.exit_code == 0 and "Company" not in listed.output
    ids = re.findall(r"^\s*(\d+)\s+1\s+", listed.output, re.MULTILINE)
    assert len(ids) == 6
    shown = cli.invoke(main, ["dlq", "show", ids[0], "--db", db_url])
    assert shown.exit_code == 0 and "raw input: Company 0,BAD" in shown.output
    usage = cli.invoke(main, ["dlq", "retry", "--db", db_url, "--source", "1"])
    assert usage.exit_code == 2 and "-c CONFIG" in usage.output
    resolved = cli.invoke(main, ["dlq", "resolve", ids[0], "--note", "dup", "--db", db_url])
    assert resolved.exit_code == 0, resolved.output
    retried = cli.invoke(main, ["dlq", "retry", "-c", str(cfg), "--db", db_url, "--source", "1"])
    assert retried.exit_code == 0, retried.output
    assert "5 succeeded (left the DLQ), 0 failed again" in retried.output
    assert dlq_snapshot(store) == []
    store.dispose()


def test_max_failed_records_stops_a_run_of_wrong_input(db_url: str, tmp_path: Path) -> None:
    rows = [[f"Company {i}", "BAD" if i >= 20 else "X"] for i in range(200)]
    path = write_csv(tmp_path / "wrong.csv", HEADER, rows)
    report = run(
        Strict, path, db=db_url, batch_size=10, config={"processing": {"max_failed_records": 25}}
    )
    assert report.status == "failed" and report.exit_code == 1
    assert "max_failed_records" in report.message
    assert report.statistics.total_processed == 50  # stopped after the batch that crossed it
    store = open_store(db_url)
    assert sources_snapshot(store)[0][2] == "failed"
    assert len(dlq_snapshot(store)) == 30
    store.dispose()


def test_max_failure_rate_waits_for_enough_records(db_url: str, tmp_path: Path) -> None:
    rows = [[f"Company {i}", "BAD" if i % 2 else "X"] for i in range(300)]
    path = write_csv(tmp_path / "half.csv", HEADER, rows)
    report = run(
        Strict,
        path,
        db=db_url,
        batch_size=50,
        config={"processing": {"max_failure_rate": 0.2, "failure_rate_min_records": 100}},
    )
    assert report.status == "failed" and "max_failure_rate" in report.message
    assert report.statistics.total_processed == 100
