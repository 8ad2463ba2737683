"""The Python API in an orchestrator (issue 13): RunReport.to_dict(), raise_for_status(),
run(raise_on_failure=...), and the README's task pattern stopped by a SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from journal_loader import RunFailedError, RunPartialError, run
from journal_loader.errors import JournalLoaderError
from journal_loader.storage import open_store
from tests.support.loaders import PairLoader
from tests.support.ops import FatalLoader, pairs_config, pairs_csv
from tests.support.readme import blocks, section
from tests.support.snapshots import sources_snapshot

REPO = Path(__file__).resolve().parent.parent


def test_to_dict_is_json_with_the_exit_code(db_url: str, tmp_path: Path) -> None:
    report = run(PairLoader, pairs_csv(tmp_path / "pairs.csv"), db=db_url)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain JSON types only: fit for XCom
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["statistics"]["successful"] == report.statistics.successful
    assert data["source_id"] == report.source_id and data["run_id"] == report.run_id


def test_raise_for_status(db_url: str, tmp_path: Path) -> None:
    path = pairs_csv(tmp_path / "pairs.csv", fatal_at=25)
    failed = run(FatalLoader, path, db=db_url, batch_size=10)
    assert failed.status == "failed"
    with pytest.raises(RunFailedError) as e:
        failed.raise_for_status()
    assert e.value.report is failed and e.value.exit_code == 1
    assert isinstance(e.value, JournalLoaderError) and "the graph is gone" in str(e.value)
    partial = run(PairLoader, pairs_csv(tmp_path / "p2.csv", 30), db=db_url, limit=10)
    assert partial.raise_for_status() is partial  # partial is fine by default
    with pytest.raises(RunPartialError) as p:
        partial.raise_for_status(partial=True)
    assert p.value.report is partial and p.value.report.status == "partial"
    completed = run(PairLoader, pairs_csv(tmp_path / "p3.csv", 12), db=db_url)
    assert completed.raise_for_status(partial=True) is completed


def test_run_raises_on_failure_when_asked(db_url: str, tmp_path: Path) -> None:
    path = pairs_csv(tmp_path / "pairs.csv", fatal_at=25)
    with pytest.raises(RunFailedError) as e:
        run(FatalLoader, path, db=db_url, batch_size=10, raise_on_failure=True)
    assert e.value.report.statistics.total_processed == 20
    store = open_store(db_url)
    assert sources_snapshot(store)[0][2] == "failed"  # journaled as before: resumable
    store.dispose()


SLOW_LOADER = """\
import time
from pathlib import Path

from journal_loader import Loader


class SlowLoader(Loader):
    name = "slow"
    source_type = "slow"

    def propose(self, record, graph):
        Path("started").touch()
        time.sleep(0.01)
        return [graph.propose_fact(("Company", record["name"]), ("City", record["city"]),
                                   "LOCATED_IN")]
"""


@pytest.mark.parametrize("raise_on_failure", [True, False])
def test_the_readme_task_pattern_fails_the_task_on_sigterm(
    tmp_path: Path, raise_on_failure: bool
) -> None:
    code = blocks(section("Running in an orchestrator"), "python")[0]
    if not raise_on_failure:
        code = code.replace("raise_on_failure=True", "raise_on_failure=False")
    assert "raise_on_failure" in code and "to_dict()" in code
    (tmp_path / "slow_loader.py").write_text(SLOW_LOADER)
    config = pairs_config(tmp_path, n=3000)
    config.write_text(
        config.read_text().replace("pairs_loader.py:PairLoader", "slow_loader.py:SlowLoader")
    )
    script = (
        code
        + "\nimport json, sys\n"
        + f"result = load_registry({str(config)!r})\n"
        + "print(json.dumps(result))\n"
    )
    task = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JOURNAL_LOADER_DB_URL": ""},
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "started").exists():
            assert task.poll() is None, task.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        task.send_signal(signal.SIGTERM)
        out, err = task.communicate(timeout=60)
    finally:
        if task.poll() is None:
            task.kill()
    if raise_on_failure:  # the task fails: the orchestrator marks it failed, not green
        assert task.returncode == 1, (out, err)
        assert "RunInterruptedError" in err and "stopped by SIGTERM" in err
        assert out == ""
    else:  # the old way: a report saying failed, and a task that exits 0
        assert task.returncode == 0, err
        assert json.loads(out)["status"] == "failed"
    store = open_store(f"sqlite:///{tmp_path / 'journal.db'}")
    assert sources_snapshot(store)[0][2] == "failed"  # journaled; the next run resumes
    store.dispose()
