"""A server slower than the client, without relying on timing.

``python -m tests.support.slow_server ARGS`` runs ``journal-loader ARGS`` with ``HeldWrites``
installed; tests/test_plan_ahead.py installs it in process (``SlowServer``).

What it makes happen: a graph write behind the resolver is still running when a batch's
records are all resolved, so the batch's last graph rows are queued behind it while the
next batch is planned (``BatchCommitter._append_behind_and_plan_ahead``, PostgreSQL), at
every batch planned ahead. tests/test_crash.py kills such a run at ``queued_write``.

Why not a sleep: this used to make each write behind 30 ms slower and hope the client's
last 50 records took less. On a loaded CI machine they did not: a resumed run finished
without a single queued write, and the crash test that expected a kill there failed
(``[-9, 0] == [-9, -9]``); with the client made 2 ms a record slower, it failed every time
(``[0, 0]``), and the helper below passes. Now a write behind, started in its thread during a batch, waits
until the run's thread needs the transaction (``Tx.join_behind``, ``Tx._settle_behind``:
every wait for a write behind goes through one of the two) or has queued the batch's last
rows behind it (``Tx.write_behind_queued``). A write that holds back nobody's progress but
the server's is exactly the slow server the path is for. Nothing waits forever: a write
held for ``HOLD_LIMIT`` seconds goes on (a test then fails on what it counts, not by
hanging)."""

from __future__ import annotations

import runpy
import sys
import threading
from collections.abc import Callable
from typing import Any

from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.store import GraphStore
from journal_loader.storage.base import Tx

HOLD_LIMIT = 20.0


class HeldWrites:
    """Holds each graph write behind until the run's thread waits for it or queues behind
    it. ``queued``: how many batches had their last graph rows queued behind such a write."""

    def __init__(self, setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
        self.queued = 0
        self._releases = 0
        self._cond = threading.Condition()
        self._local = threading.local()
        write, behind, queue = GraphStore.write, Tx.write_behind, Tx.write_behind_queued
        join, settle = Tx.join_behind, Tx._settle_behind
        held = self

        def held_write(store: GraphStore, tx: Tx, buffers: Any) -> None:
            seen = getattr(held._local, "seen", None)
            if seen is not None:
                with held._cond:
                    held._cond.wait_for(lambda: held._releases != seen, HOLD_LIMIT)
            write(store, tx, buffers)

        def behind_held(tx: Tx, work: Callable[[], None], *, append: bool = False) -> bool:
            # The count of releases is taken here, in the run's thread, when the write is
            # handed over, not once its thread runs: a release between the two would
            # otherwise be missed, and the run's thread, waiting for the write, would wait
            # out HOLD_LIMIT.
            if threading.current_thread() is not threading.main_thread():
                return behind(tx, work, append=append)
            with held._cond:
                seen = held._releases

            def in_thread() -> None:
                held._local.seen = seen
                work()

            return behind(tx, in_thread, append=append)

        def queue_and_release(tx: Tx, last_rows: Callable[[], None]) -> None:
            def flagged() -> None:
                held._local.seen = None  # the queued write itself is not held
                last_rows()

            held.queued += 1
            queue(tx, flagged)
            held._release()

        def join_and_release(tx: Tx) -> None:
            if threading.current_thread() is threading.main_thread():
                held._release()
            join(tx)

        def settle_and_release(tx: Tx) -> None:
            held._release()
            settle(tx)

        setattr_(GraphStore, "write", held_write)
        setattr_(Tx, "write_behind", behind_held)
        setattr_(Tx, "write_behind_queued", queue_and_release)
        setattr_(Tx, "join_behind", join_and_release)
        setattr_(Tx, "_settle_behind", settle_and_release)

    def _release(self) -> None:
        with self._cond:
            self._releases += 1
            self._cond.notify_all()


def main() -> None:
    HeldWrites()
    EmbeddedGraph.write_behind_records = 50
    sys.argv = ["journal-loader", *sys.argv[1:]]
    runpy.run_module("journal_loader", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
