"""Fuzzy matching gives the same scores on both backends (journal_loader/graph/fuzzy.py).

* the Python similarity equals a live pg_trgm's ``similarity()`` on fuzzy keys;
* pg_trgm's index (candidates) and the in-process index find exactly what brute force
  finds, so a graph decides the same with either;
* the threshold reaches pg_trgm (below its 0.3 default too);
* migration 0002 gives the nodes already there their fuzzy keys, and migration 0005 builds
  pg_trgm's index (a run never does: without it, fuzzy matching uses the in-process index).
"""

from __future__ import annotations

import random

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from journal_loader.errors import AmbiguousMatchError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.fuzzy import (
    TrigramIndex,
    fuzzy_key,
    similarity,
    trigram_similarity,
    trigrams,
)
from journal_loader.graph.normalize import normalize_name
from journal_loader.storage import Store, open_store
from journal_loader.storage.migrate import upgrade
from tests.support.graph import Direct, rows
from tests.support.pg import pg_admin_url

WORDS = [
    "acme", "widgets", "widget", "inc", "incorporated", "corp", "nunez", "núñez", "properties",
    "smith", "wang", "associates", "llc", "a", "b1", "x", "co", "the", "of", "2048", "ørsted",
    "straße", "holdings", "holding", "riverside", "dental", "group", "grp", "o'reilly",
]  # fmt: skip


def _names(seed: int, n: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(1, 4))]
        if rnd.random() < 0.3:
            w = rnd.randrange(len(words))
            words[w] = words[w][:-1] or words[w]
        out.append(" ".join(words).title() if rnd.random() < 0.5 else " ".join(words))
    return out


def test_fuzzy_keys_fold_to_ascii_words() -> None:
    assert fuzzy_key("Núñez Properties, L.L.C.") == "nunez properties l l c"
    assert fuzzy_key("Ørsted A/S") == "orsted a s"
    assert fuzzy_key("Straße_2048") == "strasse 2048"
    assert fuzzy_key("O'Reilly's") == "oreillys"
    assert fuzzy_key("北京 Trading") is None
    assert fuzzy_key("Москва") is None
    assert fuzzy_key(" - ") is None
    assert trigrams("ab c") == {"  a", " ab", "ab ", "  c", " c "}
    assert similarity("Acme Widgets", "ACME WIDGETS") == 1.0
    assert similarity("abc", "xyz") == 0.0


@pytest.mark.postgres
def test_python_similarity_equals_pg_trgm(pg_url: str) -> None:
    store = open_store(pg_url)  # migration 0002 installs pg_trgm where the server has it
    try:
        with store.read() as conn:
            schema = conn.execute(
                text(
                    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n "
                    "ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
                )
            ).scalar()
        assert schema is not None, "pg_trgm is not installed in the test database"
        names = _names(1, 400)
        pairs = list(zip(names[:200], names[200:], strict=True))
        keys = [(fuzzy_key(a), fuzzy_key(b)) for a, b in pairs]
        with psycopg.connect(pg_admin_url()) as conn:
            pg = [
                conn.execute(f'SELECT "{schema}".similarity(%s, %s)', (ka, kb)).fetchone()[0]
                for ka, kb in keys
            ]
        py = [trigram_similarity(trigrams(ka or ""), trigrams(kb or "")) for ka, kb in keys]
        assert len({round(s, 2) for s in py}) > 10  # a spread of scores, not all 0 or 1
        for (a, b), pg_score, py_score in zip(pairs, pg, py, strict=True):
            assert pg_score == pytest.approx(py_score, abs=1e-6), (a, b)
    finally:
        store.dispose()


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.lists(st.sampled_from(["ab", "abc", "abd", "x", "xy", "acme", "acne", "co", "1"]),
                 min_size=1, max_size=4).map(" ".join),
        min_size=1,
        max_size=30,
    ),
    query=st.lists(st.sampled_from(["ab", "abc", "x", "acme", "co", "zz"]), min_size=1,
                   max_size=4).map(" ".join),
    threshold=st.sampled_from([0.2, 0.5, 0.8, 1.0]),
)  # fmt: skip
def test_trigram_index_finds_exactly_what_brute_force_finds(
    keys: list[str], query: str, threshold: float
) -> None:
    index = TrigramIndex()
    for i, key in enumerate(keys):
        index.add(i, key)
    if keys:
        index.remove(0)  # removal (undo) keeps the postings right
    expected = {
        (i, trigram_similarity(trigrams(query), trigrams(k)))
        for i, k in enumerate(keys)
        if i != 0 and trigram_similarity(trigrams(query), trigrams(k)) >= threshold
    }
    assert set(index.candidates(query, threshold)) == expected


