"""journal-loader: rerunnable, resumable, event-sourced data loaders for knowledge graphs.

from journal_loader import Loader, run

class MyLoader(Loader):
    def propose(self, record, graph):
        return [graph.propose_fact(("Company", record["name"]), ("City", record["city"]),
                                   "LOCATED_IN")]

report = run(MyLoader, "registry.csv", db="sqlite:///journal.db")
print(report.status, report.statistics)

This module is the public facade: it owns no logic, only the names users import, each loaded
on first use from the module that defines it. Nothing inside the package imports it (the
version is ``journal_loader.version``); the layers of the package, bottom to top, are base
(errors, secrets, resources, suggest, version, faults, switching), storage, sources, config, graph,
journal, projections, loaders (loader, facts, factory), runner (with abandon, failures, dlq),
audit, api, ops and cli, each importing only its own layer and those below
(tests/test_layering.py checks it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from journal_loader.version import __version__

# The public names are imported on first use (PEP 562), not here: `journal-loader` imports
# this package before anything else, and a Ctrl-C while SQLAlchemy and pydantic load must
# reach the command's own handler (journal_loader/__main__.py), not print a traceback.
_EXPORTS = {
    "run": "journal_loader.api",
    "ConfigError": "journal_loader.errors",
    "JournalLoaderError": "journal_loader.errors",
    "ProposeError": "journal_loader.errors",
    "RecordError": "journal_loader.errors",
    "RecordValidationError": "journal_loader.errors",
    "RunFailedError": "journal_loader.errors",
    "RunInterruptedError": "journal_loader.errors",
    "RunPartialError": "journal_loader.errors",
    "SkipRecord": "journal_loader.errors",
    "ValidationError": "journal_loader.errors",
    "Entity": "journal_loader.graph.protocol",
    "ProposeClient": "journal_loader.graph.protocol",
    "ProposeResult": "journal_loader.graph.protocol",
    "Loader": "journal_loader.loader",
    "RunReport": "journal_loader.runner",
}

if TYPE_CHECKING:
    from journal_loader.api import run
    from journal_loader.errors import (
        ConfigError,
        JournalLoaderError,
        ProposeError,
        RecordError,
        RecordValidationError,
        RunFailedError,
        RunInterruptedError,
        RunPartialError,
        SkipRecord,
        ValidationError,
    )
    from journal_loader.graph.protocol import Entity, ProposeClient, ProposeResult
    from journal_loader.loader import Loader
    from journal_loader.runner import RunReport


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'journal_loader' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ConfigError",
    "Entity",
    "JournalLoaderError",
    "Loader",
    "ProposeClient",
    "ProposeError",
    "ProposeResult",
    "RecordError",
    "RecordValidationError",
    "RunFailedError",
    "RunInterruptedError",
    "RunPartialError",
    "RunReport",
    "SkipRecord",
    "ValidationError",
    "__version__",
    "run",
]
