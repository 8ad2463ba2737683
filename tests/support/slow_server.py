"""``python -m tests.support.slow_server ARGS``: ``journal-loader ARGS`` against a server
slower than the client. Every graph write behind the resolver takes 30 ms more, and one
starts every 50 records. So a write still runs when a batch's records are all resolved,
and the batch's last graph rows are queued behind it while the next batch is planned
(``BatchCommitter._append_behind_and_plan_ahead``, PostgreSQL). For tests/test_crash.py,
which kills such a run at ``queued_write``."""

from __future__ import annotations

import runpy
import sys
import threading
import time
from typing import Any

from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.store import GraphStore


def main() -> None:
    write = GraphStore.write

    def slow(store: GraphStore, tx: Any, buffers: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.03)
        write(store, tx, buffers)

    GraphStore.write = slow  # type: ignore[method-assign]
    EmbeddedGraph.write_behind_records = 50
    sys.argv = ["journal-loader", *sys.argv[1:]]
    runpy.run_module("journal_loader", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