THRESHOLD = 0.55


def _propose(d: Direct, g: EmbeddedGraph, name: str) -> tuple[object, ...]:
    try:
        with d.record():
            r = g.propose_fact(("Company", name), ("City", "X"), "IN")
    except AmbiguousMatchError:
        return (name, "ambiguous")
    return (name, r.actions[0].match_reason, r.actions[0].confidence)


def _decisions(graph: EmbeddedGraph, store: Store, names: list[str]) -> list[tuple[object, ...]]:
    d = Direct(graph, store)
    out = []
    for i, name in enumerate(names):
        with d.batch() as g:
            out.append(_propose(d, g, name))
            if i % 3 == 0:  # sometimes a near name in the same batch as the node it may match
                out.append(_propose(d, g, name + " x"))
    return out


def _reference(names: list[str]) -> list[tuple[object, ...]]:
    """The same decisions by brute force over the pure-Python similarity."""
    nodes: list[str] = []

    def one(name: str) -> tuple[object, ...]:
        if any(normalize_name(n) == normalize_name(name) for n in nodes):
            return (name, "exact_name_match", 1.0)
        if fuzzy_key(name) is not None:
            hits = [s for n in nodes if fuzzy_key(n) and (s := similarity(name, n)) >= THRESHOLD]
            if len(hits) > 1:
                return (name, "ambiguous")
            if hits:
                return (name, "fuzzy_match", round(hits[0], 6))
        nodes.append(name)
        return (name, "new_entity", 1.0)

    out = []
    for i, name in enumerate(names):
        out.append(one(name))
        if i % 3 == 0:
            out.append(one(name + " x"))
    return out


def _check_decisions(store: Store, use_pg_trgm: bool, expected_backend: str) -> None:
    names = _names(7, 150)
    graph = EmbeddedGraph(store, fuzzy={"Company": THRESHOLD}, use_pg_trgm=use_pg_trgm)
    assert graph.fuzzy_backend == expected_backend
    got = _decisions(graph, store, names)
    assert got == _reference(names)
    reasons = {d[1] for d in got}
    assert {"fuzzy_match", "new_entity", "exact_name_match", "ambiguous"} <= reasons


def test_every_backend_decides_like_brute_force(store: Store) -> None:
    """pg_trgm's candidates on PostgreSQL, the in-process index on SQLite."""
    backend = "pg_trgm" if store.dialect == "postgresql" else "memory"
    _check_decisions(store, use_pg_trgm=True, expected_backend=backend)


