"""Helpers for the Propose API client's tests (no tests here): the PL/pgSQL stand-in
(tests/sql/propose_fact.sql) installed in a test schema, a second database for the
"separate database" mode, and a snapshot of the stand-in's graph."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from tests.support.pg import PG_URL, pg_admin_url

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "propose_fact.sql"
REMOTE_DB = "jl_propose_remote"

EXAMPLE_NODE_TYPES = ["Company", "Person", "City", "State", "Address"]
EXAMPLE_REL_TYPES = [
    "LOCATED_IN",
    "IN_STATE",
    "HEADQUARTERED_AT",
    "REGISTERED_AGENT_OF",
    "HAS_ADDRESS",
]


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def install_propose_api(
    url: str,
    node_types: list[str] = EXAMPLE_NODE_TYPES,
    relationship_types: list[str] = EXAMPLE_REL_TYPES,
    opposing: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """The stand-in's type, tables and function, in the URL's schema (its search_path)."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(SQL_FILE.read_text(encoding="utf-8"))
        for name in node_types:
            conn.execute("INSERT INTO kg_node_types VALUES (%s)", (name,))
        opposes = dict(opposing)
        for name in relationship_types:
            conn.execute(
                "INSERT INTO kg_relationship_types VALUES (%s, %s)", (name, opposes.get(name))
            )


def add_fault(url: str, source_node_name: str, errcode: str, times: int = 2**31 - 1) -> None:
    seq = f"kg_fault_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {seq}")
        conn.execute(
            "INSERT INTO kg_faults VALUES (%s, %s, %s, %s)",
            (source_node_name, errcode, times, seq),
        )


def kg_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The stand-in's graph without ids: what two equal loads must share."""
    queries = {
        "nodes": "SELECT node_type, name, norm_name FROM kg_nodes",
        "attributes": """SELECT n.node_type, n.norm_name, a.attr_type, a.value
                         FROM kg_attributes a JOIN kg_nodes n ON n.id = a.node_id""",
        "relationships": """SELECT s.node_type, s.norm_name, r.rel_type, t.node_type,
                                   t.norm_name, r.strength::text
                            FROM kg_relationships r JOIN kg_nodes s ON s.id = r.source_node_id
                            JOIN kg_nodes t ON t.id = r.target_node_id""",
        "provenance": """SELECT p.subject_kind, p.confidence::text,
                                p.metadata ->> 'record_offset', p.metadata ->> 'fact_index',
                                p.idempotency_key
                         FROM kg_provenance p""",
    }
    out = {}
    with psycopg.connect(libpq(url)) as conn:
        for name, sql in queries.items():
            out[name] = sorted(tuple(r) for r in conn.execute(sql).fetchall())
    return out


def kg_count(url: str, table: str) -> int:
    with psycopg.connect(libpq(url)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]


def client_name() -> str:
    """An application_name of its own for one client, so the server can tell which
    connections are that client's (see ``client_backends``)."""
    return f"jl-test client {uuid.uuid4().hex[:12]}"


def client_backends(application_name: str) -> list[int]:
    """The server's backends connected under ``application_name``: how many connections a
    client holds and which, seen from the server rather than from the client's insides."""
    with psycopg.connect(pg_admin_url()) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid",
            (application_name,),
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def _ensure_remote_database() -> str:
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    admin = pg_admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (REMOTE_DB,))
        if exists.fetchone() is None:
            with contextlib.suppress(
                psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation
            ):
                conn.execute(f'CREATE DATABASE "{REMOTE_DB}"')
    return make_url(admin).set(database=REMOTE_DB).render_as_string(hide_password=False)


@contextlib.contextmanager
def remote_schema() -> Iterator[str]:
    """A fresh schema in another database than the journal's: the "separate database"."""
    base = _ensure_remote_database()
    schema = f"jl_remote_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- the deployment-like stand-in (tests/sql/propose_deployment.sql) --------------------------

DEPLOYMENT_SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "propose_deployment.sql"
DEPLOYMENT_REL_TYPES = [
    "LOCATED_IN",
    "IN_STATE",
    "HEADQUARTERED_AT",
    "REGISTERED_AGENT_OF",
    "HAS_ADDRESS",
]


def install_deployment(
    url: str,
    relationship_types: list[str] = DEPLOYMENT_REL_TYPES,
    opposing: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> None:
    """The deployment-like stand-in's type, tables and functions, in the URL's schema."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(DEPLOYMENT_SQL_FILE.read_text(encoding="utf-8"))
        opposes = dict(opposing)
        for name in relationship_types:
            conn.execute(
                "INSERT INTO relationship_types VALUES (%s, %s)", (name, opposes.get(name))
            )


def add_deployment_fault(
    url: str, source_node_name: str, errcode: str, message: str, times: int = 2**31 - 1
) -> None:
    seq = f"stand_in_fault_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"CREATE SEQUENCE {seq}")
        conn.execute(
            "INSERT INTO stand_in_faults VALUES (%s, %s, %s, %s, %s)",
            (source_node_name, errcode, message, times, seq),
        )


def deployment_snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """The deployment stand-in's graph without ids."""
    queries = {
        "nodes": "SELECT node_type, name FROM nodes",
        "attributes": """SELECT n.node_type, n.name, a.attribute_type, a.value
                         FROM attributes a JOIN nodes n ON n.node_id = a.node_id""",
        "relationships": """SELECT s.name, r.relationship_type, t.name, r.strength::text
                            FROM relationships r JOIN nodes s ON s.node_id = r.source_node_id
                            JOIN nodes t ON t.node_id = r.target_node_id""",
        "provenance": """SELECT s.name, coalesce(n.name, an.name || '.' || a.attribute_type,
                                                 r.relationship_type), p.confidence::text
                         FROM provenance p JOIN sources s ON s.source_id = p.source_id
                         LEFT JOIN nodes n ON n.node_id = p.node_id
                         LEFT JOIN attributes a ON a.attribute_id = p.attribute_id
                         LEFT JOIN nodes an ON an.node_id = a.node_id
                         LEFT JOIN relationships r ON r.relationship_id = p.relationship_id""",
    }
    out = {}
    with psycopg.connect(libpq(url)) as conn:
        for name, sql in queries.items():
            out[name] = sorted(tuple(r) for r in conn.execute(sql).fetchall())
    return out


def pg_schema_url(base: str, schema: str) -> str:
    return (
        make_url(base)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


@contextlib.contextmanager
def deployment_schema() -> Iterator[tuple[str, str]]:
    """A schema of its own in the journal's database, for a deployment whose tables have
    journal-loader's names: (URL whose search_path is that schema, schema)."""
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    schema = f"jl_dep_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(pg_admin_url(), schema), schema
    finally:
        with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def deployment_database() -> Iterator[str]:
    """A database of its own whose public schema holds the deployment, as a real one does:
    its URL (no search_path)."""
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    name = f"jl_dep_{uuid.uuid4().hex[:12]}"
    admin = pg_admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
