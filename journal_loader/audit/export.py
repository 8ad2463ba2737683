"""Exporting the journal as JSON lines, for archives and external audit tools.

One line per event, in position order, streamed (constant memory, whatever the journal's
size)::

    {"position": 7, "source_id": 1, "record_offset": 2, "event_type": "RecordParsed",
     "schema_version": 1, "run_id": "...", "recorded_at": "2026-01-31T12:00:00.000000Z",
     "prev_hash": "<hex>" | null, "hash": "<hex>", "payload": "<the stored JSON, as a string>"}

``payload`` is the stored text exactly (a JSON string holding JSON), and ``recorded_at`` is in
the chain's canonical form, so every hash can be recomputed from the export alone (see
docs/auditing.md); ``json.loads(line["payload"])`` gives the event.
"""

from __future__ import annotations

from typing import IO

import msgspec

from journal_loader.audit import base
from journal_loader.audit.base import require_source
from journal_loader.audit.verify import any_time
from journal_loader.storage import Store
from journal_loader.storage.audit_reader import audit_reader

FORMATS = ("jsonl",)


class ExportedEvent(msgspec.Struct):
    """One line of the export."""

    position: int
    source_id: int
    record_offset: int | None
    event_type: str
    schema_version: int
    run_id: str
    recorded_at: str
    prev_hash: str | None
    hash: str
    payload: str


def export_events(
    store: Store,
    out: IO[bytes],
    *,
    source_id: int | None = None,
    from_position: int = 0,
) -> int:
    """Write the events (of one source, from a position) to ``out``; return how many.

    The export stops at the journal's high water, not at its last event: on PostgreSQL an
    event below the last one may still be in flight, and an export resumed with ``--from``
    after the last exported position would never include it."""
    reader = audit_reader(store)
    if source_id is not None:
        require_source(store, source_id)
    batches = reader.event_batches(
        last=reader.high_water(),
        source_id=source_id,
        from_position=from_position,
        batch=base.FETCH_ROWS,
    )
    encoder = msgspec.json.Encoder()
    n = 0
    for rows in batches:
        events = [
            ExportedEvent(
                position,
                sid,
                offset,
                kind,
                version,
                run_id,
                stamp if type(stamp) is str and len(stamp) == 27 else any_time(stamp),
                None if prev is None else prev.hex(),
                digest.hex(),
                payload,
            )
            for position, sid, offset, kind, version, payload, run_id, stamp, prev, digest in rows
        ]
        out.write(encoder.encode_lines(events))
        n += len(events)
    out.flush()
    return n
