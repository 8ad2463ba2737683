"""Alias matching and its index (migration 0010): the alias type's attributes are in a partial
index of their own (``ix_attributes_alias_<type>_<hash>``), the default type's built by the
migration and another type's by the first run that uses it (GraphStore.ensure_alias_index).
The answers are those of before: a name matches the nodes that have it as an attribute of the
configured alias type, and only of that type; a store that cannot build the index still
answers, by a scan, and says how to build it."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sqlalchemy import inspect, text

from journal_loader.graph.browse import find_nodes
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.protocol import Entity
from journal_loader.graph.store import alias_index_name, alias_literal
from journal_loader.storage import Store, open_store
from journal_loader.storage.migrate import upgrade
from tests.support.graph import Direct

TYPES = ["Company", "City"]


def _graph(store: Store, alias: str) -> EmbeddedGraph:
    graph = EmbeddedGraph(
        store, node_types=TYPES, relationship_types=["LOCATED_IN"], alias_attribute=alias
    )
    graph.prepare()  # as a run does
    return graph


def _attribute_indexes(store: Store) -> set[str]:
    with store.read() as conn:
        return {str(ix["name"]) for ix in inspect(conn).get_indexes("attributes")}


@pytest.mark.parametrize("alias", ["nameAlias", "aka"])
def test_a_name_matches_by_its_alias_type_only_across_runs(store: Store, alias: str) -> None:
    """Written by one graph, matched by another (a later run: empty caches, so the answer
    comes from the index): the configured type's attribute is an alias, the other's is not."""
    other = "aka" if alias == "nameAlias" else "nameAlias"
    writer = Direct(_graph(store, alias), store)
    acme = writer.propose(
        Entity(
            type="Company",
            name="Acme Widgets",
            key="C1",
            attributes={alias: ["AW Co"], other: "Widgets Inc"},
        ),
        ("City", "Springfield"),
        "LOCATED_IN",
    )
    assert alias_index_name(alias) in _attribute_indexes(store)
    later = Direct(_graph(store, alias), store)
    by_alias = later.propose(("Company", "aw co."), ("City", "Springfield"), "LOCATED_IN")
    assert by_alias.source_entity_id == acme.source_entity_id
    assert by_alias.actions[0].match_reason == "alias_match"
    not_alias = later.propose(("Company", "Widgets Inc"), ("City", "Springfield"), "LOCATED_IN")
    assert not_alias.actions[0].match_reason == "new_entity"
    # `graph node --name`: by name first, else by the configured alias type
    assert [n["id"] for n in find_nodes(store, name="AW CO", alias_attribute=alias)] == [
        acme.source_entity_id
    ]
    assert find_nodes(store, name="AW CO", alias_attribute=other) == []


def test_migration_0010_keeps_the_aliases_written_before_it(db_url: str) -> None:
    old_store = _bare(db_url)
    try:
        upgrade(old_store.engine, "0009")
        with old_store.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO nodes (id, node_type, name, norm_name, external_key, created_at,"
                    " updated_at) VALUES (101, 'Company', 'Acme', 'acme', 'C1', 0, 0),"
                    " (102, 'Company', 'Beta', 'beta', NULL, 0, 0)"
                    if old_store.dialect == "sqlite"
                    else "INSERT INTO nodes (id, node_type, name, norm_name, external_key,"
                    " created_at, updated_at) VALUES (101, 'Company', 'Acme', 'acme', 'C1', now(),"
                    " now()), (102, 'Company', 'Beta', 'beta', NULL, now(), now())"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO attributes (id, node_id, attr_type, value, norm_value, created_at)"
                    " VALUES (101, 101, 'nameAlias', 'ACME Corp', 'acme corp', :t),"
                    " (102, 102, 'status', 'acme corp', 'acme corp', :t)"
                ),
                {"t": 0 if old_store.dialect == "sqlite" else "2026-11-30T00:00:00Z"},
            )
        assert "ix_attributes_type_norm" in _attribute_indexes(old_store)
        upgrade(old_store.engine)
    finally:
        old_store.dispose()
    store = open_store(db_url)
    try:
        names = _attribute_indexes(store)
        assert "ix_attributes_type_norm" not in names
        assert alias_index_name("nameAlias") in names
        d = Direct(_graph(store, "nameAlias"), store)
        found = d.propose(("Company", "Acme Corp"), ("City", "X"), "LOCATED_IN")
        assert (found.source_entity_id, found.actions[0].match_reason) == (101, "alias_match")
    finally:
        store.dispose()


def _bare(db_url: str) -> Store:
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)


def test_runs_starting_together_build_the_index_once(store: Store) -> None:
    """Four graphs of a new alias type prepare at the same moment, each on its own
    connection: one builds the index, the others find it; none fails."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    built: list[bool] = []

    def prepare() -> None:
        try:
            graph = EmbeddedGraph(store, alias_attribute="also known as")
            barrier.wait()
            built.append(graph._db.ensure_alias_index(store, "also known as"))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and built == [True] * 4
    assert alias_index_name("also known as") in _attribute_indexes(store)


