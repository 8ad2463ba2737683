"""The error hierarchy: one root, a record's failure and skip under it, and the runner still
telling them apart from the errors that stop a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic

import journal_loader
from journal_loader import run
from journal_loader.errors import (
    ConfigError,
    JournalLoaderError,
    ParseError,
    ProposeError,
    RecordError,
    RecordValidationError,
    SkipRecord,
    ValidationError,
    error_type_of,
)
from journal_loader.storage import open_store
from tests.support.loaders import PairLoader, write_csv
from tests.support.snapshots import dlq_snapshot


def test_one_root() -> None:
    for cls in (RecordError, ParseError, RecordValidationError, ProposeError, SkipRecord):
        assert issubclass(cls, JournalLoaderError), cls
    assert RecordError("x").exit_code == 1
    assert str(SkipRecord("no name")) == "no name" and SkipRecord("no name").reason == "no name"


def test_the_old_name_is_an_alias_and_no_longer_pydantics() -> None:
    assert ValidationError is RecordValidationError
    assert journal_loader.ValidationError is RecordValidationError
    assert journal_loader.RecordValidationError is RecordValidationError
    assert RecordValidationError.__name__ != pydantic.ValidationError.__name__


def test_the_dlq_name_of_a_failure() -> None:
    class ZipError(RecordValidationError):
        pass

    assert RecordValidationError("x").error_type == "ValidationError"  # as journaled before
    assert ZipError("x").error_type == "ZipError"
    assert ProposeError("x").error_type == "ProposeError"
    assert error_type_of(ValidationError("x")) == "ValidationError"
    assert error_type_of(KeyError("x")) == "KeyError"


class _Picky(PairLoader):
    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        name = raw["name"]
        if name == "Company 1":
            raise ValidationError("the old name")
        if name == "Company 2":

            class ZipError(RecordValidationError):
                pass

            raise ZipError("a subclass of the new name")
        if name == "Company 3":
            raise SkipRecord("not this one")
        return super().parse(raw)


def test_a_run_still_fails_and_skips_records_by_these_errors(
    sqlite_url: str, tmp_path: Path
) -> None:
    path = write_csv(
        tmp_path / "p.csv", ["name", "city"], [[f"Company {i}", "X"] for i in range(5)]
    )
    report = run(_Picky, path, db=sqlite_url)
    assert report.status == "completed"
    s = report.statistics
    assert (s.successful, s.failed, s.skipped) == (2, 2, 1)
    store = open_store(sqlite_url)
    try:
        assert [(r[1], r[3], r[4], r[5]) for r in dlq_snapshot(store)] == [
            (1, "parse", "ValidationError", "the old name"),
            (2, "parse", "ZipError", "a subclass of the new name"),
        ]
    finally:
        store.dispose()


def test_any_other_journal_loader_error_still_stops_the_run(
    sqlite_url: str, tmp_path: Path
) -> None:
    class Broken(PairLoader):
        def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
            if raw["name"] == "Company 2":
                raise ConfigError("the loader is misconfigured")
            return super().parse(raw)

    path = write_csv(
        tmp_path / "p.csv", ["name", "city"], [[f"Company {i}", "X"] for i in range(5)]
    )
    report = run(Broken, path, db=sqlite_url)
    assert report.status == "failed"
    assert report.message == "the loader is misconfigured"
    assert report.statistics.failed == 0
