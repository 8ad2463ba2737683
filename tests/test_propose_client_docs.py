"""the README's "The Propose API" section's examples run, as written, and do what the text says.

Every ``#### `` (or ``### `` without subsections) part of the document is one test: in a
fresh directory that looks like the repository root (``examples/`` linked in), with every
``# file:`` YAML block of the document written there, ``$JOURNAL_DB`` a fresh PostgreSQL
schema and ``$PROPOSE_API_URL`` a schema of another database, both with the PL/pgSQL
Propose API installed, the part's ``sh`` blocks run through bash (``journal-loader`` is the
installed command) and its ``python`` blocks through the interpreter; then the part's check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from journal_loader.config import config_from_dict
from journal_loader.facts import FactsLoader
from journal_loader.storage import open_store
from tests.support.graph import propose_results, rows
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.propose_client import install_propose_api, kg_count, remote_schema
from tests.support.readme import readme_section

REPO = Path(__file__).resolve().parent.parent
DOC_TEXT = readme_section("The Propose API")  # the README section, checked by running it
_HEADING = re.compile(r"^(#{2,4}) (.+)$")
_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Part:
    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (language, text)


def parse(doc: str) -> tuple[list[Part], dict[str, str]]:
    """The document's runnable parts (by heading) and its ``# file:`` blocks."""
    parts: list[Part] = []
    files: dict[str, str] = {}
    current = Part("(top)")
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        heading = _HEADING.match(lines[i])
        fence = _FENCE.match(lines[i])
        if heading:
            parts.append(current)
            current = Part(heading.group(2).strip())
        elif fence:
            lang, body = fence.group(1), []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            text = "\n".join(body) + "\n"
            first = body[0] if body else ""
            if lang == "yaml" and first.startswith("# file: "):
                files[first.removeprefix("# file: ").strip()] = text
            current.blocks.append((lang, text))
        i += 1
    parts.append(current)
    return [p for p in parts if p.blocks], files


PARTS, FILES = parse(DOC_TEXT)


@dataclass
class Env:
    cwd: Path
    journal_db: str
    remote: str
    outputs: list[str] = field(default_factory=list)


def _count_reason(url: str, reason: str) -> int:
    store = open_store(url)
    try:
        return sum(
            1
            for results in propose_results(store).values()
            for r in results
            for a in r.actions
            if a.match_reason == reason
        )
    finally:
        store.dispose()


def _check_graph_options(env: Env) -> None:
    assert _count_reason(env.journal_db, "fuzzy_match") > 0  # the config's fuzzy_matching


def _check_graph_python(env: Env) -> None:
    status, _matched, backend = env.outputs[-1].split()
    assert status == "completed" and backend == "pg_trgm"
    assert _count_reason(env.journal_db, "fuzzy_match") > 0


def _check_same_database(env: Env) -> None:
    assert kg_count(env.journal_db, "kg_relationships") > 0  # loaded into the Propose API
    store = open_store(env.journal_db)
    try:
        assert not rows(store, "SELECT 1 FROM nodes")  # not into the embedded graph
    finally:
        store.dispose()


def _check_separate_database(env: Env) -> None:
    assert kg_count(env.remote, "kg_relationships") > 0
    assert kg_count(env.journal_db, "kg_relationships") == 0


def _check_propose_python(env: Env) -> None:
    assert env.outputs[-1].split() == ["completed", "completed"]
    assert kg_count(env.journal_db, "kg_relationships") > 0
    assert kg_count(env.remote, "kg_relationships") > 0


def _check_facts(env: Env) -> None:
    companies = open_store(f"sqlite:///{env.cwd / 'companies.db'}")
    registry = open_store(f"sqlite:///{env.cwd / 'registry.db'}")
    try:
        assert rows(companies, "SELECT node_type, name, external_key FROM nodes ORDER BY id") == [
            ("Company", "Acme Widgets Inc", "C1"),
            ("City", "Springfield, IL", None),
        ]  # Beta LLC has no city: its one fact's `when` does not hold
        assert len(rows(registry, "SELECT 1 FROM relationships")) > 1000
    finally:
        companies.dispose()
        registry.dispose()
    # the long form's excerpt is a valid mapping
    excerpt = next(t for lang, t in _part("Loaders without code: the facts mapping").blocks
                   if lang == "yaml" and t.startswith("facts:\n  fields:"))  # fmt: skip
    FactsLoader(config_from_dict(yaml.safe_load(excerpt)))


CHECKS: dict[str, tuple[Callable[[Env], None], str | None]] = {
    "The graph's options in the config": (_check_graph_options, None),
    "The same from Python": (_check_graph_python, None),
    "In the journal's own database": (_check_same_database, None),
    "In another database": (_check_separate_database, None),
    "From Python": (_check_propose_python, None),
    "Loaders without code: the facts mapping": (_check_facts, None),
}


def _part(title: str) -> Part:
    return next(p for p in PARTS if p.title == title)


def test_every_runnable_part_has_a_check() -> None:
    runnable = {p.title for p in PARTS if any(lang in ("sh", "python") for lang, _ in p.blocks)}
    assert runnable == set(CHECKS)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    (tmp_path / "examples").symlink_to(REPO / "examples")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    journal_db, schema = make_pg_schema()
    try:
        install_propose_api(journal_db)
        with remote_schema() as remote:
            install_propose_api(remote)
            yield Env(tmp_path, journal_db, remote)
    finally:
        drop_pg_schema(schema)


def _run_blocks(part: Part, env: Env) -> None:
    bin_dir = str(Path(sys.executable).parent)
    variables = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "JOURNAL_DB": env.journal_db,
        "PROPOSE_API_URL": env.remote,
    }
    for lang, text in part.blocks:
        if lang == "sh":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", text],
                cwd=env.cwd, env=variables, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
        elif lang == "python":
            done = subprocess.run(
                [sys.executable, "-c", text],
                cwd=env.cwd, env=variables, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
        else:
            continue
        assert done.returncode == 0, f"{part.title}: {text}\n{done.stdout}\n{done.stderr}"
        env.outputs.append(done.stdout.strip())


@pytest.mark.postgres
@pytest.mark.slow  # each walkthrough loads the example through the PL/pgSQL stand-in
@pytest.mark.parametrize(
    "title",
    [
        pytest.param(t, marks=pytest.mark.xfail(reason=why, strict=True)) if why else t
        for t, (_check, why) in CHECKS.items()
    ],
)
def test_the_examples_run_as_written(title: str, env: Env) -> None:
    part = _part(title)
    _run_blocks(part, env)
    check, _why = CHECKS[title]
    check(env)
