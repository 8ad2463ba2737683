"""The schema the migrations build equals the declared one (journal_loader.storage.schema),
on both backends; the code's SCHEMA_HEAD is the migrations' head; the resources ship."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from journal_loader.resources import migrations_dir, projections_dir
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import SCHEMA_HEAD
from journal_loader.storage.migrate import head_revision
from journal_loader.storage.schema import DECLARED_DDL, metadata
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.snapshots import schema_catalog


def test_schema_head_constant_is_the_migrations_head() -> None:
    assert head_revision() == SCHEMA_HEAD


def _declared_on(dialect: str) -> Any:
    """Alembic's comparison ignores ``Index.ddl_if``: leave out what the declaration builds
    on another dialect only (the pg_trgm index is PostgreSQL's)."""

    def include(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include


def test_migrated_schema_equals_declared_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": _declared_on(store.dialect)}
        )
        diff = compare_metadata(ctx, metadata)
    assert diff == [], f"migrations and storage/schema.py disagree: {diff}"


def test_first_use_migrates_and_second_open_is_a_no_op(db_url: str) -> None:
    s1 = open_store(db_url)
    assert s1.current_revision() == SCHEMA_HEAD
    tables = set(inspect(s1.engine).get_table_names())
    assert {
        "journal",
        "sources",
        "failed_records",
        "nodes",
        "relationships",
        "attributes",
        "provenance_records",  # behind the view provenance (migrations 0006, 0007)
        "provenance_nodes",
        "provenance_attributes",
        "provenance_relationships",
        "source_leases",
    } <= tables
    assert {"provenance", "loader_status"} <= set(inspect(s1.engine).get_view_names())
    s1.dispose()
    s2 = open_store(db_url)  # must not try to create anything again
    assert s2.current_revision() == SCHEMA_HEAD
    s2.dispose()


def test_resources_are_found() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert (projections_dir() / "sources.sql").is_file()


def _declared_database(db_url: str, ddl: list[str] | None = None) -> Any:
    """A database built from journal_loader.storage.schema alone (no migration)."""
    from sqlalchemy import create_engine

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        metadata.create_all(conn)
        for statement in ddl if ddl is not None else DECLARED_DDL[engine.dialect.name]:
            conn.execute(text(statement))
    return engine


@pytest.fixture
def declared_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of db_url's backend, for the declared schema."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'declared.db'}"
        return
    url, schema = make_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


def test_whole_migrated_schema_equals_declared_schema(store: Store, declared_url: str) -> None:
    """Every object, not only tables: columns, constraints, indexes, views, triggers,
    functions and sequences of the migrated database equal the declared ones."""
    declared = _declared_database(declared_url)
    try:
        migrated_objects, declared_objects = schema_catalog(store.engine), schema_catalog(declared)
    finally:
        declared.dispose()
    assert {k for k in migrated_objects if k.startswith(("view", "trigger"))}  # compared
    differences = {
        k: (migrated_objects.get(k), declared_objects.get(k))
        for k in migrated_objects.keys() | declared_objects.keys()
        if migrated_objects.get(k) != declared_objects.get(k)
    }
    assert differences == {}


def test_whole_schema_comparison_catches_a_changed_view_and_trigger(
    store: Store, declared_url: str
) -> None:
    """Planted differences: a view that spells one health differently, and a trigger that
    refuses only UPDATE. The comparison names both."""
    dialect = store.dialect
    planted = []
    for statement in DECLARED_DDL[dialect]:
        if "CREATE VIEW" in statement:
            statement = statement.replace("'ABANDONED'", "'RETIRED'")
        if dialect == "sqlite" and "journal_refuse_delete" in statement:
            statement = statement.replace("BEFORE DELETE", "BEFORE UPDATE")
        if dialect == "postgresql" and "journal_refuse_update_delete" in statement:
            statement = statement.replace("BEFORE UPDATE OR DELETE", "BEFORE UPDATE")
        planted.append(statement)
    declared = _declared_database(declared_url, planted)
    try:
        migrated_objects, declared_objects = schema_catalog(store.engine), schema_catalog(declared)
    finally:
        declared.dispose()
    differing = {
        k
        for k in migrated_objects.keys() | declared_objects.keys()
        if migrated_objects.get(k) != declared_objects.get(k)
    }
    trigger = "journal_refuse_delete" if dialect == "sqlite" else "journal_refuse_update_delete"
    assert differing == {"view loader_status", f"trigger {trigger}"}
