"""Appending to the journal: where every event, including each record's outcome, is written.

``JournalWriter.append`` writes a batch's events in the caller's transaction (invariant 2:
the events, the projections' changes and the graph writes of a batch commit together), with
positions from ``Tx.reserve_positions`` and the per-source hash chain. The chain head moves
only when the transaction commits (``confirm``); a rolled-back batch leaves it where it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from journal_loader.journal.chain import format_time
from journal_loader.journal.events import Event, encode
from journal_loader.journal.rows import JournalRow
from journal_loader.storage.base import JournalAppend, Tx
from journal_loader.storage.journal_store import journal_store


@dataclass(slots=True)
class PendingEvent:
    """An event waiting for its batch's commit; ``payload`` is encoded as soon as the event is
    made, so a record whose parsed value cannot be encoded fails alone, not its batch."""

    record_offset: int | None
    event: Event
    payload: bytes

    @classmethod
    def of(cls, record_offset: int | None, event: Event) -> PendingEvent:
        return cls(record_offset, event, encode(event))


class JournalWriter:
    """Appends one source's events. ``shared``: other runs append to this source at the same
    time (the chunks of a split source, journal_loader/runner/chunks.py), so the in-memory
    chain head means nothing: each ``append`` takes the source's chain lock (held to COMMIT)
    and reads the head from the database first.

    Why a lock and not one chain per chunk: the journal has ONE hash chain per source, which
    a third party verifies reading the source's rows in position order (journal/chain.py).
    Under the chain lock the head is the last committed event of the source, and the rows
    this append writes get positions after it (reserved after the lock, in commit order), so
    the chain stays one chain in position order however the chunks interleave. The lock is
    the last thing a batch takes (after the graph's locks: the committer appends once, at
    the end), so it serialises only the append itself, never the chunks' parsing or graph
    work; a holder never waits for a graph lock, so no lock cycle. Pinned by
    tests/test_chunks.py (``audit verify`` of a source whose chunks ran interleaved).
    """

    def __init__(
        self, source_id: int, run_id: str, head: bytes | None, *, shared: bool = False
    ) -> None:
        self.source_id = source_id
        self.run_id = run_id
        self.head = head
        self.shared = shared
        self._pending_head: bytes | None = head

    def lock_chain(self, tx: Tx) -> None:
        """Take the source's chain lock (to COMMIT); then read the head (``append`` does)."""
        tx.advisory_xact_lock("chain", [str(self.source_id)])

    def append(
        self,
        tx: Tx,
        events: Sequence[PendingEvent],
        recorded_at: dt.datetime | None = None,
        *,
        defer: list[Callable[[], None]] | None = None,
    ) -> list[JournalRow]:
        """Chain the events, reserve their positions and insert them; with ``defer``, the
        insert is added to it instead, for the caller to run later in this transaction
        (a write behind: BatchCommitter._append_behind_and_plan_ahead)."""
        if not events:
            return []
        now = recorded_at or dt.datetime.now(dt.UTC)
        stamp = tx.timestamp(now)
        source_id, run_id = self.source_id, self.run_id
        # The canonical bytes (journal/chain.py), built inline: this loop runs twice per
        # record, and the per-batch part of the header is the same for every event.
        # Positions are not part of the hash, so the chain is computed before they are
        # reserved (on PostgreSQL under the journal's append lock, for one statement:
        # storage/postgres.py). Only the rows' first column waits for the reservation.
        sid = f"{source_id}\n"
        tail = f"\n{run_id}\n{format_time(now)}\n"
        if self.shared:
            self.lock_chain(tx)
            self.head = journal_store(tx.store).chain_head(tx, source_id)
        head = prev = self.head
        offsets: list[int | None] = []
        types: list[str] = []
        versions: list[int] = []
        payloads: list[bytes] = []
        hashes: list[bytes] = []
        sha256 = hashlib.sha256
        for pending in events:
            ev = pending.event
            event_type = ev.__class__.__name__
            offset = pending.record_offset
            version = ev.SCHEMA_VERSION
            payload = pending.payload
            message = (
                f"{sid}{'' if offset is None else offset}\n{event_type}\n{version}{tail}".encode()
                + payload
            )
            digest = sha256(prev + message if prev else message).digest()
            offsets.append(offset)
            types.append(event_type)
            versions.append(version)
            payloads.append(payload)
            hashes.append(digest)
            prev = digest
        positions = tx.reserve_positions(len(events))
        rows = [
            JournalRow(p, source_id, pending.record_offset, pending.event, run_id, now)
            for p, pending in zip(positions, events, strict=True)
        ]
        batch = JournalAppend(
            positions, source_id, run_id, stamp, head, offsets, types, versions, payloads, hashes
        )
        if defer is None:
            tx.insert_journal(batch)
        else:
            defer.append(tx.journal_insert(batch))
        self._pending_head = prev
        return rows

    def confirm(self) -> None:
        """The transaction committed: the chain moves on."""
        self.head = self._pending_head

    def discard(self) -> None:
        """The transaction rolled back: the chain stays where it was."""
        self._pending_head = self.head
