"""Property tests at two sizes: a few examples in the default run, the full count in the
slow run (``pytest -m slow``, which CI runs as a step of its own)."""

from __future__ import annotations

import pytest


def example_counts(default: int, full: int) -> pytest.MarkDecorator:
    """Parametrize a test's ``examples`` argument: ``default`` examples in the default run,
    ``full`` in the slow run. The test applies it to its hypothesis settings."""
    return pytest.mark.parametrize(
        "examples",
        [
            pytest.param(default, id=f"{default}-examples"),
            pytest.param(full, id=f"{full}-examples", marks=pytest.mark.slow),
        ],
    )
