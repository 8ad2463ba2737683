"""Which database a command uses: one rule for every command (issue 13).

`--db`, then `$JOURNAL_LOADER_DB_URL`, then the config's `database:`, then ./journal.db.
Commands that read or maintain a journal never create one: they name the URL and exit 2;
an unknown source id is exit 2; `db upgrade` works on an empty database."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from journal_loader.storage import open_store
from tests.support.ops import pairs_config, run_cli
from tests.support.snapshots import sources_snapshot

NO_ENV = {"JOURNAL_LOADER_DB_URL": ""}


def _sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def test_every_command_takes_the_database_in_one_order(tmp_path: Path) -> None:
    config = pairs_config(tmp_path, extra=f"database:\n  url: {_sqlite(tmp_path / 'cfg.db')}\n")
    env = {"JOURNAL_LOADER_DB_URL": _sqlite(tmp_path / "env.db")}
    loaded = run_cli("run", config, cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr
    # the environment variable comes before the config, for `run` as for the others
    assert (tmp_path / "env.db").exists() and not (tmp_path / "cfg.db").exists()
    status = run_cli("status", "-c", config, "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0 and '"source_id": 1' in status.stdout
    # --db comes first
    elsewhere = run_cli("run", config, "--db", _sqlite(tmp_path / "cli.db"), cwd=tmp_path, env=env)
    assert elsewhere.returncode == 0 and (tmp_path / "cli.db").exists()
    # without the variable, the config's
    cfg = run_cli("run", config, cwd=tmp_path, env=NO_ENV)
    assert cfg.returncode == 0 and (tmp_path / "cfg.db").exists()
    listed = run_cli("dlq", "list", "-c", config, "--source", "1", cwd=tmp_path, env=NO_ENV)
    assert listed.returncode == 0, listed.stderr
    # and last ./journal.db
    plain = tmp_path / "plain"
    plain.mkdir()
    assert run_cli("run", config, cwd=plain, env=NO_ENV).returncode == 0
    assert (tmp_path / "cfg.db").exists() and not (plain / "journal.db").exists()
    no_db_config = pairs_config(tmp_path / "nodb")
    assert run_cli("run", no_db_config, cwd=plain, env=NO_ENV).returncode == 0
    assert (plain / "journal.db").exists()


READERS = [
    ["status"],
    ["status", "--as-of", "1"],
    ["history", "1", "0"],
    ["dlq", "list"],
    ["dlq", "list", "--source", "1"],
    ["dlq", "summary"],
    ["dlq", "show", "1"],
    ["dlq", "resolve", "1", "--note", "x"],
    ["dlq", "retry", "-c", "CONFIG", "--source", "1"],
    ["projections", "rebuild", "--check"],
    ["projections", "rebuild"],
    ["verify"],
    ["export", "--format", "jsonl"],
    ["lineage", "node", "1"],
    ["graph", "stats"],
    ["graph", "node", "1"],
    ["source", "abandon", "1", "--reason", "x"],
    ["replay", "--until", "1", "--into", "sqlite:///INTO"],
]


@pytest.mark.slow  # every read command, one subprocess each
def test_read_commands_never_create_a_database(tmp_path: Path) -> None:
    config = pairs_config(tmp_path / "cfg")
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in READERS:
        args = [
            str(config) if a == "CONFIG" else a.replace("INTO", str(tmp_path / "into.db"))
            for a in args
        ]
        done = run_cli(*args, cwd=empty, env=NO_ENV)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "sqlite:///journal.db" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert list(empty.iterdir()) == [], (args, list(empty.iterdir()))
        assert not (tmp_path / "into.db").exists()
        with_db = run_cli(*args, "--db", _sqlite(empty / "x.db"), cwd=empty, env=NO_ENV)
        assert with_db.returncode == 2 and list(empty.iterdir()) == [], args
        assert f"sqlite:///{empty / 'x.db'}" in with_db.stderr


@pytest.mark.postgres
def test_read_commands_never_create_a_schema_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    for args in (["status"], ["dlq", "list", "--source", "1"], ["verify"], ["history", "1", "0"]):
        done = run_cli(*args, "--db", pg_url, cwd=tmp_path, env=NO_ENV)
        assert done.returncode == 2, (args, done.stderr)
        assert "no journal-loader database" in done.stderr
    assert _tables(pg_url) == []


def _tables(url: str) -> list[str]:
    u = make_url(url)
    schema = str(u.query["options"]).split("=", 1)[1]
    admin = u.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    with psycopg.connect(admin) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        ]


def test_db_upgrade_creates_and_upgrades(db_url: str, tmp_path: Path) -> None:
    """`db upgrade` on an empty database (a new SQLite file, an empty PostgreSQL schema)."""
    done = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path, env=NO_ENV)
    assert done.returncode == 0, done.stderr
    assert "schema empty ->" in done.stdout
    again = run_cli("db", "upgrade", "--db", db_url, cwd=tmp_path, env=NO_ENV)
    assert again.returncode == 0 and "schema up to date" in again.stdout
    status = run_cli("status", "--db", db_url, cwd=tmp_path, env=NO_ENV)
    assert status.returncode == 0 and "no sources" in status.stdout


def test_an_unknown_source_is_exit_2(db_url: str, tmp_path: Path) -> None:
    config = pairs_config(tmp_path)
    assert run_cli("run", config, "--db", db_url, cwd=tmp_path).returncode == 0
    for args in (
        ["dlq", "list", "--source", "99"],
        ["dlq", "summary", "--source", "99"],
        ["dlq", "retry", "-c", str(config), "--source", "99"],
        ["history", "99", "0"],
        ["verify", "--source", "99"],
        ["export", "--source", "99"],
    ):
        done = run_cli(*args, "--db", db_url, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "no source 99" in done.stderr, (args, done.stderr)
    store = open_store(db_url)
    assert len(sources_snapshot(store)) == 1
    store.dispose()
