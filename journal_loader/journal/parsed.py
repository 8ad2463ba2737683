"""``RecordParsed`` without its record, when the record can be built again from its text.

A record of the example is journaled as its raw text (~210 bytes) and as what the loader's
``parse`` made of it: the same values under the loader's own keys, ~480 bytes more, most of
them the 17 key names again in every record (issue 11: ``RecordParsed`` was 765 of the 992
journal bytes a record). Version 3 of ``RecordParsed`` keeps the text and leaves the record
out when it is exactly what this module builds from the text:

* the run's ``RunStarted`` holds the header and the CSV dialect (``TextContext.of``), so the
  text splits into ``{header name: field}`` again (``TextContext.fields``: one fixed,
  versioned function, used both to decide and to rebuild, so the two always agree, whatever
  the reader did);
* the first record of a batch with a given list of keys keeps its ``record`` and adds ``m``:
  the field each key's value came from (-1: none); the batch's later records with the same
  keys, whose values come from the same fields, store ``s`` (that record's offset) and ``x``
  (the values that came from no field) instead of ``record``.

Only what this module can rebuild exactly is left out: a record is compared value by value
(type and all) with what would be rebuilt, and stored whole when anything differs (text
that is not UTF-8, a JSON Lines source, a field split differently, a value the loader
computed...). The reference is to a record of the same batch, so both commit in one
transaction (a batch rolled back takes both; ``ShapeCache.reset`` at each attempt). The
hash chain covers what is stored, so it proves the text and the references, and through
them the record. Pinned by tests/test_parsed.py (round trip, property test, history and
lineage unchanged) and tests/test_old_journal.py (journals of versions 1 and 2).
"""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from journal_loader.errors import JournalLoaderError
from journal_loader.journal.events import RecordParsed, RunStarted

# Shapes a batch may define; past that its records are stored whole (a loader whose keys
# or fields change from record to record gains nothing here).
MAX_SHAPES_PER_BATCH = 8


@dataclass(frozen=True, slots=True)
class TextContext:
    """How a run's CSV records split into named fields, from its RunStarted."""

    header: tuple[str, ...]
    delimiter: str
    quotechar: str

    @classmethod
    def of(cls, started: RunStarted) -> TextContext | None:
        reader = started.reader or {}
        if reader.get("format") != "csv" or not started.header:
            return None
        delimiter = reader.get("delimiter") or ","
        quotechar = reader.get("quotechar")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            return None
        if not isinstance(quotechar, str) or len(quotechar) != 1:
            return None
        return cls(tuple(started.header), delimiter, quotechar)

    def fields(self, text: str) -> list[str] | None:
        """The record's fields, or None when the text is not one record of the header's
        width. Version 1 of the split; never change it (stored events depend on it)."""
        body = text
        if body.endswith("\n"):
            body = body[:-2] if body.endswith("\r\n") else body[:-1]
        one_line = "\n" not in body and "\r" not in body
        if one_line and self.quotechar not in body:
            fields = body.split(self.delimiter)
        elif one_line:
            # A line with quotes: what a new reader (the branch below) makes of it, from a
            # reader made once per dialect and thread, fed this one line (a third of the
            # example's records; a new reader and StringIO cost 6.2 us a record, this 2.7).
            # Each next() starts a new record (the reader resets its state), and the line
            # is all the input it is given: the row it ends, or the error at its end
            # (an open quote), are the new reader's. Pinned by tests/test_parsed.py
            # (test_fields_of_one_line_equal_a_new_readers, hypothesis).
            feed, reader = _line_reader(self.delimiter, self.quotechar)
            feed.line = text
            try:
                fields = next(reader)
            except (csv.Error, StopIteration):
                return None
            finally:
                feed.line = None
        else:
            try:
                rows = list(
                    csv.reader(
                        io.StringIO(text, newline=""),
                        delimiter=self.delimiter,
                        quotechar=self.quotechar,
                        doublequote=True,
                        skipinitialspace=False,
                        strict=True,
                    )
                )
            except csv.Error:
                return None
            if len(rows) != 1:
                return None
            fields = rows[0]
        return fields if len(fields) == len(self.header) else None


class _OneLine:
    """A reused reader's input: the line it is given, then the end of the input."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line: str | None = None

    def __iter__(self) -> _OneLine:
        return self

    def __next__(self) -> str:
        line = self.line
        if line is None:
            raise StopIteration
        self.line = None
        return line


_readers = threading.local()


def _line_reader(delimiter: str, quotechar: str) -> tuple[_OneLine, Any]:
    """This thread's reader of one line at a time in this dialect (TextContext.fields)."""
    made: dict[tuple[str, str], tuple[_OneLine, Any]] | None = getattr(_readers, "made", None)
    if made is None:
        made = _readers.made = {}
    found = made.get((delimiter, quotechar))
    if found is None:
        feed = _OneLine()
        reader = csv.reader(
            feed,
            delimiter=delimiter,
            quotechar=quotechar,
            doublequote=True,
            skipinitialspace=False,
            strict=True,
        )
        found = made[(delimiter, quotechar)] = (feed, reader)
    return found


