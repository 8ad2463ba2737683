"""``python -m tests.support.paused_worker ARGS``: ``journal-loader ARGS`` whose run pauses
right after its first batch commit (``faults.on("after_commit")``), in the job's thread,
until the test lets it go on.

``JOURNAL_LOADER_TEST_PAUSE``: a path. At the pause the run creates ``<path>.paused`` and
waits for ``<path>.go`` (at most 120 s), then goes on. The worker's event loop (its
heartbeat, its signal handlers) keeps running meanwhile.

Why: tests/test_fleet.py signals a worker mid-load (SIGTERM, SIGSTOP). It used to poll the
journal for the first BatchCommitted and signal then, while the run went on loading; a
pytest process the scheduler left waiting for a second or two found the 3,000-row load
finished. Paused, the run is mid-load for as long as the test needs, and nothing it has
not yet committed can land between the test's reads."""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

from journal_loader import faults

ENV = "JOURNAL_LOADER_TEST_PAUSE"


def main() -> None:
    base = os.environ[ENV]
    paused, go = Path(base + ".paused"), Path(base + ".go")

    def pause(n: int) -> None:
        if n != 1:
            return
        paused.touch()
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    faults.on("after_commit", pause)
    sys.argv = ["journal-loader", *sys.argv[1:]]
    runpy.run_module("journal_loader", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
