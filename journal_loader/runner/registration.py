"""A run's first transaction: find or register its source, decide where it starts, take the
lease, and journal ``SourceRegistered`` / ``LoadStarted`` / ``RunAbandoned`` / ``RunStarted``.

Resume (invariant 5): a run of a source that did not complete reads the last
``BatchCommitted`` of the current load and seeks the file to its byte position. A source
left ``processing`` had a run that died (this one holds the lock): it is journaled as
abandoned and this run takes over.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

import msgspec

from journal_loader import projections
from journal_loader.abandon import supersede_partial
from journal_loader.errors import ConfigError, JournalLoaderError
from journal_loader.graph.target import GraphTarget
from journal_loader.journal import queries
from journal_loader.journal.events import (
    LoadStarted,
    RunAbandoned,
    RunStarted,
    SourceRegistered,
)
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.loader import Loader
from journal_loader.runner.chunks import ChunkPlan, chunk_plan, chunk_states
from journal_loader.runner.lease import Lease
from journal_loader.runner.options import RunMode, RunOptions
from journal_loader.runner.retry import RetryPolicy
from journal_loader.sources.identity import SourceFile
from journal_loader.sources.readers import RecordReader, ResumePoint, detect_format, open_reader
from journal_loader.sources.status import SourceStatus
from journal_loader.storage.base import SourceLock, Store, utcnow
from journal_loader.storage.journal_store import chunk_lease_key, journal_store
from journal_loader.version import __version__

log = logging.getLogger("journal_loader.runner")


@dataclass(slots=True)
class Registration:
    """Where a registered run stands: what it writes with, and where it starts reading."""

    source_id: int
    start: queries.Checkpoint
    reader: RecordReader
    lease: Lease
    writer: JournalWriter
    new_source: bool  # this run registered the source (it did not resume one)
    # On a target outside the journal's transaction: the offsets attempted after the
    # checkpoint without an outcome, with their attempts' tokens (queries.in_doubt).
    in_doubt: dict[int, set[str]] = field(default_factory=dict)
    # A chunk's run: its plan and where the chunk ends (the run stops there).
    plan: ChunkPlan | None = None
    stop_at: ResumePoint | None = None
    # The run's RunStarted as journaled: its header and dialect rebuild version-3
    # RecordParsed events (journal/parsed.py)
    run_started: RunStarted | None = None


@dataclass(slots=True)
class AlreadyProcessed:
    source_id: int
    message: str


class Registrar:
    def __init__(
        self,
        *,
        store: Store,
        loader: Loader,
        target: GraphTarget,
        options: RunOptions,
        source_type: str,
        run_id: str,
        retry: RetryPolicy,
    ) -> None:
        self.store = store
        self.loader = loader
        self.target = target
        self.opt = options
        self.source_type = source_type
        self.run_id = run_id
        self.retry = retry

    def register(self, src: SourceFile, lock: SourceLock) -> Registration | AlreadyProcessed:
        """One transaction, retried like a batch; the reader it opened is the caller's to
        close (a failed attempt closes its own)."""
        opened: list[RecordReader] = []

        def attempt() -> Registration | AlreadyProcessed:
            for old in opened:  # a retried attempt opens the file again
                old.close()
            opened.clear()
            if self.opt.chunk is not None:
                return self._register_chunk(src, lock, self.opt.chunk, opened)
            journal = journal_store(self.store)
            with self.store.transaction() as tx:
                row = journal.source_for_run(tx, self.source_type, src.sha256)
                events: list[PendingEvent] = []
                head: bytes | None = None
                if row is not None and chunk_plan(tx, row.source_id) is not None:
                    # Its chunks have their own checkpoints: a whole-file run would resume
                    # from one of them (runner/chunks.py).
                    raise ConfigError(
                        f"source {row.source_id} ({src.file_name}) was split into chunks by "
                        "`submit --split`: its chunks are loaded by `worker` (a run of the "
                        "whole file is refused)"
                    )
                if row is None:
                    source_id = journal.next_source_id(tx)
                    events.append(PendingEvent.of(None, self._source_registered(src)))
                    events.append(PendingEvent.of(None, LoadStarted(reason="first")))
                    mode = RunMode.NEW
                else:
                    source_id = row.source_id
                    if row.status == SourceStatus.COMPLETED and not self.opt.force:
                        return AlreadyProcessed(
                            source_id,
                            f"already processed: source {source_id} ({src.file_name}, "
                            f"sha256 {src.sha256[:12]}) completed; use --force to load it again",
                        )
                    head = journal.chain_head(tx, source_id)
                    if row.status == SourceStatus.PROCESSING:
                        # We hold the lock, so the run that left it 'processing' is dead.
                        events.append(
                            PendingEvent.of(
                                None,
                                RunAbandoned(
                                    abandoned_run_id=row.current_run_id or "",
                                    last_position=row.last_position,
                                    reason="the process stopped without finishing "
                                    f"(killed or crashed); run {self.run_id} takes over",
                                ),
                            )
                        )
                    if self.opt.force:
                        events.append(PendingEvent.of(None, LoadStarted(reason="force")))
                        mode = RunMode.NEW
                    else:
                        mode = RunMode.RESUME
                start = (
                    queries.Checkpoint(0, 0, 0)
                    if mode == RunMode.NEW
                    else queries.checkpoint(tx, source_id)
                )
                in_doubt: dict[int, set[str]] = {}
                if not self.target.transactional and mode == RunMode.RESUME:
                    in_doubt = queries.in_doubt(tx, source_id, start.position)
                # The header (and dialect) go to the journal: `dlq retry` re-parses raw
                # records with them, without the file.
                reader = self._open_reader(src, start)
                opened.append(reader)
                started = self._run_started(mode, start, reader)
                events.append(PendingEvent.of(None, started))
                now = utcnow()
                lease = Lease.take(tx, source_id, self.run_id, lock, now)
                writer = JournalWriter(source_id, self.run_id, head)
                rows = writer.append(tx, events, now)
                projections.apply(tx, rows)
            writer.confirm()
            return Registration(
                source_id,
                start,
                reader,
                lease,
                writer,
                row is None,
                in_doubt=in_doubt,
                run_started=started,
            )

        try:
            return self.retry.call(attempt, "registering the source")
        except BaseException:
            for r in opened:
                r.close()
            raise

    def _register_chunk(
        self, src: SourceFile, lock: SourceLock, chunk: int, opened: list[RecordReader]
    ) -> Registration | AlreadyProcessed:
        """A run of one chunk of a planned source (runner/chunks.py): resume the chunk at its
        last checkpoint, else at its start; a run of the chunk left 'running' is dead (we
        hold the chunk's lock) and journaled as abandoned."""
        journal = journal_store(self.store)
        with self.store.transaction() as tx:
            row = journal.source_by_identity(tx, self.source_type, src.sha256)
            plan = None if row is None else chunk_plan(tx, row.source_id)
            if row is None or plan is None:
                raise ConfigError(
                    f"{src.file_name} (sha256 {src.sha256[:12]}) has no chunk plan: "
                    "`submit --split` plans it"
                )
            if not 0 <= chunk < plan.count:
                raise ConfigError(f"source {row.source_id} has {plan.count} chunks, not {chunk}")
            source_id = row.source_id
            key = chunk_lease_key(source_id, chunk)
            # A stale run of this chunk (it lost its lock) may be inside a batch: wait for it
            # to end before reading where the chunk stands (PostgreSQL; SQLite has one writer).
            journal.wait_for_lease(tx, key)
            # The chain lock before the reads: the chunk's state cannot move under us.
            writer = JournalWriter(source_id, self.run_id, None, shared=True)
            writer.lock_chain(tx)
            state = chunk_states(tx, plan)[chunk]
            if state.state == SourceStatus.COMPLETED:
                return AlreadyProcessed(
                    source_id,
                    f"already processed: chunk {chunk} of source {source_id} "
                    f"({src.file_name}) completed",
                )
            events: list[PendingEvent] = []
            if state.state == "running":
                events.append(
                    PendingEvent.of(
                        None,
                        RunAbandoned(
                            abandoned_run_id=state.run_id,
                            reason=f"the run of chunk {chunk} stopped without finishing "
                            f"(killed or crashed); run {self.run_id} takes over",
                            chunk=chunk,
                        ),
                    )
                )
            start = state.next
            mode = RunMode.RESUME if state.state != "pending" else RunMode.NEW
            in_doubt: dict[int, set[str]] = {}
            if not self.target.transactional:
                in_doubt = {
                    o: t
                    for o, t in queries.in_doubt(tx, source_id, start.position).items()
                    if state.start.offset <= o < state.end.offset
                }
            reader = self._open_reader(src, start)
            opened.append(reader)
            started = msgspec.structs.replace(self._run_started(mode, start, reader), chunk=chunk)
            events.append(PendingEvent.of(None, started))
            now = utcnow()
            lease = Lease.take(tx, source_id, self.run_id, lock, now, key=key)
            rows = writer.append(tx, events, now)
            projections.apply(tx, rows)
        writer.confirm()
        return Registration(
            source_id,
            start,
            reader,
            lease,
            writer,
            False,
            in_doubt=in_doubt,
            plan=plan,
            stop_at=state.end,
            run_started=started,
        )

    def supersede(self, src: SourceFile, source_id: int) -> list[str]:
        """A new source whose file name a partial source of this type had (the file was
        edited, appended to or truncated after a killed run): retire that source, saying so
        (journal_loader/abandon.py explains the decision). Returns notes for the report."""
        try:
            done, notes = supersede_partial(
                self.store, source_id, self.source_type, src.file_name, src.sha256
            )
        except JournalLoaderError as e:  # retiring is housekeeping: the load goes on
            log.warning("could not retire earlier partial sources of %s: %s", src.file_name, e)
            return []
        for a in done:
            notes.append(
                f"source {a.source_id} (same type and file name, other content) was left "
                f"{a.status_before} at record {a.next_offset:,}; it is now superseded by "
                f"source {source_id} (its facts and DLQ entries are kept)"
            )
        for note in notes:
            log.warning("%s", note)
        return notes

    def _open_reader(self, src: SourceFile, start: queries.Checkpoint) -> RecordReader:
        return open_reader(
            src.path,
            self.opt.reader,
            start=None if start.at_start else ResumePoint(start.offset, start.line, start.byte),
            fileobj=src.fileobj,
        )

    def _run_started(
        self, mode: RunMode, start: queries.Checkpoint, reader: RecordReader
    ) -> RunStarted:
        return RunStarted(
            loader=self.loader.name,
            mode=mode,
            resume_offset=start.offset,
            resume_line=start.line,
            resume_byte=start.byte,
            start_from=self.opt.start_from,
            limit=self.opt.limit,
            batch_size=self.opt.batch_size,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            version=__version__,
            header=reader.header,
            header_raw=reader.header_raw,
            reader=reader.options.journaled(format=reader.format, gzipped=reader.gzipped),
        )

    def _source_registered(self, src: SourceFile) -> SourceRegistered:
        fmt, gz = detect_format(src.path, self.opt.reader.format)
        return SourceRegistered(
            source_type=self.source_type,
            source_name=self.opt.source_name or self.source_type,
            file_name=src.file_name,
            file_path=os.path.abspath(src.path),
            file_hash=src.sha256,
            file_size=src.size,
            file_mtime=src.mtime_iso,
            version_label=src.version_label,
            update_frequency=self.opt.update_frequency,
            format=fmt,
            gzipped=gz,
            loader=self.loader.name,
        )
