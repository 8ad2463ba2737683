"""The batch loop: read the file in batches, commit each (``BatchCommitter``), and decide when
the run ends: the file ended (completed), ``--limit`` (partial), or a stop, a fail-fast or
a failure limit (raised). Where the committer plans ahead (``BatchCommitter.plans_ahead``),
the next batch is read before this one commits.
"""

from __future__ import annotations

from collections.abc import Iterator

from journal_loader.errors import SourceChangedError, SourceFileError
from journal_loader.runner.committer import BatchCommitter
from journal_loader.runner.limits import FailFast, check_failure_limits
from journal_loader.runner.options import COMPLETED, PARTIAL, Observers, RunOptions, RunStatus
from journal_loader.runner.signals import StopSignal
from journal_loader.sources.identity import SourceFile
from journal_loader.sources.readers import RawRecord, RecordReader, ResumePoint


class BatchLoop:
    def __init__(
        self,
        committer: BatchCommitter,
        *,
        options: RunOptions,
        stop: StopSignal,
        fail_fast: FailFast,
        observers: Observers,
    ) -> None:
        self.committer = committer
        self.opt = options
        self.stop = stop
        self.fail_fast = fail_fast
        self.observers = observers

    def run(
        self, src: SourceFile, reader: RecordReader, stop_at: ResumePoint | None = None
    ) -> tuple[RunStatus, str, int | None]:
        """(status, reason, records in the file when it was read to its end). ``stop_at``: a
        chunk's end (runner/chunks.py): the run completes there, never reading past it."""
        opt = self.opt
        committer = self.committer
        records = _Peekable(reader)
        remaining = opt.limit
        chunk_left = None if stop_at is None else stop_at.offset - reader.position.offset
        # The next batch, read before this one commits (committer.plans_ahead: both backends),
        # so that it is parsed while the database inserts this one's rows. Only in a plain
        # run: no --limit, no chunk, and not while fail-fast is armed (the run's first
        # records, until one succeeds): their batches end where this batch's outcome says.
        # Never past a read error (the error ends the run after the batch before it
        # commits, as without reading ahead). Pinned by tests/test_plan_ahead.py.
        ahead: _Ahead | None = None
        while True:
            if chunk_left is not None and chunk_left <= 0:
                # A chunk's end: where its plan says the next chunk starts, or the file is
                # not the one planned (src.check_unchanged catches most of that first).
                if records.position() != stop_at:
                    raise SourceChangedError(
                        src.path,
                        f"the chunk should end at {stop_at} but its records end at "
                        f"{records.position()}: the file is not the one planned",
                    )
                src.check_unchanged()
                return COMPLETED, "", None
            self.stop.check()
            size = opt.batch_size if remaining is None else min(opt.batch_size, remaining)
            if chunk_left is not None:
                size = min(size, chunk_left)
            if ahead is not None:
                batch, ends, file_error, bytes_read = ahead
                ahead = None
            else:
                batch, ends, file_error, bytes_read = self._take(records, reader, size)
            if batch:
                position = records.position()
                src.check_unchanged()
                if (
                    file_error is None
                    and remaining is None
                    and chunk_left is None
                    and ends is None
                    and committer.plans_ahead
                ):
                    ahead = self._take(records, reader, opt.batch_size)
                done = committer.commit(batch, position, ends, ahead[0] if ahead else None)
                position = done.end or position
                if remaining is not None:
                    remaining -= len(batch)
                if chunk_left is not None:
                    chunk_left -= len(batch)
                self.observers.on_batch(committer.stats, position, bytes_read)
                if self.fail_fast.armed:
                    # (On a target outside the journal's transaction the batch was not cut
                    # short at the trip: it is checked after the batch.)
                    self.fail_fast.check(done.outcomes(), committer.source_id)
                check_failure_limits(committer.stats, opt, committer.source_id)
            if file_error is not None:
                raise file_error
            if chunk_left is not None:
                if chunk_left > 0 and not batch:
                    raise SourceChangedError(
                        src.path,
                        f"the data ends before the chunk's end {stop_at}: not the file planned",
                    )
                if chunk_left > 0 and remaining is not None and remaining <= 0:
                    return PARTIAL, f"stopped by --limit {opt.limit}; rerun to continue", None
                continue
            if ahead is not None and (ahead[0] or ahead[2] is not None):
                continue  # the next batch is read already (or its read error is next)
            if not records.has_next():
                src.check_unchanged()
                return COMPLETED, "", reader.position.offset
            if remaining is not None and remaining <= 0:
                return PARTIAL, f"stopped by --limit {opt.limit}; rerun to continue", None

    def _take(self, records: _Peekable, reader: RecordReader, size: int) -> _Ahead:
        """The next batch of up to ``size`` records, and what the loop needs with it."""
        batch: list[RawRecord] = []
        # While fail-fast may trip, where each record ends: a batch can end early there.
        ends: list[ResumePoint] | None = [] if self.fail_fast.armed else None
        file_error: SourceFileError | None = None
        try:
            records.take(size, batch, ends)
        except SourceFileError as e:  # e.g. truncated gzip: keep what came before it
            file_error = e
        return batch, ends, file_error, reader.bytes_read()


# (records, where each ends (fail-fast) or None, the read error after them, bytes read)
_Ahead = tuple[list[RawRecord], list[ResumePoint] | None, SourceFileError | None, int]


class _Peekable:
    """One record of look-ahead (to tell "the limit ended the run" from "the file ended").

    ``position()`` is where the record after the last one taken starts: the exact resume
    point. It is read from the reader once per batch (just before the look-ahead moves the
    reader on), not once per record.
    """

    __slots__ = ("_after_taken", "_head", "_it", "_reader")

    def __init__(self, reader: RecordReader) -> None:
        self._reader = reader
        self._it: Iterator[RawRecord] = iter(reader)
        self._head: RawRecord | None = None
        self._after_taken: ResumePoint = reader.position

    def has_next(self) -> bool:
        if self._head is None:
            self._after_taken = self._reader.position  # before the reader moves past it
            self._head = next(self._it, None)
        return self._head is not None

    def take(self, n: int, batch: list[RawRecord], ends: list[ResumePoint] | None = None) -> None:
        """Append up to n records to ``batch`` (fewer at the end of the file); and, when
        ``ends`` is given, where the record after each one starts (its resume point)."""
        if n > 0 and self._head is not None:
            batch.append(self._head)
            self._head = None
            n -= 1
            if ends is not None:  # the reader has not moved since it read the head
                ends.append(self._reader.position)
        it = self._it
        try:
            for _ in range(n):
                record = next(it, None)
                if record is None:
                    break
                batch.append(record)
                if ends is not None:
                    ends.append(self._reader.position)
        finally:  # also when the reader raises (a truncated gzip): the records before count
            self._after_taken = self._reader.position

    def position(self) -> ResumePoint:
        return self._after_taken
