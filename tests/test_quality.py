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
