"""Reading the journal: resume points, in-doubt records, one record's history, and the
journal in order for a reader that keeps a cursor (``events_after``).

The statements are the storage layer's (``journal_loader.storage.journal_store``); this
module turns its rows into the journal's terms (``Checkpoint``, decoded events).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from journal_loader.journal.events import (
    BatchCommitted,
    Event,
    ProposeAttempted,
    RecordParsed,
    RunStarted,
    decode,
)
from journal_loader.journal.parsed import Resolver, plain
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
    # A RecordParsed as readers see it (made whole: journal/parsed.py), set by the readers
    # below; else the payload decoded
    resolved: Event | None = None

    @property
    def event(self) -> Event:
        return self.resolved if self.resolved is not None else decode(self.payload)

    @classmethod
    def of(cls, entry: JournalEntry) -> StoredEvent:
        return cls(*entry)


def record_events(tx: Tx, source_id: int, record_offset: int) -> list[StoredEvent]:
    entries = journal_store(tx.store).record_events(tx, source_id, record_offset)
    return _stored(tx, entries)


def event_at(tx: Tx, position: int) -> StoredEvent | None:
    entry = journal_store(tx.store).event_at(tx, position)
    return None if entry is None else _stored(tx, [entry])[0]


def parsed_resolver(tx: Tx) -> Resolver:
    """Makes version-3 RecordParsed events whole, reading what they refer to in ``tx``."""
    store = journal_store(tx.store)

    def run_started(source_id: int, run_id: str) -> RunStarted | None:
        payload = store.run_started_payload(tx, source_id, run_id)
        event = None if payload is None else decode(payload)
        return event if isinstance(event, RunStarted) else None

    def parsed_at(source_id: int, run_id: str, record_offset: int) -> RecordParsed | None:
        payload = store.parsed_payload_in_run(tx, source_id, run_id, record_offset)
        event = None if payload is None else decode(payload)
        return event if isinstance(event, RecordParsed) else None

    return Resolver(run_started, parsed_at)


def _stored(tx: Tx, entries: list[JournalEntry]) -> list[StoredEvent]:
    """The rows as StoredEvents, every RecordParsed among them as readers see it."""
    out = [StoredEvent.of(e) for e in entries]
    resolver: Resolver | None = None
    for e in out:
        if e.event_type != "RecordParsed":
            continue
        event = decode(e.payload)
        if isinstance(event, RecordParsed):
            if event.shape is not None:
                resolver = resolver or parsed_resolver(tx)
                event = resolver.resolve(event, e.source_id, e.run_id)
            else:
                event = plain(event)
        e.resolved = event
    return out


def events_after(tx: Tx, after: int, *, limit: int = 1000) -> list[StoredEvent]:
    """The next events after position ``after``, up to the journal's high water: a consumer
    that keeps the last position it got as its cursor sees every event once, in position
    order, even while concurrent loaders commit out of position order (PostgreSQL). Run it
    in a READ COMMITTED transaction (``store.read_tx()``, ``store.transaction()``)."""
    entries = journal_store(tx.store).events_after(tx, after, limit=limit)
    return _stored(tx, entries)
