"""A run that died is visible as such; a silent one is STALLED; `status --stalled` alerts;
the next run journals the dead one as abandoned and resumes (both backends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import text

from journal_loader.cli import main
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_CONFIG

REPO = Path(__file__).resolve().parent.parent


def _status(db_url: str) -> tuple[int, list[dict[str, object]]]:
    result = CliRunner().invoke(main, ["status", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    stalled = CliRunner().invoke(main, ["status", "--db", db_url, "--stalled"])
    return stalled.exit_code, json.loads(result.output)


def test_dead_and_stalled_runs_are_visible_and_the_next_run_takes_over(db_url: str) -> None:
    env = {**os.environ, "JOURNAL_LOADER_CRASH_AT": "after_commit:1"}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "journal_loader",
            "run",
            str(EXAMPLE_CONFIG),
            "--db",
            db_url,
            "--batch-size",
            "500",
            "--quiet",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL
    code, rows = _status(db_url)
    assert rows[0]["status"] == "processing" and rows[0]["health"] == "DEAD"
    assert code == 1  # --stalled alerts on a dead run
    assert rows[0]["records_processed"] == 500

    store = open_store(db_url)
    with store.read() as conn:
        file_hash = conn.execute(text("SELECT file_hash FROM sources")).scalar_one()
    with store.transaction() as tx:
        tx.run("INSERT INTO loader_settings (name, value) VALUES ('stall_threshold_seconds', '0')")
    # A live runner (it holds the lock) that has said nothing for longer than the threshold.
    lock = store.lock_source(f"business_registry:{file_hash}", {"run_id": "a-silent-run"})
    try:
        time.sleep(1.1)
        code, rows = _status(db_url)
        assert rows[0]["health"] == "STALLED" and code == 1
    finally:
        lock.release()
    with store.transaction() as tx:
        tx.run("DELETE FROM loader_settings WHERE name = 'stall_threshold_seconds'")

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "journal_loader",
            "run",
            str(EXAMPLE_CONFIG),
            "--db",
            db_url,
            "--batch-size",
            "500",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    code, rows = _status(db_url)
    assert rows[0]["status"] == "completed" and rows[0]["health"] == "OK" and code == 0
    with store.read() as conn:
        abandoned = (
            conn.execute(text("SELECT payload FROM journal WHERE event_type = 'RunAbandoned'"))
            .scalars()
            .all()
        )
    assert len(abandoned) == 1 and "takes over" in abandoned[0]
    store.dispose()
