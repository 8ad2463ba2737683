"""journal-loader: rerunnable, resumable, event-sourced data loaders for knowledge graphs.

from journal_loader import Loader, run

class MyLoader(Loader):
    def propose(self, record, graph):
        return [graph.propose_fact(("Company", record["name"]), ("City", record["city"]),
                                   "LOCATED_IN")]

report = run(MyLoader, "registry.csv", db="sqlite:///journal.db")
print(report.status, report.statistics)
"""

from __future__ import annotations

__version__ = "0.1.0"

from journal_loader.api import run
from journal_loader.errors import (
    ConfigError,
    JournalLoaderError,
    ProposeError,
    SkipRecord,
    ValidationError,
)
from journal_loader.graph.protocol import Entity, ProposeClient, ProposeResult
from journal_loader.loader import Loader
from journal_loader.runner import RunReport

__all__ = [
    "ConfigError",
    "Entity",
    "JournalLoaderError",
    "Loader",
    "ProposeClient",
    "ProposeError",
    "ProposeResult",
    "RunReport",
    "SkipRecord",
    "ValidationError",
    "__version__",
    "run",
]
