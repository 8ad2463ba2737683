"""One big file, split: the plan (``ChunksPlanned``) and where each chunk stands.

``plan_file`` reads the file ONCE with the real reader (so quoted newlines, CRLF and a BOM
cut exactly where a run reads them) and cuts it at record boundaries, writing nothing while
it reads. Then one transaction registers the source and journals ``SourceRegistered``,
``LoadStarted`` and ``ChunksPlanned`` together.

Recovery decisions (invariant 5: crash anywhere, rerun = one clean run):

* Planning interrupted (killed during the pass, or before its transaction commits): nothing
  was written; planning again starts over. After the commit, the plan is THE plan of the
  current load: planning the same file again (same type and SHA-256) returns it unchanged
  and queues only the chunks not completed. The planner holds the source's own lock (the one
  a whole-file run takes), so two planners, or a planner and a whole-file run, never
  register the same file at once. Pinned by
  tests/test_chunks.py::test_planning_twice_keeps_the_first_plan.
* A chunk is a resumable unit: its runs take the lock ``chunk_lock_name`` (the source's
  lock name + ``#chunkN``), the lease row ``chunk_lease_key`` (its own generation), and
  write checkpoints tagged with the chunk (``BatchCommitted.chunk``). A run of a chunk
  resumes at the chunk's last checkpoint, else at its start, and stops at its end; record
  offsets stay global. Pinned by tests/test_chunks.py::test_a_chunk_killed_mid_way_resumes.
* A chunk's job delivered twice (a reaped worker that was only slow): the second run waits
  for the chunk's lock; the first, if it lost the lock, is fenced out by the chunk's lease
  generation. A chunk already completed is "already processed": its run writes nothing.
  Pinned by tests/test_chunks.py::test_a_completed_chunk_is_not_loaded_again.
* The source's status: ``RunFinished.status`` of a chunk's run is the SOURCE's status after
  it (partial until the last chunk completes, then completed), decided under the source's
  chain lock in the transaction that appends it. So the projections (inline and rebuilt)
  need no chunk logic at all: they read RunFinished as always.
* Writers other than the chunks' runs: ``dlq retry`` and ``dlq resolve`` hold the source's
  lock, which no chunk takes, so they run beside the chunks and append through a shared
  writer (the head read under the chain lock; runner/lease.py::attach). ``source abandon``
  is refused while any chunk's lock is held and bumps every chunk's lease generation
  (abandon.py). Pinned by tests/test_chunks.py::
  test_a_dlq_retry_between_a_chunks_batches_keeps_one_chain and
  test_abandoning_a_split_source.
* A whole-file run of a planned source is refused (it would resume from some chunk's
  checkpoint): run its chunks (``worker``, or ``run_chunks``).
* gzip is never split (one job, as without --split): a chunk's run seeks to its start, and
  seeking into gzip decompresses everything before it, so N chunks would read the file
  about N/2 times.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from journal_loader import projections
from journal_loader.errors import JournalLoaderError
from journal_loader.journal import queries
from journal_loader.journal.events import (
    BatchCommitted,
    ChunksPlanned,
    LoadStarted,
    RunFinished,
    SourceRegistered,
    decode,
)
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.runner.lease import lock_holder
from journal_loader.runner.options import RunOptions
from journal_loader.sources.identity import SourceFile, open_source
from journal_loader.sources.readers import ResumePoint, detect_format, open_reader
from journal_loader.storage.base import Store, Tx, utcnow
from journal_loader.storage.journal_store import (
    chunk_lock_name,
    journal_store,
    source_lock_name,
)

Point = tuple[int, int, int]


@dataclass(slots=True)
class ChunkPlan:
    source_id: int
    position: int  # of the ChunksPlanned event
    event: ChunksPlanned

    @property
    def count(self) -> int:
        return len(self.event.starts)

    def bounds(self, chunk: int) -> tuple[ResumePoint, ResumePoint]:
        start, end = self.event.bounds(chunk)
        return ResumePoint(*start), ResumePoint(*end)


@dataclass(slots=True)
class ChunkState:
    """Where one chunk stands: pending (never started), running (a run started and has not
    finished: alive, or dead if nobody holds the chunk's lock), completed, partial or
    failed (its last run's end); ``next`` is where its next run starts."""

    chunk: int
    start: ResumePoint
    end: ResumePoint
    state: str
    next: queries.Checkpoint
    run_id: str = ""

    @property
    def records_done(self) -> int:
        return self.next.offset - self.start.offset

    @property
    def records(self) -> int:
        return self.end.offset - self.start.offset


def chunk_plan(tx: Tx, source_id: int) -> ChunkPlan | None:
    """The plan of the source's current load, if it is split."""
    mark = journal_store(tx.store).plan_mark(tx, source_id)
    if mark is None or mark.event_type != "ChunksPlanned":
        return None
    ev = decode(mark.payload)
    assert isinstance(ev, ChunksPlanned)
    return ChunkPlan(source_id, mark.position, ev)


def chunk_states(tx: Tx, plan: ChunkPlan) -> list[ChunkState]:
    js = journal_store(tx.store)
    marks = js.chunk_marks(tx, plan.source_id, plan.position)
    payloads = js.payloads_at(tx, [m.position for m in marks])
    last: dict[tuple[int, str], tuple[int, object, str]] = {
        (m.chunk, m.event_type): (
            m.position,
            decode(payloads[m.position][0]),
            payloads[m.position][1],
        )
        for m in marks
    }
    out = []
    for i in range(plan.count):
        start, end = plan.bounds(i)
        nxt = queries.Checkpoint(start.offset, start.line, start.byte, plan.position)
        ckpt = last.get((i, "BatchCommitted"))
        if ckpt is not None:
            ev = ckpt[1]
            assert isinstance(ev, BatchCommitted)
            nxt = queries.Checkpoint(ev.next_offset, ev.next_line, ev.next_byte, ckpt[0])
        started = last.get((i, "RunStarted"))
        finished = last.get((i, "RunFinished"))
        run_id = ""
        if started is None:
            state = "pending"
        elif finished is None or finished[0] < started[0]:
            state, run_id = "running", started[2]
        else:
            fin = finished[1]
            assert isinstance(fin, RunFinished)
            state = fin.chunk_status or fin.status
        out.append(ChunkState(i, start, end, state, nxt, run_id))
    return out


def chunks_now(
    store: Store, source_id: int, source_type: str, file_hash: str
) -> list[ChunkState] | None:
    """Where each chunk of a split source stands, for ``status`` (None: not split). A chunk
    left ``running`` whose lock nobody holds is ``dead``: its run died, and the next run of
    the chunk (the worker queue's re-delivery) journals it as abandoned and resumes it."""
    with store.transaction() as tx:
        plan = chunk_plan(tx, source_id)
        states = None if plan is None else chunk_states(tx, plan)
    if states is None:
        return None
    for s in states:
        if s.state == "running" and store.lock_is_free(
            chunk_lock_name(source_type, file_hash, s.chunk)
        ):
            s.state = "dead"
    return states


def source_status_after(
    tx: Tx, plan: ChunkPlan, chunk: int, chunk_status: str
) -> tuple[str, int | None, str]:
    """(the source's status, records_in_file, a note) once this chunk's run ends with
    ``chunk_status``. The caller holds the source's chain lock (``JournalWriter.lock_chain``)
    and appends the RunFinished in the same transaction: no other chunk can finish between
    this read and that append."""
    if chunk_status != "completed":
        return chunk_status, None, ""
    left = [s.chunk for s in chunk_states(tx, plan) if s.state != "completed" and s.chunk != chunk]
    if not left:
        return "completed", plan.event.records, ""
    return "partial", None, f"chunk {chunk} completed; {len(left)} of {plan.count} chunks to go"


# --- planning -------------------------------------------------------------------------------


@dataclass(slots=True)
class PlanResult:
    """What ``plan_file`` did: ``plan`` (new or the existing one), or why the file is not
    split (``not_split``: gzip, no records, already loading as one file, completed)."""

    source_id: int | None
    plan: ChunkPlan | None
    new: bool
    not_split: str = ""
    states: list[ChunkState] | None = None
    sha256: str = ""


def cut_points(
    path: str, options: RunOptions, *, split: int | None, chunk_records: int | None
) -> tuple[list[Point], Point, int]:
    """One pass with the real reader: the chunks' starts, the end of the data and the number
    of records. ``split``: about N chunks of equal bytes; ``chunk_records``: a chunk every K
    records (both: whichever cuts first). Reads only; memory is one point per chunk."""
    with open_reader(path, options.reader) as reader:
        first = reader.position
        starts: list[Point] = [(first.offset, first.line, first.byte)]
        size = os.path.getsize(path)
        step = (size - first.byte) / split if split else None
        next_byte = first.byte + step if step else None
        since = 0
        for _rec in reader:
            since += 1
            at = reader.position
            if (chunk_records and since >= chunk_records) or (
                next_byte is not None and at.byte >= next_byte
            ):
                starts.append((at.offset, at.line, at.byte))
                since = 0
                if step and next_byte is not None:
                    while next_byte <= at.byte:
                        next_byte += step
        end = reader.position
    endp = (end.offset, end.line, end.byte)
    # no empty chunks: a cut at the very end of the data starts nothing
    starts = [s for s in starts if s[0] < endp[0]] or starts[:1]
    return starts, endp, end.offset


def plan_file(
    store: Store,
    path: str,
    options: RunOptions,
    source_type: str,
    loader_name: str,
    *,
    split: int | None = None,
    chunk_records: int | None = None,
) -> PlanResult:
    """Plan a file's chunks once (the module docstring); returns the plan and each chunk's
    state, so the caller queues only the chunks not completed."""
    if not split and not chunk_records:
        raise JournalLoaderError("plan_file needs split or chunk_records")
    src = open_source(path, update_frequency=options.update_frequency)
    try:
        result = _plan(store, src, options, source_type, loader_name, split, chunk_records)
        result.sha256 = src.sha256
        return result
    finally:
        src.close()


def _plan(
    store: Store,
    src: SourceFile,
    options: RunOptions,
    source_type: str,
    loader_name: str,
    split: int | None,
    chunk_records: int | None,
) -> PlanResult:
    name = source_lock_name(source_type, src.sha256)
    with store.lock_source(name, lock_holder("planner")):
        js = journal_store(store)
        with store.transaction() as tx:
            row = js.source_by_identity(tx, source_type, src.sha256)
            if row is not None:
                plan = chunk_plan(tx, row.source_id)
                if plan is not None:
                    states = chunk_states(tx, plan)
                    return PlanResult(row.source_id, plan, False, states=states)
                why = (
                    "already completed"
                    if row.status == "completed"
                    else f"already being loaded as one file ({row.status})"
                )
                return PlanResult(row.source_id, None, False, not_split=why)
        _fmt, gz = detect_format(src.path, options.reader.format)
        if gz:
            return PlanResult(
                None, None, False, not_split="gzip: one chunk (a reader cannot seek into gzip)"
            )
        starts, end, records = cut_points(
            src.path, options, split=split, chunk_records=chunk_records
        )
        if records == 0:
            return PlanResult(None, None, False, not_split="no records")
        return _register_plan(store, src, options, source_type, loader_name, starts, end)


def _register_plan(
    store: Store,
    src: SourceFile,
    options: RunOptions,
    source_type: str,
    loader_name: str,
    starts: list[Point],
    end: Point,
) -> PlanResult:
    fmt, gz = detect_format(src.path, options.reader.format)
    js = journal_store(store)
    planned = ChunksPlanned(starts=starts, end=end, records=end[0])
    with store.transaction() as tx:
        source_id = js.next_source_id(tx)
        writer = JournalWriter(source_id, str(uuid.uuid4()), None, shared=True)
        events = [
            PendingEvent.of(
                None,
                SourceRegistered(
                    source_type=source_type,
                    source_name=options.source_name or source_type,
                    file_name=src.file_name,
                    file_path=os.path.abspath(src.path),
                    file_hash=src.sha256,
                    file_size=src.size,
                    file_mtime=src.mtime_iso,
                    version_label=src.version_label,
                    update_frequency=options.update_frequency,
                    format=fmt,
                    gzipped=gz,
                    loader=loader_name,
                ),
            ),
            PendingEvent.of(None, LoadStarted(reason="first")),
            PendingEvent.of(None, planned),
        ]
        rows = writer.append(tx, events, utcnow())
        projections.apply(tx, rows)
        position = rows[-1].position
        plan = ChunkPlan(source_id, position, planned)
        states = chunk_states(tx, plan)
    return PlanResult(source_id, plan, True, states=states)


__all__ = [
    "ChunkPlan",
    "ChunkState",
    "PlanResult",
    "chunk_plan",
    "chunk_states",
    "chunks_now",
    "cut_points",
    "plan_file",
    "source_status_after",
]
