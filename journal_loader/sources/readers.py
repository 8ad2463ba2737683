"""Record readers: CSV and JSONL files (plain or gzip), record by record, with exact byte offsets.

Every record comes out as a :class:`RawRecord` that knows where it is: its index among the
file's data records (``offset``), the physical line it starts on, and the byte range it occupies
in the (decompressed) byte stream. ``raw`` is exactly those bytes, so a record that cannot be
decoded is never lost: it comes out with ``data=None`` and the reason in ``error`` /
``error_type``, and reading goes on with the next record.

Byte accounting
    Files are read in binary. Physical lines end with LF, CRLF or a bare CR (mixed in one file
    is fine, as with ``open(newline='')``); the line splitter counts their bytes, and only then
    are lines decoded and handed to :func:`csv.reader`. ``csv.reader`` pulls lines lazily, so the
    lines consumed when it yields a row are exactly that row's lines: quoted fields holding line
    breaks are one record spanning several physical lines. For CSV the header record (with the
    UTF-8 BOM, if any, and any blank lines before it) is ``RecordReader.header_raw``, so
    ``header_raw + b"".join(r.raw for r in records)`` is the whole file when there are no blank
    lines between records.

Resuming
    ``RecordReader.position`` is where the next record starts. Opening a reader with
    ``start=position`` re-reads the CSV header from the start of the file, then *seeks* to
    ``start.byte`` and numbers records from ``start.offset`` / ``start.line``: the records in
    between are not read. Before seeking, the reader checks that the byte before the resume point
    ends a line (a cheap guard against resuming into a different file). For gzip files seeking
    necessarily decompresses everything up to the resume point (``GzipFile.seek`` reads and
    discards), but nothing is split into lines or parsed, so it costs a fraction of a full read.

Blank lines
    Empty lines (CSV) and whitespace-only lines (JSONL) are not records: they get no offset, are
    skipped silently, and still count in line numbers. In a one-column CSV an empty value must
    therefore be quoted (``""``), which is what :func:`csv.writer` does.

Record-level errors (``RawRecord.error_type``)
    ``invalid_encoding``  bytes that do not decode (the message names the first bad byte)
    ``nul_byte``          a NUL byte in the record
    ``field_count``       CSV: not as many fields as the header ("expected N fields, got M")
    ``field_too_large``   CSV: a field longer than ``field_size_limit`` characters
    ``record_too_large``  a record longer than ``max_record_bytes`` bytes
    ``unterminated_quote`` CSV: a quoted field that runs over line ends and is not closed
                          before the end of the file, nor within ``max_record_bytes``, nor
                          properly (``"...\n..."x``); the record is its first physical line
                          only and reading restarts at the next line, so a stray quote never
                          swallows the rest of the file
    ``bad_quote``         CSV: a quoted field followed by something else than a delimiter or
                          a line end, on one line (``a,"b"c,d``); parsing is strict, so such
                          fields are never silently glued together
    ``csv_error``         CSV: any other error the csv module reports
    ``invalid_json``      JSONL: not JSON (NaN and Infinity are rejected: they are not JSON)
    ``not_an_object``     JSONL: valid JSON, but not an object
    ``too_deep``          JSONL: nested deeper than 64 levels
    ``empty_record`` / ``multiple_records``  only from :meth:`RecordReader.reparse`

File-level errors raise :class:`~journal_loader.errors.SourceFileError`: missing, a directory,
unreadable, empty, a bad header (empty or duplicate names, undecodable, unterminated quote), a
file that looks like UTF-16/UTF-32 while the encoding says otherwise, and corrupt or truncated
gzip data (raised when reached: the records before it are yielded normally). Bad arguments
(unknown format or encoding, a bad delimiter) raise :class:`~journal_loader.errors.ConfigError`.

Encodings: any ASCII-compatible encoding (UTF-8, Latin-1, cp1252, ...) on the fast path, and
UTF-16 / UTF-32 (with or without a BOM; without one, little-endian) through a slower splitter.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import chain
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple, cast

import msgspec

from journal_loader.errors import ConfigError, SourceChangedError, SourceFileError

__all__ = [
    "MAX_JSON_DEPTH",
    "RawRecord",
    "RecordReader",
    "ResumePoint",
    "detect_format",
    "open_reader",
]

MAX_JSON_DEPTH = 64
"""JSONL objects nested deeper than this (the top-level object is level 1) are refused."""

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_FORMAT_NAMES = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl"}
_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
_BLOCK = 1 << 18  # bytes read at once
_JSON_SPACE = b" \t\r\n"
_MSGSPEC_BYTE = re.compile(r"\(byte (\d+)\)")


@dataclass(slots=True)
class RawRecord:
    """One record of a source file, decoded or not.

    ``offset`` is the 0-based index among the file's data records (CSV header and blank lines
    excluded), ``line`` the 1-based physical line it starts on, ``byte_start``/``byte_end`` its
    byte range in the (decompressed) stream, line terminator included, and ``raw`` exactly those
    bytes. ``data`` is ``{header: value}`` (CSV) or the decoded object (JSONL), or ``None`` when
    the record could not be decoded: then ``error`` says why (prefixed with the line and byte)
    and ``error_type`` is a short machine code (see the module docstring).
    """

    offset: int
    line: int
    byte_start: int
    byte_end: int
    raw: bytes
    data: dict[str, Any] | None
    error: str | None = None
    error_type: str | None = None


class ResumePoint(NamedTuple):
    """Where reading resumes: the next record's offset, physical line and byte position."""

    offset: int
    line: int
    byte: int


