"""Appending to the journal: where every event, including each record's outcome, is written.

``JournalWriter.append`` writes a batch's events in the caller's transaction (invariant 2:
the events, the projections' changes and the graph writes of a batch commit together), with
positions from ``Tx.reserve_positions`` and the per-source hash chain. The chain head moves
only when the transaction commits (``confirm``); a rolled-back batch leaves it where it was.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from journal_loader.journal.chain import canonical, format_time
from journal_loader.journal.events import Event, encode
from journal_loader.projections import JournalRow
from journal_loader.storage.base import Tx

JOURNAL_COLUMNS = (
    "position",
    "source_id",
    "record_offset",
    "event_type",
    "schema_version",
    "payload",
    "run_id",
    "recorded_at",
    "prev_hash",
    "hash",
)


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
    def __init__(self, source_id: int, run_id: str, head: bytes | None) -> None:
        self.source_id = source_id
        self.run_id = run_id
        self.head = head
        self._pending_head: bytes | None = head

    def append(
        self, tx: Tx, events: Sequence[PendingEvent], recorded_at: dt.datetime | None = None
    ) -> list[JournalRow]:
        if not events:
            return []
        now = recorded_at or dt.datetime.now(dt.UTC)
        stamp = tx.timestamp(now)
        stamp_text = format_time(now)
        positions = tx.reserve_positions(len(events))
        source_id, run_id = self.source_id, self.run_id
        prev = self.head
        db_rows = []
        rows = []
        sha256 = hashlib.sha256
        for position, pending in zip(positions, events, strict=True):
            ev = pending.event
            event_type = type(ev).__name__
            digest = sha256(
                (prev or b"")
                + canonical(
                    source_id,
                    pending.record_offset,
                    event_type,
                    ev.SCHEMA_VERSION,
                    run_id,
                    stamp_text,
                    pending.payload,
                )
            ).digest()
            db_rows.append(
                (
                    position,
                    source_id,
                    pending.record_offset,
                    event_type,
                    ev.SCHEMA_VERSION,
                    pending.payload.decode(),
                    run_id,
                    stamp,
                    prev,
                    digest,
                )
            )
            rows.append(JournalRow(position, source_id, pending.record_offset, ev, run_id, now))
            prev = digest
        tx.insert_rows("journal", JOURNAL_COLUMNS, db_rows)
        self._pending_head = prev
        return rows

    def confirm(self) -> None:
        """The transaction committed: the chain moves on."""
        self.head = self._pending_head

    def discard(self) -> None:
        """The transaction rolled back: the chain stays where it was."""
        self._pending_head = self.head
