"""Retiring a partial source: ``journal-loader source abandon N --reason ...``, and the
automatic retirement of a partial source when its file comes back with new content.

A source is its type + SHA-256. Edit, append to or truncate a file whose load was killed,
and the rerun is a *new* source: the old one can never be resumed from that file, and it
would stay ``processing`` (DEAD) forever, failing ``status --stalled`` every night. Retiring
it journals ``SourceAbandoned`` on the old source's own chain and deletes nothing: its facts
stay in the graph with their provenance (``lineage`` still shows them), its failures stay in
the DLQ, its history stays readable. Health and ``--stalled`` ignore it from then on.

Superseding is automatic (the decision, documented in the README's "When things go wrong"):
a run that registers a new source retires the partial sources with the same type and the
same file name whose runs are dead (their lock is free), and says so. The old content is
gone from that path, so nothing could resume them from it; should a copy of the old file
come back, a run of it resumes the old source as before (the event is not an end state for
data, only for health). A source whose run is alive is never touched.
Pinned by tests/test_abandon.py.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from journal_loader import projections
from journal_loader.errors import JournalLoaderError, SourceLockedError
from journal_loader.journal import queries
from journal_loader.journal.events import ChunksPlanned, SourceAbandoned, decode
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage.base import Store, utcnow
from journal_loader.storage.journal_store import (
    chunk_lease_key,
    chunk_lock_name,
    journal_store,
    source_lock_name,
)

# statuses a source can be retired from: a load that did not finish
RETIRABLE = ("registered", "processing", "partial", "failed")


class AbandonError(JournalLoaderError):
    """The source cannot be abandoned (unknown, or completed): a usage error, exit 2."""

    exit_code = 2


@dataclass(slots=True)
class Abandoned:
    source_id: int
    file_name: str
    status_before: str
    next_offset: int  # where it was left: records before it have their outcome
    already: bool = False


def abandon(
    store: Store, source_id: int, reason: str, *, superseded_by: int | None = None
) -> Abandoned:
    """Journal ``SourceAbandoned`` for a source that did not complete. Takes the source's
    lock (SourceLockedError while a run holds it: a live run is never retired) and bumps its
    lease generation, so a run that was merely frozen can never append after this."""
    if not reason.strip():
        raise AbandonError("abandoning a source needs a reason saying why (--reason)")
    journal = journal_store(store)
    with store.transaction() as tx:
        row = journal.source_for_abandon(tx, source_id)
    if row is None:
        raise AbandonError(f"no source {source_id} (see `journal-loader status`)")
    file_name, status = row.file_name, row.status
    if status == "abandoned":
        return Abandoned(source_id, file_name, status, 0, already=True)
    if status not in RETIRABLE:
        raise AbandonError(
            f"source {source_id} ({file_name}) is {status}: only a load that did not finish "
            "can be abandoned"
        )
    run_id = f"abandon-{os.getpid()}-{utcnow():%Y%m%dT%H%M%S}"[:36]
    holder = {"run_id": run_id, "pid": os.getpid(), "hostname": socket.gethostname()}
    lock_name = source_lock_name(row.source_type, row.file_hash)
    with store.lock_source(lock_name, holder):
        chunks = _chunks(store, source_id)
        # A split source's chunks run under locks of their own (``#chunkN``), not the
        # source's lock taken above: a live chunk run is refused like a live whole-file run.
        for i in range(chunks):
            if not store.lock_is_free(chunk_lock_name(row.source_type, row.file_hash, i)):
                raise SourceLockedError(
                    f"chunk {i} of source {source_id} ({file_name}) is being loaded by a "
                    "run; try again when it has finished"
                )
        with store.transaction() as tx:
            now_row = journal.source_for_abandon(tx, source_id)
            if now_row is None or now_row.status not in RETIRABLE:
                return Abandoned(source_id, file_name, status, 0, already=True)  # meanwhile
            resume = queries.checkpoint(tx, source_id)
            now = utcnow()
            journal.acquire_lease(tx, source_id, run_id, socket.gethostname(), os.getpid(), now)
            # Every chunk's generation too, BEFORE the chain lock (the append below takes
            # it): a chunk's batch holds its lease row (check_lease) and then waits for the
            # chain lock, so the other order deadlocks. A chunk run that was only frozen
            # (its lock gone, checked above) is fenced out; one that started after the
            # check either registered before this commit (fenced out by this bump) or
            # after it (it resumes the source, as a whole-file run of an abandoned source
            # does). Pinned by tests/test_chunks.py::test_abandoning_a_split_source.
            for i in range(chunks):
                key = chunk_lease_key(source_id, i)
                journal.acquire_lease(tx, key, run_id, socket.gethostname(), os.getpid(), now)
            # Shared: the chain head is read under the chain lock, after any chunk's append
            # (journal_loader/runner/lease.py::attach says why an in-memory head forks).
            writer = JournalWriter(source_id, run_id, None, shared=True)
            event = SourceAbandoned(
                reason=reason, superseded_by=superseded_by, next_offset=resume.offset
            )
            rows = writer.append(tx, [PendingEvent.of(None, event)], now)
            projections.apply(tx, rows)
    writer.confirm()
    return Abandoned(source_id, file_name, status, resume.offset)


def _chunks(store: Store, source_id: int) -> int:
    """How many chunks the source's current load was split into (0: not split). Read from
    the plan's event here: the runner (and so runner/chunks.py) imports this module."""
    with store.transaction() as tx:
        mark = journal_store(store).plan_mark(tx, source_id)
    if mark is None or mark.event_type != "ChunksPlanned":
        return 0
    plan = decode(mark.payload)
    assert isinstance(plan, ChunksPlanned)
    return len(plan.starts)


def supersede_partial(
    store: Store, source_id: int, source_type: str, file_name: str, file_hash: str
) -> tuple[list[Abandoned], list[str]]:
    """Retire the partial sources of this type and file name with other content, whose runs
    are dead. Returns (what was retired, notes on what was left because a run holds it)."""
    with store.transaction() as tx:
        olds = journal_store(store).partial_predecessors(
            tx,
            source_type=source_type,
            file_name=file_name,
            file_hash=file_hash,
            source_id=source_id,
        )
    done, notes = [], []
    for old in olds:
        try:
            done.append(
                abandon(
                    store,
                    old,
                    f"superseded by source {source_id}: {file_name} now has other content "
                    f"(sha256 {file_hash[:12]})",
                    superseded_by=source_id,
                )
            )
        except SourceLockedError:
            notes.append(
                f"source {old} ({file_name}, other content) is being loaded by another run: "
                "left as it is"
            )
    return done, notes