# --------------------------------------------------------------------------------------------
# Format and encoding detection


def detect_format(path: str, configured: str | None = None) -> tuple[str, bool]:
    """Return ``(format, gzipped)`` for ``path``: format ``'csv'`` or ``'jsonl'``.

    The format is ``configured`` when given (``csv``, ``tsv``, ``jsonl``, ``ndjson``, ``json``;
    case-insensitive), else taken from the extension: ``.csv``/``.tsv``/``.txt`` are CSV,
    ``.jsonl``/``.ndjson``/``.json`` are JSONL, after removing a trailing ``.gz``. The file is
    gzipped when its first two bytes are the gzip magic ``1f 8b`` (when the file cannot be read,
    when its name ends in ``.gz``). Raises ConfigError when the format cannot be told.
    """
    head: bytes | None
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        head = None
    fmt, gzipped, _tsv = _detect(path, configured, head)
    return fmt, gzipped


def _detect(path: str, configured: str | None, head: bytes | None) -> tuple[str, bool, bool]:
    """-> (format, gzipped, tab-separated)."""
    name = os.path.basename(path).lower()
    named_gz = name.endswith(".gz")
    if named_gz:
        name = name[:-3]
    gzipped = named_gz if head is None else head.startswith(_GZIP_MAGIC)
    if configured is not None:
        kind = _FORMAT_NAMES.get(configured.strip().lower())
        if kind is None:
            raise ConfigError(f"{path}: unknown format {configured!r}; use csv, tsv or jsonl")
    else:
        ext = os.path.splitext(name)[1]
        kind = _EXTENSIONS.get(ext)
        if kind is None:
            what = f"extension {ext!r}" if ext else "no extension"
            raise ConfigError(
                f"{path}: cannot tell the format from the file name ({what}); "
                "set the format to csv, tsv or jsonl"
            )
    return ("jsonl" if kind == "jsonl" else "csv"), gzipped, kind == "tsv"


@dataclass(frozen=True, slots=True)
class _Codec:
    name: str  # codec that decodes one line (BOM-less, fixed byte order)
    display: str  # for messages
    unit: int  # 1: ASCII-compatible, lines split on bytes; 2 or 4: UTF-16 / UTF-32
    cr: bytes
    lf: bytes
    bom: bytes  # removed when the stream starts with it


_UTF8 = _Codec("utf-8", "UTF-8", 1, b"\r", b"\n", codecs.BOM_UTF8)


def _resolve_codec(encoding: str, head: bytes) -> _Codec:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    if name in ("utf-8", "utf-8-sig"):
        return _UTF8
    if name == "utf-16":  # byte order from the BOM, little-endian without one
        name = "utf-16-be" if head.startswith(codecs.BOM_UTF16_BE) else "utf-16-le"
    elif name == "utf-32":
        name = "utf-32-be" if head.startswith(codecs.BOM_UTF32_BE) else "utf-32-le"
    if name in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        return _Codec(
            name,
            name.upper(),
            2 if name.startswith("utf-16") else 4,
            "\r".encode(name),
            "\n".encode(name),
            "\ufeff".encode(name),
        )
    probe = '\r\n,;|\t"az'
    try:
        compatible = probe.encode(name) == probe.encode("ascii") and (
            probe.encode("ascii").decode(name) == probe
        )
    except (UnicodeError, LookupError):  # LookupError: not a text encoding (base64, rot13...)
        compatible = False
    if not compatible:
        raise ConfigError(
            f"encoding {encoding!r} is not supported: use an ASCII-compatible encoding "
            "(utf-8, latin-1, cp1252...) or utf-16 / utf-32"
        )
    return _Codec(name, name, 1, b"\r", b"\n", codecs.BOM_UTF8)


def _looks_wide(sample: bytes) -> str | None:
    """Describe why ``sample`` (the file's first bytes) looks UTF-16/UTF-32, or None."""
    for bom, what in (
        (codecs.BOM_UTF32_LE, "UTF-32 (it starts with the byte-order mark FF FE 00 00)"),
        (codecs.BOM_UTF32_BE, "UTF-32 (it starts with the byte-order mark 00 00 FE FF)"),
        (codecs.BOM_UTF16_LE, "UTF-16 (it starts with the byte-order mark FF FE)"),
        (codecs.BOM_UTF16_BE, "UTF-16 (it starts with the byte-order mark FE FF)"),
    ):
        if sample.startswith(bom):
            return what
    first = sample.split(b"\n", 1)[0]

    def nuls(part: bytes) -> float:
        return part.count(0) / len(part) if part else 0.0

    if len(first) >= 6 and min(nuls(first[i::4]) for i in (1, 2, 3)) > 0.9 > nuls(first[::4]):
        return "UTF-32 (the first line has three NUL bytes out of four)"
    if len(first) >= 6 and min(nuls(first[i::4]) for i in (0, 1, 2)) > 0.9 > nuls(first[3::4]):
        return "UTF-32 (the first line has three NUL bytes out of four)"
    if len(first) >= 4 and (
        (nuls(first[1::2]) > 0.5 and nuls(first[::2]) < 0.1)
        or (nuls(first[::2]) > 0.5 and nuls(first[1::2]) < 0.1)
    ):
        return "UTF-16 (the first line has NUL bytes every other byte)"
    return None