@pytest.mark.postgres
def test_postgresql_without_pg_trgm_decides_like_brute_force(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        _check_decisions(store, use_pg_trgm=False, expected_backend="memory")
    finally:
        store.dispose()


@pytest.mark.postgres
def test_a_threshold_below_pg_trgms_default_reaches_the_index(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        a, b = "Riverside Dental Group", "Lakeside Dental Partners"
        score = similarity(a, b)
        assert 0.2 < score < 0.3  # pg_trgm's own default threshold (0.3) would miss it
        graph = EmbeddedGraph(store, fuzzy={"Company": 0.2})
        assert graph.fuzzy_backend == "pg_trgm"
        d = Direct(graph, store)
        first = d.propose(("Company", a), ("City", "X"), "IN")
        second = d.propose(("Company", b), ("City", "X"), "IN")
        assert second.source_entity_id == first.source_entity_id
        assert second.actions[0].confidence == round(score, 6)
        (valid,) = rows(
            store,
            "SELECT i.indisvalid FROM pg_index i "
            "WHERE i.indexrelid = to_regclass('ix_nodes_fuzzy_key_trgm')",
        )
        assert valid == (True,)
    finally:
        store.dispose()


def test_the_in_process_index_sees_what_another_writer_committed(db_url: str) -> None:
    store_a, store_b = open_store(db_url), open_store(db_url)
    try:
        a = Direct(EmbeddedGraph(store_a, fuzzy={"Company": 0.8}, use_pg_trgm=False), store_a)
        b = Direct(EmbeddedGraph(store_b), store_b)
        a.propose(("Company", "Quorum Analytics Limited"), ("City", "X"), "IN")  # loads
        b.propose(("Company", "Halcyon Widgets Incorporated"), ("City", "X"), "IN")
        near = a.propose(("Company", "Halcyon Widget Incorporated"), ("City", "X"), "IN")
        assert near.actions[0].match_reason == "fuzzy_match"
    finally:
        store_a.dispose()
        store_b.dispose()


def test_migration_0002_gives_existing_nodes_their_fuzzy_keys(db_url: str) -> None:
    old = _bare_store(db_url)  # a database from before this feature: schema at 0001
    try:
        upgrade(old.engine, "0001")
        with old.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO nodes (id, node_type, name, norm_name, external_key, created_at,"
                    " updated_at) VALUES (1, 'Company', 'Núñez Properties', 'núñez properties',"
                    " NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP), (2, 'Company', '北京',"
                    " '北京', NULL, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(old.engine)
    finally:
        old.dispose()
    migrated = open_store(db_url)
    try:
        assert rows(migrated, "SELECT id, fuzzy_key FROM nodes ORDER BY id") == [
            (1, "nunez properties"),
            (2, None),
        ]
    finally:
        migrated.dispose()


INDEX_VALID = (
    "SELECT i.indisvalid FROM pg_index i "
    "WHERE i.indexrelid = to_regclass('ix_nodes_fuzzy_key_trgm')"
)


@pytest.mark.postgres
def test_migration_0005_builds_the_trigram_index_on_a_graph_in_use(pg_url: str) -> None:
    old = _bare_store(pg_url)  # a graph from before 0005, with nodes: built CONCURRENTLY
    try:
        upgrade(old.engine, "0004")
        with old.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO nodes (node_type, name, norm_name, created_at, updated_at,"
                    " fuzzy_key) VALUES ('Company', 'Halcyon Widgets Inc', 'halcyon widgets inc',"
                    " now(), now(), 'halcyon widgets inc')"
                )
            )
        upgrade(old.engine)
    finally:
        old.dispose()
    store = open_store(pg_url)
    try:
        assert rows(store, INDEX_VALID) == [(True,)]
        ((node_id,),) = rows(store, "SELECT id FROM nodes")
        graph = EmbeddedGraph(store, fuzzy={"Company": 0.8})
        assert graph.fuzzy_backend == "pg_trgm"
        near = Direct(graph, store).propose(("Company", "Halcyon Widget Inc"), ("City", "X"), "IN")
        assert (near.source_entity_id, near.actions[0].match_reason) == (node_id, "fuzzy_match")
    finally:
        store.dispose()


@pytest.mark.postgres
def test_without_the_trigram_index_a_run_builds_nothing_and_matches_in_process(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(pg_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_nodes_fuzzy_key_trgm"))  # as if pg_trgm came later
        with caplog.at_level("WARNING", logger="journal_loader.graph"):
            graph = EmbeddedGraph(store, fuzzy={"Company": THRESHOLD})
        assert graph.fuzzy_backend == "memory"
        assert "ix_nodes_fuzzy_key_trgm does not exist" in caplog.text
        assert "CREATE INDEX CONCURRENTLY ix_nodes_fuzzy_key_trgm" in caplog.text
        names = _names(11, 60)
        assert _decisions(graph, store, names) == _reference(names)
        assert rows(store, INDEX_VALID) == []  # no DDL in a run
    finally:
        store.dispose()


def _bare_store(db_url: str) -> Store:
    """A store on the URL without running its migrations."""
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)