def test_a_store_that_cannot_build_the_index_still_answers_and_says_how(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    writable = open_store(url)
    try:
        d = Direct(_graph(writable, "nameAlias"), writable)  # no "aka" index: this graph
        acme = d.propose(  # is of the default type
            Entity(type="Company", name="Acme", key="C1", attributes={"aka": "Roadrunner Co"}),
            ("City", "X"),
            "LOCATED_IN",
        )
    finally:
        writable.dispose()
    # a connection SQLite opens read-only (the tests run as root, whom file modes do not stop)
    reader = open_store(f"sqlite:///file:{tmp_path / 'journal.db'}?mode=ro&uri=true")
    try:
        graph = EmbeddedGraph(reader, alias_attribute="aka")
        with caplog.at_level(logging.WARNING, logger="journal_loader.graph"):
            assert graph._db.ensure_alias_index(reader, "aka") is False
        assert "CREATE INDEX IF NOT EXISTS " + alias_index_name("aka") in caplog.text
        assert alias_index_name("aka") not in _attribute_indexes(reader)
        found = find_nodes(reader, name="roadrunner co", alias_attribute="aka")
        assert [n["id"] for n in found] == [acme.source_entity_id]
    finally:
        reader.dispose()


@pytest.mark.parametrize("bad", ["x'; DROP TABLE nodes; --", "", "1abc", "a" * 101, "é"])
def test_an_alias_type_outside_the_type_name_rule_is_refused(store: Store, bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid attribute type name"):
        alias_literal(bad)
    with pytest.raises(ValueError, match="not a valid attribute type name"):
        EmbeddedGraph(store, alias_attribute=bad)


@pytest.mark.postgres
def test_a_role_that_may_not_create_the_index_gets_the_ddl_in_a_warning(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL, a role that may read the graph but not create indexes on it (a run's
    role in production, often): no index, a warning with the DDL, the same answers."""
    db_url = pg_url
    import uuid

    import psycopg
    from sqlalchemy import make_url

    from tests.support.pg import pg_admin_url

    owner = open_store(db_url)
    try:
        d = Direct(_graph(owner, "nameAlias"), owner)
        acme = d.propose(
            Entity(type="Company", name="Acme", key="C1", attributes={"aka": "Roadrunner Co"}),
            ("City", "X"),
            "LOCATED_IN",
        )
    finally:
        owner.dispose()
    url = make_url(db_url)
    schema = str(url.query["options"]).split("=", 1)[1]
    role = f"jl_test_reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
    try:
        reader = open_store(url.set(username=role).render_as_string(hide_password=False))
        try:
            graph = EmbeddedGraph(reader, alias_attribute="aka")
            with caplog.at_level(logging.WARNING, logger="journal_loader.graph"):
                assert graph._db.ensure_alias_index(reader, "aka") is False
            assert "must be owner" in caplog.text
            assert "CREATE INDEX IF NOT EXISTS " + alias_index_name("aka") in caplog.text
            found = find_nodes(reader, name="roadrunner co", alias_attribute="aka")
            assert [n["id"] for n in found] == [acme.source_entity_id]
        finally:
            reader.dispose()
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
