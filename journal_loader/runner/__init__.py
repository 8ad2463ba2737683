"""The runner: reads a source in batches; one batch is one transaction.

Owns a run from the source's lock to its journaled end, split by responsibility:

* ``run``: ``Runner``, one run of one file (lock, register, loop, finish, report);
* ``registration``: the run's first transaction (register or resume, ``RunStarted``);
* ``lease``: the source's lock and lease (the fencing token every batch checks);
* ``loop``: the batch loop (when the run ends: file end, ``--limit``, a stop);
* ``committer``: ``BatchCommitter``, a batch's transaction and each record's outcome (one
  function decides it, one exception ladder); ``retry_records``, the DLQ retry's entry;
* ``two_phase``: the batch for a target outside the journal's transaction;
* ``retry``: retry policy, backoff and circuit breaker;
* ``limits``: fail-fast and the failure limits;
* ``signals``: SIGTERM/SIGINT and ``RunOptions.stop``;
* ``options``: ``RunOptions``, ``RunReport``, the ``RunObserver`` hooks, the named values.

Invariants (README "How it works"): a batch's graph writes, events, checkpoint and
projection changes commit together (2); every record ends with exactly one terminal event
per run (3); a resumed run starts right after the last checkpoint (5). Pinned by
tests/test_crash.py (SIGKILL at every kind of boundary, then rerun, compared with one clean
run).

The names below are imported on first use (PEP 562): ``ops`` reaches for the observer
hooks (``runner.observers``) when the CLI starts, and that must not load the whole runner.

May import: the layers below it (storage, sources, config, graph, journal, projections,
loader) and abandon/failures. Never api, audit, ops or cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BatchCommitter": "journal_loader.runner.committer",
    "describe_error": "journal_loader.runner.committer",
    "retry_records": "journal_loader.runner.committer",
    "Observer": "journal_loader.runner.observers",
    "Observers": "journal_loader.runner.observers",
    "RetryKind": "journal_loader.runner.observers",
    "RunInfo": "journal_loader.runner.observers",
    "RunObserver": "journal_loader.runner.observers",
    "ALREADY": "journal_loader.runner.options",
    "COMPLETED": "journal_loader.runner.options",
    "ErrorKind": "journal_loader.runner.options",
    "FAILED": "journal_loader.runner.options",
    "FAILURE_GROUPS": "journal_loader.runner.options",
    "PARTIAL": "journal_loader.runner.options",
    "RecordOutcome": "journal_loader.runner.options",
    "RunMode": "journal_loader.runner.options",
    "RunOptions": "journal_loader.runner.options",
    "RunReport": "journal_loader.runner.options",
    "RunStatus": "journal_loader.runner.options",
    "STOP_REQUESTED": "journal_loader.runner.options",
    "Stage": "journal_loader.runner.options",
    "CONFLICT_RETRIES": "journal_loader.runner.retry",
    "Runner": "journal_loader.runner.run",
}

if TYPE_CHECKING:
    from journal_loader.runner.committer import (
        BatchCommitter,
        describe_error,
        retry_records,
    )
    from journal_loader.runner.observers import (
        Observer,
        Observers,
        RetryKind,
        RunInfo,
        RunObserver,
    )
    from journal_loader.runner.options import (
        ALREADY,
        COMPLETED,
        FAILED,
        FAILURE_GROUPS,
        PARTIAL,
        STOP_REQUESTED,
        ErrorKind,
        RecordOutcome,
        RunMode,
        RunOptions,
        RunReport,
        RunStatus,
        Stage,
    )
    from journal_loader.runner.retry import (
        CONFLICT_RETRIES,
    )
    from journal_loader.runner.run import (
        Runner,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'journal_loader.runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ALREADY",
    "COMPLETED",
    "CONFLICT_RETRIES",
    "FAILED",
    "FAILURE_GROUPS",
    "PARTIAL",
    "STOP_REQUESTED",
    "BatchCommitter",
    "ErrorKind",
    "Observer",
    "Observers",
    "RecordOutcome",
    "RetryKind",
    "RunInfo",
    "RunMode",
    "RunObserver",
    "RunOptions",
    "RunReport",
    "RunStatus",
    "Runner",
    "Stage",
    "describe_error",
    "retry_records",
]
