"""--on-success / --on-failure: which one runs, what it gets on stdin, no shell unless needed,
timeouts; exit codes of `run` as a scheduled job (0, 1, 2, 75)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from journal_loader.ops.hooks import argv_for, needs_shell, run_hook
from journal_loader.storage import open_store
from tests.support.ops import expected_counts, pairs_config, run_cli


def test_success_hook_gets_the_summary_json(tmp_path: Path, db_url: str) -> None:
    config = pairs_config(tmp_path, n=30)
    out = tmp_path / "summary.json"
    env_out = tmp_path / "env.txt"
    r = run_cli(
        "run",
        config,
        "--db",
        db_url,
        "--json",
        "--on-success",
        f"sh -c 'cat > {out}; echo $JOURNAL_LOADER_STATUS $JOURNAL_LOADER_EXIT_CODE > {env_out}'",
        "--on-failure",
        f"touch {tmp_path / 'failure-ran'}",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    summary = json.loads(out.read_text())
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    assert summary["loader"] == "pairs" and summary["run_id"] == report["run_id"]
    assert summary["source_id"] == report["source_id"]
    assert summary["statistics"]["failed"] == expected_counts(30)["failed"]
    assert env_out.read_text().split() == ["completed", "0"]
    assert not (tmp_path / "failure-ran").exists()


def test_failure_hook_runs_when_the_run_fails(tmp_path: Path, db_url: str) -> None:
    config = pairs_config(tmp_path, n=30, fatal_at=25)
    out = tmp_path / "summary.json"
    r = run_cli(
        "run",
        config,
        "--db",
        db_url,
        "--on-failure",
        f"tee {out}",
        "--on-success",
        f"touch {tmp_path / 'success-ran'}",
        cwd=tmp_path,
    )
    assert r.returncode == 1
    summary = json.loads(out.read_text())
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert "the graph is gone" in summary["message"]
    assert not (tmp_path / "success-ran").exists()
    assert "on-failure hook" in r.stderr  # the hook's output goes to the log, not stdout
    assert '"status"' not in r.stdout


def test_failure_hook_runs_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = pairs_config(tmp_path, n=5)
    out = tmp_path / "summary.json"
    r = run_cli(
        "run",
        config,
        "--db",
        "postgresql+psycopg://nobody@127.0.0.1:1/none",
        "--on-failure",
        f"tee {out}",
        cwd=tmp_path,
    )
    assert r.returncode == 1
    summary = json.loads(out.read_text())
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert "Connection refused" in summary["message"] or "connection" in summary["message"].lower()


def test_locked_source_exits_75_and_runs_no_hook(tmp_path: Path, db_url: str) -> None:
    config = pairs_config(tmp_path, n=10)
    sha = hashlib.sha256((tmp_path / "pairs.csv").read_bytes()).hexdigest()
    store = open_store(db_url)
    try:
        with store.lock_source(f"pairs:{sha}", {"run_id": "other", "pid": 1}):
            r = run_cli(
                "run",
                config,
                "--db",
                db_url,
                "--on-failure",
                f"touch {tmp_path / 'failure-ran'}",
                "--on-success",
                f"touch {tmp_path / 'success-ran'}",
                cwd=tmp_path,
            )
    finally:
        store.dispose()
    assert r.returncode == 75, r.stderr
    assert "another run" in r.stderr
    assert not (tmp_path / "failure-ran").exists() and not (tmp_path / "success-ran").exists()


def test_exit_codes_of_a_scheduled_run(tmp_path: Path, db_url: str) -> None:
    config = pairs_config(tmp_path, n=10)
    assert run_cli("run", config, "--db", db_url, cwd=tmp_path).returncode == 0
    again = run_cli("run", config, "--db", db_url, cwd=tmp_path)
    assert again.returncode == 0 and "already_processed" in again.stdout
    (tmp_path / "bad.yaml").write_text("loader:\n  name: pairs\n  colour: blue\n")
    bad = run_cli("run", tmp_path / "bad.yaml", "--db", db_url, cwd=tmp_path)
    assert bad.returncode == 2 and "loader.colour: unknown key" in bad.stderr


def test_already_processed_counts_as_success_for_the_hook(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=10)
    run_cli("run", config, "--db", sqlite_url, cwd=tmp_path)
    out = tmp_path / "summary.json"
    r = run_cli("run", config, "--db", sqlite_url, "--on-success", f"tee {out}", cwd=tmp_path)
    assert r.returncode == 0
    assert json.loads(out.read_text())["status"] == "already_processed"


def test_hooks_from_the_config(tmp_path: Path, sqlite_url: str) -> None:
    out = tmp_path / "from-config.json"
    config = pairs_config(tmp_path, n=10, extra=f"hooks:\n  on_success: tee {out}\n  timeout: 10\n")
    assert run_cli("run", config, "--db", sqlite_url, cwd=tmp_path).returncode == 0
    assert json.loads(out.read_text())["status"] == "completed"


def test_plain_commands_run_without_a_shell() -> None:
    assert argv_for('mail -s "loader failed" ops@example.com') == [
        "mail",
        "-s",
        "loader failed",
        "ops@example.com",
    ]
    for command in (
        "cat > /tmp/x",
        "a | b",
        "a && b",
        "echo $HOME",
        "echo `id`",
        "ls *.json",
        "X=1 cmd",
        "a; b",
        "cmd ~/x",
    ):
        assert needs_shell(command), command
        assert argv_for(command)[:2] == ["/bin/sh", "-c"]
    # a quoted semicolon is still shell syntax to us: when in doubt, the shell decides
    assert not needs_shell("notify-send 'loader done'")


def test_no_shell_means_no_shell_expansion(tmp_path: Path) -> None:
    marker = tmp_path / "expanded"
    # without a shell, the argument reaches printf as written
    result = run_hook(f"printf %s {marker}-literal", b"")
    assert result.ok and result.output == f"{marker}-literal"
    result = run_hook("printf %s '$HOME'", b"")
    assert result.ok and result.output == "$HOME"


def test_hook_stdin_and_exit_status() -> None:
    result = run_hook("cat", b'{"status": "failed"}')
    assert result.ok and json.loads(result.output) == {"status": "failed"}
    failing = run_hook("sh -c 'exit 3'", b"")
    assert failing.returncode == 3 and not failing.ok
    missing = run_hook("/nonexistent/notify", b"")
    assert not missing.ok and "cannot start" in missing.error


def test_hook_timeout_kills_the_whole_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    started = time.monotonic()
    # 5 s, not 1: a loaded machine may take over a second to start sh and write the pid
    result = run_hook(f"sleep 300 & echo $! > {pid_file}; wait", b"", timeout=5, grace=1)
    assert result.timed_out and not result.ok
    assert time.monotonic() - started < 60
    child = int(pid_file.read_text())
    # the background sleep went with it (same session): gone, or a zombie nobody reaped yet
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_a_failing_hook_does_not_change_the_exit_code(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=10)
    r = run_cli("run", config, "--db", sqlite_url, "--on-success", "sh -c 'exit 7'", cwd=tmp_path)
    assert r.returncode == 0
    assert "exited with 7" in r.stderr
