"""bench/bench_load.py, the script behind the README's performance table, on a tiny file.

Its figures are not checked (speed is measured, never asserted): what is checked is that it
still runs end to end, prints each figure the table is made of, measures the same load at
both batch sizes (the batch-5,000 load runs in a process of its own), and leaves nothing
behind: no SQLite file in the temporary directory, no ``bench_`` schema in PostgreSQL.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pg import PG_URL, pg_admin_url

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_load.py"
ROWS = 400

RATE = r"([\d,]+) records/s"


def _run(tmp_path: Path, *args: str) -> str:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", str(ROWS), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert list(tmp.iterdir()) == [], "bench_load.py left files in its temporary directory"
    return proc.stdout


def _check_backend(out: str, backend: str) -> None:
    tag = re.escape(f"[{backend}]")

    def rate(pattern: str) -> int:
        m = re.search(tag + " " + pattern, out)
        assert m, f"no line {pattern!r} for {backend} in:\n{out}"
        value = int(m.group(1).replace(",", ""))
        assert value > 0
        return value

    rate(r"baseline \(csv parse \+ 2 events/record, raw driver\): " + RATE)
    # beside each rate, how busy the cores were (what more overlap could give at most)
    busy = re.findall(tag + r" .*?; (\d+)% of the \d+ cores busy", out)
    assert len(busy) >= 5, out  # baseline, journal only, both example loads, the rows alone
    rate(r"journal only \(no-op propose, batch 10,000\): " + RATE)
    for share in ("10%", "50%", "90%"):
        assert re.search(tag + rf" resume at {share}: start-up \d+ ms", out), out
    rate(r"its rows alone .*?: " + RATE)
    created = {}
    for batch in ("1,000", "5,000"):
        rate(rf"example loader, embedded graph \(batch {batch}\): " + RATE)
        m = re.search(
            tag + rf" example loader, embedded graph \(batch {batch}\):.*?"
            r"([\d,]+) entities, ([\d,]+) relationships created",
            out,
        )
        assert m, out
        created[batch] = (m.group(1), m.group(2))
    # the same file, the same graph: the load in the other process measured the same work
    assert created["1,000"] == created["5,000"]
    assert int(created["1,000"][0].replace(",", "")) > ROWS


def test_sqlite_prints_every_figure_and_removes_its_files(tmp_path: Path) -> None:
    out = _run(tmp_path, "--only", "sqlite")
    _check_backend(out, "sqlite")
    assert "[postgresql]" not in out


@pytest.mark.postgres
def test_both_backends_each_in_its_own_process_and_no_schema_left(tmp_path: Path) -> None:
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    import psycopg

    def bench_schemas() -> set[str]:
        with psycopg.connect(pg_admin_url()) as conn:
            rows = conn.execute(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name LIKE 'bench%%'"
            ).fetchall()
        return {r[0] for r in rows}

    before = bench_schemas()
    out = _run(tmp_path, "--pg", pg_admin_url())
    _check_backend(out, "sqlite")
    _check_backend(out, "postgresql")
    # a process per backend: each prints its own file line and peak RSS
    assert out.count("peak RSS of this process") == 2
    assert bench_schemas() <= before
