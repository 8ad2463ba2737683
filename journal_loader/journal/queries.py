"""Reading the journal: resume points, chain heads, one record's history."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from journal_loader.journal.events import BatchCommitted, Event, decode
from journal_loader.storage.base import Tx
from journal_loader.storage.sql import load_queries


def queries(dialect: str) -> dict[str, str]:
    return load_queries(Path(__file__).with_name("queries.sql"), dialect)


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
    row = tx.fetchone(queries(tx.store.dialect)["checkpoint"], {"source_id": source_id})
    if row is None:
        return Checkpoint(0, 0, 0)
    if row[1] != "BatchCommitted":
        return Checkpoint(0, 0, 0, int(row[0]))
    ev = decode(row[2])
    assert isinstance(ev, BatchCommitted)
    return Checkpoint(ev.next_offset, ev.next_line, ev.next_byte, int(row[0]))


def in_doubt(tx: Tx, source_id: int, after: int) -> dict[int, set[str]]:
    """Offsets attempted on a remote target after the checkpoint, without an outcome, with
    the tokens of their attempts (``ProposeAttempted.attempt``); "" stands for an attempt
    whose target kept no outcomes (nothing can rule out that it committed)."""
    from journal_loader.journal.events import ProposeAttempted, decode

    rows = tx.fetchall(
        queries(tx.store.dialect)["in_doubt"], {"source_id": source_id, "after": after}
    )
    out: dict[int, set[str]] = {}
    for offset, payload in rows:
        event = decode(payload)
        tokens = out.setdefault(int(offset), set())
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
    def from_row(cls, row: Any) -> StoredEvent:
        recorded_at = row[7]
        if isinstance(recorded_at, str):  # SQLite via the driver
            recorded_at = dt.datetime.fromisoformat(recorded_at).replace(tzinfo=dt.UTC)
        elif recorded_at.tzinfo is None:
            recorded_at = recorded_at.replace(tzinfo=dt.UTC)
        return cls(
            int(row[0]),
            int(row[1]),
            None if row[2] is None else int(row[2]),
            row[3],
            int(row[4]),
            row[5],
            row[6],
            recorded_at,
            None if row[8] is None else bytes(row[8]),
            bytes(row[9]),
        )


def record_events(tx: Tx, source_id: int, record_offset: int) -> list[StoredEvent]:
    rows = tx.fetchall(
        queries(tx.store.dialect)["record_events"],
        {"source_id": source_id, "record_offset": record_offset},
    )
    return [StoredEvent.from_row(r) for r in rows]


def event_at(tx: Tx, position: int) -> StoredEvent | None:
    row = tx.fetchone(queries(tx.store.dialect)["event_at"], {"position": position})
    return None if row is None else StoredEvent.from_row(row)
