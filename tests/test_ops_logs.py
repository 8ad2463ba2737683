"""Progress and logs of `journal-loader run`, as a real process: the bar on a pseudo-terminal,
log lines elsewhere, --quiet, JSON lines with the run's ids, rotation, and no secret in any
line, error or hook input."""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import subprocess
import time
from pathlib import Path

import pytest

from journal_loader.ops.logs import LogSetup
from journal_loader.ops.progress import Figures, ProgressObserver, fmt_duration
from tests.support.ops import CLI, expected_counts, pairs_config, run_cli


def run_on_pty(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], cwd=cwd, env={**os.environ, **env}, stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), b"".join(chunks).decode("utf-8", errors="replace")


def test_on_a_terminal_a_bar_with_rate_eta_and_counts(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=60)
    code, out = run_on_pty(["run", str(config), "--db", sqlite_url], tmp_path, {"COLUMNS": "200"})
    assert code == 0, out
    assert "\r\x1b[K" in out  # redrawn in place
    bars = [part for part in out.split("\r\x1b[K") if "rec/s" in part]
    assert bars, out
    assert all("ETA" in b and " ok " in b and "failed" in b and "skipped" in b for b in bars)
    want = expected_counts(60)
    # the last bar drawn shows the final figures
    final = [b for b in bars if f"ok {want['succeeded']}" in b]
    assert final and f"failed {want['failed']}" in final[-1] and "100.0%" in final[-1], bars[-3:]
    assert "pairs: completed" in out  # then the summary table
    assert "progress:" not in out  # no log lines on a terminal


