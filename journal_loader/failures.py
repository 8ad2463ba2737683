"""The dead-letter queue summarised: failures grouped by what went wrong.

A DLQ of thousands of rows is mostly a handful of problems repeated. Two failures are in the
same group when they failed at the same stage, with the same error type, and with the same
message once the parts that vary from record to record are folded:

* numbers become ``<n>`` (``12345-6789`` is ``<n>-<n>``; digits inside a word, a corp number
  like ``C1000452``, are part of the word and stay);
* quoted values become ``'…'`` (``HO Zip '9021'`` and ``HO Zip 'ABCDE'`` are one problem),
  except a quoted *name*: a quoted word right after ``field``, ``column``, ``key`` or
  ``attribute`` stays, so a bad ``effective_date`` and a bad ``expiry_date`` are two groups.

``summarise`` reads ``failed_records`` (the DLQ as it stands: retried-and-succeeded and
resolved records have left it) once, in offset order, and groups in Python: SQLite has no
regular expressions, and one pass over the rows costs about a microsecond each. The group's
example is its first record (lowest source, then offset); its first run is the run of the
earliest first failure (the ``RecordFailed`` at the entry's id, which is its journal
position), its last run the run of the latest failure.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from journal_loader.storage.base import Store
from journal_loader.storage.ops_store import ops_store

_NAME_WORDS = r"(?:field|column|key|attribute)s?"
# A quoted name (kept), a quoted value (folded), or a number (folded), in one scan.
_TOKEN = re.compile(
    rf"(?P<name>\b{_NAME_WORDS}\s+(?:'[^']*'|\"[^\"]*\"))"
    r"|(?P<quoted>'[^']*'|\"[^\"]*\")"
    r"|(?P<number>(?<![\w.])[-+]?\d+(?:[.,:/]\d+)*(?![\w]))",
    re.IGNORECASE,
)
MAX_PATTERN_CHARS = 300


def normalise(message: str) -> str:
    """The message with its varying parts folded: numbers to ``<n>``, quoted values to
    ``'…'``, whitespace collapsed (see the module's docstring)."""

    def fold(m: re.Match[str]) -> str:
        if m.group("name"):
            return m.group("name")
        if m.group("quoted"):
            return "'…'"
        return "<n>"

    collapsed = " ".join(str(message).split())
    folded = _TOKEN.sub(fold, collapsed)
    return folded if len(folded) <= MAX_PATTERN_CHARS else folded[: MAX_PATTERN_CHARS - 1] + "…"


class FailureGroup(msgspec.Struct, kw_only=True):
    """Failures that are the same problem."""

    stage: str
    error_type: str
    pattern: str  # the normalised message
    count: int = 0
    example_id: int = 0  # the DLQ entry (`dlq show ID`)
    example_source_id: int = 0
    example_offset: int = 0
    example_line: int = 0
    example_message: str = ""
    first_failed_at: str = ""
    first_run_id: str = ""
    last_failed_at: str = ""
    last_run_id: str = ""
    source_ids: list[int] = []


def summarise(
    store: Store, *, source_id: int | None = None, run_id: str | None = None
) -> list[FailureGroup]:
    """The DLQ's entries grouped, largest group first. ``source_id``: one source's entries;
    ``run_id``: only the entries whose latest failure is that run's (a run's own failures)."""
    return group(ops_store(store).failure_rows(source_id=source_id, run_id=run_id))


def group(rows: Iterable[Any]) -> list[FailureGroup]:
    """Groups rows of (id, source_id, offset, line, stage, error_type, message,
    first_failed_at, last_failed_at, last run, first run), given in (source, offset) order."""
    groups: dict[tuple[str, str, str], FailureGroup] = {}
    firsts: dict[tuple[str, str, str], dt.datetime] = {}
    lasts: dict[tuple[str, str, str], dt.datetime] = {}
    patterns: dict[str, str] = {}  # the same message, folded once
    for row in rows:
        entry_id, src, offset, line, stage, error_type, message = row[:7]
        first_at, last_at, last_run, first_run = row[7:11]
        pattern = patterns.get(message)
        if pattern is None:
            pattern = patterns[message] = normalise(message)
        key = (stage, error_type, pattern)
        g = groups.get(key)
        if g is None:
            g = groups[key] = FailureGroup(
                stage=stage,
                error_type=error_type,
                pattern=pattern,
                example_id=int(entry_id),
                example_source_id=int(src),
                example_offset=int(offset),
                example_line=int(line),
                example_message=message,
            )
        g.count += 1
        if int(src) not in g.source_ids:
            g.source_ids.append(int(src))
        first_at, last_at = _utc(first_at), _utc(last_at)
        if key not in firsts or first_at < firsts[key]:
            firsts[key] = first_at
            g.first_failed_at, g.first_run_id = first_at.isoformat(), first_run or last_run
        if key not in lasts or last_at >= lasts[key]:
            lasts[key] = last_at
            g.last_failed_at, g.last_run_id = last_at.isoformat(), last_run
    return sorted(groups.values(), key=lambda g: (-g.count, g.stage, g.error_type, g.pattern))


def _utc(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
