"""No single record can fail a batch (issue: one NUL byte blocked a PostgreSQL load for
good). PostgreSQL text refuses NUL bytes, SQLite stores them: a value with one, in any
position a loader can put a value, must send that record alone to the DLQ, with its raw
bytes, and let the rest of the batch load, on both backends and from both formats."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import Entity, Loader, ProposeClient, ProposeResult, run
from journal_loader.storage import open_store

GOOD = {
    "type": "Company",
    "name": "Acme",
    "key": "C1",
    "attr_type": "note",
    "attr": "plain",
    "rel": "LOCATED_IN",
    "meta": "m",
    "city": "Springfield",
}
# every place a record's values reach the database
POSITIONS = ["type", "name", "key", "attr_type", "attr", "rel", "meta", "city"]
BAD_OFFSET = 2
ROWS = 6


class ValuesLoader(Loader):
    """One fact per record, every part of it taken from the record."""

    name = "values"
    source_type = "values"

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        company = Entity(
            type=record["type"],
            name=record["name"],
            key=record["key"] or None,
            attributes={record["attr_type"]: record["attr"]},
        )
        return [
            graph.propose_fact(
                company, ("City", record["city"]), record["rel"], metadata={"m": record["meta"]}
            )
        ]


def _records(position: str) -> list[dict[str, str]]:
    out = []
    for i in range(ROWS):
        rec = {
            k: (f"{v}{i}" if k in ("name", "key", "attr", "meta") else v) for k, v in GOOD.items()
        }
        if i == BAD_OFFSET:
            rec[position] = "C\x001"
        out.append(rec)
    return out


def _write(path: Path, fmt: str, records: list[dict[str, str]]) -> Path:
    if fmt == "jsonl":
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in records))
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(GOOD), lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        path.write_bytes(buf.getvalue().encode())
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("position", POSITIONS)
def test_a_nul_byte_fails_its_record_alone(
    db_url: str, tmp_path: Path, fmt: str, position: str
) -> None:
    data = _write(tmp_path / f"values.{fmt}", fmt, _records(position))
    report = run(
        ValuesLoader,
        data,
        db=db_url,
        batch_size=10,
        config={"source": {"format": fmt}, "processing": {"retry_delay": 0.01}},
    )
    assert report.status == "completed", report.message
    assert report.exit_code == 0
    assert (report.statistics.successful, report.statistics.failed) == (ROWS - 1, 1)
    store = open_store(db_url)
    try:
        with store.read() as conn:
            failed = conn.execute(
                text("SELECT record_offset, raw_input, error_message FROM failed_records")
            ).all()
            companies = conn.execute(
                text("SELECT count(*) FROM nodes WHERE node_type = 'Company'")
            ).scalar()
    finally:
        store.dispose()
    assert [row[0] for row in failed] == [BAD_OFFSET]
    raw = bytes(failed[0][1])
    assert (b"C\\u00001" if fmt == "jsonl" else b"C\x001") in raw  # the bytes as in the file
    assert "\x00" not in failed[0][2]  # the message shows it escaped
    assert companies == ROWS - 1
