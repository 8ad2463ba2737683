"""The code stays typed (mypy --strict on journal_loader/) and ruff-clean: checked by the
same test command as everything else, so CI enforces it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[test]'` installs it")
    return found


@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"]
)
def test_ruff(args: list[str]) -> None:
    done = subprocess.run([_tool("ruff"), *args], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict() -> None:
    done = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_dependency_is_imported() -> None:
    """A dependency nobody imports (rapidfuzz was one) only costs installs."""
    import re
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    modules = {"sqlalchemy": "sqlalchemy", "psycopg": "psycopg", "pyyaml": "yaml",
               "prometheus-client": "prometheus_client"}  # fmt: skip
    code = "\n".join(
        p.read_text(encoding="utf-8")
        for folder in ("journal_loader", "migrations")
        for p in (REPO / folder).rglob("*.py")
    )
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
        module = modules.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {module}\b", code, re.M), f"{name} is never imported"


def _test_imports_of_other_tests(source: str) -> list[str]:
    """Imports (anywhere in the module) of conftest or of a test module: pytest already
    imported those under its own rules, so a second import runs their fixtures and module
    code twice, and ties one test file to another's internals."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            last = name.split(".")[-1]
            if name.startswith("tests.") and (last == "conftest" or last.startswith("test_")):
                found.append(f"line {node.lineno}: {name}")
    return found


def test_tests_import_helpers_only_from_tests_support() -> None:
    offenders = {
        str(p.relative_to(REPO)): hits
        for p in sorted((REPO / "tests").rglob("*.py"))
        if (hits := _test_imports_of_other_tests(p.read_text(encoding="utf-8")))
    }
    assert offenders == {}, "move shared helpers to tests/support/<module>.py"


def test_the_import_check_sees_both_forms() -> None:
    planted = "import tests.conftest\n\ndef f():\n    from tests.test_dlq import Lenient\n"
    assert _test_imports_of_other_tests(planted) == [
        "line 1: tests.conftest",
        "line 4: tests.test_dlq",
    ]
    assert _test_imports_of_other_tests("from tests.support.pg import PG_URL\n") == []
