"""Fault injection for crash tests: SIGKILL this process at the Nth boundary of a kind.

    JOURNAL_LOADER_CRASH_AT=after_commit:3 journal-loader run ...

kills the run right after its third batch commit. Boundaries (``BOUNDARIES``):

* ``before_propose``: a record is about to be proposed (mid-batch, nothing of the batch
  committed);
* ``after_propose``: a record was proposed, its batch not yet committed;
* ``before_commit``: the batch's events, projections and graph rows are written, COMMIT not
  yet sent;
* ``after_commit``: the batch is durable, the next one not started.

and, apart from those (the crash matrices of tests/test_crash.py walk ``BOUNDARIES``, which a
small batch passes in every run), ``write_behind``: a part of a batch's graph rows was
written behind the resolver (``Tx.write_behind``; on PostgreSQL in that write's thread, while
the batch goes on), nothing of the batch committed. A batch writes behind once its first
``EmbeddedGraph.write_behind_records`` records are resolved (tests/test_write_behind.py).
And ``queued_write``: a batch's last graph rows were written in a write queued behind the
one still running at the batch's end (``Tx.write_behind_queued``, PostgreSQL: see
``BatchCommitter._append_behind_and_plan_ahead``), the next batch being planned, nothing of
the batch committed. And ``ids_topped_up``: the next batch's ids were taken from the
sequences on a connection of their own (``PostgresStore.top_up_ids``, in its thread), not
yet handed to the run, the batch not committed.

Costs one global lookup per boundary when unset. Used by tests/test_crash.py.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

BOUNDARIES = ("before_propose", "after_propose", "before_commit", "after_commit")
WRITE_BEHIND = "write_behind"
QUEUED_WRITE = "queued_write"
IDS_TOPPED_UP = "ids_topped_up"
KINDS = (*BOUNDARIES, WRITE_BEHIND, QUEUED_WRITE, IDS_TOPPED_UP)
ENV = "JOURNAL_LOADER_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    if kind not in KINDS or not n.isdigit() or int(n) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected one of {KINDS} followed by :N (N >= 1)")
    return kind, int(n)


_target = _parse(os.environ.get(ENV))
_seen = 0
# In-process tests act at a boundary instead of dying there (terminate a backend, take the
# lease away...): kind -> callback(n) called with the boundary's count in this process.
_callbacks: dict[str, Callable[[int], None]] = {}
_counts: dict[str, int] = {}


def reset(spec: str | None) -> None:
    global _target, _seen
    _target = _parse(spec)
    _seen = 0
    _callbacks.clear()
    _counts.clear()


def on(kind: str, callback: Callable[[int], None]) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown boundary {kind!r}")
    _callbacks[kind] = callback
    _counts[kind] = 0


def point(kind: str) -> None:
    global _seen
    if _callbacks:
        callback = _callbacks.get(kind)
        if callback is not None:
            _counts[kind] += 1
            callback(_counts[kind])
    if _target is None or _target[0] != kind:
        return
    _seen += 1
    if _seen == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
