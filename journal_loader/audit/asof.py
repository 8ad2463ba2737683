"""The projections as they stood at a past moment, computed from the journal alone.

``projections_at(store, cut)`` runs the projections' own set-based rebuild over the journal
cut at ``cut`` into temporary tables, in one read transaction that is rolled back afterwards
(``storage/audit_reader.py``): the live tables are never read nor written, and no write lock
is taken (a load can run meanwhile). On top of it:

* ``status_as_of(store, cut)``: what ``journal-loader status`` would have printed then;
* ``replay(store, cut, into_url)``: the projections as of ``cut`` written into another
  database (migrated first), for an auditor to query with SQL.

The property that makes these trustworthy (tests/test_audit_asof.py, hypothesis): for random
journals and cut points, the rows equal the live projections as they were right after that
position committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from journal_loader.audit.base import AuditError
from journal_loader.audit.cut import Cut
from journal_loader.secrets import mask_url
from journal_loader.storage import Store, open_store
from journal_loader.storage.audit_reader import AsOfTables, audit_reader
from journal_loader.storage.projection_store import PROJECTIONS, projection_store

DEFAULT_STALL_SECONDS = 3600.0


@dataclass(slots=True)
class AsOf:
    """The projections as of a cut, in temporary tables of an open read transaction."""

    snapshot: AsOfTables
    cut: Cut
    position: int | None  # the last event at or before the cut (None: the journal was empty)
    time: dt.datetime | None  # its recorded_at, or the cut's time

    def rows(self, name: str) -> Iterator[dict[str, Any]]:
        """The rows of projection ``name`` (typed like the live table's), in key order."""
        return self.snapshot.rows(name)


@contextlib.contextmanager
def projections_at(store: Store, cut: Cut) -> Iterator[AsOf]:
    """Rebuild every projection as of ``cut`` into temporary tables; yield them; roll back.

    The journal as of the cut is a temporary view; the temporary view and tables live in this
    read transaction only."""
    with audit_reader(store).projections_at(position=cut.position, time=cut.time) as tables:
        time = cut.time if cut.time is not None else tables.recorded_at
        yield AsOf(tables, cut, tables.position, time)


# --- status --as-of -----------------------------------------------------------------------


@dataclass(slots=True)
class StatusAsOf:
    cut: Cut
    position: int | None  # the last event at or before the cut
    time: dt.datetime | None
    rows: list[dict[str, Any]]


def status_as_of(store: Store, cut: Cut) -> list[dict[str, Any]]:
    """The rows ``journal-loader status`` shows (the ``loader_status`` view's columns), as they
    stood at ``cut``. ``health`` is judged at that moment: STALLED when a source was
    processing and its last event was older than the stall threshold then (DEAD, which asks
    whether a process holds the lock now, has no meaning in the past)."""
    return status_at(store, cut).rows


def status_at(store: Store, cut: Cut) -> StatusAsOf:
    """``status_as_of``, with where the cut fell (the last event at or before it)."""
    with projections_at(store, cut) as asof:
        threshold = _stall_threshold(asof.snapshot.stall_threshold())
        depth: dict[int, int] = {}
        for r in asof.rows("failed_records"):
            depth[r["source_id"]] = depth.get(r["source_id"], 0) + 1
        out = []
        for s in asof.rows("sources"):
            age = None
            if asof.time is not None:
                age = max(0, int((asof.time - s["updated_at"]).total_seconds()))
            out.append(
                {
                    "source_id": s["source_id"],
                    "source_type": s["source_type"],
                    "source_name": s["source_name"],
                    "source_version": s["source_version"],
                    "file_name": s["file_name"],
                    "status": s["status"],
                    "records_in_file": s["records_in_file"],
                    "records_processed": s["records_processed"],
                    "records_imported": s["records_imported"],
                    "records_failed": s["records_failed"],
                    "records_skipped": s["records_skipped"],
                    "dlq_depth": depth.get(s["source_id"], 0),
                    "current_run_id": s["current_run_id"],
                    "error_message": s["error_message"],
                    "import_started_at": s["import_started_at"],
                    "import_completed_at": s["import_completed_at"],
                    "last_event_at": s["updated_at"],
                    "last_event_age_seconds": age,
                    "health": _health(s["status"], age, threshold),
                    "file_hash": s["file_hash"],
                    "last_position": s["last_position"],
                }
            )
        return StatusAsOf(cut, asof.position, asof.time, out)


def _stall_threshold(value: str | None) -> float:
    try:
        return DEFAULT_STALL_SECONDS if value is None else float(value)
    except ValueError:
        return DEFAULT_STALL_SECONDS


def _health(status: str, age: int | None, threshold: float) -> str:
    if status == "processing":
        return "STALLED" if age is not None and age > threshold else "RUNNING"
    return {"failed": "FAILED", "partial": "PARTIAL", "abandoned": "ABANDONED"}.get(status, "OK")


# --- replay --until --into ----------------------------------------------------------------


@dataclass(slots=True)
class ReplayReport:
    cut: str
    position: int | None
    time: dt.datetime | None
    into: str
    rows: dict[str, int]


def replay(store: Store, cut: Cut, into_url: str) -> ReplayReport:
    """Write the projections as of ``cut`` into the database at ``into_url``.

    The target is migrated first (``open_store``) and must not hold a journal of its own:
    projections that do not derive from the journal beside them would break the invariant
    the rest of journal-loader relies on. Its ``sources`` and ``failed_records`` are replaced,
    and ``loader_settings`` records what they are (``replay.*``).
    """
    if into_url == store.url:
        raise AuditError("replay --into must name another database (or schema), not this one")
    target = open_store(into_url)
    try:
        events = audit_reader(target).event_count()
        if events:
            raise AuditError(
                f"{target.display_url} has a journal of its own ({events} events): replay "
                "writes into an empty journal-loader database (or schema) only"
            )
        with projections_at(store, cut) as asof, target.transaction() as ttx:
            notes = {
                "replay.cut": cut.describe(),
                "replay.position": "" if asof.position is None else str(asof.position),
                "replay.time": "" if asof.time is None else asof.time.isoformat(),
                "replay.from": mask_url(store.url),
                "replay.at": dt.datetime.now(dt.UTC).isoformat(),
            }
            rows = {name: asof.rows(name) for name in PROJECTIONS}
            counts = projection_store(target).replace_all(ttx, rows, notes)
            report = ReplayReport(
                cut=cut.describe(),
                position=asof.position,
                time=asof.time,
                into=target.display_url,
                rows=counts,
            )
        return report
    finally:
        target.dispose()
