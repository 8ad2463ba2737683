"""deploy/ and the README's "Running in production" section: the alert rules and the dashboard parse and use only metrics
a run exposes; the cron file and the systemd units are valid and call real options; the
README section's shell examples run."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import journal_loader
from journal_loader.cli import main
from journal_loader.config import config_from_dict
from journal_loader.ops.metrics import METRIC_NAMES, MetricsObserver, StoreDlqProbe
from tests.support.example import REPO, generator
from tests.support.loaders import PairLoader
from tests.support.ops import pairs_config, pairs_csv, pushgateway, run_cli
from tests.support.readme import readme_section

DEPLOY = REPO / "deploy"
DOC_TEXT = readme_section("Running in production")  # the README section, checked by running it
METRIC = re.compile(r"\bjournal_loader_[a-z_]+\b")


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every sample name a real run writes (histogram _bucket/_sum/_count included)."""
    tmp = tmp_path_factory.mktemp("exposed")
    textfile = tmp / "m.prom"
    db = f"sqlite:///{tmp / 'j.db'}"
    metrics = MetricsObserver("pairs", textfile=textfile, dlq_probe=StoreDlqProbe(db))
    metrics.on_retry("transient", "x", 0.1)
    journal_loader.run(
        PairLoader,
        pairs_csv(tmp / "p.csv", 20),
        db=db,
        observers=[metrics],
    )
    names = set()
    for family in text_string_to_metric_families(textfile.read_text()):
        names.update(s.name for s in family.samples)
    assert {n for n in names if not n.endswith("_created")} >= set(METRIC_NAMES) - {
        "journal_loader_batch_duration_seconds",
        "journal_loader_propose_duration_seconds",
    }
    return names


