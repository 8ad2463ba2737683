"""What a reader yields and where it stands: ``RawRecord``, ``ResumePoint``, and the helpers
every decoder shares to number records and to report a read error (see ``readers``)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from journal_loader.errors import SourceFileError

READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


@dataclass(slots=True)
class RawRecord:
    """One record of a source file, decoded or not.

    ``offset`` is the 0-based index among the file's data records (CSV header and blank lines
    excluded), ``line`` the 1-based physical line it starts on, ``byte_start``/``byte_end`` its
    byte range in the (decompressed) stream, line terminator included, and ``raw`` exactly those
    bytes. ``data`` is ``{header: value}`` (CSV) or the decoded object (JSONL), or ``None`` when
    the record could not be decoded: then ``error`` says why (prefixed with the line and byte)
    and ``error_type`` is a short machine code (see the ``readers`` module docstring).

    ``fields``: the CSV fields the reader split the record into, kept only where they are
    exactly what ``TextContext.fields`` (journal/parsed.py) makes of ``raw.decode()``: one
    line of UTF-8 with no CR before its terminator (``CsvDecoder.records`` says why). A
    ``RecordParsed`` of version 3 then compares the record with them instead of splitting
    its text a second time. ``None`` anywhere else (JSON Lines, a quoted line break, another
    encoding, a read error, a DLQ retry); a record is journaled the same either way.
    """

    offset: int
    line: int
    byte_start: int
    byte_end: int
    raw: bytes
    data: dict[str, Any] | None
    error: str | None = None
    error_type: str | None = None
    fields: list[str] | None = None


class ResumePoint(NamedTuple):
    """Where reading resumes: the next record's offset, physical line and byte position."""

    offset: int
    line: int
    byte: int


class Progress:
    """Where the next record starts, as ``(offset, line, byte)``: the record generators store
    it just before yielding a record (a plain tuple: cheap), ``position`` makes it a
    ResumePoint only when asked."""

    __slots__ = ("next",)

    def __init__(self, start: tuple[int, int, int]) -> None:
        self.next = start

    def position(self) -> ResumePoint:
        return _new_point(ResumePoint, self.next)

    @property
    def byte(self) -> int:
        return self.next[2]


_new_point = tuple.__new__  # ResumePoint from a tuple, without NamedTuple.__new__'s overhead


def read_error(path: str, gzipped: bool, exc: BaseException, line: int, byte: int) -> Exception:
    if gzipped:
        reason = (
            f"the gzip data is truncated or corrupt ({exc}): the record starting at byte {byte} "
            "of the decompressed data cannot be read; the records before it were read"
        )
    else:
        reason = f"read error after byte {byte}: {exc}"
    return SourceFileError(path, reason, line=line, byte_offset=byte)


def where_prefix(line: int, byte: int) -> str:
    return f"line {line} (byte {byte}): "
