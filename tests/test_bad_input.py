"""Bad input, one case each, through a real run: the documented action (the record goes to
the DLQ with its raw bytes, or the file is refused, or the run stops), a message that names
the line and byte (the DLQ entry names the file), and the accounting
read = succeeded + failed + skipped."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from journal_loader import faults, run
from journal_loader.errors import SourceFileError
from journal_loader.storage import open_store
from tests.support.loaders import PairLoader
from tests.support.snapshots import dlq_snapshot, sources_snapshot

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Case:
    name: str
    content: bytes
    succeeded: int
    failed: int = 0
    error_type: str | None = None  # of the failed record
    suffix: str = ".csv"
    config: dict | None = None  # type: ignore[type-arg]


J = b'{"name":"A","city":"X"}\n'
CASES = [
    Case("invalid_utf8", b"name,city\nA,X\nB\xff,X\nC,X\n", 2, 1, "invalid_encoding"),
    Case("bom", b"\xef\xbb\xbfname,city\nA,X\nB,Y\n", 2),
    Case("nul_byte", b"name,city\nA\x00,X\nB,X\n", 1, 1, "nul_byte"),
    Case("unterminated_quote", b'name,city\nA,X\n"B,X\nC,X\nD,X\n', 3, 1, "unterminated_quote"),
    Case("too_many_fields", b"name,city\nA,X,extra\nB,X\n", 1, 1, "field_count"),
    Case("too_few_fields", b"name,city\nA\nB,X\n", 1, 1, "field_count"),
    Case("header_only", b"name,city\n", 0),
    Case(
        "field_over_cap",
        b"name,city\n" + b"A" * 300 + b",X\nB,X\n",
        1,
        1,
        "field_too_large",
        config={"source": {"field_size_limit": 100}},
    ),
    Case(
        "very_long_line",
        b"name,city\nA," + b"x" * 5000 + b"\nB,X\n",
        1,
        1,
        "record_too_large",
        config={"source": {"max_record_bytes": 1000}},
    ),
    Case("mixed_cr_lf", b"name,city\r\nA,X\nB,X\rC,X\r\n", 3),
    Case("invalid_json", J + b'{"name": "B", "city"\n' + J, 2, 1, "invalid_json", ".jsonl"),
    Case("json_not_an_object", J + b'["B", "X"]\n' + J, 2, 1, "not_an_object", ".jsonl"),
    Case(
        "json_deep_nesting",
        J + b'{"name":"B","city":"X","d":' + b"[" * 200 + b"]" * 200 + b"}\n",
        1,
        1,
        "too_deep",
        ".jsonl",
    ),
    Case(
        "json_key_twice",
        J + b'{"name": "B", "city": "X", "name": "C"}\n' + J,
        2,
        1,
        "duplicate_key",
        ".jsonl",
    ),
    Case(
        "json_nan",
        J + b'{"name":"B","city":NaN}\n{"name":"C","city":Infinity}\n',
        1,
        2,
        "invalid_json",
        ".jsonl",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_record_level_bad_input(case: Case, tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / f"input{case.suffix}"
    path.write_bytes(case.content)
    report = run(PairLoader, path, db=sqlite_url, config=case.config)
    s = report.statistics
    assert report.status == "completed", report.message
    assert (s.successful, s.failed) == (case.succeeded, case.failed)
    assert s.total_processed == s.successful + s.failed + s.skipped == report.records_in_file
    store = open_store(sqlite_url)
    dlq = dlq_snapshot(store)
    assert len(dlq) == case.failed
    for _sid, _offset, line, stage, error_type, message, raw in dlq:
        assert stage == "read" and error_type == case.error_type
        assert f"line {line}" in message and "byte" in message  # where, in the message
        assert bytes(raw) and bytes(raw) in case.content  # the exact bytes, nothing lost
    with store.read() as conn:
        assert conn.execute(text("SELECT file_name FROM sources")).scalar_one() == path.name
    store.dispose()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty", b"", "empty"),
        ("duplicate_headers", b"name,name\nA,B\n", "duplicate"),
        ("utf16_undeclared", "name,city\nA,X\n".encode("utf-16"), "UTF-16"),
    ],
)
def test_file_level_bad_input_is_refused(
    name: str, content: bytes, message: str, tmp_path: Path, sqlite_url: str
) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_bytes(content)
    with pytest.raises(SourceFileError, match=message) as info:
        run(PairLoader, path, db=sqlite_url)
    assert str(path) in str(info.value) and info.value.exit_code == 1


def test_huge_numbers_in_json_do_not_lose_the_record(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "n.jsonl"
    path.write_bytes(
        J
        + b'{"name":"B","city":"X","n":123456789012345678901234567890}\n'
        + b'{"name":"C","city":"X","n":1e999}\n'
    )
    report = run(PairLoader, path, db=sqlite_url)
    s = report.statistics
    assert s.total_processed == 3 == s.successful + s.failed
    store = open_store(sqlite_url)
    assert len(dlq_snapshot(store)) == s.failed  # whatever cannot be held is in the DLQ
    store.dispose()


def test_ambiguous_dates_fail_validation_with_the_format(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"name,city,since\nA,X,01/02/2003\nB,X,2003-02-01\nC,X,1/2/3\n")
    report = run(
        PairLoader,
        path,
        db=sqlite_url,
        config={"validation": {"date_fields": {"since": "MM/DD/YYYY"}}},
    )
    assert report.statistics.successful == 1 and report.statistics.failed == 2
    store = open_store(sqlite_url)
    messages = [r[5] for r in dlq_snapshot(store)]
    assert all("not a date in the format MM/DD/YYYY" in m for m in messages)
    store.dispose()


def test_truncated_gzip_keeps_what_came_before_and_fails_the_run(
    tmp_path: Path, sqlite_url: str
) -> None:
    body = b"name,city\n" + b"".join(b"Company %d,City\n" % i for i in range(5000))
    whole = gzip.compress(body)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    report = run(PairLoader, path, db=sqlite_url, batch_size=500)
    assert report.status == "failed" and report.exit_code == 1
    assert "gzip" in report.message.lower() and str(path) in report.message
    # every record decompressed before the damage is kept, even mid-batch; none after it
    readable = gzip.GzipFile(fileobj=__import__("io").BytesIO(path.read_bytes()))
    complete = 0
    try:
        for line in readable:
            complete += line.endswith(b"\n")
    except EOFError:
        pass
    store = open_store(sqlite_url)
    src = sources_snapshot(store)[0]
    assert src[2] == "failed" and src[4] == complete - 1  # minus the header
    assert 0 < src[4] < 5000
    store.dispose()


@pytest.mark.parametrize("change", ["grows", "truncated"])
def test_file_changing_during_the_run_stops_it(
    change: str, tmp_path: Path, sqlite_url: str
) -> None:
    path = tmp_path / "moving.csv"
    path.write_bytes(b"name,city\n" + b"".join(b"Company %d,City\n" % i for i in range(300)))

    def meddle(n: int) -> None:
        if n == 1:
            with path.open("r+b") as f:
                if change == "grows":
                    f.seek(0, os.SEEK_END)
                    f.write(b"Company late,City\n")
                else:
                    f.truncate(1000)

    faults.on("after_commit", meddle)
    try:
        report = run(PairLoader, path, db=sqlite_url, batch_size=100)
    finally:
        faults.reset(None)
    assert report.status == "failed" and "changed while it was being loaded" in report.message
    store = open_store(sqlite_url)
    assert sources_snapshot(store)[0][4] == 100  # the first batch stays; nothing after it
    store.dispose()


def test_file_replaced_under_the_same_name_is_a_new_source(tmp_path: Path, sqlite_url: str) -> None:
    path = tmp_path / "registry.csv"
    path.write_bytes(b"name,city\nA,X\nB,X\nC,X\n")
    assert run(PairLoader, path, db=sqlite_url, limit=1).status == "partial"
    path.write_bytes(b"name,city\nD,X\nE,X\n")
    second = run(PairLoader, path, db=sqlite_url)
    assert second.status == "completed" and second.source_id == 2 and second.resumed_from == 0
    store = open_store(sqlite_url)
    # the partial source of the old content is superseded (issue 9: it stayed partial, or
    # DEAD, for ever); its rows stay
    assert [s[2] for s in sources_snapshot(store)] == ["abandoned", "completed"]
    assert second.notes and "source 1" in second.notes[0] and "superseded" in second.notes[0]
    store.dispose()


def test_symlink_is_followed_and_identified_by_content(tmp_path: Path, sqlite_url: str) -> None:
    target = tmp_path / "real.csv"
    target.write_bytes(b"name,city\nA,X\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run(PairLoader, link, db=sqlite_url).status == "completed"
    assert run(PairLoader, target, db=sqlite_url).status == "already_processed"


def test_unreadable_file_fails_with_permission_denied(tmp_path: Path) -> None:
    """Root reads mode-000 files, so the run drops the capabilities that let it
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) with setpriv: a real permission error."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv (util-linux) to drop read capabilities")
    secret = tmp_path / "locked.csv"
    secret.write_bytes(b"name,city\nA,X\n")
    secret.chmod(0o000)
    done = subprocess.run(
        [
            "setpriv",
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
            sys.executable,
            "-m",
            "journal_loader",
            "run",
            str(REPO / "examples/business_registry/loader.yaml"),
            str(secret),
            "--db",
            f"sqlite:///{tmp_path / 'j.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert f"{secret}: permission denied" in done.stderr
    assert "Traceback" not in done.stderr
