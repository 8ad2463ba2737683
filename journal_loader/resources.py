"""Where the SQL that ships with journal-loader lives.

``migrations/`` and ``projections/`` sit at the top of the repository; the wheel carries copies
inside the package (``journal_loader/_resources/``, see pyproject.toml). An installed tool finds
the copies; a checkout (or an editable install) finds the originals.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def resource_dir(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_resources" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"journal-loader's {name}/ directory is missing from the installation "
        f"(looked in {_PACKAGE_DIR / '_resources'} and {_PACKAGE_DIR.parent})"
    )


def migrations_dir() -> Path:
    return resource_dir("migrations")


def projections_dir() -> Path:
    return resource_dir("projections")
