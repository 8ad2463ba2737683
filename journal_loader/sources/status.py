"""Where a source stands (``sources.status``) and how healthy it looks (``health`` in
``status`` and ``audit status --as-of``), as the named values Python compares them with.

Here, low in the layers, because the projections derive the status, and the runner, the
DLQ, ``source abandon``, the audit and the CLI all read it. They are ``StrEnum``: a member is
the very string the projection stores and the CLI prints (``SourceStatus.PROCESSING ==
"processing"``), so rows read from the database compare equal without converting.
"""

from __future__ import annotations

from enum import StrEnum


class SourceStatus(StrEnum):
    """``sources.status``: registered, a run on it, how its last run ended, or retired.
    ``completed``, ``partial`` and ``failed`` are the last ``RunFinished.status`` (the
    runner's ``RunStatus`` of the same names)."""

    REGISTERED = "registered"  # no run started yet
    PROCESSING = "processing"  # a run started and has not finished (or died)
    COMPLETED = "completed"
    PARTIAL = "partial"  # stopped early (--limit): a run resumes it
    FAILED = "failed"
    ABANDONED = "abandoned"  # retired by `source abandon` or a superseding file


class SourceHealth(StrEnum):
    """A source's health as the status views show it: its status, with ``processing`` told
    apart by whether it is still moving."""

    OK = "OK"  # completed or registered
    RUNNING = "RUNNING"  # processing, with recent events
    STALLED = "STALLED"  # processing, no event for longer than the stall threshold
    DEAD = "DEAD"  # processing, but nobody holds its lock: the run died
    FAILED = "FAILED"
    PARTIAL = "PARTIAL"
    ABANDONED = "ABANDONED"
