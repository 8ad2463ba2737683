"""Reading the journal: resume points, in-doubt records, one record's history, and the
journal in order for a reader that keeps a cursor (``events_after``).

The statements are the storage layer's (``journal_loader.storage.journal_store``); this
module turns its rows into the journal's terms (``Checkpoint``, decoded events).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from journal_loader.journal.events import BatchCommitted, Event, ProposeAttempted, decode
from journal_loader.storage.base import Tx
from journal_loader.storage.journal_store import JournalEntry, journal_store


@dataclass(slots=True)
class Checkpoint:
    offset: int
    line: int
    byte: int
    position: int = 0  # the journal position of the checkpoint (or of the load's start)

    @property
    def at_start(self) -> bool:
        return self.offset == 0 and self.byte == 0


def checkpoint(tx: Tx, source_id: int) -> Checkpoint:
    """The position to resume from, derived from the journal (never from a counter column)."""
    mark = journal_store(tx.store).load_mark(tx, source_id)
    if mark is None:
        return Checkpoint(0, 0, 0)
    if mark.event_type != "BatchCommitted":
        return Checkpoint(0, 0, 0, mark.position)
    ev = decode(mark.payload)
    assert isinstance(ev, BatchCommitted)
    return Checkpoint(ev.next_offset, ev.next_line, ev.next_byte, mark.position)


def in_doubt(tx: Tx, source_id: int, after: int) -> dict[int, set[str]]:
    """Offsets attempted on a remote target after the checkpoint, without an outcome, with
    the tokens of their attempts (``ProposeAttempted.attempt``); "" stands for an attempt
    whose target kept no outcomes (nothing can rule out that it committed)."""
    out: dict[int, set[str]] = {}
    for offset, payload in journal_store(tx.store).attempts_after(tx, source_id, after):
        event = decode(payload)
        tokens = out.setdefault(offset, set())
        tokens.add(event.attempt if isinstance(event, ProposeAttempted) else "")
    return out


@dataclass(slots=True)
class StoredEvent:
    position: int
    source_id: int
    record_offset: int | None
    event_type: str
    schema_version: int
    payload: str
    run_id: str
    recorded_at: dt.datetime
    prev_hash: bytes | None
    hash: bytes

    @property
    def event(self) -> Event:
        return decode(self.payload)

    @classmethod
    def of(cls, entry: JournalEntry) -> StoredEvent:
        return cls(*entry)


def record_events(tx: Tx, source_id: int, record_offset: int) -> list[StoredEvent]:
    entries = journal_store(tx.store).record_events(tx, source_id, record_offset)
    return [StoredEvent.of(e) for e in entries]


def event_at(tx: Tx, position: int) -> StoredEvent | None:
    entry = journal_store(tx.store).event_at(tx, position)
    return None if entry is None else StoredEvent.of(entry)


def events_after(tx: Tx, after: int, *, limit: int = 1000) -> list[StoredEvent]:
    """The next events after position ``after``, up to the journal's high water: a consumer
    that keeps the last position it got as its cursor sees every event once, in position
    order, even while concurrent loaders commit out of position order (PostgreSQL). Run it
    in a READ COMMITTED transaction (``store.read_tx()``, ``store.transaction()``)."""
    entries = journal_store(tx.store).events_after(tx, after, limit=limit)
    return [StoredEvent.of(e) for e in entries]