# --- Prometheus alerts -----------------------------------------------------------------------
def test_alert_rules_parse_and_use_only_exposed_metrics(exposed: set[str]) -> None:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {
        "JournalLoaderStalled",
        "JournalLoaderHighFailureRate",
        "JournalLoaderDLQGrowing",
        "JournalLoaderNoRecentSuccess",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] and rule["annotations"]["summary"]
        used = set(METRIC.findall(rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} uses {used - exposed}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        r = subprocess.run(
            ["promtool", *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True
        )
        assert r.returncode == 0, r.stdout + r.stderr


# --- Grafana -----------------------------------------------------------------------------
def test_dashboard_parses_and_uses_only_exposed_metrics(exposed: set[str]) -> None:
    dash = json.loads((DEPLOY / "grafana" / "journal-loader-dashboard.json").read_text())
    assert dash["title"] and dash["uid"]
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    used = set()
    for expr in exprs:
        used.update(METRIC.findall(expr))
    assert used <= exposed, used - exposed
    # every metric of the issue is on the dashboard somewhere
    for name in (
        "records_total",
        "batch_duration_seconds",
        "propose_duration_seconds",
        "position",
        "dlq_depth",
        "retries_total",
        "last_success_timestamp_seconds",
    ):
        assert any(name in u for u in used), name
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


# --- command lines in deploy files -----------------------------------------------------------
def check_command_line(argv: list[str]) -> None:
    """Parse a journal-loader command line with the real CLI: unknown options fail."""
    assert argv[0].endswith("journal-loader"), argv
    args = argv[1:]
    command: click.Command = main
    path = []
    while isinstance(command, click.Group):
        name, args = args[0], args[1:]
        command = command.commands[name]
        path.append(name)
    try:
        command.make_context(" ".join(path), list(args))
    except click.ClickException as e:
        pytest.fail(f"{' '.join(argv)}: {e.format_message()}")


def test_command_line_checker_catches_a_bad_option() -> None:
    with pytest.raises(pytest.fail.Exception):
        check_command_line(["journal-loader", "run", "x.yaml", "--metrics-portt", "1"])


CRON = DEPLOY / "cron" / "journal-loader"
FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_entries() -> list[tuple[list[str], str, str]]:
    entries = []
    for line in CRON.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            continue
        parts = line.split(None, 6)
        assert len(parts) == 7, f"cron.d lines need 5 time fields, a user and a command: {line}"
        entries.append((parts[:5], parts[5], parts[6]))
    return entries


def test_cron_file_fields_and_commands() -> None:
    entries = cron_entries()
    assert len(entries) == 3  # quarterly, weekly, daily
    for fields, user, command in entries:
        for value, (lo, hi) in zip(fields, FIELDS, strict=True):
            for part in value.split(","):
                if part == "*":
                    continue
                for n in part.split("-"):
                    assert lo <= int(n) <= hi, (value, lo, hi)
        assert user == "journal-loader"
        # an unescaped % ends the command in cron: every % must be written \%
        assert re.search(r"(?<!\\)%", command) is None, command
        for part in re.split(r"&&|;", command.replace("\\%", "%")):
            argv = shlex.split(part)
            if argv and argv[0] == "journal-loader":
                check_command_line(argv)
    quarterly = entries[0][0]
    assert quarterly == ["0", "2", "1-7", "1,4,7,10", "*"]


@pytest.mark.parametrize(("weekday", "runs"), [("1", True), ("3", False), ("7", False)])
def test_cron_first_monday_guard(tmp_path: Path, weekday: str, runs: bool) -> None:
    """Run the quarterly line's command as cron would (\\% -> %), with `date` saying what
    weekday it is and a stand-in journal-loader that records its arguments."""
    _fields, _user, command = cron_entries()[0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake_date = bin_dir / "date"
    fake_date.write_text(f'#!/bin/sh\n[ "$1" = "+%u" ] && echo {weekday} && exit 0\nexit 9\n')
    fake_loader = bin_dir / "journal-loader"
    fake_loader.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> {calls}\n')
    for f in (fake_date, fake_loader):
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    r = subprocess.run(
        ["/bin/sh", "-c", command.replace("\\%", "%")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert calls.exists() == runs, r.stderr
    if runs:
        assert calls.read_text().splitlines()[:2] == [
            "run",
            "/etc/journal-loader/business_registry.yaml",
        ]


UNITS = sorted((DEPLOY / "systemd").iterdir())


def parse_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def test_systemd_units_parse_and_call_real_options() -> None:
    names = {p.name for p in UNITS}
    assert {
        "journal-loader@.service",
        "journal-loader@.timer",
        "journal-loader-worker@.service",
    } <= names
    for path in UNITS:
        unit = parse_unit(path)
        assert unit.get("Unit", "Description")
        if path.suffix == ".service":
            argv = shlex.split(
                unit.get("Service", "ExecStart").replace("%i", "example").replace("%H", "host")
            )
            check_command_line(argv)
            assert unit.get("Service", "KillSignal") == "SIGTERM"
            if argv[1] == "worker":  # long-running: restarted, stopped with time for a batch
                assert unit.get("Service", "Type") == "exec"
                assert unit.get("Service", "Restart") == "on-failure"
                assert int(unit.get("Service", "TimeoutStopSec")) >= 60
                assert unit.get("Install", "WantedBy") == "multi-user.target"
            else:
                assert unit.get("Service", "Type") == "oneshot"
        else:
            assert unit.get("Timer", "OnCalendar")
            assert unit.get("Install", "WantedBy") == "timers.target"
            assert (path.parent / (path.stem + ".service")).exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` on an instance of each template (the binary path pointed at
    this checkout's journal-loader, which verify wants to exist). Unknown keys are only
    warnings to verify: any output about our files fails the test too."""
    exe = shutil.which("journal-loader") or str(
        Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "journal-loader"
    )
    if not Path(exe).exists():
        exe = str(REPO / ".venv" / "bin" / "journal-loader")
    files = []
    for path in UNITS:
        text = path.read_text().replace("/opt/journal-loader/bin/journal-loader", exe)
        target = tmp_path / path.name.replace("@.", "@example.")
        target.write_text(text)
        files.append(str(target))
    r = subprocess.run(
        ["systemd-analyze", "verify", *files], capture_output=True, text=True, cwd=tmp_path
    )
    output = (r.stdout + r.stderr).strip()
    ours = [
        line for line in output.splitlines() if str(tmp_path) in line or "journal-loader" in line
    ]
    assert r.returncode == 0 and not ours, output


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_quarterly_timer_fires_on_first_mondays() -> None:
    unit = parse_unit(DEPLOY / "systemd" / "journal-loader@.timer")
    spec = unit.get("Timer", "OnCalendar")
    r = subprocess.run(
        ["systemd-analyze", "calendar", spec, "--iterations", "8"],
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    )
    assert r.returncode == 0, r.stderr
    days = [
        dt.date.fromisoformat(m)
        for m in re.findall(r"(\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2}", r.stdout)
    ]
    assert len(days) == 8  # --iterations 8
    for day in days:
        assert day.weekday() == 0 and day.day <= 7 and day.month in (1, 4, 7, 10), day


# --- the README's "Running in production" section ----------------------------------------------------------------------
def blocks(lang: str) -> list[str]:
    """The fenced blocks of the doc whose info string is ``lang`` ("" for none)."""
    found, current, info = [], None, ""
    for line in DOC_TEXT.splitlines():
        fence = line.strip()
        if current is None and fence.startswith("```"):
            current, info = [], fence[3:].strip()
        elif current is not None and fence == "```":
            if info == lang:
                found.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line.strip() if lang == "sh" else line)
    return found


def test_doc_yaml_snippets_are_valid_config() -> None:
    snippets = blocks("yaml")
    assert len(snippets) >= 2
    for snippet in snippets:
        config_from_dict(yaml.safe_load(snippet))


def test_doc_cron_line_is_the_shipped_one() -> None:
    lines = [line for b in blocks("") for line in b.splitlines() if re.match(r"^[0-9*]", line)]
    assert lines
    shipped = CRON.read_text().splitlines()
    for line in lines:
        assert line in shipped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    """The business-registry example with a small generated file, in a scratch checkout."""
    root = tmp_path / "checkout"
    example = root / "examples" / "business_registry"
    (example / "data").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "business_registry" / "loader.yaml", example)
    shutil.copy(REPO / "examples" / "business_registry" / "loader.py", example)
    generator().generate(example / "data" / "business_registry_20251001.csv", 120)
    return root


def test_doc_shell_examples_run(example_copy: Path, tmp_path: Path) -> None:
    """Every `journal-loader` line of the section runs (with production paths mapped into a
    temporary folder), each against a fresh database, and exits 0; the rest are checked."""
    commands = [
        line.strip()
        for b in blocks("sh")
        for line in b.replace("\\\n", " ").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(commands) >= 8
    root = example_copy
    tc = tmp_path / "textfile_collector"
    daily = tmp_path / "daily.d"
    pairs_config(daily, name="pairs", n=15)
    tc.mkdir()
    ran = 0
    with pushgateway() as gw:
        mapping = {
            "/var/lib/node_exporter/textfile_collector": str(tc),
            "/var/log/journal-loader": str(tmp_path / "log"),
            "/etc/journal-loader/daily.d": str(daily),
            "http://pushgateway:9091": gw.url,
            "--metrics-port 9464": f"--metrics-port {free_port()}",
        }
        for i, command in enumerate(commands):
            argv = shlex.split(command)
            if argv[0] == "journal-loader":
                for old, new in mapping.items():
                    command = command.replace(old, new)
                db = f"sqlite:///{tmp_path / f'doc{i}.db'}"
                r = run_cli(*shlex.split(command)[1:], cwd=root, env={"JOURNAL_LOADER_DB_URL": db})
                assert r.returncode == 0, f"{command}\n{r.stdout}\n{r.stderr}"
                ran += 1
            elif argv[0] == "promtool":
                if shutil.which("promtool"):
                    r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
                    assert r.returncode == 0, r.stdout + r.stderr
            elif argv[:2] == ["sudo", "install"]:
                for path in argv:
                    if path.startswith("deploy/"):
                        assert (REPO / path).is_file(), path
            elif "systemctl" in argv[:2]:
                for unit in re.findall(r"journal-loader(?:-jobs)?@\w+\.(?:timer|service)", command):
                    template = re.sub(r"@\w+\.", "@.", unit)
                    assert (DEPLOY / "systemd" / template).is_file(), unit
            else:
                pytest.fail(f"an example the test does not know how to check: {command}")
        assert ran >= 6
        assert len(gw.requests) == 1  # the --pushgateway example pushed
    assert (tc / "journal_loader_business_registry.prom").exists()
    assert (tc / "journal_loader_pairs.prom").exists()  # from the jobs example
    log_lines = (tmp_path / "log" / "business_registry.log").read_text().splitlines()
    assert log_lines and all(
        json.loads(line)["loader"] == "business_registry" for line in log_lines
    )


def test_doc_metrics_table_matches_the_code() -> None:
    text = DOC_TEXT
    documented = set(re.findall(r"`(journal_loader_[a-z_]+)`", text))
    assert documented == set(METRIC_NAMES), documented ^ set(METRIC_NAMES)


def _unused(*_: Any) -> None:  # keep imports honest for type checkers
    pass


def test_every_dashboard_query_honours_the_loader_variable() -> None:
    """Picking loaders in the dashboard narrows every panel (the DLQ panel once showed all)."""
    dash = json.loads((DEPLOY / "grafana" / "journal-loader-dashboard.json").read_text())
    selector = re.compile(r"\b(journal_loader_[a-z_]+)(\{[^}]*\})?")
    for panel in dash["panels"]:
        for target in panel["targets"]:
            for name, labels in selector.findall(target["expr"]):
                assert 'loader=~"$loader"' in (labels or ""), (panel["title"], name)
