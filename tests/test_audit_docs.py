"""the README's "Auditing" section is checked by running it: the end-to-end question's commands on the
shipped example (their printed output must match the documented one, times, run ids and
durations aside), and the standalone verifier against a real journal, intact and tampered."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.example import EXAMPLE_DATA, REPO
from tests.support.readme import readme_section

DOC_TEXT = readme_section("Auditing")  # the README section, checked by running it
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)


def section(title: str) -> str:
    text = DOC_TEXT
    start = text.index(f"### {title}")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def mask(text: str) -> list[str]:
    text = re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?", "<time>", text)
    text = re.sub(r"\brun [0-9a-f]{8}\b", "run <run>", text)
    text = re.sub(r"in \d+\.\d+ s\b", "in <t> s", text)
    return [line.rstrip() for line in text.splitlines()]


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JOURNAL_LOADER_DB_URL", None)
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def walkthrough(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[tuple[str, str, str]]]:
    """Runs every command of "A question answered end to end" in a fresh directory that sees
    the repository's examples/; returns (directory, [(command, documented, printed)])."""
    if not EXAMPLE_DATA.exists():
        pytest.skip(f"{EXAMPLE_DATA} is missing")
    cwd = tmp_path_factory.mktemp("docs")
    (cwd / "examples").symlink_to(REPO / "examples")
    (cwd / "bin").mkdir()
    if shutil.which("sqlite3") is None:  # the sqlite3 shell, as far as the docs use it
        shim = cwd / "bin" / "sqlite3"
        shim.write_text(
            f"#!{sys.executable}\nimport sqlite3, sys\n"
            "for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n"
            "    print('|'.join(str(v) for v in row))\n"
        )
        shim.chmod(0o755)
    steps = []
    pending: str | None = None
    for kind, body in blocks(section("A question answered end to end")):
        if kind == "bash":
            if pending is not None:
                steps.append((pending, "", _run(pending, cwd)))
            pending = body
        elif kind == "text":
            assert pending is not None, f"output without a command: {body[:60]}"
            steps.append((pending, body, _run(pending, cwd)))
            pending = None
    if pending is not None:
        steps.append((pending, "", _run(pending, cwd)))
    return cwd, steps


def _run(command: str, cwd: Path) -> str:
    done = shell(command, cwd)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_walkthrough_prints_what_the_docs_say(
    walkthrough: tuple[Path, list[tuple[str, str, str]]],
) -> None:
    _, steps = walkthrough
    assert [s[0].split()[0] for s in steps].count("journal-loader") >= 7
    for command, documented, printed in steps:
        actual = mask(printed)
        at = 0
        for line in (x for x in mask(documented) if x):
            assert line in actual[at:], f"{command}\nexpected line:\n{line}\nprinted:\n{printed}"
            at = actual.index(line, at) + 1


def verifier(cwd: Path) -> Path:
    (code,) = [body for kind, body in blocks(section("The canonical bytes")) if kind == "python"]
    assert len(code.strip().splitlines()) <= 16  # a few lines, as promised
    path = cwd / "verify_journal.py"
    path.write_text(code)
    return path


def test_the_standalone_verifier_checks_a_real_journal(
    walkthrough: tuple[Path, list[tuple[str, str, str]]], tmp_path: Path
) -> None:
    cwd, _ = walkthrough
    script = verifier(tmp_path)
    clean = subprocess.run(
        [sys.executable, "-I", str(script), str(cwd / "audit-example.db")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert clean.returncode == 0 and clean.stdout.strip() == "intact: 1 chain(s)", clean

    for tamper, first in (
        ("UPDATE journal SET payload = replace(payload, 'AURORA', 'ELGIN') WHERE position = 6", 6),
        ("DELETE FROM journal WHERE position = 100", 101),
        ("UPDATE journal SET recorded_at = '2020-01-01 00:00:00.000000' WHERE position = 42", 42),
    ):
        copy = tmp_path / f"tampered_{first}.db"
        shutil.copy(cwd / "audit-example.db", copy)
        with sqlite3.connect(copy) as db:  # as the file's owner would: triggers out of the way
            db.execute("DROP TRIGGER journal_refuse_update")
            db.execute("DROP TRIGGER journal_refuse_delete")
            db.execute(tamper)
        done = subprocess.run(
            [sys.executable, "-I", str(script), str(copy)], capture_output=True, text=True
        )
        assert done.returncode == 1 and done.stdout.strip() == f"first broken position {first}"
        ours = shell(f"journal-loader verify --db sqlite:///{copy}", tmp_path)
        assert ours.returncode == 1 and f"first broken position {first} " in ours.stderr
