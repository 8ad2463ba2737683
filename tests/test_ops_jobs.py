"""`journal-loader jobs run DIR`: every config in turn, one failure does not stop the others,
a summary table, exit 1 if any failed, a locked source counts as skipped."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from journal_loader.storage import open_store
from tests.support.ops import pairs_config, run_cli


def folder_of_jobs(root: Path) -> Path:
    jobs = root / "jobs.d"
    pairs_config(jobs, name="a_first", n=20)
    pairs_config(jobs, name="b_broken", n=30, fatal_at=15)
    pairs_config(jobs, name="c_last", n=25)
    (jobs / "d_bad_config.yml").write_text("loader:\n  name: d\n  wrong: 1\n")
    (jobs / "notes.txt").write_text("not a config")
    (jobs / ".hidden.yaml").write_text("not: read")
    return jobs


def test_every_job_runs_and_the_exit_code_says_one_failed(tmp_path: Path, db_url: str) -> None:
    jobs = folder_of_jobs(tmp_path)
    r = run_cli("jobs", "run", jobs, "--db", db_url, "--quiet", "--json", cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stderr
    results = json.loads(r.stdout)
    assert [Path(x["config"]).name for x in results] == [
        "a_first.yaml",
        "b_broken.yaml",
        "c_last.yaml",
        "d_bad_config.yml",
    ]
    outcome = {Path(x["config"]).name: x for x in results}
    assert outcome["a_first.yaml"]["outcome"] == "completed"
    assert outcome["a_first.yaml"]["report"]["statistics"]["total_processed"] == 20
    assert outcome["b_broken.yaml"]["outcome"] == "failed"
    assert "the graph is gone" in outcome["b_broken.yaml"]["note"]
    assert outcome["c_last.yaml"]["outcome"] == "completed"  # after a failure: still run
    assert outcome["d_bad_config.yml"]["outcome"] == "failed: config"
    assert "unknown key" in outcome["d_bad_config.yml"]["note"]


def test_the_summary_table(tmp_path: Path, sqlite_url: str) -> None:
    jobs = folder_of_jobs(tmp_path)
    r = run_cli("jobs", "run", jobs, "--db", sqlite_url, "--quiet", cwd=tmp_path, timeout=300)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["job", "outcome", "exit", "records", "failed", "seconds", "note"]
    assert lines[2].startswith("a_first.yaml") and "completed" in lines[2]
    assert lines[3].startswith("b_broken.yaml") and "failed" in lines[3]
    assert lines[-1] == "4 jobs: 2 ok, 2 failed, 0 skipped (locked)"


def test_all_ok_exits_0_and_a_locked_job_is_skipped(tmp_path: Path, db_url: str) -> None:
    jobs = tmp_path / "jobs.d"
    pairs_config(jobs, name="one", n=10)
    pairs_config(jobs, name="two", n=12)
    sha = hashlib.sha256((jobs / "two.csv").read_bytes()).hexdigest()
    store = open_store(db_url)
    try:
        with store.lock_source(f"pairs:{sha}", {"run_id": "other"}):
            r = run_cli("jobs", "run", jobs, "--db", db_url, "--quiet", cwd=tmp_path)
    finally:
        store.dispose()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped: locked" in r.stdout
    assert r.stdout.splitlines()[-1] == "2 jobs: 1 ok, 0 failed, 1 skipped (locked)"
    again = run_cli("jobs", "run", jobs, "--db", db_url, "--quiet", cwd=tmp_path)
    assert again.returncode == 0
    assert "already_processed" in again.stdout and "two.yaml" in again.stdout


def test_each_job_writes_its_own_textfile(tmp_path: Path, sqlite_url: str) -> None:
    jobs = tmp_path / "jobs.d"
    pairs_config(jobs, name="one", n=10)
    pairs_config(jobs, name="two", n=12)
    tc = tmp_path / "textfile_collector"
    tc.mkdir()
    r = run_cli(
        "jobs",
        "run",
        jobs,
        "--db",
        sqlite_url,
        "--quiet",
        "--metrics-textfile-dir",
        tc,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tc.iterdir()) == [
        "journal_loader_one.prom",
        "journal_loader_two.prom",
    ]
    for name, n in (("one", 10), ("two", 12)):
        text = (tc / f"journal_loader_{name}.prom").read_text()
        position = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "journal_loader_position"
        ]
        assert position == [n]


def test_a_job_past_its_timeout_is_stopped_and_failed(tmp_path: Path, sqlite_url: str) -> None:
    jobs = tmp_path / "jobs.d"
    jobs.mkdir()
    (jobs / "slow_loader.py").write_text(
        "import time\nfrom journal_loader import Loader\n\n\n"
        "class Slow(Loader):\n    name = 'slow'\n    source_type = 'slow'\n\n"
        "    def propose(self, record, graph):\n        time.sleep(0.2)\n        return []\n"
    )
    (jobs / "slow.csv").write_text("a\n" + "x\n" * 200)
    (jobs / "slow.yaml").write_text(
        "loader:\n  name: slow\n  class: slow_loader.py:Slow\n"
        "source:\n  type: slow\n  file: slow.csv\nprocessing:\n  batch_size: 5\n"
    )
    # 15 s (the job alone takes 40): enough for a loaded machine to start the run and
    # install its SIGTERM handler first, which 8 s may not have been
    r = run_cli("jobs", "run", jobs, "--db", sqlite_url, "--timeout", "15", "--json", cwd=tmp_path)
    assert r.returncode == 1
    (result,) = json.loads(r.stdout)
    assert result["outcome"] == "failed: timeout"
    assert 15 <= result["seconds"] < 38
    # SIGTERM first: the run finished its batch and journaled the stop (a rerun resumes)
    assert result["report"] is not None and result["report"]["status"] == "failed"
    assert "SIGTERM" in result["report"]["message"]


def test_an_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    r = run_cli("jobs", "run", tmp_path)
    assert r.returncode == 2 and "no *.yaml or *.yml config" in r.stderr
    r = run_cli("jobs", "run", tmp_path / "missing")
    assert r.returncode == 2


@pytest.mark.slow
def test_jobs_run_workers_keeps_one_type_at_a_time_and_equals_one_at_a_time(
    tmp_path: Path,
) -> None:
    """`jobs run DIR --workers 2` on SQLite: two registries side by side, each registry's
    quarters in order; the result equals `jobs run DIR` (one job at a time)."""
    import sqlite3

    from tests.support.example import registry, typed_config
    from tests.support.snapshots import content_state

    data = tmp_path / "data"
    folder = tmp_path / "jobs.d"
    files = {
        "a1": ("registry_a", registry(data / "a" / "business_registry_20250101.csv", 1500, 11)),
        "a2": ("registry_a", registry(data / "a" / "business_registry_20250401.csv", 1500, 12)),
        # registry_b's one file is as long as registry_a's two together. Before the writers'
        # turnstile (storage/sqlite.py, SQLiteStore.transaction) a1 starved behind b1's
        # back-to-back batches and began only after b1 ended: the overlap assert failed
        "b1": ("registry_b", registry(data / "b" / "business_registry_20250101.csv", 3000, 13)),
    }
    for name, (source_type, path) in files.items():
        typed_config(folder, source_type, file=path, name=name)
    states = {}
    for workers in ("1", "2"):
        db = tmp_path / f"w{workers}.db"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "journal_loader",
                "jobs",
                "run",
                str(folder),
                "--quiet",
                "--workers",
                workers,
                "--db",
                f"sqlite:///{db}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "3 jobs: 3 ok, 0 failed" in r.stdout
        states[workers] = content_state(f"sqlite:///{db}")
    for part in states["1"]:
        assert states["2"][part] == states["1"][part], f"{part} differs"
    with sqlite3.connect(tmp_path / "w2.db") as conn:
        rows = conn.execute(
            "SELECT src.source_type, src.source_version, "
            "min(CASE WHEN j.event_type = 'RunStarted' THEN j.position END), "
            "max(CASE WHEN j.event_type = 'RunFinished' THEN j.position END) "
            "FROM journal j JOIN sources src ON src.source_id = j.source_id GROUP BY 1, 2"
        ).fetchall()
    by = {(t, v): (start, end) for t, v, start, end in rows}
    assert by[("registry_a", "2025-Q1")][1] < by[("registry_a", "2025-Q2")][0], rows
    a_span = (by[("registry_a", "2025-Q1")][0], by[("registry_a", "2025-Q2")][1])
    b_span = by[("registry_b", "2025-Q1")]
    assert a_span[0] < b_span[1] and b_span[0] < a_span[1], rows  # side by side
