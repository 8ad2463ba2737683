"""A partial source whose file then changed (issue: it stayed DEAD forever), and
`journal-loader source abandon` (both backends).

Run, kill -9, change the file, rerun: the new run loads the new content as a new source and
says that the old one, left partial at record X, is superseded; the old source is retired
(SourceAbandoned journaled, nothing deleted), so `status --stalled` is quiet again, and its
facts and DLQ entries stay. An operator can retire a partial source by hand the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from journal_loader.cli import main
from journal_loader.projections import rebuild
from journal_loader.storage import open_store
from tests.support.cli import run_cli_process
from tests.support.example import EXAMPLE_CONFIG, EXAMPLE_DATA

REPO = Path(__file__).resolve().parent.parent


def _run(db_url: str, data: Path, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_LOADER_CRASH_AT"}
    if crash:
        env["JOURNAL_LOADER_CRASH_AT"] = crash
    args = ["run", str(EXAMPLE_CONFIG), str(data), "--db", db_url, "--batch-size", "500"]
    # a crash run gets an interpreter of its own (the crash point is read at import)
    return run_cli_process(args, module=True, env=env, cwd=REPO, timeout=600)


def _status(db_url: str) -> tuple[int, dict[int, dict[str, object]]]:
    result = CliRunner().invoke(main, ["status", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    stalled = CliRunner().invoke(main, ["status", "--db", db_url, "--stalled"])
    return stalled.exit_code, {int(r["source_id"]): r for r in json.loads(result.output)}


def _scalar(db_url: str, sql: str, **params: object) -> object:
    store = open_store(db_url)
    try:
        with store.read() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        store.dispose()


@pytest.fixture
def killed(db_url: str, tmp_path: Path) -> Path:
    """The example file, loaded until SIGKILL after its second batch (1,000 records)."""
    data = tmp_path / EXAMPLE_DATA.name
    shutil.copy(EXAMPLE_DATA, data)
    run = _run(db_url, data, crash="after_commit:2")
    assert run.returncode == -signal.SIGKILL
    code, rows = _status(db_url)
    assert rows[1]["health"] == "DEAD" and code == 1
    return data


@pytest.mark.parametrize("change", ["edit", "append", "truncate"])
def test_a_changed_file_supersedes_the_partial_source(
    db_url: str, killed: Path, change: str
) -> None:
    lines = killed.read_bytes().splitlines(keepends=True)
    if change == "edit":
        lines[3] = lines[3].replace(b",", b", ", 1)
    elif change == "append":
        lines.append(lines[5])
    else:
        lines = lines[:2001]
    killed.write_bytes(b"".join(lines))
    facts_before = _scalar(db_url, "SELECT count(*) FROM provenance WHERE source_id = 1")
    dlq_before = _scalar(db_url, "SELECT count(*) FROM failed_records WHERE source_id = 1")
    assert facts_before and dlq_before

    rerun = _run(db_url, killed)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "completed (source 2" in rerun.stdout
    assert (
        "source 1 (same type and file name, other content) was left processing at record "
        "1,000; it is now superseded by source 2"
    ) in rerun.stdout

    code, rows = _status(db_url)
    assert code == 0  # --stalled is quiet: the retired source is not DEAD any more
    assert rows[1]["status"] == "abandoned" and rows[1]["health"] == "ABANDONED"
    assert "superseded by source 2" in str(rows[1]["error_message"])
    assert rows[2]["status"] == "completed"
    # nothing deleted: the old source's facts and failures are where they were
    assert _scalar(db_url, "SELECT count(*) FROM provenance WHERE source_id = 1") == facts_before
    assert _scalar(db_url, "SELECT count(*) FROM failed_records WHERE source_id = 1") == (
        dlq_before
    )
    event = _scalar(
        db_url,
        "SELECT payload FROM journal WHERE source_id = 1 AND event_type = 'SourceAbandoned'",
    )
    assert json.loads(str(event))["superseded_by"] == 2
    store = open_store(db_url)
    try:
        assert rebuild(store, check=True).ok
    finally:
        store.dispose()
    verify = CliRunner().invoke(main, ["verify", "--db", db_url])
    assert verify.exit_code == 0, verify.output


def test_source_abandon_retires_a_dead_source_and_its_content_can_still_resume(
    db_url: str, killed: Path
) -> None:
    result = CliRunner().invoke(
        main, ["source", "abandon", "1", "--reason", "export withdrawn", "--db", db_url]
    )
    assert result.exit_code == 0, result.output
    assert (
        "source 1 (business_registry_20251001.csv) abandoned: it was processing, left at "
        "record 1,000"
    ) in result.output
    code, rows = _status(db_url)
    assert code == 0 and rows[1]["health"] == "ABANDONED"
    assert rows[1]["error_message"] == "export withdrawn"
    again = CliRunner().invoke(main, ["source", "abandon", "1", "--reason", "x", "--db", db_url])
    assert again.exit_code == 0 and "abandoned already" in again.output

    # the same content comes back: the source resumes where it was left, and completes
    rerun = _run(db_url, killed)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "completed (source 1" in rerun.stdout and "resumed at     record 1,000" in rerun.stdout
    code, rows = _status(db_url)
    assert code == 0 and rows[1]["status"] == "completed"


def test_source_abandon_refuses_what_it_must_not_retire(db_url: str, killed: Path) -> None:
    unknown = CliRunner().invoke(main, ["source", "abandon", "9", "--reason", "x", "--db", db_url])
    assert unknown.exit_code == 2 and "no source 9" in unknown.output
    no_reason = CliRunner().invoke(
        main, ["source", "abandon", "1", "--reason", " ", "--db", db_url]
    )
    assert no_reason.exit_code == 2 and "needs a reason" in no_reason.output

    store = open_store(db_url)
    file_hash = _scalar(db_url, "SELECT file_hash FROM sources WHERE source_id = 1")
    lock = store.lock_source(f"business_registry:{file_hash}", {"run_id": "a-live-run"})
    try:  # a live run holds it: never retired under it
        live = CliRunner().invoke(main, ["source", "abandon", "1", "--reason", "x", "--db", db_url])
        assert live.exit_code == 75, live.output
    finally:
        lock.release()
        store.dispose()

    assert _run(db_url, killed).returncode == 0  # completes source 1
    done = CliRunner().invoke(main, ["source", "abandon", "1", "--reason", "x", "--db", db_url])
    assert done.exit_code == 2 and "is completed" in done.output
