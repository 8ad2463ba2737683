"""A batch resolved set-based (the loader's facts collected first, looked up at once, then
resolved in order: journal_loader/graph/batch.py) gives what proposing fact by fact gives:
the same graph by content, the same journaled answers, the same DLQ, on both backends.

The file has records that create, reuse (within a batch and from committed rows), adopt,
match by alias and fuzzily, conflict, and fail every way a record can fail at propose: a
value the collector's checks refuse, one only resolution refuses (an attribute, metadata), an
ambiguous match, a loader that raises after a fact, a loader that catches the graph's error
and proposes something else, and one that reads an answer inside propose (after which the
run proposes fact by fact). The company, one Entity in up to three facts of a record, has a
list of values with one twice (a collected record reuses its attribute ids)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from journal_loader import run
from journal_loader.config import load_config
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.storage import Store, open_store
from tests.support.loaders import write_csv
from tests.support.mixed import (
    COLUMNS,
    CONFIG,
    LOADER,
    ROWS,
    PerFact,
    answers,
    debt_loads,
    identities,
    journal,
)
from tests.support.snapshots import dlq_snapshot, graph_snapshot


def _load(url: str, graph_class: type[EmbeddedGraph], data: Path, config: Path) -> Store:
    store = open_store(url)
    cfg = load_config(config)
    for i in range(2):  # the second load (--force) finds everything committed
        graph = graph_class.from_config(store, cfg)
        report = run(config=config, file=data, store=store, graph=graph, batch_size=6, force=i > 0)
        assert report.status == "completed", report.message
    return store


# "later": one more row before the Reader, so that the batch after the switch to fact by
# fact holds three records; on PostgreSQL it takes the prefetch path, which once journaled
# all of a batch's RecordParsed before their outcomes.
@pytest.mark.parametrize("shift", ["", "later"])
def test_a_batch_resolved_at_once_equals_fact_by_fact(
    two_urls: tuple[str, str], tmp_path: Path, shift: str
) -> None:
    rows = list(ROWS)
    if shift:
        rows.insert(rows.index(next(r for r in ROWS if r[6] == "read")), ROWS[0])
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    batch = _load(two_urls[0], EmbeddedGraph, data, config)
    per_fact = _load(two_urls[1], PerFact, data, config)
    try:
        assert graph_snapshot(batch) == graph_snapshot(per_fact)
        assert answers(batch) == answers(per_fact)
        assert dlq_snapshot(batch) == dlq_snapshot(per_fact)
        assert journal(batch) == journal(per_fact)  # each record's events together
        # the file does what it says: every way of failing, and the answers it names
        failures = {(r[1], r[3], r[4]) for r in dlq_snapshot(batch)}
        assert {f[2] for f in failures} == {"AmbiguousMatchError", "ValidationError", "ValueError"}
        assert len(failures) == 6  # ambiguous, 3 bad values, the loader's error, unknown type
        actions = {
            a[0] if a[0] != "entity_matched" else a[2]
            for _source, _offset, answers in answers(batch)
            for r in answers
            for a in r[2]
        }
        assert {
            "alias_match",
            "fuzzy_match",
            "external_key",
            "exact_name_match",
            "entity_created",
            "relationship_created",
            "relationship_duplicate",
            "relationship_updated",
            "relationship_conflicted",
        } <= actions
        assert any(n[1].endswith("unresolved") for n in identities(batch)[0].values())
    finally:
        batch.dispose()
        per_fact.dispose()


def test_records_without_facts_answer_as_fact_by_fact(
    two_urls: tuple[str, str], tmp_path: Path
) -> None:
    """A record that proposes nothing skips the graph's record state (every record of a
    journal-only loader does): the same journal, answers and DLQ as fact by fact, next to
    every other kind of record, failing ones included."""
    nothing = ["Nothing", "", "", "Boston", "", "", "none"]
    rows = [nothing]
    for row in ROWS:
        if row[6] != "read":  # no switch to fact by fact: every batch is collected
            rows += [row, nothing]
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    batch = _load(two_urls[0], EmbeddedGraph, data, config)
    per_fact = _load(two_urls[1], PerFact, data, config)
    try:
        assert graph_snapshot(batch) == graph_snapshot(per_fact)
        assert answers(batch) == answers(per_fact)
        assert dlq_snapshot(batch) == dlq_snapshot(per_fact)
        assert journal(batch) == journal(per_fact)
        empty = [answers for _source, _offset, answers in answers(batch) if not answers]
        assert len(empty) == 2 * sum(1 for r in rows if r is nothing)  # both loads
    finally:
        batch.dispose()
        per_fact.dispose()


class SmallCache(EmbeddedGraph):
    """Caches of committed rows kept within ``limit`` entries: over it at (nearly) every
    commit, so the older half is dropped (``_evict``), or everything when the graph has
    given keys to more nodes than a quarter of the limit (``_forget``)."""

    limit = 4
    evictions = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "cache_limit": self.limit})

    def _evict(self) -> None:
        type(self).evictions += 1
        super()._evict()


class SmallerCache(SmallCache):
    limit = 1  # a quarter of it is 0: every adoption empties the caches at once


@pytest.mark.parametrize("small", [SmallCache, SmallerCache])
def test_bounded_caches_answer_as_unbounded(
    two_urls: tuple[str, str], tmp_path: Path, small: type[SmallCache]
) -> None:
    """Issue 11: the caches of committed rows stay within ``cache_limit`` (the older half
    dropped between batches), and that changes no answer: the same graph, answers, DLQ and
    journal as with caches that keep everything of this file. The file three times over,
    the reader last: every name, alias, key and pair comes back after the caches dropped
    it, or while they still have it."""
    rows = [r for r in ROWS if r[6] != "read"] * 3 + [r for r in ROWS if r[6] == "read"]
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    small.evictions = 0
    bounded = _load(two_urls[0], small, data, config)
    unbounded = _load(two_urls[1], EmbeddedGraph, data, config)
    try:
        assert graph_snapshot(bounded) == graph_snapshot(unbounded)
        assert answers(bounded) == answers(unbounded)
        assert dlq_snapshot(bounded) == dlq_snapshot(unbounded)
        assert journal(bounded) == journal(unbounded)
        if small is SmallCache:
            assert small.evictions > 3
    finally:
        bounded.dispose()
        unbounded.dispose()


class Untyped(EmbeddedGraph):
    """Relationships between two nodes looked up whatever their type (as for a config that
    names no relationship types): the reference for the typed lookups."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pair_types = None


def test_relationships_looked_up_by_type_answer_as_untyped(
    two_urls: tuple[str, str], tmp_path: Path
) -> None:
    """The relationships between two nodes, looked up by the config's types and those
    opposing them (``find_relationships_between_typed``; on PostgreSQL the prefetch's
    ``prefetch_relationships_typed``), give the answers of the untyped lookups, next to
    relationships of types the config does not name, written under another config."""
    results = []
    for url, graph_class in zip(two_urls, (EmbeddedGraph, Untyped), strict=True):
        store = open_store(url)
        try:
            for data, config in debt_loads(tmp_path):
                graph = graph_class.from_config(store, load_config(config))
                assert (graph._pair_types is None) is (graph_class is Untyped)
                report = run(config=config, file=data, store=store, graph=graph, batch_size=5)
                assert report.status == "completed", report.message
            results.append((graph_snapshot(store), answers(store), dlq_snapshot(store)))
        finally:
            store.dispose()
    assert results[0] == results[1]
    statuses = {r[0] for _s, _o, records in results[0][1] for r in records}
    assert "conflicts" in statuses
