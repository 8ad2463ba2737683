"""What a run holds to write to a source: its lock and its lease (the fencing token).

The lock (``Store.lock_source``) keeps a second run of the same source out while this one
lives; the server or the OS releases it when the holder dies. The lease generation fences a
run that lost its lock but not yet its process (stopped, cut off): every run that takes
over a source bumps it, and every batch checks it inside its own transaction, so such a run
can never append after its successor started.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

from journal_loader.errors import FencedOutError, JournalLoaderError
from journal_loader.journal.writer import JournalWriter
from journal_loader.runner.retry import RetryPolicy
from journal_loader.storage.base import SourceLock, Store, Tx, utcnow
from journal_loader.storage.journal_store import JournalStore, journal_store


def lock_holder(run_id: str, started_at: dt.datetime | None = None) -> dict[str, str | int]:
    """Who holds a source's lock, as ``SourceLockedError`` shows it to the next run."""
    return {
        "run_id": run_id,
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "started_at": (started_at or utcnow()).isoformat(timespec="seconds"),
    }


@dataclass(slots=True)
class Lease:
    source_id: int
    run_id: str
    generation: int
    lock: SourceLock
    journal: JournalStore
    # The source_leases row: the source's id, or one chunk's key (chunk_lease_key): a chunk
    # of a split source has a generation of its own, so taking one chunk over fences out
    # the stale run of that chunk only.
    key: int = 0

    @classmethod
    def take(
        cls,
        tx: Tx,
        source_id: int,
        run_id: str,
        lock: SourceLock,
        now: dt.datetime | None = None,
        *,
        key: int | None = None,
    ) -> Lease:
        """Bump the source's (or chunk's) generation: from this transaction's commit, the
        source (chunk) is ours."""
        journal = journal_store(tx.store)
        key = source_id if key is None else key
        generation = journal.acquire_lease(
            tx, key, run_id, socket.gethostname(), os.getpid(), now or utcnow()
        )
        return cls(source_id, run_id, generation, lock, journal, key)

    def check(self, tx: Tx) -> None:
        """At the start of each transaction that writes: still ours?"""
        if not self.journal.check_lease(tx, self.key, self.generation, utcnow()):
            raise FencedOutError(
                f"run {self.run_id} lost source {self.source_id} to a newer run "
                "(lease generation changed); stopping without writing"
            )
        if not self.lock.is_held():
            raise FencedOutError(
                f"run {self.run_id} lost its lock on source {self.source_id} "
                "(its lock connection ended); stopping without writing"
            )

    def check_lock(self) -> None:
        """Just before COMMIT: a run whose lock connection ended while it was inside the
        batch (stopped, cut off) must not commit it; the run that took the lock waits for
        this transaction to end (``JournalStore.source_for_run``) and then resumes before
        this batch."""
        if not self.lock.is_held():
            raise FencedOutError(
                f"run {self.run_id} lost its lock on source {self.source_id} during a batch "
                "(its lock connection ended); the batch is rolled back"
            )


def attach(
    store: Store, retry: RetryPolicy, source_id: int, run_id: str, lock: SourceLock
) -> tuple[Lease, JournalWriter]:
    """Write to an already registered source outside a file run (``dlq retry``): take the
    lease and pick up the source's hash chain. The caller holds the source's lock."""

    def attempt() -> tuple[Lease, JournalWriter]:
        with store.transaction() as tx:
            head = journal_store(store).chain_head(tx, source_id)
            if head is None:
                raise JournalLoaderError(f"no source {source_id}")
            lease = Lease.take(tx, source_id, run_id, lock)
        # Shared: the source's lock this caller holds keeps out whole-file runs, not the
        # chunks of a split source (each holds only its own ``#chunkN`` lock), so a chunk
        # may append between two of our batches. An in-memory head would then fork the
        # hash chain; the shared writer reads the head under the chain lock at every
        # append. Pinned by tests/test_chunks.py::
        # test_a_dlq_retry_between_a_chunks_batches_keeps_one_chain. For a source that is
        # not split it costs one lock and one indexed read per batch of a retry.
        return lease, JournalWriter(source_id, run_id, head, shared=True)

    return retry.call(attempt, f"attaching to source {source_id}")