class ShapeCache:
    """The write side, one per run: which records of the batch being built can leave their
    record out. ``reset`` before each attempt of a batch."""

    def __init__(self, context: TextContext) -> None:
        self.context = context
        # keys -> [(field map, the offset of the record that holds it, a C-level picker of
        # the mapped fields when every key has one: most records are checked by one tuple
        # comparison instead of a loop over their values)]
        self._shapes: dict[tuple[str, ...], list[tuple[list[int], int, Any]]] = {}
        self._count = 0

    def reset(self) -> None:
        self._shapes.clear()
        self._count = 0

    def event(
        self,
        offset: int,
        line: int,
        byte_start: int,
        byte_end: int,
        raw: bytes,
        record: dict[str, Any],
        fields: list[str] | None = None,
    ) -> RecordParsed:
        """``fields``: the reader's split of ``raw``, when it is exactly this context's
        (``RawRecord.fields``); otherwise the text is split here."""
        if fields is None:
            try:
                text = raw.decode()
            except UnicodeDecodeError:
                text = None
            fields = None if text is None else self.context.fields(text)
        if fields is None:
            return RecordParsed(
                line=line, byte_start=byte_start, byte_end=byte_end, raw=raw, record=record
            )
        keys = tuple(record)
        values = tuple(record.values())
        known = self._shapes.get(keys)
        if known is not None:
            for field_map, at, pick in known:
                extra: list[Any] | None
                if pick is not None:
                    # exactly: equal, and every value a str (not an int equal to nothing
                    # here, nor a str subclass that compares equal)
                    same = pick(fields) == values and set(map(type, values)) == _STR
                    extra = [] if same else None
                else:
                    extra = _follows(field_map, values, fields)
                if extra is not None:
                    return RecordParsed(
                        line=line,
                        byte_start=byte_start,
                        byte_end=byte_end,
                        raw=raw,
                        record=record,
                        shape=at,
                        extra=extra,
                    )
        if self._count >= MAX_SHAPES_PER_BATCH:
            return RecordParsed(
                line=line, byte_start=byte_start, byte_end=byte_end, raw=raw, record=record
            )
        field_map = _field_map(values, fields)
        pick = itemgetter(*field_map) if len(field_map) > 1 and min(field_map) >= 0 else None
        self._shapes.setdefault(keys, []).append((field_map, offset, pick))
        self._count += 1
        return RecordParsed(
            line=line,
            byte_start=byte_start,
            byte_end=byte_end,
            raw=raw,
            record=record,
            fields=field_map,
        )


_STR = {str}


def _follows(field_map: list[int], values: tuple[Any, ...], fields: list[str]) -> list[Any] | None:
    """The values from no field, if every other value is its field exactly; else None."""
    if len(field_map) != len(values):
        return None
    extra: list[Any] = []
    for i, value in zip(field_map, values, strict=True):
        if i < 0:
            extra.append(value)
        elif value.__class__ is not str or value != fields[i]:
            return None
    return extra


def _field_map(values: tuple[Any, ...], fields: list[str]) -> list[int]:
    """For each value, the first field not taken yet that it is exactly (-1: none). In
    order, so that keys in the header's order (the usual loader) map field for field, also
    where several fields are equal (empty ones)."""
    taken: set[int] = set()
    out: list[int] = []
    for value in values:
        found = -1
        if value.__class__ is str:
            for i, field in enumerate(fields):
                if field == value and i not in taken:
                    found = i
                    break
        if found >= 0:
            taken.add(found)
        out.append(found)
    return out


class UnresolvableRecord(JournalLoaderError):
    """A version-3 RecordParsed whose run start or shape record is not in the journal (a
    journal edited by hand: ``verify`` says where)."""


def rebuild(ev: RecordParsed, context: TextContext, shape: RecordParsed) -> RecordParsed:
    """The event as it was before it was stored: its record built from its text, the keys
    and field map of ``shape`` (the record at offset ``ev.shape`` of the same run)."""
    if shape.fields is None or len(shape.fields) != len(shape.record):
        raise UnresolvableRecord(f"the record at offset {ev.shape} holds no field map")
    fields = context.fields(ev.raw.decode())
    if fields is None:
        raise UnresolvableRecord("its text does not split into the run's header")
    extra = iter(ev.extra or ())
    record: dict[str, Any] = {}
    try:
        for key, i in zip(shape.record, shape.fields, strict=True):
            record[key] = next(extra) if i < 0 else fields[i]
    except StopIteration:
        raise UnresolvableRecord("fewer values from no field than its shape has") from None
    return RecordParsed(
        line=ev.line, byte_start=ev.byte_start, byte_end=ev.byte_end, raw=ev.raw, record=record
    )


def plain(ev: RecordParsed) -> RecordParsed:
    """A whole event as readers see it (without the field map a shape record stores)."""
    if ev.fields is None:
        return ev
    return RecordParsed(
        line=ev.line, byte_start=ev.byte_start, byte_end=ev.byte_end, raw=ev.raw, record=ev.record
    )


class Resolver:
    """The read side: version-3 events made whole, with the two lookups they need cached
    (a run's start, a shape record), for any number of events of any runs."""

    def __init__(
        self,
        run_started: Callable[[int, str], RunStarted | None],
        parsed_at: Callable[[int, str, int], RecordParsed | None],
    ) -> None:
        self._run_started = run_started
        self._parsed_at = parsed_at
        self._contexts: dict[tuple[int, str], TextContext | None] = {}
        self._shapes: dict[tuple[int, str, int], RecordParsed | None] = {}

    def resolve(self, ev: RecordParsed, source_id: int, run_id: str) -> RecordParsed:
        if ev.shape is None:
            return plain(ev)
        key = (source_id, run_id)
        if key not in self._contexts:
            started = self._run_started(source_id, run_id)
            self._contexts[key] = None if started is None else TextContext.of(started)
        context = self._contexts[key]
        if context is None:
            raise UnresolvableRecord(f"run {run_id} of source {source_id} has no CSV RunStarted")
        at = (source_id, run_id, ev.shape)
        if at not in self._shapes:
            self._shapes[at] = self._parsed_at(source_id, run_id, ev.shape)
        shape = self._shapes[at]
        if shape is None:
            raise UnresolvableRecord(
                f"run {run_id} of source {source_id} has no RecordParsed at offset {ev.shape}"
            )
        return rebuild(ev, context, shape)
