"""The CSV decoder: the header, then records with exact byte accounting and every kind of
bad row turned into a record with an error (see ``readers``)."""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from journal_loader.errors import ConfigError, SourceFileError
from journal_loader.sources.encoding import Codec, encoding_problem, nul_problem
from journal_loader.sources.lines import drain
from journal_loader.sources.records import (
    READ_ERRORS,
    Progress,
    RawRecord,
    read_error,
    where_prefix,
)


class CsvDecoder:
    def __init__(
        self,
        path: str,
        gzipped: bool,
        codec: Codec,
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
                problem = encoding_problem(ln, skip, here, codec)
                if problem is None:
                    problem = nul_problem(ln, skip, here, codec)
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
        except READ_ERRORS as e:
            raise read_error(path, self.gzipped, e, 1, 0) from e

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
        self, lines: Iterator[bytes], offset: int, line: int, start: int, progress: Progress
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
        # A record's fields are kept for RecordParsed (RawRecord.fields) where they are, by
        # construction, what TextContext.fields (journal/parsed.py, version 1 of the split,
        # fixed) makes of raw.decode(): the text is UTF-8, as raw.decode() reads it; it is one
        # line with no CR before its terminator, where that function either splits on the
        # delimiter (no quote character: csv splits the same) or hands the line to a new csv
        # reader of the run's dialect, which is this reader's (RunStarted.reader is written
        # from these options: runner/registration.py) at the start of a record, as this
        # one is here. A line break or CR inside quotes takes the other path there, so no
        # fields here. Pinned by tests/test_parsed.py (the reader's fields equal the split
        # for any text, hypothesis; the same events with them as without).
        utf8 = name == "utf-8"
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
                        elif utf8 and nlines == 1:
                            cr = raw.find(b"\r")
                            rec = record(
                                offset,
                                line,
                                start,
                                end,
                                raw,
                                build(row),
                                None,
                                None,
                                row if cr < 0 or (cr == len(raw) - 2 and raw[-1] == 10) else None,
                            )
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
                    src = drain(pushback, lines)
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
        except READ_ERRORS as e:
            raise read_error(self.path, self.gzipped, e, line, start) from e

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
        problem = encoding_problem(raw, 0, start, codec) if bad_encoding else None
        if problem is not None:
            kind = "invalid_encoding"
        else:
            problem = nul_problem(raw, 0, start, codec)
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
        return RawRecord(
            offset, line, start, end, raw, None, where_prefix(line, start) + problem, kind
        )

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
        return RawRecord(
            offset, line, start, end, raw, None, where_prefix(line, start) + problem, kind
        )

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
            where_prefix(line, start) + problem,
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


def check_dialect(delimiter: str, quotechar: str) -> None:
    for label, value in (("delimiter", delimiter), ("quotechar", quotechar)):
        if not isinstance(value, str) or len(value) != 1 or value in "\r\n":
            raise ConfigError(f"{label} must be one character (not a line break), not {value!r}")
    if delimiter == quotechar:
        raise ConfigError(f"delimiter and quotechar must differ (both are {delimiter!r})")


def ensure_csv_field_limit(needed: int) -> None:
    """The csv module's field limit is process-wide: raise it (never lower it) so that only
    our own limits apply to records up to ``max_record_bytes``."""
    needed = min(needed, 2**31 - 1)
    if csv.field_size_limit() < needed:
        csv.field_size_limit(needed)
