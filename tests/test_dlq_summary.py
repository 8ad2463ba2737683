"""``dlq summary``: the DLQ grouped by stage, error type and normalised message, on both
backends; the shipped example's 21 failures are three problems, and ``run`` prints the top
three of its own failures."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from journal_loader import run
from journal_loader.api import make_target
from journal_loader.cli import main
from journal_loader.config import Config
from journal_loader.dlq import retry
from journal_loader.failures import normalise, summarise
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_CONFIG
from tests.support.loaders import PairLoader, write_csv
from tests.support.pg import drop_pg_schema, make_pg_schema

DATE = "field 'effective_date': '…' is not a date in the format MM/DD/YYYY"
RA_ZIP = "RA Zip '…' is not a US zip (<n> or <n>-<n>)"
HO_ZIP = "HO Zip '…' is not a US zip (<n> or <n>-<n>)"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def example(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The shipped example loaded once per backend: (database URL, the run's id)."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('summary') / 'journal.db'}"
    else:
        url, schema = make_pg_schema()
    try:
        report = run(config=EXAMPLE_CONFIG, db=url)
        assert report.status == "completed" and report.run_id
        yield url, report.run_id
    finally:
        if schema is not None:
            drop_pg_schema(schema)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_normalise_folds_numbers_and_quoted_values_but_keeps_names() -> None:
    assert normalise("HO Zip '12345-67' is not a US zip (12345 or 12345-6789)") == HO_ZIP.replace(
        "RA", "HO"
    )
    assert normalise("RA Zip 'ABCDE' is not a US zip (12345 or 12345-6789)") == RA_ZIP
    # a quoted name after field/column/key/attribute is the problem's subject: kept
    assert (
        normalise("field 'effective_date': '13/45/2020' is not a date in the format MM/DD/YYYY")
        == DATE
    )
    assert normalise('missing column "Licence Number" at line 12') == (
        'missing column "Licence Number" at line <n>'
    )
    # digits inside a word (a corp number) are part of it; spaces collapse
    assert normalise("company C1000452  has   2.5 owners, -3 left") == (
        "company C1000452 has <n> owners, <n> left"
    )


def test_summary_groups_the_examples_21_failures_into_three(example: tuple[str, str]) -> None:
    url, run_id = example
    done = _cli("dlq", "summary", "--source", "1", "--json", "--db", url)
    assert done.exit_code == 0, done.output
    groups = json.loads(done.output)
    assert [
        (g["count"], g["stage"], g["error_type"], g["pattern"], g["example_offset"]) for g in groups
    ] == [
        (9, "validate", "ValidationError", DATE, 508),
        (7, "validate", "ValidationError", RA_ZIP, 589),
        (5, "validate", "ValidationError", HO_ZIP, 232),
    ]
    store = open_store(url)
    try:
        with store.read() as conn:
            failed = conn.execute(
                text("SELECT records_failed FROM sources WHERE source_id = 1")
            ).scalar_one()
            example_rows = conn.execute(
                text("SELECT id, record_offset, line_number FROM failed_records "
                     "WHERE record_offset IN (508, 589, 232) ORDER BY record_offset")
            ).all()  # fmt: skip
    finally:
        store.dispose()
    assert sum(g["count"] for g in groups) == failed == 21
    assert sorted((g["example_id"], g["example_offset"], g["example_line"]) for g in groups) == [
        tuple(r) for r in example_rows
    ]
    assert all(g["first_run_id"] == g["last_run_id"] == run_id for g in groups)
    assert all(g["source_ids"] == [1] for g in groups)

    shown = _cli("dlq", "summary", "--source", "1", "--db", url)
    assert shown.exit_code == 0
    lines = shown.output.splitlines()
    assert lines[0] == "21 record(s) in the dead-letter queue (source 1), 3 group(s):"
    for count, pattern, offset in ((9, DATE, 508), (7, RA_ZIP, 589), (5, HO_ZIP, 232)):
        (line,) = [x for x in lines if pattern in x]
        assert line.split()[0] == str(count) and f" {offset} " in line and run_id[:8] in line
    # every source at once is the same here; an unknown source is a usage error (exit 2),
    # as for every command that takes a source id
    assert json.loads(_cli("dlq", "summary", "--json", "--db", url).output) == groups
    unknown = _cli("dlq", "summary", "--source", "9", "--db", url)
    assert unknown.exit_code == 2 and "no source 9" in unknown.output


def test_run_prints_its_top_three_failure_groups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    done = _cli("run", str(EXAMPLE_CONFIG), "--db", url, "--quiet")
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("failed"))
    top = [line.split() for line in lines[at + 1 : at + 4]]
    assert [t[0] for t in top] == ["9", "7", "5"]
    assert DATE in lines[at + 1] and "record 508, line 510" in lines[at + 1]
    assert RA_ZIP in lines[at + 2] and HO_ZIP in lines[at + 3]
    assert lines[at + 4].strip().startswith("skipped")

    again = _cli("run", str(EXAMPLE_CONFIG), "--db", url.replace("journal", "j2"), "--json")
    report = json.loads(again.stdout)
    assert [g["count"] for g in report["failure_groups"]] == [9, 7, 5]


class FourProblems(PairLoader):
    """Fails rows by the city's first word: four kinds, 4, 3, 2 and 1 of them."""

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        kind = record["city"].split()[0]
        if kind in ("alpha", "beta", "gamma", "delta"):
            return [f"{kind} city {record['city']!r} rejected at row {record['name']}"]
        return []


