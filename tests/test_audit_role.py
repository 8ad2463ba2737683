"""PostgreSQL: the loader role of deploy/postgres/loader_role.sql may read and append to the
journal and nothing else (UPDATE, DELETE, TRUNCATE, disabling the triggers: all refused with
permission errors), while a load, the DLQ and the audit commands still work as that role;
an edit made as the table's owner, with the triggers disabled, is caught by ``verify``."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url, text

from journal_loader import run
from journal_loader.dlq import resolve
from journal_loader.errors import FatalError
from journal_loader.storage import Store, open_store
from tests.support.audit import as_owner_without_guards, cli, write_pairs_csv
from tests.support.example import REPO
from tests.support.loaders import PairLoader
from tests.support.pg import PG_URL, pg_admin_url

pytestmark = pytest.mark.postgres

ROLE_SQL = REPO / "deploy" / "postgres" / "loader_role.sql"


def schema_of(store: Store) -> str:
    with store.read() as conn:
        return str(conn.execute(text("SELECT current_schema()")).scalar_one())


def psql(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", pg_admin_url(), "-X", "-q", "-v", "ON_ERROR_STOP=1", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def loader_role(pg_url: str) -> Iterator[tuple[str, str]]:
    """A loader role made by the shipped SQL file for the test's schema (the owner migrated
    it first); yields (role name, URL that works as the role). Dropped afterwards."""
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set")
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed: deploy/postgres/loader_role.sql is a psql script")
    owner = open_store(pg_url)
    schema = schema_of(owner)
    owner.dispose()
    role = f"jl_loader_{uuid.uuid4().hex[:10]}"
    try:
        done = psql("-v", f"role={role}", "-v", f"schema={schema}", "-f", str(ROLE_SQL))
        assert done.returncode == 0, done.stderr
        again = psql("-v", f"role={role}", "-v", f"schema={schema}", "-f", str(ROLE_SQL))
        assert again.returncode == 0, again.stderr  # re-running is safe
        # Connect as the test's user and SET ROLE at session start: every statement of the
        # loader then runs with the role's privileges only.
        url = make_url(pg_url).update_query_dict(
            {"options": f"-csearch_path={schema} -crole={role}"}
        )
        yield role, url.render_as_string(hide_password=False)
    finally:
        psql("-c", f'DROP OWNED BY "{role}"', "-c", f'DROP ROLE IF EXISTS "{role}"')


def test_loader_role_appends_but_cannot_edit_the_journal(
    pg_url: str, loader_role: tuple[str, str], tmp_path: Path
) -> None:
    role, role_url = loader_role
    path = write_pairs_csv(tmp_path / "pairs.csv", [("Acme", "Springfield"), ("Bad", "BAD")])

    # A load works as the role: journal, projections, leases, graph.
    report = run(PairLoader, path, db=role_url, batch_size=1)
    assert report.status == "completed", report.message
    as_role = open_store(role_url)
    with as_role.read() as conn:
        assert conn.execute(text("SELECT current_user")).scalar_one() == role
        events = conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one()
        entry = conn.execute(text("SELECT id FROM failed_records")).scalar_one()
    assert events == 10

    # What the role may not do to the journal, each refused by the privilege system.
    for statement in (
        "UPDATE journal SET payload = '{}'",
        "DELETE FROM journal",
        "DELETE FROM journal WHERE position = (SELECT MAX(position) FROM journal)",
        "TRUNCATE journal",
        "ALTER TABLE journal DISABLE TRIGGER USER",
        "DROP TABLE journal",
    ):
        with pytest.raises(FatalError) as refused, as_role.transaction() as tx:
            tx.execute(statement)
        assert "[42501]" in str(refused.value), statement  # insufficient_privilege
    with psycopg.connect(pg_admin_url()) as raw:
        raw.execute(f"SET search_path = {schema_of(as_role)}")
        raw.execute(f'SET ROLE "{role}"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            raw.execute("UPDATE journal SET run_id = 'x'")
    with as_role.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == events

    # The DLQ and the audit commands work as the role too.
    resolve(as_role, int(entry), "not a city", resolved_by="test")
    assert cli("verify", "--db", role_url).exit_code == 0
    assert cli("status", "--db", role_url, "--as-of", str(events)).exit_code == 0
    assert cli("export", "--db", role_url).exit_code == 0
    rerun = run(PairLoader, path, db=role_url)
    assert rerun.status == "already_processed"
    as_role.dispose()

    # The owner can still edit with the triggers disabled, and verify (as the role) sees it.
    owner = open_store(pg_url)
    as_owner_without_guards(
        owner,
        ("UPDATE journal SET payload = replace(payload, 'Acme', 'Acne') "
         "WHERE event_type = 'RecordParsed' AND record_offset = 0", {}),
    )  # fmt: skip
    with owner.read() as conn:
        edited = conn.execute(
            text("SELECT position FROM journal WHERE payload LIKE '%Acne%'")
        ).scalar_one()
    owner.dispose()
    caught = cli("verify", "--db", role_url)
    assert caught.exit_code == 1
    assert f"first broken position {edited}" in caught.stderr
