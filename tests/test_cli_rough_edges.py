"""The command line's rough edges, each found by a new user: output into a closed pipe,
``exit_code`` in ``run --json``, a readable ``history``, and help with an example on every
command (and every command in the README)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from journal_loader.cli import main
from tests.support.example import REPO, LoadedExample

BIN = Path(sys.executable).parent / "journal-loader"


@pytest.fixture
def example_url(example_sqlite: LoadedExample) -> str:
    return example_sqlite.url  # shared: these tests only read it


def _env() -> dict[str, str]:
    env = {**os.environ}
    env.pop("JOURNAL_LOADER_DB_URL", None)
    env.pop("JOURNAL_LOADER_DEBUG", None)
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["history", "1", "25"],
        ["history", "1", "25", "--json"],
        ["dlq", "list"],
        ["dlq", "summary"],
        ["status"],
        ["graph", "stats"],
        ["graph", "neighbours", "7", "--depth", "2"],
        ["export", "--format", "jsonl"],
        ["--help"],
    ],
)
def test_output_into_a_closed_pipe_exits_quietly(example_url: str, args: list[str]) -> None:
    """The reader is gone before the command writes (`| head` that has what it wanted):
    exit 0, nothing on stderr."""
    extra = [] if args == ["--help"] else ["--db", example_url]
    proc = subprocess.Popen(
        [str(BIN), *args, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # a real pipe whose reader has left
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert stderr == ""


def test_history_into_head(example_url: str) -> None:
    done = subprocess.run(
        ["bash", "-c", f"set -o pipefail; '{BIN}' history 1 25 --db '{example_url}' | head -2"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("source 1: business_registry_20251001.csv")
    assert len(done.stdout.splitlines()) == 2


def test_history_is_readable_by_default_and_whole_in_json(example_url: str) -> None:
    """One line per fact of the graph's answer (no JSON cut with an ellipsis), a record one
    field a line; --json has everything."""
    runner = CliRunner()
    full = json.loads(
        runner.invoke(main, ["history", "1", "1", "--db", example_url, "--json"]).stdout
    )
    shown = runner.invoke(main, ["history", "1", "1", "--db", example_url])
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    assert "…" not in shown.stdout and " ..." not in shown.stdout and "{" not in shown.stdout
    (answer,) = [e["event"] for e in full["events"] if e["event_type"] == "ProposeSucceeded"]
    results = answer["results"]
    assert len(results) == 5
    assert "    graph: 5 fact(s): 5 success" in lines
    facts = [line.strip() for line in lines if line.strip().startswith("fact ")]
    assert len(facts) == len(results)
    for i, (line, result) in enumerate(zip(facts, results, strict=True)):
        assert line.startswith(f"fact {i}: {result['status']} (confidence ")
        for action in result["actions"]:
            if action["action"].startswith("entity_"):
                what = f"{action['role']} entity {action['entity_id']} {action['action'][7:]}"
                assert f"{what} ({action['match_reason']}, " in line
            else:
                kind = action["action"].removeprefix("relationship_")
                assert f"relationship {action['relationship_id']} {kind}" in line
    (parsed,) = [e["event"] for e in full["events"] if e["event_type"] == "RecordParsed"]
    for field, value in parsed["record"].items():
        assert f"      {field}: {value}".rstrip() in lines
    assert max(len(line) for line in lines if not line.startswith("    raw: ")) < 200


def _commands(
    group: click.Group, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every command under ``group``, nested groups included, as click lists them to a user
    (list_commands/get_command, so a group that loads its commands lazily is walked too)."""
    ctx = click.Context(group, info_name=" ".join(("journal-loader", *path)))
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, f"`journal-loader {' '.join((*path, name))}` does not load"
        found.append(((*path, name), command))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(main)


def test_the_command_list_is_complete() -> None:
    """The whole list, so a command group that fails to register is caught here; a new
    command joins the list, and the two tests below check its help and its README mention."""
    names = {" ".join(p) for p, _ in COMMANDS}
    assert names == {
        "config", "config check",
        "db", "db upgrade",
        "dlq", "dlq list", "dlq resolve", "dlq retry", "dlq show", "dlq summary",
        "export",
        "graph", "graph neighbours", "graph node", "graph stats",
        "history",
        "jobs", "jobs run",
        "lineage", "lineage attribute", "lineage node", "lineage relationship",
        "projections", "projections rebuild",
        "replay", "run",
        "source", "source abandon",
        "status", "submit", "verify", "worker",
    }  # fmt: skip
    assert len(COMMANDS) == len(names) == 32


def test_the_top_level_help_shows_example_calls() -> None:
    done = CliRunner().invoke(main, ["--help"])
    assert done.exit_code == 0, done.output
    assert re.search(r"^\s+journal-loader run \S+", done.output, re.M), done.output


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    """sqlite-utils' rule: every command's --help shows how to call it."""
    done = CliRunner().invoke(main, [*path, "--help"])
    assert done.exit_code == 0, done.output
    assert re.search(r"^\s*Examples?\b", done.output, re.M), done.output
    call = re.compile(rf"^\s*(?:\S+=\S+ )?journal-loader {re.escape(' '.join(path))}\b", re.M)
    assert call.search(done.output), f"no example calls `journal-loader {' '.join(path)}`"


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_every_command_is_in_the_readme(path: tuple[str, ...]) -> None:
    """Every command is named in the README, alone or in a list (`dlq list|show|...`)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8").replace("\\|", "|")
    *parents, name = path
    prefix = "".join(f"{p} " for p in parents)
    pattern = rf"journal-loader {re.escape(prefix)}(?:[\w-]+\|)*{re.escape(name)}\b"
    assert re.search(pattern, readme), f"the README never names `journal-loader {' '.join(path)}`"


def test_the_run_summary_shows_whole_records_per_second() -> None:
    """``4,792.3 records/s`` read as false precision next to a rate that moves by 10%; a
    rate below 10 (a slow Propose API) keeps its tenth, or it would read 0."""
    from journal_loader.cli.run_cmd import _rate

    assert _rate(4792.3) == "4,792"
    assert _rate(10.0) == "10"
    assert _rate(2.34) == "2.3"
    assert _rate(0.0) == "0.0"
