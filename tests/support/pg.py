"""PostgreSQL for tests: a fresh schema per test in the database named by
``JOURNAL_LOADER_TEST_PG_URL`` (the fixtures in tests/conftest.py use these)."""

from __future__ import annotations

import os
import uuid

import pytest

PG_URL = os.environ.get("JOURNAL_LOADER_TEST_PG_URL")


def pg_admin_url() -> str:
    """The test server's URL for psycopg (no SQLAlchemy driver name, no search_path)."""
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
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    url = url.update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND application_name LIKE 'journal-loader%%' "
            "AND query LIKE %s",
            (f"%{schema}%",),
        )
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
