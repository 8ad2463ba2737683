"""A password given to journal-loader appears in no log line, error, event or DLQ row.

PostgreSQL here trusts local connections, so a URL with any password connects: the sentinel
travels through a whole real run (with failing records, a log file in both formats, and
errors after the run) and is then looked for everywhere it could have leaked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from journal_loader.secrets import mask_url, register_secret, scrub
from journal_loader.storage import open_store
from tests.support.cli import run_cli_process
from tests.support.example import EXAMPLE_CONFIG

SENTINEL = "Sentinel-Pa55word-7f3a"
MALFORMED = "Sentinel%ZZmalformed-91"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOURNAL_LOADER_DEBUG": ""}
    return run_cli_process(args, module=True, cwd=cwd, env=env)


def _with_password(url: str, password: str) -> str:
    # Written by hand: URL objects would re-escape a malformed %ZZ.
    u = make_url(url)
    rest = url.split("@", 1)[1] if "@" in url else url.split("://", 1)[1]
    return f"{u.drivername}://{u.username or 'postgres'}:{password}@{rest}"


@pytest.mark.parametrize("password", [SENTINEL, pytest.param(MALFORMED, marks=pytest.mark.slow)])
def test_password_never_leaks(pg_url: str, tmp_path: Path, password: str) -> None:
    url = _with_password(pg_url, password)
    outputs = []
    for fmt in ("text", "json"):
        done = _cli(
            "run",
            str(EXAMPLE_CONFIG),
            "--db",
            url,
            "--log-format",
            fmt,
            "--log-file",
            str(tmp_path / f"run-{fmt}.log"),
            "--force",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    # Errors that print the database: a refused connection, a missing database, a bad option.
    bad_port = url.replace(":5432/", ":1/") if ":5432/" in url else url
    for args in (
        ["status", "--db", bad_port],
        ["status", "--db", url.replace("/test", "/nodb")],
        ["history", "1", "999999", "--db", url],
        ["dlq", "list", "--db", url],
    ):
        done = _cli(*args, cwd=tmp_path)
        outputs += [done.stdout, done.stderr]
    logs = [p.read_text() for p in tmp_path.glob("*.log*")]
    assert logs and any("source=" in log or '"source_id"' in log for log in logs)
    store = open_store(pg_url)
    with store.read() as conn:
        journal = "\n".join(conn.execute(text("SELECT payload FROM journal")).scalars())
        dlq = conn.execute(text("SELECT error_message, raw_input FROM failed_records")).all()
    store.dispose()
    assert dlq, "the example has failing records: the DLQ must not be empty"
    haystack = "\n".join([*outputs, *logs, journal, *(f"{m}{bytes(r)!r}" for m, r in dlq)])
    for needle in {password, password.replace("%ZZ", ""), "Pa55word", "malformed-91"}:
        assert needle not in haystack


def test_scrub_and_mask_cover_urls_and_registered_secrets() -> None:
    register_secret("hunter2-secret")
    assert scrub("connect failed: password hunter2-secret rejected") == (
        "connect failed: password *** rejected"
    )
    assert mask_url("postgresql://u:p%ZZw@h/db") == "postgresql://u:***@h/db"
    assert scrub("dsn postgresql+psycopg://app:top%20secret@db:5432/x") == (
        "dsn postgresql+psycopg://app:***@db:5432/x"
    )
    assert scrub("password=abc123 host=x") == "password=*** host=x"


# Config validation errors echo the value they refused: whatever its shape, a password in
# it is ***. (issue 9: a password beside url, a URL echo cut before its '@', nested values.)
_LONG_USER = "loader_writer_01"  # puts the 60-character cut of the echo inside the password
CONFIG_SHAPES = {
    "password beside url": {"url": "sqlite:///x.db", "password": SENTINEL},
    "url with port, echo cut before the @": {
        "url": f"postgresql://{_LONG_USER}:{SENTINEL}@db.example.internal:5432/graph",
        "port": 5432,
    },
    "url nested in a mapping": {"url": {"primary": f"postgresql://u:{SENTINEL}@h/graph"}},
    "password nested in a list": {"host": "h", "password": [SENTINEL]},
    "password nested under another key": {"host": "h", "user": {"name": "u", "password": SENTINEL}},
    "database as a list": [f"postgresql://u:{SENTINEL}@h/graph"],
    "password under another section": {"url": "sqlite:///x.db"},
}


@pytest.mark.parametrize("shape", list(CONFIG_SHAPES))
def test_config_errors_never_print_the_password(tmp_path: Path, shape: str) -> None:
    import yaml

    from tests.support.ops import pairs_config

    jobs = tmp_path / "jobs"
    config = pairs_config(jobs)
    data = yaml.safe_load(config.read_text())
    data["database"] = CONFIG_SHAPES[shape]
    if shape == "password under another section":
        data["processing"]["batch_size"] = {"password": SENTINEL, "url": f"x://u:{SENTINEL}@h"}
    config.write_text(yaml.safe_dump(data, sort_keys=False))  # url first: the cut lands in it
    outputs = []
    for args in (
        ["config", "check", str(config)],
        ["run", str(config)],
        ["jobs", "run", str(jobs)],
    ):
        done = _cli(*args, cwd=tmp_path)
        assert done.returncode in (1, 2), (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        outputs += [done.stdout, done.stderr]
    text = "\n".join(outputs)
    assert "***" in text or "password" in text  # the error is there, the value is not
    for needle in (SENTINEL, "Pa55word", "Sentinel-Pa"):
        assert needle not in text, (shape, text)
