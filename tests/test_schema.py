"""The schema the migrations build equals the declared one (journal_loader.storage.schema),
on both backends; the code's SCHEMA_HEAD is the migrations' head; the resources ship."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from journal_loader.resources import migrations_dir, projections_dir
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import SCHEMA_HEAD
from journal_loader.storage.migrate import head_revision
from journal_loader.storage.schema import metadata


def test_schema_head_constant_is_the_migrations_head() -> None:
    assert head_revision() == SCHEMA_HEAD


def test_migrated_schema_equals_declared_schema(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
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
        "provenance",
        "source_leases",
    } <= tables
    s1.dispose()
    s2 = open_store(db_url)  # must not try to create anything again
    assert s2.current_revision() == SCHEMA_HEAD
    s2.dispose()


def test_resources_are_found() -> None:
    assert (migrations_dir() / "env.py").is_file()
    assert (projections_dir() / "sources.sql").is_file()
