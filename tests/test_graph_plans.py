"""The embedded graph's lookups are index searches on both backends, and migration 0008
(the keyed-only name index) keeps every lookup's answers.

Why a plan test: a partial index serves only a query whose WHERE says the index's condition,
so a lookup by name that forgets ``external_key IS [NOT] NULL`` silently becomes a scan of
every node of the type: the same answers, a load that slows as the graph grows."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader.graph.store import DEFAULT_ALIAS_TYPE, alias_index_name, alias_literal
from journal_loader.storage import Store, open_store
from journal_loader.storage.migrate import upgrade
from journal_loader.storage.sql import load_queries

GRAPH = Path(__file__).resolve().parent.parent / "journal_loader" / "graph"

# (file, query): every lookup of the load's hot path and of `graph node --name/--key`
LOOKUPS = [
    ("embedded.sql", "find_nodes"),
    ("embedded.sql", "find_nodes_and_aliases"),
    ("embedded.sql", "find_keyless_nodes"),
    ("embedded.sql", "find_keyless_nodes_and_aliases"),
    ("embedded.sql", "any_alias"),
    ("embedded.sql", "find_attributes"),
    ("embedded.sql", "find_relationship"),
    ("embedded.sql", "find_relationships_between"),
    ("embedded.sql", "find_relationships_between_typed"),
    ("browse.sql", "nodes_by_name"),
    ("browse.sql", "nodes_by_alias"),
    ("browse.sql", "nodes_by_key"),
    ("browse.sql", "node_types"),
]
PG_LOOKUPS = [
    ("embedded.postgresql.sql", "prefetch_nodes"),
    ("embedded.postgresql.sql", "prefetch_aliases"),
    ("embedded.postgresql.sql", "prefetch_relationships"),
    ("embedded.postgresql.sql", "prefetch_relationships_typed"),
    ("embedded.postgresql.sql", "prefetch_attributes"),
]
INT_PARAMS = {"id", "node_id", "source_node_id", "target_node_id", "after"}
LIST_PARAMS = {
    "types": "str",
    "norms": "str",
    "key_types": "str",
    "keys": "str",
    "keyless_types": "str",
    "keyless_norms": "str",
}


def _params(sql: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name in re.findall(r"(?<!:):(\w+)", sql):
        if name in INT_PARAMS:
            params[name] = 1
        elif name in ("sources", "targets"):
            params[name] = [1, 2]
        elif name == "ids":  # sent as an array literal (GraphStore.prefetch_attributes)
            params[name] = "{1,2}"
        elif name in LIST_PARAMS:
            params[name] = ["Company", "Person"]
        else:
            params[name] = "x"
    return params


def _plan(store: Store, sql: str) -> str:
    with store.read() as conn:
        if store.dialect == "sqlite":
            rows = conn.execute(text("EXPLAIN QUERY PLAN " + sql), _params(sql)).fetchall()
            return "\n".join(str(r[3]) for r in rows)
        # An empty table costs nothing to scan: forbid what can be avoided, then look
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        rows = conn.execute(text("EXPLAIN " + sql), _params(sql)).fetchall()
        return "\n".join(str(r[0]) for r in rows)


def _scans(store: Store, plan: str) -> list[str]:
    if store.dialect == "sqlite":
        # A scan of an alias type's partial index reads that type's attributes only:
        # any_alias's LIMIT 1 stops at the first.
        return re.findall(
            r"^SCAN (nodes|attributes|relationships|n|a|r)\b(?! USING (?:COVERING )?INDEX "
            r"ix_attributes_alias_)",
            plan,
            re.M,
        )
    return re.findall(r"Seq Scan on (nodes|attributes|relationships)\b", plan)


def test_graph_lookups_are_index_searches(store: Store) -> None:
    lookups = LOOKUPS + (PG_LOOKUPS if store.dialect == "postgresql" else [])
    for file, name in lookups:
        sql = load_queries(GRAPH / file, store.dialect)[name]
        sql = sql.replace("{alias_type}", alias_literal(DEFAULT_ALIAS_TYPE))
        sql = sql.replace("{rel_types}", "'A', 'B'")
        plan = _plan(store, sql)
        assert not _scans(store, plan), f"{file} {name} scans a table:\n{plan}"
        if "{alias_type}" in load_queries(GRAPH / file, store.dialect)[name]:
            assert alias_index_name(DEFAULT_ALIAS_TYPE) in plan, f"{file} {name}:\n{plan}"


def test_another_alias_type_gets_its_own_index_from_its_first_run(store: Store) -> None:
    """A graph whose alias attribute is not the default builds that type's partial index when
    it prepares (once); its alias lookups then search it, not the attributes."""
    from journal_loader.graph.embedded import EmbeddedGraph

    name = alias_index_name("aka")
    graph = EmbeddedGraph(store, alias_attribute="aka")
    assert name not in _attribute_indexes(store)
    graph.prepare()
    assert name in _attribute_indexes(store)
    graph.prepare()  # again: nothing to build
    for file, query in [
        ("embedded.sql", "find_nodes_and_aliases"),
        ("embedded.sql", "find_keyless_nodes_and_aliases"),
        ("embedded.sql", "any_alias"),
    ]:
        sql = load_queries(GRAPH / file, store.dialect)[query].replace(
            "{alias_type}", alias_literal("aka")
        )
        plan = _plan(store, sql)
        assert not _scans(store, plan) and name in plan, f"{query}:\n{plan}"


def _attribute_indexes(store: Store) -> set[str]:
    from sqlalchemy import inspect

    with store.read() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("attributes")}


def _bare_store(db_url: str) -> Store:
    """A store on the URL without running its migrations."""
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)


def _indexes(store: Store) -> set[str]:
    from sqlalchemy import inspect

    with store.read() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("nodes")}


def test_migration_0008_keeps_the_lookups_by_name(db_url: str) -> None:
    """Nodes of one type and name, keyed and name-only, written at 0007: after 0008 the
    lookup by name finds each of them, and by key the keyed one."""
    nodes = [
        (1, "Person", "Ada Lovelace", "ada lovelace", None),
        (2, "Person", "ADA LOVELACE", "ada lovelace", "P-1"),
        (3, "Person", "Ada Lovelace", "ada lovelace", "P-2"),
        (4, "City", "Ada", "ada", None),
    ]
    old = _bare_store(db_url)
    try:
        upgrade(old.engine, "0007")
        assert "ix_nodes_type_name" in _indexes(old)
        with old.engine.begin() as conn:
            for node_id, node_type, name, norm, key in nodes:
                conn.execute(
                    text(
                        "INSERT INTO nodes (id, node_type, name, norm_name, external_key,"
                        " created_at, updated_at)"
                        " VALUES (:id, :t, :n, :norm, :k, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": node_id, "t": node_type, "n": name, "norm": norm, "k": key},
                )
        upgrade(old.engine)
    finally:
        old.dispose()
    store = open_store(db_url)
    try:
        names = _indexes(store)
        assert "ix_nodes_type_name" not in names and "ix_nodes_type_name_keyed" in names
        embedded = load_queries(GRAPH / "embedded.sql", store.dialect)
        browse = load_queries(GRAPH / "browse.sql", store.dialect)
        with store.read() as conn:
            found = conn.execute(
                text(embedded["find_nodes"]),
                {"node_type": "Person", "norm_name": "ada lovelace", "external_key": "P-9"},
            ).fetchall()
            assert sorted(r[0] for r in found) == [1, 2, 3]
            by_name = conn.execute(
                text(browse["nodes_by_name"]), {"node_type": "Person", "norm_name": "ada lovelace"}
            ).fetchall()
            assert [r[0] for r in by_name] == [1, 2, 3]  # ORDER BY id across both branches
            by_key = conn.execute(
                text(embedded["find_nodes"]),
                {"node_type": "Person", "norm_name": "someone else", "external_key": "P-2"},
            ).fetchall()
            assert [r[0] for r in by_key] == [3]
            types = [r[0] for r in conn.execute(text(browse["node_types"]))]
            assert types == ["City", "Person"]
    finally:
        store.dispose()


def test_typed_relationship_lookups_search_all_three_columns(store: Store) -> None:
    """Their point (a search of the unique index per source, type and target, not a walk of
    all a source's relationships, nor of all a target's): the index search names all three
    columns, on a graph with hub nodes (on an empty table PostgreSQL's choice between the
    indexes is a coin toss; with statistics the unique index is one row a search)."""
    stamp_now = dt.datetime.now(dt.UTC)
    with store.transaction() as tx:
        stamp = tx.graph_timestamp(stamp_now)
        tx.executemany(
            "INSERT INTO nodes (id, node_type, name, norm_name, created_at, updated_at) "
            "VALUES (:i, 'N', :name, :name, :n, :n)",
            [{"i": i, "name": f"n{i}", "n": stamp} for i in range(1, 401)],
        )
        for source in range(1, 6):  # 5 hub sources, 5 types, 40 targets each
            for rel_type in "ABCDE":
                tx.executemany(
                    "INSERT INTO relationships (source_node_id, rel_type, target_node_id, "
                    "strength, created_at, updated_at) VALUES (:s, :t, :o, 1.0, :n, :n)",
                    [{"s": source, "t": rel_type, "o": 10 + g, "n": stamp} for g in range(1, 41)],
                )
        tx.execute("ANALYZE")
    queries = [("embedded.sql", "find_relationships_between_typed")]
    if store.dialect == "postgresql":
        queries.append(("embedded.postgresql.sql", "prefetch_relationships_typed"))
    for file, name in queries:
        sql = load_queries(GRAPH / file, store.dialect)[name].replace("{rel_types}", "'A'")
        with store.read() as conn:
            if store.dialect == "sqlite":
                rows = conn.execute(
                    text("EXPLAIN QUERY PLAN " + sql), {"source_node_id": 1, "target_node_id": 11}
                ).fetchall()
                plan = "\n".join(str(r[3]) for r in rows)
                good = "rel_type=? AND target_node_id=?" in plan
            else:
                params = {"sources": [1, 2], "targets": [11, 12], "types": ["A"]}
                params |= {"source_node_id": 1, "target_node_id": 11}
                rows = conn.execute(text("EXPLAIN " + sql), params).fetchall()
                plan = "\n".join(str(r[0]) for r in rows)
                good = any(
                    "source_node_id" in c and "rel_type" in c and "target_node_id" in c
                    for c in re.findall(r"Index Cond: (.*)", plan)
                )
        assert good, f"{name}:\n{plan}"


@pytest.mark.postgres
def test_batch_lookups_are_index_searches_on_a_graph_without_statistics(pg_url: str) -> None:
    """Every lookup above, a batch's bulk ones with a batch's worth of values, stays an index
    search on PostgreSQL when the graph's tables have never been analysed (autovacuum off,
    or a first load outrunning it), where the test above forbids scans instead. Without statistics the planner
    took ``node_id = ANY(:ids)`` for most of the table and scanned every attribute, each
    batch (a million-row load at 0.55 of a 20,000-row one; 0.8 and more with the lookups
    fenced), and joined the alias lookup's nodes by a scan of every node: see
    embedded.postgresql.sql. The store's sessions also run with JIT off (why:
    journal_loader/storage/postgres.py), which such estimates set off."""
    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            for table in ("nodes", "attributes", "relationships"):
                tx.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
            tx.execute(
                "INSERT INTO nodes (id, node_type, name, norm_name, external_key, created_at,"
                " updated_at) SELECT g, 'Company', 'n' || g, 'n' || (g / 2),"
                " CASE WHEN g % 2 = 0 THEN 'k' || g END, now(), now()"
                " FROM generate_series(1, 20000) g"
            )
            tx.execute(
                "INSERT INTO attributes (id, node_id, attr_type, value, norm_value, created_at)"
                " SELECT g, (g + 1) / 2,"
                f" CASE WHEN g % 5 = 0 THEN {alias_literal(DEFAULT_ALIAS_TYPE)} ELSE 'a' END,"
                " 'v' || g, 'n' || (g / 4), now() FROM generate_series(1, 40000) g"
            )
            tx.execute(
                "INSERT INTO relationships (id, source_node_id, rel_type, target_node_id,"
                " strength, created_at, updated_at) SELECT g, g % 20000 + 1, 'R' || g % 3,"
                " g * 7 % 20000 + 1, 1, now(), now() FROM generate_series(1, 40000) g"
            )
        with store.read() as conn:
            analysed = conn.execute(
                text(
                    "SELECT count(*) FROM pg_class WHERE relname IN"
                    " ('nodes', 'attributes', 'relationships') AND reltuples >= 0"
                    " AND relnamespace = to_regnamespace(current_schema())"
                )
            ).scalar()
            assert analysed == 0, "the premise: no statistics"
            assert conn.execute(text("SHOW jit")).scalar() == "off"
        ids = list(range(1, 20000, 20))  # 1,000 of each, as a batch of 1,000 records asks
        names = [f"n{i}" for i in ids]
        params: dict[str, Any] = {
            "types": ["Company"] * len(names),
            "norms": names,
            "key_types": ["Company"] * len(names),
            "keys": [f"k{i}" for i in ids],
            "keyless_types": ["Company"] * len(names),
            "keyless_norms": names,
            "sources": ids,
            "targets": ids[::-1],
            "ids": "{" + ",".join(map(str, ids)) + "}",
        }
        for file, name in LOOKUPS + PG_LOOKUPS:
            sql = load_queries(GRAPH / file, "postgresql")[name]
            sql = sql.replace("{alias_type}", alias_literal(DEFAULT_ALIAS_TYPE))
            sql = sql.replace("{rel_types}", "'R1', 'R2'")
            wanted = _params(sql) | {k: v for k, v in params.items() if f":{k}" in sql}
            if name == "prefetch_relationships_typed":
                wanted["types"] = ["R1", "R2"]
            with store.transaction() as tx:
                assert tx.fetchall("SHOW jit")[0][0] == "off"
                plan = "\n".join(r[0] for r in tx.fetchall("EXPLAIN " + sql, wanted))
            assert not _scans(store, plan), f"{name} scans a table without statistics:\n{plan}"
    finally:
        store.dispose()