def test_not_on_a_terminal_log_lines_with_the_same_figures(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=60, extra="logging:\n  progress_interval: 0.001\n")
    r = run_cli("run", config, "--db", sqlite_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr and "[####" not in r.stderr
    progress = [line for line in r.stderr.splitlines() if "progress:" in line]
    assert len(progress) >= 2, r.stderr
    assert "records/s" in progress[-1] and "ETA" in progress[-1] and "succeeded" in progress[-1]
    assert "pairs: completed" in r.stdout


def test_progress_lines_are_spaced_by_the_interval(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=60, extra="logging:\n  progress_interval: 3600\n")
    r = run_cli("run", config, "--db", sqlite_url, cwd=tmp_path)
    assert r.returncode == 0
    assert [line for line in r.stderr.splitlines() if "progress:" in line] == []
    assert "loading" in r.stderr  # the start line comes at once


def test_quiet_prints_only_the_summary(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=30, extra="logging:\n  progress_interval: 0.001\n")
    r = run_cli("run", config, "--db", sqlite_url, "--quiet", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr == ""
    assert r.stdout.startswith("pairs: completed")
    code, out = run_on_pty(
        ["run", str(config), "--db", sqlite_url, "--quiet", "--force"], tmp_path, {}
    )
    assert code == 0 and "rec/s" not in out.replace("records/s", "") and "pairs: completed" in out


def test_json_lines_carry_loader_source_and_run(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=30, extra="logging:\n  progress_interval: 0.001\n")
    log_file = tmp_path / "logs" / "run.log"
    r = run_cli(
        "run",
        config,
        "--db",
        sqlite_url,
        "--log-format",
        "json",
        "--log-file",
        log_file,
        "--json",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    lines = [json.loads(line) for line in r.stderr.splitlines()]
    assert lines and lines == [json.loads(line) for line in log_file.read_text().splitlines()]
    for line in lines:
        assert {"ts", "level", "message", "loader", "source_id", "run_id"} <= set(line)
        assert line["loader"] == "pairs"
        assert line["source_id"] == report["source_id"]
        assert line["run_id"] == report["run_id"]
    progress = [line for line in lines if line["message"].startswith("progress:")]
    assert progress and progress[-1]["records"] == 30 and "eta_seconds" in progress[-1]


def test_text_lines_carry_loader_source_and_run(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(tmp_path, n=20, extra="logging:\n  progress_interval: 0.001\n")
    r = run_cli("run", config, "--db", sqlite_url, "--json", cwd=tmp_path)
    report = json.loads(r.stdout)
    lines = r.stderr.splitlines()
    assert lines
    for line in lines:
        assert f"[pairs source={report['source_id']} run={report['run_id']}]" in line


def test_log_file_rotates_at_max_size_and_keeps_retention(tmp_path: Path) -> None:
    logger = logging.getLogger("test_ops_rotation")
    logger.propagate = False
    setup = LogSetup(
        loader="x",
        file=tmp_path / "x.log",
        max_bytes=2000,
        retention=2,
        logger=logger,
        console_level="CRITICAL",
    )
    try:
        for i in range(200):
            logger.info("line %d %s", i, "y" * 50)
    finally:
        setup.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["x.log", "x.log.1", "x.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    assert "line 199" in (tmp_path / "x.log").read_text()
    assert logger.handlers == []


def test_config_max_size_and_retention_reach_the_handler(tmp_path: Path, sqlite_url: str) -> None:
    config = pairs_config(
        tmp_path,
        n=60,
        extra="logging:\n  progress_interval: 0.001\n  file: logs/pairs.log\n"
        "  max_size: 1KB\n  retention: 3\n",
    )
    r = run_cli("run", config, "--db", sqlite_url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert "pairs.log" in logs and "pairs.log.1" in logs and len(logs) <= 4
    assert all((tmp_path / "logs" / f).stat().st_size <= 1024 for f in logs)


SENTINEL = "Sentinel7Pw"
# (label, URL): the password is the sentinel (or holds it) in each
SECRET_URLS = [
    ("unreachable", f"postgresql+psycopg://loader:{SENTINEL}@127.0.0.1:1/graph"),
    ("malformed escape", f"postgresql+psycopg://loader:a%ZZ{SENTINEL}@127.0.0.1:1/graph"),
    ("bad port", f"postgresql+psycopg://loader:{SENTINEL}@127.0.0.1:notaport/graph"),
]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(("label", "url"), SECRET_URLS, ids=[u[0] for u in SECRET_URLS])
def test_no_secret_in_logs_errors_or_hook_input(
    tmp_path: Path, fmt: str, label: str, url: str
) -> None:
    config = pairs_config(tmp_path, n=10)
    hook_in = tmp_path / "hook.json"
    log_file = tmp_path / "run.log"
    r = run_cli(
        "run",
        config,
        "--db",
        url,
        "--log-format",
        fmt,
        "--log-file",
        log_file,
        "--on-failure",
        f"tee {hook_in}",
        cwd=tmp_path,
        env={"JOURNAL_LOADER_DEBUG": ""},
    )
    assert r.returncode in (1, 2), (r.stdout, r.stderr)
    assert r.stderr.strip(), "the failure is reported"
    hook = hook_in.read_text()
    assert json.loads(hook)["status"] == "failed"
    for where, text in (
        ("stdout", r.stdout),
        ("stderr", r.stderr),
        ("log", log_file.read_text()),
        ("hook stdin", hook),
    ):
        assert SENTINEL not in text, f"{label}: the password leaked into {where}:\n{text}"


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_a_real_run_with_a_password(tmp_path: Path, pg_url: str, fmt: str) -> None:
    from sqlalchemy import make_url

    url = make_url(pg_url).set(password=SENTINEL).render_as_string(hide_password=False)
    assert SENTINEL in url  # the server trusts 127.0.0.1: any password gets in
    config = pairs_config(
        tmp_path, n=20, extra="logging:\n  progress_interval: 0.001\n  level: DEBUG\n"
    )
    hook_in = tmp_path / "hook.json"
    log_file = tmp_path / "run.log"
    textfile = tmp_path / "m.prom"
    r = run_cli(
        "run",
        config,
        "--db",
        url,
        "--log-format",
        fmt,
        "--log-file",
        log_file,
        "--on-success",
        f"tee {hook_in}",
        "--on-failure",
        f"tee {hook_in}",
        "--metrics-textfile",
        textfile,
        "--json",
        cwd=tmp_path,
    )
    assert r.stderr.strip()
    texts = {
        "stdout": r.stdout,
        "stderr": r.stderr,
        "log": log_file.read_text(),
        "hook stdin": hook_in.read_text(),
        "metrics": textfile.read_text(),
    }
    for where, text in texts.items():
        assert SENTINEL not in text, f"the password leaked into {where}"


def test_secrets_scrubbed_from_messages_args_and_tracebacks(tmp_path: Path) -> None:
    from journal_loader.secrets import register_secret

    register_secret("Reg1steredSecret")
    logger = logging.getLogger("test_ops_scrub")
    logger.propagate = False
    for fmt in ("text", "json"):
        path = tmp_path / f"{fmt}.log"
        setup = LogSetup(loader="x", fmt=fmt, file=path, logger=logger, console_level="CRITICAL")
        try:
            logger.warning("connecting to %s", f"postgresql://u:{SENTINEL}@h/db")
            logger.warning("password=%s and Reg1steredSecret", SENTINEL)
            logger.warning("bad format %d", "not a number", SENTINEL)
            try:
                raise RuntimeError(f"postgresql://u:{SENTINEL}@h/db refused")
            except RuntimeError:
                logger.exception("failed")
        finally:
            setup.close()
        text = path.read_text()
        assert "connecting to" in text and "RuntimeError" in text
        assert SENTINEL not in text and "Reg1steredSecret" not in text, text


def test_eta_from_the_recent_rate_not_the_whole_run() -> None:
    """A target that slows down as its graph grows: the ETA follows the last minute's rate."""
    clock = [0.0]
    p = ProgressObserver(loader="x", tty=False, clock=lambda: clock[0])
    p.on_start({"file_size": 1000, "resumed_from": 0})

    class S:
        total_processed, imported, failed, skipped = 50, 50, 0, 0

    class P:
        offset = 50

    for now, read in ((10.0, 500), (40.0, 530), (110.0, 600)):
        clock[0] = now
        p.on_batch(S, P, read)
    # whole run: 600 bytes in 110 s (73 s left); the last 60 s and more: 70 bytes in 70 s
    assert p.figures.eta == pytest.approx(400.0 / (70 / 70))
    clock[0] = 120.0
    p.on_batch(S, P, 610)  # the window now starts at t=40
    assert p.figures.eta == pytest.approx(390.0 / (80 / 80))


def test_eta_and_percent_from_bytes() -> None:
    clock = [100.0]
    p = ProgressObserver(loader="x", tty=False, clock=lambda: clock[0])
    p.on_start({"file_size": 1000, "resumed_from": 0})

    class S:
        total_processed, imported, failed, skipped = 50, 45, 3, 2

    class P:
        offset = 50

    clock[0] = 110.0
    p.on_batch(S, P, 250)
    f: Figures = p.figures
    assert f.percent == 25.0 and f.rate == 5.0
    assert f.eta == pytest.approx(30.0)  # 750 bytes left at 25 bytes/s
    assert fmt_duration(f.eta) == "0:00:30" and fmt_duration(None) == "--:--"
    line = p.line()
    assert "25.0%" in line and "50 rec" in line and "5 rec/s" in line and "ETA 0:00:30" in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_log_ends_with_how_the_run_ended(tmp_path: Path, sqlite_url: str, fmt: str) -> None:
    """A log shipper sees the end of a run: status, counts, duration and exit code, in the
    file as on stderr (the summary itself goes to stdout only)."""
    want = expected_counts(30)
    config = pairs_config(tmp_path / "ok", n=30)
    log_file = tmp_path / "logs" / "run.log"
    args = ["--db", sqlite_url, "--log-format", fmt, "--log-file", log_file, "--json"]
    r = run_cli("run", config, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["exit_code"] == 0 and report["status"] == "completed"
    last = log_file.read_text().splitlines()[-1]
    assert last == r.stderr.splitlines()[-1]
    if fmt == "json":
        end = json.loads(last)
        assert end["message"].startswith("run finished: completed, exit code 0: 30 records")
        assert end["level"] == "INFO" and end["event"] == "run_finished"
        assert (end["status"], end["exit_code"], end["records"]) == ("completed", 0, 30)
        assert {k: end[k] for k in want} == want
        assert end["duration_seconds"] == report["duration_seconds"]
        assert (end["run_id"], end["source_id"]) == (report["run_id"], report["source_id"])
    else:
        assert "INFO" in last and f"run={report['run_id']}]" in last
        assert (
            f"run finished: completed, exit code 0: 30 records, {want['succeeded']} succeeded, "
            f"{want['failed']} failed, {want['skipped']} skipped in "
        ) in last

    # a run that fails: exit 1 in the JSON report and in the log's last line, at ERROR
    config = pairs_config(tmp_path / "bad", n=30, fatal_at=12)
    r = run_cli("run", config, *args, cwd=tmp_path)
    assert r.returncode == 1
    assert json.loads(r.stdout)["exit_code"] == 1
    last = log_file.read_text().splitlines()[-1]
    if fmt == "json":
        end = json.loads(last)
        assert (end["level"], end["status"], end["exit_code"]) == ("ERROR", "failed", 1)
        assert end["reason"]
    else:
        assert "ERROR" in last and "run finished: failed, exit code 1:" in last

    # a config error before the run starts still ends the log with its exit code
    broken = tmp_path / "bad" / "pairs.yaml"
    broken.write_text(broken.read_text().replace("pairs.csv", "missing.csv"))
    r = run_cli("run", broken, *args, cwd=tmp_path)
    assert r.returncode != 0
    last = log_file.read_text().splitlines()[-1]
    assert f"exit code {r.returncode}" in last and "run finished: failed" in last
