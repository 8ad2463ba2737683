"""What the audit modules share: their errors, UTC times, and how much of the journal a
streamed walk holds at a time. Their queries are storage's (``storage/audit_reader.py``)."""

from __future__ import annotations

import datetime as dt

from journal_loader.errors import JournalLoaderError, UnknownSourceError
from journal_loader.storage.audit_reader import audit_reader
from journal_loader.storage.base import Store

# Events per fetch of the streamed walks (verify, export): their memory is about this many
# events, whatever the journal's size.
FETCH_ROWS = 2_000


class AuditError(JournalLoaderError):
    """An audit command cannot do what was asked (an unknown id, an unusable heads file...)."""


class UnknownSubjectError(AuditError, UnknownSourceError):
    """An id that is not in the journal or the graph: a usage error (exit code 2)."""


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite hands timestamps back naive; they are UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def require_source(store: Store, source_id: int) -> None:
    """An AuditError unless the journal has events of this source."""
    if not audit_reader(store).source_exists(source_id):
        raise UnknownSubjectError(f"no source {source_id} in the journal of {store.display_url}")
