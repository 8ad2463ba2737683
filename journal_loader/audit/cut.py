"""A moment in the journal's history: a position, or a time.

``parse_cut("1234")`` is "right after position 1234 committed"; ``parse_cut("2026-01-31T12:00Z")``
is "every event recorded at or before that time". A time without a zone is UTC; a date alone is
the start of that day (UTC).

The journal as of a cut is a temporary view that the projections' set-based rebuild reads in
place of the ``journal`` table (``storage/audit_reader.py``, ``AuditReader.projections_at``).

Why a time cut filters on ``recorded_at`` and is not turned into a position: a source's events
are appended by one run at a time, so within a source ``recorded_at`` grows with ``position``
and a time cut is a prefix of every source's history, which is all a per-source projection
needs. Across sources, concurrent runs may commit in a slightly different order than their
clocks say; a position cut is the exact one: the journal up to position N once nothing below N
can still appear. On PostgreSQL positions do not follow commit order (a lower batch may still
be in flight), so a position cut stops at the journal's high water
(``AuditReader.projections_at``; storage/postgres.py says why).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from journal_loader.audit.base import utc
from journal_loader.errors import UsageError

_POSITION = re.compile(r"^\s*#?(\d+)\s*$")


@dataclass(frozen=True, slots=True)
class Cut:
    """Exactly one of ``position`` / ``time`` is set."""

    position: int | None = None
    time: dt.datetime | None = None

    def __post_init__(self) -> None:
        if (self.position is None) == (self.time is None):
            raise ValueError("a cut is a position or a time")
        if self.position is not None and self.position < 0:
            raise UsageError(f"position {self.position}: positions start at 1")

    @classmethod
    def at_position(cls, position: int) -> Cut:
        return cls(position=int(position))

    @classmethod
    def at_time(cls, time: dt.datetime) -> Cut:
        return cls(time=utc(time))

    def describe(self) -> str:
        if self.position is not None:
            return f"position {self.position}"
        assert self.time is not None
        return f"{self.time:%Y-%m-%d %H:%M:%S.%f} UTC"


def parse_cut(text: str) -> Cut:
    """``1234`` (a position) or an ISO 8601 time (``2026-01-31``, ``2026-01-31T12:00:00Z``,
    ``2026-01-31 12:00:00+01:00``); a time without a zone is UTC."""
    m = _POSITION.match(text)
    if m:
        return Cut.at_position(int(m.group(1)))
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            parsed = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
        else:
            parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"{text!r} is neither a journal position (1234) nor an ISO 8601 time "
            "(2026-01-31, 2026-01-31T12:00:00Z)"
        ) from None
    return Cut.at_time(parsed)
