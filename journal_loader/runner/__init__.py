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

May import: the layers below it (storage, sources, config, graph, journal, projections,
loader) and abandon/failures. Never api, audit, ops or cli.
"""

from journal_loader.runner.committer import BatchCommitter, describe_error, retry_records
from journal_loader.runner.options import (
    ALREADY,
    COMPLETED,
    FAILED,
    FAILURE_GROUPS,
    PARTIAL,
    STOP_REQUESTED,
    ErrorKind,
    Observer,
    Observers,
    RecordOutcome,
    RetryKind,
    RunInfo,
    RunMode,
    RunObserver,
    RunOptions,
    RunReport,
    RunStatus,
    Stage,
)
from journal_loader.runner.retry import CONFLICT_RETRIES
from journal_loader.runner.run import Runner

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
