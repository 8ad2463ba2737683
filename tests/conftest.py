"""Shared fixtures: a real database per test, SQLite or PostgreSQL.

``db_url`` is parametrised over both backends: every test that takes it (or ``store``) is a
contract test run against both. SQLite: a file in the test's tmp_path. PostgreSQL: a fresh
schema per test in the database named by ``JOURNAL_LOADER_TEST_PG_URL``, dropped afterwards
(locks are scoped to database+schema, so parallel tests never see each other). Without
that variable the PostgreSQL half skips with the reason; ``.ci/run`` sets it and fails if the
server is unreachable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal_loader.storage import Store, open_store

PG_URL = os.environ.get("JOURNAL_LOADER_TEST_PG_URL")
REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "business_registry"
EXAMPLE_CONFIG = EXAMPLE_DIR / "loader.yaml"
EXAMPLE_DATA = EXAMPLE_DIR / "data" / "business_registry_20251001.csv"


def _pg_admin_url() -> str:
    from sqlalchemy import make_url

    url = make_url(PG_URL or "")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def make_pg_schema() -> tuple[str, str]:
    """Create a fresh schema; return (url using it, schema name)."""
    import psycopg
    from sqlalchemy import make_url

    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    schema = f"jl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(_pg_admin_url(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND application_name LIKE 'journal-loader%%' "
            "AND query LIKE %s",
            (f"%{schema}%",),
        )
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    url, schema = make_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'journal.db'}"
        return
    url, schema = make_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.dispose()
