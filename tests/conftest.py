"""Shared fixtures: a real database per test, SQLite or PostgreSQL.

``db_url`` is parametrised over both backends: every test that takes it (or ``store``) is a
contract test run against both. SQLite: a file in the test's tmp_path. PostgreSQL: a fresh
schema per test in the database named by ``JOURNAL_LOADER_TEST_PG_URL``, dropped afterwards
(locks are scoped to database+schema, so parallel tests never see each other). Without
that variable the PostgreSQL half skips with the reason; ``.ci/run`` sets it and fails if the
server is unreachable.

Fixtures only: helpers live in tests/support/ (tests import nothing from here).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from journal_loader.storage import Store, open_store
from tests.support.example import LoadedExample, load_example
from tests.support.pg import drop_pg_schema, make_pg_schema


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


# --- the shipped example, loaded once -------------------------------------------------------


@pytest.fixture(scope="session")
def example_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedExample]:
    """The example loaded once per test process into SQLite, for tests that only read it
    (a test that writes loads its own)."""
    yield from load_example(f"sqlite:///{tmp_path_factory.mktemp('example') / 'journal.db'}")


@pytest.fixture(scope="session")
def example_postgresql() -> Iterator[LoadedExample]:
    """The same in a PostgreSQL schema of its own."""
    url, schema = make_pg_schema()
    try:
        yield from load_example(url)
    finally:
        drop_pg_schema(schema)


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def example_journal(request: pytest.FixtureRequest) -> LoadedExample:
    """The shared, read-only example load on each backend (see example_sqlite)."""
    loaded: LoadedExample = request.getfixturevalue(f"example_{request.param}")
    return loaded


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def two_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two fresh databases of one backend (both backends): two loads to compare."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batch.db'}", f"sqlite:///{tmp_path / 'per_fact.db'}"
        return
    (a, schema_a), (b, schema_b) = make_pg_schema(), make_pg_schema()
    try:
        yield a, b
    finally:
        drop_pg_schema(schema_a)
        drop_pg_schema(schema_b)
