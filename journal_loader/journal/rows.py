"""The journal's rows as the layers above see them: an event with its envelope."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from journal_loader.journal.events import Event


@dataclass(slots=True)
class JournalRow:
    """An event with its envelope, as appended (or read back) from the journal."""

    position: int
    source_id: int
    record_offset: int | None
    event: Event
    run_id: str
    recorded_at: dt.datetime
