"""Fail fast on a broken loader (issue 13): when the first N records of a run all fail with
the same kind of error, the run stops after N records with exit 2, the source stays
resumable, the failures stay in the DLQ, and a fixed loader resumes where it stopped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from journal_loader import Loader, ProposeClient, ProposeResult, run
from journal_loader.storage import open_store
from tests.support.licences import licences_config, licences_csv
from tests.support.loaders import write_csv
from tests.support.ops import run_cli
from tests.support.snapshots import dlq_snapshot, sources_snapshot


def test_a_broken_loader_stops_within_the_first_records_and_resumes_fixed(
    db_url: str, tmp_path: Path
) -> None:
    licences_csv(tmp_path / "licences_20260101.csv", 502)
    config = licences_config(tmp_path, column="Licence Number")
    done = run_cli("run", config, "--db", db_url, "--json", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "failed"
    assert report["statistics"]["total_processed"] == 100  # the default: 100 records
    assert report["statistics"]["failed"] == 100
    message = report["message"]
    # the missing key, the file's real columns, and the closest one
    assert "'Licence Number'" in message
    assert "'Licensee', 'Licence No', 'City', 'State'" in message
    assert "did you mean 'Licence No'?" in message
    assert "fail_fast_records" in message
    store = open_store(db_url)
    try:
        assert sources_snapshot(store)[0][2] == "failed"  # resumable, not completed
        dlq = dlq_snapshot(store)
        assert len(dlq) == 100 and {row[4] for row in dlq} == {"KeyError"}
        assert "did you mean 'Licence No'?" in dlq[0][5]  # each failure says it too
        # the loader fixed: the run resumes after the 100 records, and completes
        licences_config(tmp_path, column="Licence No")
        fixed = run_cli("run", config, "--db", db_url, "--json", cwd=tmp_path)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        again = json.loads(fixed.stdout)
        assert again["status"] == "completed" and again["resumed_from"] == 100
        assert again["statistics"]["successful"] == 402
        assert len(dlq_snapshot(store)) == 100  # the failures stay until retried
        retried = run_cli("dlq", "retry", "-c", config, "--db", db_url, "--source", "1")
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert dlq_snapshot(store) == []
    finally:
        store.dispose()


def test_a_node_type_outside_the_config_trips_it_too(db_url: str, tmp_path: Path) -> None:
    licences_csv(tmp_path / "licences_20260101.csv", 150)
    config = licences_config(
        tmp_path, column="Licence No", node="Cty", extra="processing:\n  fail_fast_records: 20\n"
    )
    done = run_cli("run", config, "--db", db_url, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown node type 'Cty'" in done.stdout + done.stderr
    assert "did you mean 'City'?" in done.stdout + done.stderr
    store = open_store(db_url)
    try:
        assert len(dlq_snapshot(store)) == 20
        assert sources_snapshot(store)[0][2] == "failed"
    finally:
        store.dispose()


class _Mixed(Loader):
    """Fails every record, but not all in the same way: not a broken loader, bad data."""

    name = "mixed"
    source_type = "mixed"

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        if int(raw["n"]) % 2:
            raise ValueError("odd")
        return dict(raw)

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        return ["even"]

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        return []


class _AllBad(_Mixed):
    name = "all_bad"
    source_type = "all_bad"

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"n": raw["N"]}


def test_the_python_api_option_and_what_does_not_trip_it(db_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", ["n"], [[str(i)] for i in range(250)])
    mixed = run(_Mixed, path, db=db_url, batch_size=1000)
    assert mixed.status == "completed" and mixed.statistics.failed == 250
    # 0 turns it off; a number sets it (and counts from the first record of this run)
    off = run(_AllBad, path, db=db_url, fail_fast_records=0)
    assert off.status == "completed" and off.statistics.failed == 250
    other = write_csv(tmp_path / "n2.csv", ["n"], [[str(i)] for i in range(251)])
    tripped = run(_AllBad, other, db=db_url, fail_fast_records=7, batch_size=5)
    assert tripped.status == "failed" and tripped.exit_code == 2
    assert tripped.statistics.failed == 7 and tripped.statistics.total_processed == 7
    assert "no column 'N'" in tripped.message and "did you mean 'n'?" in tripped.message
    # a record that succeeds first disarms it for the rest of the run
    good_first = write_csv(
        tmp_path / "good_first.csv", ["name", "city"], [["A", "X"]] + [["", ""]] * 150
    )

    class _GoodFirst(Loader):
        name = "good_first"
        source_type = "good_first"

        def validate(self, record: Mapping[str, Any]) -> list[str]:
            return [] if record["name"] else ["no name"]

        def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
            return []

    report = run(_GoodFirst, good_first, db=db_url, fail_fast_records=10)
    assert report.status == "completed" and report.statistics.failed == 150