# --------------------------------------------------------------------------------------------
# Line splitting

_LINE_END = re.compile(rb"\r\n|\r|\n")


def _byte_lines(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Physical lines of an ASCII-compatible byte stream, terminators (LF, CRLF, CR) included.

    The stream is read in blocks and split with ``bytes.splitlines`` (which splits on exactly
    LF, CRLF and CR), so there is no per-line Python code here.
    """
    return chain.from_iterable(_byte_line_blocks(read))


def _byte_line_blocks(read: Callable[[int], bytes]) -> Iterator[list[bytes]]:
    parts: list[bytes] = []  # an unfinished line: no line end, except maybe a final CR
    size = 1 << 14  # small first blocks: reading just a header must not read much more
    while True:
        block = read(size)
        size = min(size * 2, _BLOCK)
        if not block:
            if parts:
                yield [b"".join(parts)]
            return
        if parts:
            if parts[-1][-1] == 13:  # a CR ended the last block: is it CR LF?
                if block[0] == 10:
                    parts.append(b"\n")
                    block = block[1:]
                yield [b"".join(parts)]
                parts.clear()
            else:
                m = _LINE_END.search(block)
                if m is None or (m.end() == len(block) and block[-1] == 13):
                    parts.append(block)
                    continue
                parts.append(block[: m.end()])
                yield [b"".join(parts)]
                parts.clear()
                block = block[m.end() :]
            if not block:
                continue
        lines = block.splitlines(keepends=True)
        if lines[-1][-1] != 10:  # unfinished, or a CR that an LF may follow
            parts.append(lines.pop())
        yield lines


def _wide_lines(read: Callable[[int], bytes], codec: _Codec) -> Iterator[bytes]:
    """Physical lines of a UTF-16/UTF-32 byte stream (terminators matched on code units)."""
    cr, lf = re.escape(codec.cr), re.escape(codec.lf)
    unit = b"." * codec.unit
    line_re = re.compile(
        b"(?:(?!"
        + cr
        + b"|"
        + lf
        + b")"
        + unit
        + b")*(?:"
        + cr
        + lf
        + b"|"
        + cr
        + b"|"
        + lf
        + b")",
        re.DOTALL,
    )
    buf = b""
    pos = 0
    eof = False
    while True:
        m = line_re.match(buf, pos)
        if m is not None:
            end = m.end()
            # A line ending in CR may be the first half of CR LF: it is only complete once a
            # whole code unit follows it (or the data ends).
            if eof or buf[end - len(codec.cr) : end] != codec.cr or len(buf) - end >= len(codec.lf):
                yield m.group()
                pos = end
                continue
        if eof:
            if pos < len(buf):
                yield buf[pos:]
            return
        data = read(_BLOCK)
        eof = not data
        buf = buf[pos:] + data
        pos = 0


def _drain(pushback: deque[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    while pushback:
        yield pushback.popleft()
    # Not `yield from`: closing this generator must not close `rest`.
    for item in rest:  # noqa: UP028
        yield item


# --------------------------------------------------------------------------------------------
# Decoders


class _Progress:
    """Where the next record starts, as ``(offset, line, byte)``: the record generators store
    it just before yielding a record (a plain tuple: cheap), ``position`` makes it a
    ResumePoint only when asked."""

    __slots__ = ("next",)

    def __init__(self, start: tuple[int, int, int]) -> None:
        self.next = start

    def position(self) -> ResumePoint:
        return _new_point(ResumePoint, self.next)


_new_point = tuple.__new__  # ResumePoint from a tuple, without NamedTuple.__new__'s overhead


def _read_error(path: str, gzipped: bool, exc: BaseException, line: int, byte: int) -> Exception:
    if gzipped:
        reason = (
            f"the gzip data is truncated or corrupt ({exc}): the record starting at byte {byte} "
            "of the decompressed data cannot be read; the records before it were read"
        )
    else:
        reason = f"read error after byte {byte}: {exc}"
    return SourceFileError(path, reason, line=line, byte_offset=byte)


def _where(line: int, byte: int) -> str:
    return f"line {line} (byte {byte}): "


def _encoding_problem(raw: bytes, skip: int, start: int, codec: _Codec) -> str | None:
    """Message for the first undecodable bytes of ``raw[skip:]``, or None if it decodes."""
    try:
        raw[skip:].decode(codec.name)
    except UnicodeDecodeError as e:
        bad = raw[skip + e.start : skip + e.end]
        at = start + skip + e.start
        shown = " ".join(f"0x{b:02x}" for b in bad)
        noun = "byte" if len(bad) == 1 else "bytes"
        return f"invalid {codec.display} {noun} {shown} at byte {at} ({e.reason})"
    return None


def _nul_problem(raw: bytes, skip: int, start: int, codec: _Codec) -> str | None:
    if codec.unit == 1:
        i = raw.find(0, skip)
        return None if i < 0 else f"NUL byte (0x00) at byte {start + i}"
    text = raw[skip:].decode(codec.name, "replace")
    i = text.find("\x00")
    if i < 0:
        return None
    return f"NUL character at byte {start + skip + len(text[:i].encode(codec.name))}"


class _CsvDecoder:
    def __init__(
        self,
        path: str,
        gzipped: bool,
        codec: _Codec,
        delimiter: str,
        quotechar: str,
        field_size_limit: int,
        max_record_bytes: int,
    ) -> None:
        self.path = path
        self.gzipped = gzipped
        self.codec = codec
        self.delimiter = delimiter
        self.quotechar = quotechar
        self.field_size_limit = field_size_limit
        self.max_record_bytes = max_record_bytes
        self.header: list[str] = []
        self.build_row = _row_builder([])

    def _rows(self, lines: Iterable[str]) -> Iterator[list[str]]:
        return csv.reader(
            lines,
            delimiter=self.delimiter,
            quotechar=self.quotechar,
            doublequote=True,
            skipinitialspace=False,
            strict=True,
        )

    # -- header ------------------------------------------------------------------------------

    def read_header(self, lines: Iterator[bytes]) -> tuple[list[str], bytes, int]:
        """Parse the header record from the start of the stream -> (names, raw bytes, lines)."""
        path, codec, max_rec = self.path, self.codec, self.max_record_bytes
        consumed: list[bytes] = []
        at_eof = False

        def feed() -> Iterator[str]:
            nonlocal at_eof
            size = 0
            for ln in lines:
                here = size
                size += len(ln)
                consumed.append(ln)
                lineno = len(consumed)
                if size > max_rec:
                    raise SourceFileError(
                        path,
                        f"the header is longer than max_record_bytes ({max_rec} bytes): "
                        "is this really a CSV file with this delimiter and quote character?",
                        line=1,
                        byte_offset=0,
                    )
                skip = len(codec.bom) if here == 0 and ln.startswith(codec.bom) else 0
                problem = _encoding_problem(ln, skip, here, codec)
                if problem is None:
                    problem = _nul_problem(ln, skip, here, codec)
                if problem is not None:
                    raise SourceFileError(
                        path,
                        f"cannot read the header: {problem}; is the encoding right?",
                        line=lineno,
                        byte_offset=here,
                    )
                yield ln[skip:].decode(codec.name)
            at_eof = True

        try:
            for row in self._rows(feed()):
                if at_eof:
                    raise SourceFileError(
                        path,
                        "unterminated quote in the header: a quoted column name is not closed "
                        "before the end of the file",
                        line=1,
                        byte_offset=0,
                    )
                if row:
                    break
            else:
                if consumed:
                    raise SourceFileError(path, "no header: the file has only blank lines")
                raise SourceFileError(path, "the file is empty: a CSV file needs a header line")
        except csv.Error as e:
            if at_eof:
                raise SourceFileError(
                    path,
                    "unterminated quote in the header: a quoted column name is not closed "
                    "before the end of the file",
                    line=1,
                    byte_offset=0,
                ) from None
            raise SourceFileError(
                path, f"cannot parse the header: {e}", line=len(consumed)
            ) from None
        except _READ_ERRORS as e:
            raise _read_error(path, self.gzipped, e, 1, 0) from e

        empty = [i + 1 for i, name in enumerate(row) if not name.strip()]
        if empty:
            raise SourceFileError(
                path, f"empty column name in the header ({_columns(empty)})", line=len(consumed)
            )
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(row):
            seen.setdefault(name, []).append(i + 1)
        dups = [f"{name!r} ({_columns(cols)})" for name, cols in seen.items() if len(cols) > 1]
        if dups:
            raise SourceFileError(
                path, f"duplicate column names in the header: {'; '.join(dups)}", line=1
            )
        self.header = row
        self.build_row = _row_builder(row)
        return row, b"".join(consumed), len(consumed)

    # -- records -----------------------------------------------------------------------------

    def records(
        self, lines: Iterator[bytes], offset: int, line: int, start: int, progress: _Progress
    ) -> Iterator[RawRecord]:
        """Records from ``lines`` (which start at byte ``start``, line ``line``)."""
        header = self.header
        ncols = len(header)
        name = self.codec.name
        max_rec = self.max_record_bytes
        cap = min(self.field_size_limit, max_rec)  # a record this short needs no field checks
        pending: list[bytes] = []  # the lines of the record being parsed
        pushback: deque[bytes] = deque()  # lines to parse again after an unterminated quote
        bad_encoding = False
        broken = ""  # why the record being parsed cannot end: "eof" or "overflow"
        join = b"".join
        decode = bytes.decode
        record = RawRecord
        build = self.build_row

        def feed(src: Iterator[bytes]) -> Iterator[str]:
            nonlocal bad_encoding, broken
            size = 0
            append = pending.append
            for ln in src:
                if pending:
                    size += len(ln)
                    if size > max_rec:
                        pushback.appendleft(ln)
                        broken = "overflow"
                        return
                else:
                    size = len(ln)
                append(ln)
                try:
                    text = decode(ln, name)
                except UnicodeDecodeError:
                    bad_encoding = True
                    text = decode(ln, name, "replace")  # keeps delimiters and quotes in place
                yield text
            if pending:
                broken = "eof"

        src: Iterator[bytes] = lines
        try:
            while True:
                failure: csv.Error | None = None
                try:
                    for row in self._rows(feed(src)):
                        nlines = len(pending)
                        raw = join(pending)
                        pending.clear()
                        end = start + len(raw)
                        if bad_encoding or len(row) != ncols or end - start > cap or 0 in raw:
                            rec = self._check(row, raw, offset, line, start, end, bad_encoding)
                            bad_encoding = False
                            if rec is None:  # a blank line: not a record
                                line += nlines
                                start = end
                                continue
                        else:
                            rec = record(offset, line, start, end, raw, build(row))
                        offset += 1
                        line += nlines
                        start = end
                        progress.next = (offset, line, start)
                        yield rec
                except csv.Error as e:
                    # Strict parsing: a quote closed badly, or (when the feeder stopped because
                    # the record ran past the end of the file or max_record_bytes) no closing
                    # quote at all.
                    failure = e
                if failure is None:
                    if not broken:
                        progress.next = (offset, line, start)
                        return
                    failure = csv.Error("unexpected end of data")
                if broken or len(pending) > 1:
                    # A quoted field ran over line ends and never closed properly: the record
                    # is its first line only, and the other lines are parsed again.
                    first = pending[0]
                    pushback.extendleft(reversed(pending[1:]))
                    nlines = 1
                    end = start + len(first)
                    last_line = line + len(pending) - 1
                    rec = self._unterminated(first, broken, failure, last_line, offset, line, start)
                    src = _drain(pushback, lines)
                else:
                    # One line the csv module cannot parse: it starts afresh on the next line.
                    raw = pending[0]
                    nlines = 1
                    end = start + len(raw)
                    rec = self._csv_failure(failure, raw, offset, line, start, end)
                pending.clear()
                bad_encoding = False
                broken = ""
                offset += 1
                line += nlines
                start = end
                progress.next = (offset, line, start)
                yield rec  # then a new parser on the lines that follow
        except _READ_ERRORS as e:
            raise _read_error(self.path, self.gzipped, e, line, start) from e

    def _check(
        self,
        row: list[str],
        raw: bytes,
        offset: int,
        line: int,
        start: int,
        end: int,
        bad_encoding: bool,
    ) -> RawRecord | None:
        """The slow path: find what is wrong with a row (possibly nothing)."""
        if not row:
            return None
        codec = self.codec
        kind = ""
        problem = _encoding_problem(raw, 0, start, codec) if bad_encoding else None
        if problem is not None:
            kind = "invalid_encoding"
        else:
            problem = _nul_problem(raw, 0, start, codec)
            kind = "nul_byte"
        if problem is None and end - start > self.max_record_bytes:
            kind = "record_too_large"
            problem = (
                f"the record is {end - start} bytes long, over max_record_bytes "
                f"({self.max_record_bytes})"
            )
        if problem is None:
            limit = self.field_size_limit
            for i, value in enumerate(row):
                if len(value) > limit:
                    label = f" ({self.header[i]!r})" if i < len(self.header) else ""
                    kind = "field_too_large"
                    problem = (
                        f"field {i + 1}{label} is {len(value)} characters long, over "
                        f"field_size_limit ({limit})"
                    )
                    break
        if problem is None and len(row) != len(self.header):
            kind = "field_count"
            problem = f"expected {len(self.header)} fields, got {len(row)}"
        if problem is None:
            return RawRecord(offset, line, start, end, raw, self.build_row(row))
        return RawRecord(offset, line, start, end, raw, None, _where(line, start) + problem, kind)

    def _csv_failure(
        self, exc: csv.Error, raw: bytes, offset: int, line: int, start: int, end: int
    ) -> RawRecord:
        message = str(exc)
        if end - start > self.max_record_bytes:
            kind = "record_too_large"
            problem = (
                f"the record is {end - start} bytes long, over max_record_bytes "
                f"({self.max_record_bytes})"
            )
        elif "field limit" in message:
            kind = "field_too_large"
            problem = f"a field is longer than the csv module allows ({message})"
        elif "expected after" in message:
            kind = "bad_quote"
            problem = f"bad quoting: {message} (a quoted field must end at a delimiter or line end)"
        else:
            kind = "csv_error"
            problem = f"CSV syntax error: {message}"
        return RawRecord(offset, line, start, end, raw, None, _where(line, start) + problem, kind)

    def _unterminated(
        self,
        first: bytes,
        why: str,
        exc: csv.Error,
        last_line: int,
        offset: int,
        line: int,
        start: int,
    ) -> RawRecord:
        # Which field: parse the first line alone, leniently; the open field is the last one.
        text = first.decode(self.codec.name, "replace")
        partial = next(
            csv.reader([text], delimiter=self.delimiter, quotechar=self.quotechar, strict=False),
            [],
        )
        column = ""
        if partial:
            i = len(partial) - 1
            label = f" ({self.header[i]!r})" if i < len(self.header) else ""
            column = f" in field {i + 1}{label}"
        if why == "eof":
            reach = "is not closed before the end of the file"
        elif why == "overflow":
            reach = f"is not closed within max_record_bytes ({self.max_record_bytes} bytes)"
        else:
            reach = f"is not closed properly (line {last_line}: {exc})"
        problem = (
            f"unterminated quote{column}: the quoted field opened on this line {reach}; the "
            f"record is taken to be this line only and reading goes on at line {line + 1}"
        )
        return RawRecord(
            offset,
            line,
            start,
            start + len(first),
            first,
            None,
            _where(line, start) + problem,
            "unterminated_quote",
        )


def _columns(numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"column {numbers[0]}"
    return f"columns {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def _row_builder(header: list[str]) -> Callable[[list[str]], dict[str, Any]]:
    """A function turning a row of exactly ``len(header)`` fields into ``{name: value}``.

    Up to 256 columns it is generated code, ``v0, v1, ... = row; return {k0: v0, k1: v1, ...}``
    with the names bound as arguments of an enclosing function (they are never pasted into the
    source, which holds only generated identifiers): a dict display is about 25% faster than
    ``dict(zip(header, row))``, which is most of the time spent per record after parsing.
    """
    n = len(header)
    if n == 0 or n > 256:
        return lambda row: dict(zip(header, row, strict=True))
    keys = ", ".join(f"k{i}" for i in range(n))
    values = "".join(f"v{i}, " for i in range(n))
    items = ", ".join(f"k{i}: v{i}" for i in range(n))
    source = (
        f"def bind({keys}):\n"
        f"    def build(row):\n"
        f"        {values}= row\n"
        f"        return {{{items}}}\n"
        f"    return build\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "<csv row builder>", "exec"), namespace)  # noqa: S102 - see docstring
    return cast(Callable[[list[str]], dict[str, Any]], namespace["bind"](*header))


class _JsonlDecoder:
    def __init__(self, path: str, gzipped: bool, codec: _Codec, max_record_bytes: int) -> None:
        self.path = path
        self.gzipped = gzipped
        self.codec = codec
        self.max_record_bytes = max_record_bytes

    def records(
        self, lines: Iterator[bytes], offset: int, line: int, start: int, progress: _Progress
    ) -> Iterator[RawRecord]:
        decode = msgspec.json.decode
        max_rec = self.max_record_bytes
        text_codec = None if self.codec is _UTF8 else self.codec.name
        record = RawRecord
        min_deep = 2 * MAX_JSON_DEPTH  # a line this short cannot nest too deep
        try:
            for raw in lines:
                n = len(raw)
                end = start + n
                if n <= max_rec:
                    try:
                        obj = decode(raw) if text_codec is None else decode(str(raw, text_codec))
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        obj = None
                    if type(obj) is dict and (n <= min_deep or not _too_deep(raw, obj)):
                        rec = record(offset, line, start, end, raw, obj)
                        offset += 1
                        line += 1
                        start = end
                        progress.next = (offset, line, start)
                        yield rec
                        continue
                checked = self._check(raw, offset, line, start, end)
                line += 1
                start = end
                if checked is None:  # a blank line: not a record
                    continue
                offset += 1
                progress.next = (offset, line, start)
                yield checked
        except _READ_ERRORS as e:
            raise _read_error(self.path, self.gzipped, e, line, start) from e
        progress.next = (offset, line, start)

    def _check(self, raw: bytes, offset: int, line: int, start: int, end: int) -> RawRecord | None:
        """The slow path: find what is wrong with a line (possibly nothing: a BOM, a blank)."""
        codec = self.codec

        def failed(kind: str, problem: str) -> RawRecord:
            return RawRecord(
                offset, line, start, end, raw, None, _where(line, start) + problem, kind
            )

        if end - start > self.max_record_bytes:
            return failed(
                "record_too_large",
                f"the record is {end - start} bytes long, over max_record_bytes "
                f"({self.max_record_bytes})",
            )
        skip = len(codec.bom) if start == 0 and raw.startswith(codec.bom) else 0
        problem = _encoding_problem(raw, skip, start, codec)
        if problem is not None:
            return failed("invalid_encoding", problem)
        text = raw[skip:].decode(codec.name)
        if not text.strip(" \t\r\n"):
            return None
        problem = _nul_problem(raw, skip, start, codec)
        if problem is not None:
            return failed("nul_byte", problem)
        body: bytes | str = raw[skip:] if codec is _UTF8 else text
        try:
            obj = msgspec.json.decode(body)
        except RecursionError:
            return failed("too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        except msgspec.DecodeError as e:
            return failed("invalid_json", self._json_problem(e, body, start + skip))
        if type(obj) is not dict:
            return failed("not_an_object", f"expected a JSON object {{...}}, got {_kind(obj)}")
        if _depth_over(obj, MAX_JSON_DEPTH):
            return failed("too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return RawRecord(offset, line, start, end, raw, obj)

    @staticmethod
    def _json_problem(exc: msgspec.DecodeError, body: bytes | str, base: int) -> str:
        message = str(exc)
        m = _MSGSPEC_BYTE.search(message)
        if m is None or not isinstance(body, bytes):
            return f"invalid JSON: {message}"
        k = int(m.group(1))
        here = body[k:].lstrip(b"-")
        if here.startswith((b"NaN", b"Infinity")):
            return (
                f"invalid JSON: NaN and Infinity are not JSON values (at byte {base + k}); "
                "write them as null or a string"
            )
        return f"invalid JSON: {_MSGSPEC_BYTE.sub(f'(at byte {base + k})', message)}"


def _kind(obj: object) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int | float):
        return "a number"
    return "null" if obj is None else type(obj).__name__


def _too_deep(raw: bytes, obj: dict[str, Any]) -> bool:
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_over(obj, MAX_JSON_DEPTH)


def _depth_over(obj: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else cast(list[object], item)
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


# --------------------------------------------------------------------------------------------
# The reader


def open_reader(
    path: str,
    *,
    format: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    quotechar: str = '"',
    field_size_limit: int = 1_048_576,
    max_record_bytes: int = 8_388_608,
    start: ResumePoint | None = None,
    fileobj: BinaryIO | None = None,
) -> RecordReader:
    """Open ``path`` (or read ``fileobj``) for reading records; see :class:`RecordReader`.

    ``delimiter`` defaults to a tab for TSV (``.tsv`` or format ``tsv``) and a comma otherwise.
    """
    return RecordReader(
        path,
        format=format,
        encoding=encoding,
        delimiter=delimiter,
        quotechar=quotechar,
        field_size_limit=field_size_limit,
        max_record_bytes=max_record_bytes,
        start=start,
        fileobj=fileobj,
    )


class RecordReader:
    """Reads one file's records: a context manager and an iterator of :class:`RawRecord`.

    With ``fileobj``, reads that already-open binary file (seeking it itself) and uses ``path``
    only in messages; the caller keeps ownership (``close()`` does not close it). With ``start``,
    resumes at that point without reading the records before it (see the module docstring).
    """

    path: str
    format: str
    gzipped: bool
    encoding: str
    header: list[str] | None
    header_raw: bytes | None

    def __init__(
        self,
        path: str,
        *,
        format: str | None = None,
        encoding: str = "utf-8",
        delimiter: str | None = None,
        quotechar: str = '"',
        field_size_limit: int = 1_048_576,
        max_record_bytes: int = 8_388_608,
        start: ResumePoint | None = None,
        fileobj: BinaryIO | None = None,
    ) -> None:
        for label, value in (
            ("field_size_limit", field_size_limit),
            ("max_record_bytes", max_record_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, not {value!r}")
        if start is not None and (start.offset < 0 or start.line < 1 or start.byte < 0):
            raise ValueError(f"invalid resume point {start!r}")
        self.path = path
        self.header = None
        self.header_raw = None
        self._owns_file = fileobj is None
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None
        self._records: Iterator[RawRecord] = iter(())
        self._progress = _Progress((0, 1, 0))
        self._closed = False
        self._raw = fileobj if fileobj is not None else self._open_file(path)
        try:
            self._setup(
                format, encoding, delimiter, quotechar, field_size_limit, max_record_bytes, start
            )
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open_file(path: str) -> BinaryIO:
        try:
            return open(path, "rb")
        except FileNotFoundError:
            why = "broken symbolic link" if os.path.islink(path) else "file not found"
            raise SourceFileError(path, why) from None
        except IsADirectoryError:
            raise SourceFileError(path, "is a directory, not a file") from None
        except PermissionError:
            raise SourceFileError(path, "permission denied: cannot open the file") from None
        except OSError as e:
            raise SourceFileError(path, f"cannot open the file: {e.strerror or e}") from None

    def _setup(
        self,
        format: str | None,
        encoding: str,
        delimiter: str | None,
        quotechar: str,
        field_size_limit: int,
        max_record_bytes: int,
        start: ResumePoint | None,
    ) -> None:
        path = self.path
        raw = self._raw
        assert raw is not None
        try:
            raw.seek(0)
            magic = _read_upto(raw, 2)
            raw.seek(0)
        except (OSError, ValueError) as e:
            raise SourceFileError(path, f"cannot read the file: {e}") from None
        fmt, gzipped, tsv = _detect(path, format, magic)
        self.format = fmt
        self.gzipped = gzipped
        stream: BinaryIO
        if gzipped:
            stream = cast(BinaryIO, gzip.GzipFile(filename=path, fileobj=raw, mode="rb"))
        else:
            stream = raw
        self._stream = stream
        try:
            sample = _read_upto(stream, 4096)
            stream.seek(0)
        except _READ_ERRORS as e:
            raise _read_error(path, gzipped, e, 1, 0) from None
        codec = _resolve_codec(encoding, sample)
        self.encoding = codec.name
        if codec.unit == 1:
            wide = _looks_wide(sample)
            if wide is not None:
                raise SourceFileError(
                    path,
                    f"the file looks like {wide} but the encoding is {encoding!r}: set the "
                    "encoding to utf-16 / utf-32 (or convert the file to UTF-8)",
                    line=1,
                    byte_offset=0,
                )

        # gzip: read1, so that the data decompressed before a damaged spot comes out (and its
        # records are yielded) before the error; read() would drop the block it was filling.
        read = cast(gzip.GzipFile, stream).read1 if gzipped else stream.read

        def lines() -> Iterator[bytes]:
            return _byte_lines(read) if codec.unit == 1 else _wide_lines(read, codec)

        if fmt == "csv":
            delim = delimiter if delimiter is not None else ("\t" if tsv else ",")
            _check_dialect(delim, quotechar)
            _ensure_csv_field_limit(max_record_bytes + 1)
            decoder = _CsvDecoder(
                path, gzipped, codec, delim, quotechar, field_size_limit, max_record_bytes
            )
            head_lines = lines()
            header, header_raw, header_lines = decoder.read_header(head_lines)
            self.header = list(header)  # the caller's copy
            self.header_raw = header_raw
            if start is None:
                point = ResumePoint(0, header_lines + 1, len(header_raw))
                self._progress = _Progress(point)
                self._records = decoder.records(head_lines, *point, self._progress)
            else:
                if start.byte < len(header_raw):
                    raise ValueError(
                        f"{path}: resume point byte {start.byte} is inside the header "
                        f"(which ends at byte {len(header_raw)})"
                    )
                self._seek(stream, start, codec)
                self._progress = _Progress(start)
                self._records = decoder.records(lines(), *start, self._progress)
            self._decoder: _CsvDecoder | _JsonlDecoder = decoder
        else:
            jdecoder = _JsonlDecoder(path, gzipped, codec, max_record_bytes)
            point = start if start is not None else ResumePoint(0, 1, 0)
            if point.byte > 0:
                self._seek(stream, point, codec)
            self._progress = _Progress(point)
            self._records = jdecoder.records(lines(), *point, self._progress)
            self._decoder = jdecoder
        self._codec = codec

    def _seek(self, stream: BinaryIO, start: ResumePoint, codec: _Codec) -> None:
        """Seek to ``start.byte``, checking that the byte before it ends a line."""
        unit = codec.unit
        try:
            stream.seek(start.byte - unit)
            around = _read_upto(stream, 2 * unit)
            stream.seek(start.byte)
        except _READ_ERRORS as e:
            raise _read_error(self.path, self.gzipped, e, start.line, start.byte) from None
        if len(around) < unit:
            raise SourceChangedError(
                self.path,
                f"cannot resume at byte {start.byte}: the data is shorter than that "
                "(the file is not the one the position was saved for)",
                byte_offset=start.byte,
            )
        before, after = around[:unit], around[unit:]
        if len(around) > unit and (
            before not in (codec.cr, codec.lf) or (before == codec.cr and after == codec.lf)
        ):
            raise SourceChangedError(
                self.path,
                f"cannot resume at byte {start.byte}: it is not the start of a line (the file "
                "is not the one the position was saved for)",
                line=start.line,
                byte_offset=start.byte,
            )

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[RawRecord]:
        return self._records

    def __next__(self) -> RawRecord:
        return next(self._records)

    @property
    def position(self) -> ResumePoint:
        """Where the next record starts: just after the last record yielded (after the end of
        the data once the reader is exhausted). Pass it as ``start`` to resume there."""
        return self._progress.position()

    def bytes_read(self) -> int:
        """Bytes consumed, for progress: compressed bytes for gzip, else the position's byte."""
        if self.gzipped and self._raw is not None and not self._closed:
            try:
                return self._raw.tell()
            except (OSError, ValueError):
                pass
        return self._progress.next[2]

    def reparse(self, raw: bytes, at: ResumePoint | None = None) -> RawRecord:
        """Decode one record's ``raw`` bytes again with this reader's header and dialect.

        Used to retry dead-lettered records without the file. The result is numbered from
        ``at`` (default: offset 0, line 1, byte 0). Bytes that hold no record or more than
        one come back as an error (``empty_record`` / ``multiple_records``).
        """
        at = at if at is not None else ResumePoint(0, 1, 0)
        stream = cast(BinaryIO, io.BytesIO(raw))
        codec = self._codec
        read = stream.read
        lines = _byte_lines(read) if codec.unit == 1 else _wide_lines(read, codec)
        found = list(self._decoder.records(lines, *at, _Progress(at)))
        end = at.byte + len(raw)
        if len(found) == 1:
            return replace(found[0], raw=raw, byte_end=end)
        where = _where(at.line, at.byte)
        if not found:
            return RawRecord(
                *at, end, raw, None, where + "no record in these bytes (blank)", "empty_record"
            )
        return RawRecord(
            *at,
            end,
            raw,
            None,
            where + f"these bytes hold {len(found)} records, not one",
            "multiple_records",
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._records, "close", None)
        if close is not None:
            close()
        if self._stream is not None and self._stream is not self._raw:
            self._stream.close()  # the gzip / buffering layers; they do not close the file
        if self._owns_file and self._raw is not None:
            self._raw.close()

    def __enter__(self) -> RecordReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _read_upto(f: BinaryIO, n: int) -> bytes:
    """Read ``n`` bytes, fewer only at the end of the file (raw files may return short reads)."""
    data = f.read(n)
    while 0 < len(data) < n:
        more = f.read(n - len(data))
        if not more:
            break
        data += more
    return data


def _check_dialect(delimiter: str, quotechar: str) -> None:
    for label, value in (("delimiter", delimiter), ("quotechar", quotechar)):
        if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
            raise ConfigError(f"{label} must be one character (not a line break), not {value!r}")
    if delimiter == quotechar:
        raise ConfigError(f"delimiter and quotechar must differ (both are {delimiter!r})")


def _ensure_csv_field_limit(needed: int) -> None:
    """The csv module's field limit is process-wide: raise it (never lower it) so that only
    our own limits apply to records up to ``max_record_bytes``."""
    needed = min(needed, 2**31 - 1)
    if csv.field_size_limit() < needed:
        csv.field_size_limit(needed)