def test_more_than_three_kinds_and_first_last_run_after_a_retry(
    db_url: str, tmp_path: Path
) -> None:
    rows = [[str(i), f"{kind} {i}"] for kind, n in
            (("alpha", 4), ("beta", 3), ("gamma", 2), ("delta", 1), ("ok", 5)) for i in range(n)]  # fmt: skip
    path = write_csv(tmp_path / "pairs.csv", ["name", "city"], rows)
    first = run(FourProblems, path, db=db_url)
    assert [(g.count, g.pattern) for g in first.failure_groups] == [
        (4, "alpha city '…' rejected at row <n>"),
        (3, "beta city '…' rejected at row <n>"),
        (2, "gamma city '…' rejected at row <n>"),
        (1, "delta city '…' rejected at row <n>"),
    ]
    from journal_loader.cli.run_cmd import summary

    text_summary = summary(first)
    assert "... and 1 more kind(s): journal-loader dlq summary --source 1" in text_summary
    assert "delta" not in text_summary

    # the beta records fail again in a retry: their last run is the retry's
    store = open_store(db_url)
    try:
        beta = next(e for e in summarise(store) if e.pattern.startswith("beta"))
        entries = [r for r in _entries(store) if r[1].startswith("beta")]
        loader = FourProblems(Config())
        target = make_target(store, Config())
        try:
            retry(store, loader, target, entry_ids=[e for e, _ in entries])
        finally:
            target.close()
        after = {g.pattern.split()[0]: g for g in summarise(store, source_id=1)}
        assert after["beta"].count == 3
        assert after["beta"].first_run_id == first.run_id == beta.first_run_id
        assert after["beta"].last_run_id not in ("", first.run_id)
        assert after["beta"].last_failed_at > beta.last_failed_at
        assert after["alpha"].last_run_id == first.run_id
        # a run's own failures: the first run's are now the other three kinds
        assert sorted(g.pattern.split()[0] for g in summarise(store, run_id=first.run_id)) == [
            "alpha",
            "delta",
            "gamma",
        ]
    finally:
        store.dispose()


def _entries(store: Any) -> list[tuple[int, str]]:
    with store.read() as conn:
        return [
            tuple(r) for r in conn.execute(text("SELECT id, error_message FROM failed_records"))
        ]
