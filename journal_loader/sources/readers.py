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
    ``duplicate_key``     JSONL: a key twice in one object (a parser would keep the last
                          value only: jsonl_decoder.py says how it is found cheaply);
                          ``duplicate_keys="last"`` keeps the last value instead
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

import dataclasses
import gzip
import io
import os
from collections.abc import Iterator
from dataclasses import replace
from types import TracebackType
from typing import BinaryIO, Unpack, cast

from journal_loader.errors import SourceChangedError, SourceFileError
from journal_loader.sources.csv_decoder import CsvDecoder, check_dialect, ensure_csv_field_limit
from journal_loader.sources.encoding import (
    Codec,
    RecordFormat,
    detect,
    detect_format,
    looks_wide,
    resolve_codec,
)
from journal_loader.sources.jsonl_decoder import MAX_JSON_DEPTH, JsonlDecoder
from journal_loader.sources.lines import byte_lines, wide_lines
from journal_loader.sources.options import DEFAULT_READER_OPTIONS, ReaderOptions, ReaderOverrides
from journal_loader.sources.records import (
    READ_ERRORS,
    Progress,
    RawRecord,
    ResumePoint,
    read_error,
    where_prefix,
)

__all__ = [
    "MAX_JSON_DEPTH",
    "RawRecord",
    "ReaderOptions",
    "RecordReader",
    "ResumePoint",
    "detect_format",
    "open_reader",
]


def open_reader(
    path: str,
    options: ReaderOptions = DEFAULT_READER_OPTIONS,
    *,
    start: ResumePoint | None = None,
    fileobj: BinaryIO | None = None,
    **overrides: Unpack[ReaderOverrides],
) -> RecordReader:
    """Open ``path`` (or read ``fileobj``) for reading records; see :class:`RecordReader`.

    Reads with ``options``, with any option given as a keyword argument instead
    (``open_reader(path, delimiter=";")``). ``delimiter`` defaults to a tab for TSV (``.tsv``
    or format ``tsv``) and a comma otherwise.
    """
    if overrides:
        options = replace(options, **overrides)
    return RecordReader(path, options, start=start, fileobj=fileobj)


class RecordReader:
    """Reads one file's records: a context manager and an iterator of :class:`RawRecord`.

    With ``fileobj``, reads that already-open binary file (seeking it itself) and uses ``path``
    only in messages; the caller keeps ownership (``close()`` does not close it). With ``start``,
    resumes at that point without reading the records before it (see the module docstring).
    """

    path: str
    options: ReaderOptions  # as given (format: as configured, None when detected)
    format: RecordFormat  # what the reader found
    gzipped: bool
    encoding: str
    header: list[str] | None
    header_raw: bytes | None

    def __init__(
        self,
        path: str,
        options: ReaderOptions = DEFAULT_READER_OPTIONS,
        *,
        start: ResumePoint | None = None,
        fileobj: BinaryIO | None = None,
    ) -> None:
        if start is not None and (start.offset < 0 or start.line < 1 or start.byte < 0):
            raise ValueError(f"invalid resume point {start!r}")
        self.path = path
        self.options = options
        self.header = None
        self.header_raw = None
        self._owns_file = fileobj is None
        self._raw: BinaryIO | None = None
        self._stream: BinaryIO | None = None
        self._records: Iterator[RawRecord] = iter(())
        self._progress = Progress((0, 1, 0))
        self._closed = False
        self._raw = fileobj if fileobj is not None else self._open_file(path)
        try:
            self._setup(options, start)
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

    def _setup(self, options: ReaderOptions, start: ResumePoint | None) -> None:
        format, encoding, delimiter = options.format, options.encoding, options.delimiter
        quotechar = options.quotechar
        field_size_limit, max_record_bytes = options.field_size_limit, options.max_record_bytes
        path = self.path
        raw = self._raw
        assert raw is not None
        try:
            raw.seek(0)
            magic = _read_upto(raw, 2)
            raw.seek(0)
        except (OSError, ValueError) as e:
            raise SourceFileError(path, f"cannot read the file: {e}") from None
        fmt, gzipped, tsv = detect(path, format, magic)
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
        except READ_ERRORS as e:
            raise read_error(path, gzipped, e, 1, 0) from None
        codec = resolve_codec(encoding, sample)
        self.encoding = codec.name
        if codec.unit == 1:
            wide = looks_wide(sample)
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
            return byte_lines(read) if codec.unit == 1 else wide_lines(read, codec)

        if fmt == "csv":
            delim = delimiter if delimiter is not None else ("\t" if tsv else ",")
            if delimiter is None and tsv:
                # Journaled as used (RunStarted.reader): a DLQ retry re-parses raw bytes
                # without the file name, and a null delimiter there means a comma.
                # tests/test_reader_options.py::test_dlq_retry_of_a_tsv_source pins it.
                self.options = dataclasses.replace(self.options, delimiter=delim)
            check_dialect(delim, quotechar)
            ensure_csv_field_limit(max_record_bytes + 1)
            decoder = CsvDecoder(
                path, gzipped, codec, delim, quotechar, field_size_limit, max_record_bytes
            )
            head_lines = lines()
            header, header_raw, header_lines = decoder.read_header(head_lines)
            self.header = list(header)  # the caller's copy
            self.header_raw = header_raw
            if start is None:
                point = ResumePoint(0, header_lines + 1, len(header_raw))
                self._progress = Progress(point)
                self._records = decoder.records(head_lines, *point, self._progress)
            else:
                if start.byte < len(header_raw):
                    raise ValueError(
                        f"{path}: resume point byte {start.byte} is inside the header "
                        f"(which ends at byte {len(header_raw)})"
                    )
                self._seek(stream, start, codec)
                self._progress = Progress(start)
                self._records = decoder.records(lines(), *start, self._progress)
            self._decoder: CsvDecoder | JsonlDecoder = decoder
        else:
            jdecoder = JsonlDecoder(
                path, gzipped, codec, max_record_bytes, options.duplicate_keys == "last"
            )
            point = start if start is not None else ResumePoint(0, 1, 0)
            if point.byte > 0:
                self._seek(stream, point, codec)
            self._progress = Progress(point)
            self._records = jdecoder.records(lines(), *point, self._progress)
            self._decoder = jdecoder
        self._codec = codec

    def _seek(self, stream: BinaryIO, start: ResumePoint, codec: Codec) -> None:
        """Seek to ``start.byte``, checking that the byte before it ends a line."""
        unit = codec.unit
        try:
            stream.seek(start.byte - unit)
            around = _read_upto(stream, 2 * unit)
            stream.seek(start.byte)
        except READ_ERRORS as e:
            raise read_error(self.path, self.gzipped, e, start.line, start.byte) from None
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
        return self._progress.byte

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
        lines = byte_lines(read) if codec.unit == 1 else wide_lines(read, codec)
        found = list(self._decoder.records(lines, *at, Progress(at)))
        end = at.byte + len(raw)
        if len(found) == 1:
            return replace(found[0], raw=raw, byte_end=end)
        where = where_prefix(at.line, at.byte)
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
