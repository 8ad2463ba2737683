"""Record readers: byte-exact accounting, bad input, file-level errors, resume by seeking."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import stat
import zlib
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from journal_loader.errors import ConfigError, SourceChangedError, SourceFileError
from journal_loader.sources import jsonl_decoder, readers
from journal_loader.sources.encoding import looks_wide
from journal_loader.sources.readers import (
    RawRecord,
    RecordReader,
    ResumePoint,
    detect_format,
    open_reader,
)

HEADER = b"id,name,city\n"


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_all(path: str, **kwargs: Any) -> tuple[RecordReader, list[RawRecord]]:
    with open_reader(path, **kwargs) as reader:
        records = list(reader)
    return reader, records


def check_accounting(
    data: bytes, start: int, records: list[RawRecord], blank: bytes = b"\r\n"
) -> None:
    """Every record's raw is its slice of the file, offsets are consecutive, line numbers are
    the physical line the record starts on, and what lies between records is blank lines
    (made of the ``blank`` characters)."""
    pos = start
    line = len(data[:start].splitlines()) + 1  # bytes.splitlines: exactly LF, CRLF and CR
    for i, rec in enumerate(records):
        assert rec.offset == i
        assert rec.raw == data[rec.byte_start : rec.byte_end]
        assert rec.byte_start >= pos
        gap = data[pos : rec.byte_start]
        assert gap.strip(blank) == b""
        line += len(gap.splitlines())
        assert rec.line == line
        assert (rec.data is None) == (rec.error is not None) == (rec.error_type is not None)
        line += len(rec.raw.splitlines())
        pos = rec.byte_end
    assert data[pos:].strip(blank) == b""


class Trickle(io.BytesIO):
    """A file whose reads return at most ``step`` bytes, as raw files and pipes may."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0 or size > self.step:
            size = self.step
        return super().read(size)


def errors_of(records: list[RawRecord]) -> list[tuple[int, str | None]]:
    return [(r.offset, r.error_type) for r in records if r.error is not None]


# --------------------------------------------------------------------------------------------
# CSV: the normal cases


def test_csv_records_carry_offsets_lines_and_bytes(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\n2,Bob,Rome\n3,Cy,Nice\n"
    reader, records = read_all(write(tmp_path, "a.csv", data))
    assert reader.format == "csv" and reader.gzipped is False
    assert reader.header == ["id", "name", "city"]
    assert reader.header_raw == HEADER
    assert [r.data for r in records] == [
        {"id": "1", "name": "Ann", "city": "Oslo"},
        {"id": "2", "name": "Bob", "city": "Rome"},
        {"id": "3", "name": "Cy", "city": "Nice"},
    ]
    assert [(r.offset, r.line, r.byte_start, r.byte_end) for r in records] == [
        (0, 2, 13, 24),
        (1, 3, 24, 35),
        (2, 4, 35, 45),
    ]
    assert records[1].raw == b"2,Bob,Rome\n"
    assert reader.position == ResumePoint(3, 5, len(data))
    check_accounting(data, len(HEADER), records)


def test_position_moves_with_each_record(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\n2,Bob,Rome\n"
    with open_reader(write(tmp_path, "a.csv", data)) as reader:
        assert reader.position == ResumePoint(0, 2, 13)
        first = next(reader)
        assert reader.position == ResumePoint(1, 3, first.byte_end)
        next(reader)
        assert reader.position == ResumePoint(2, 4, len(data))
        with pytest.raises(StopIteration):
            next(reader)


def test_crlf_lf_and_bare_cr_line_ends_mixed(tmp_path: Path) -> None:
    data = b"id,name,city\r\n1,Ann,Oslo\r2,Bob,Rome\n3,Cy,Nice\r\n4,Di,Bern"
    reader, records = read_all(write(tmp_path, "a.csv", data))
    assert reader.header == ["id", "name", "city"]
    assert [r.data["id"] for r in records if r.data] == ["1", "2", "3", "4"]
    assert [r.raw for r in records] == [
        b"1,Ann,Oslo\r",
        b"2,Bob,Rome\n",
        b"3,Cy,Nice\r\n",
        b"4,Di,Bern",
    ]
    assert [r.line for r in records] == [2, 3, 4, 5]
    assert reader.position == ResumePoint(4, 6, len(data))
    check_accounting(data, 14, records)


def test_quoted_line_breaks_are_part_of_the_field(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann\r\nMarie","Oslo\rNorth"\n2,"B""ob","a\nb"\n3,Cy,Nice\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert [r.data for r in records] == [
        {"id": "1", "name": "Ann\r\nMarie", "city": "Oslo\rNorth"},
        {"id": "2", "name": 'B"ob', "city": "a\nb"},
        {"id": "3", "name": "Cy", "city": "Nice"},
    ]
    assert [r.line for r in records] == [2, 5, 7]
    check_accounting(data, len(HEADER), records)


def test_utf8_bom_is_stripped_from_the_header_and_counted_in_bytes(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + HEADER + "1,Åse,Tromsø\n".encode()
    reader, records = read_all(write(tmp_path, "a.csv", data))
    assert reader.header == ["id", "name", "city"]
    assert reader.header_raw == b"\xef\xbb\xbf" + HEADER
    assert records[0].byte_start == 16
    assert records[0].data == {"id": "1", "name": "Åse", "city": "Tromsø"}
    assert reader.header_raw + records[0].raw == data


def test_delimiter_quotechar_and_tsv_default(tmp_path: Path) -> None:
    data = b"a;b\n'x;y';'it''s'\n"
    _, records = read_all(write(tmp_path, "a.csv", data), delimiter=";", quotechar="'")
    assert records[0].data == {"a": "x;y", "b": "it's"}
    tsv = write(tmp_path, "a.tsv", b"a\tb\nx,y\tz\n")
    reader, records = read_all(tsv)
    assert reader.header == ["a", "b"]
    assert records[0].data == {"a": "x,y", "b": "z"}


def test_header_only_yields_no_records(tmp_path: Path) -> None:
    for name, data in (("a.csv", HEADER), ("b.csv", b"id,name,city")):
        reader, records = read_all(write(tmp_path, name, data))
        assert records == []
        assert reader.header == ["id", "name", "city"]
        assert reader.position == ResumePoint(0, 2, len(data))


def test_header_after_blank_lines_and_over_two_lines(tmp_path: Path) -> None:
    data = b'\r\n\nid,"full\nname"\n1,Ann\n'
    reader, records = read_all(write(tmp_path, "a.csv", data))
    assert reader.header == ["id", "full\nname"]
    assert reader.header_raw == b'\r\n\nid,"full\nname"\n'
    assert [(r.line, r.data) for r in records] == [(5, {"id": "1", "full\nname": "Ann"})]
    reader.header.append("mutated")  # the caller's copy: reading is not affected
    assert reader.reparse(b"2,Bob\n").data == {"id": "2", "full\nname": "Bob"}


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    data = HEADER + b"\n1,Ann,Oslo\n\r\n\n2,Bob,Rome\n\n"
    reader, records = read_all(write(tmp_path, "a.csv", data))
    assert [(r.offset, r.line) for r in records] == [(0, 3), (1, 6)]
    assert all(r.error is None for r in records)
    assert reader.position == ResumePoint(2, 8, len(data))
    check_accounting(data, len(HEADER), records)


def test_other_single_byte_encoding(tmp_path: Path) -> None:
    data = "id,name\n1,Åse Ærø\n".encode("cp1252")
    _, records = read_all(write(tmp_path, "a.csv", data), encoding="cp1252")
    assert records[0].data == {"id": "1", "name": "Åse Ærø"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_declared_utf16_and_utf32(tmp_path: Path, encoding: str) -> None:
    text = 'id,name\r\n1,"Åse\nÆ"\r2,𝄞 bob\n'
    data = text.encode(encoding)
    reader, records = read_all(write(tmp_path, "a.csv", data), encoding=encoding)
    assert reader.header == ["id", "name"]
    assert [r.data for r in records] == [
        {"id": "1", "name": "Åse\nÆ"},
        {"id": "2", "name": "𝄞 bob"},
    ]
    assert [r.line for r in records] == [2, 4]
    assert reader.header_raw + b"".join(r.raw for r in records) == data
    resumed = list(
        open_reader(reader.path, encoding=encoding, start=ResumePoint(1, 4, records[1].byte_start))
    )
    assert resumed == records[1:]


# --------------------------------------------------------------------------------------------
# CSV: bad records come out as errors, and the rest of the file is intact


def test_invalid_utf8_is_a_record_error_with_the_byte_offset(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\n2,B\xffb,Rome\n3,Cy,Nice\n"
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert len(records) == 3
    bad = records[1]
    assert bad.data is None and bad.error_type == "invalid_encoding"
    assert bad.raw == b"2,B\xffb,Rome\n"
    assert bad.error == "line 3 (byte 24): invalid UTF-8 byte 0xff at byte 27 (invalid start byte)"
    assert records[2].data == {"id": "3", "name": "Cy", "city": "Nice"}
    check_accounting(data, len(HEADER), records)


def test_invalid_utf8_inside_a_multiline_field(tmp_path: Path) -> None:
    data = HEADER + b'1,"A\nn\xe2\x82",Oslo\n2,Bob,Rome\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "invalid_encoding")]
    assert records[0].raw == b'1,"A\nn\xe2\x82",Oslo\n'
    assert "invalid UTF-8 bytes 0xe2 0x82 at byte 19" in (records[0].error or "")
    assert records[1].data == {"id": "2", "name": "Bob", "city": "Rome"}


def test_nul_byte_is_a_record_error(tmp_path: Path) -> None:
    data = HEADER + b"1,A\x00n,Oslo\n2,Bob,Rome\n"
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "nul_byte")]
    assert records[0].raw == b"1,A\x00n,Oslo\n"
    assert records[0].error == "line 2 (byte 13): NUL byte (0x00) at byte 16"
    assert records[1].data is not None
    check_accounting(data, len(HEADER), records)


def test_wrong_field_count_says_expected_and_got(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo,extra\n2,Bob\n3,Cy,Nice\n"
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "field_count"), (1, "field_count")]
    assert records[0].error == "line 2 (byte 13): expected 3 fields, got 4"
    assert records[1].error == "line 3 (byte 30): expected 3 fields, got 2"
    assert records[1].raw == b"2,Bob\n"
    assert records[2].data == {"id": "3", "name": "Cy", "city": "Nice"}
    check_accounting(data, len(HEADER), records)


def test_field_over_the_cap(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\n2," + b"x" * 11 + b",Rome\n3,Cy,Nice\n"
    _, records = read_all(write(tmp_path, "a.csv", data), field_size_limit=10)
    assert errors_of(records) == [(1, "field_too_large")]
    assert "field 2 ('name') is 11 characters long, over field_size_limit (10)" in (
        records[1].error or ""
    )
    assert records[1].raw == b"2," + b"x" * 11 + b",Rome\n"
    assert records[2].data is not None
    check_accounting(data, len(HEADER), records)


def test_record_over_max_record_bytes(tmp_path: Path) -> None:
    long = b"2," + b"y" * 60 + b",Rome\n"
    data = HEADER + b"1,Ann,Oslo\n" + long + b"3,Cy,Nice\n"
    _, records = read_all(write(tmp_path, "a.csv", data), max_record_bytes=40)
    assert errors_of(records) == [(1, "record_too_large")]
    assert records[1].raw == long
    assert "the record is 68 bytes long, over max_record_bytes (40)" in (records[1].error or "")
    assert records[2].data == {"id": "3", "name": "Cy", "city": "Nice"}
    check_accounting(data, len(HEADER), records)


def test_unterminated_quote_at_end_of_file_does_not_swallow_the_rest(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann,Oslo\n2,Bob,Rome\n3,Cy,Nice\n4,Di,Bern\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert len(records) == 4
    assert errors_of(records) == [(0, "unterminated_quote")]
    bad = records[0]
    assert bad.raw == b'1,"Ann,Oslo\n'
    assert (bad.byte_start, bad.byte_end, bad.line) == (13, 25, 2)
    assert bad.error == (
        "line 2 (byte 13): unterminated quote in field 2 ('name'): the quoted field opened on "
        "this line is not closed before the end of the file; the record is taken to be this "
        "line only and reading goes on at line 3"
    )
    assert [r.data for r in records[1:]] == [
        {"id": "2", "name": "Bob", "city": "Rome"},
        {"id": "3", "name": "Cy", "city": "Nice"},
        {"id": "4", "name": "Di", "city": "Bern"},
    ]
    assert [r.line for r in records] == [2, 3, 4, 5]
    check_accounting(data, len(HEADER), records)


def test_quote_closed_badly_on_a_later_line_is_unterminated(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann,Oslo\n2,Bob,Rome\n3,"Cy",Nice\n4,Di,Bern\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "unterminated_quote")]
    assert records[0].raw == b'1,"Ann,Oslo\n'
    assert "is not closed properly (line 4: ',' expected after '\"')" in (records[0].error or "")
    assert [r.data["id"] for r in records[1:] if r.data] == ["2", "3", "4"]
    check_accounting(data, len(HEADER), records)


def test_bad_quote_on_one_line(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann"x,Oslo\n2,Bob,Rome\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "bad_quote")]
    assert records[0].raw == b'1,"Ann"x,Oslo\n'
    assert records[0].error == (
        "line 2 (byte 13): bad quoting: ',' expected after '\"' (a quoted field must end at a "
        "delimiter or line end)"
    )
    assert records[1].data == {"id": "2", "name": "Bob", "city": "Rome"}
    check_accounting(data, len(HEADER), records)


def test_unterminated_quote_past_max_record_bytes(tmp_path: Path) -> None:
    body = b"".join(b"%d,name%d,city\n" % (i, i) for i in range(2, 40))
    data = HEADER + b'1,"Ann,Oslo\n' + body
    _, records = read_all(write(tmp_path, "a.csv", data), max_record_bytes=100)
    assert errors_of(records) == [(0, "unterminated_quote")]
    assert records[0].raw == b'1,"Ann,Oslo\n'
    assert "not closed within max_record_bytes (100 bytes)" in (records[0].error or "")
    assert [r.data["id"] for r in records[1:] if r.data] == [str(i) for i in range(2, 40)]
    check_accounting(data, len(HEADER), records)


def test_two_unterminated_quotes_in_a_row(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann,Oslo\n2,"Bob,Rome\n3,Cy,Nice\n'
    _, records = read_all(write(tmp_path, "a.csv", data))
    assert errors_of(records) == [(0, "unterminated_quote"), (1, "unterminated_quote")]
    assert [r.raw for r in records] == [b'1,"Ann,Oslo\n', b'2,"Bob,Rome\n', b"3,Cy,Nice\n"]
    check_accounting(data, len(HEADER), records)


# --------------------------------------------------------------------------------------------
# CSV: file-level errors


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.csv")
    with pytest.raises(SourceFileError, match="file not found") as exc:
        open_reader(path)
    assert exc.value.path == path and path in str(exc.value)


def test_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "dir.csv"
    path.mkdir()
    with pytest.raises(SourceFileError, match="is a directory"):
        open_reader(str(path))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "a.csv", HEADER)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(readers, "open", refuse, raising=False)
    with pytest.raises(SourceFileError, match="permission denied") as exc:
        open_reader(path)
    assert path in str(exc.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_for_real(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", HEADER)
    os.chmod(path, 0)
    try:
        with pytest.raises(SourceFileError, match="permission denied"):
            open_reader(path)
    finally:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)


def test_broken_symlink_and_symlink_followed(tmp_path: Path) -> None:
    target = write(tmp_path, "real.csv", HEADER + b"1,Ann,Oslo\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    _, records = read_all(str(link))
    assert records[0].data == {"id": "1", "name": "Ann", "city": "Oslo"}
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "gone.csv")
    with pytest.raises(SourceFileError, match="broken symbolic link"):
        open_reader(str(dangling))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\r\n", "only blank lines"),
        (b"id,name,id\n1,a,b\n", r"duplicate column names in the header: 'id' \(columns 1 and 3\)"),
        (b"id,,name, \n", r"empty column name in the header \(columns 2 and 4\)"),
        (b'id,"na"me\n', "cannot parse the header: ',' expected after"),
        (b'id,"name\n1,2\n', "unterminated quote in the header"),
        (b"id,n\xe9m\n1,2\n", r"invalid UTF-8 byte 0xe9 at byte 4"),
        (b"id,n\x00m\n1,2\n", "NUL byte"),
    ],
)
def test_bad_headers(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, "a.csv", data)
    with pytest.raises(SourceFileError, match=message) as exc:
        open_reader(path)
    assert str(exc.value).startswith(path)


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        ("id,name\n1,Ann\n".encode("utf-16"), "UTF-16 (it starts with the byte-order mark FF FE)"),
        ("id,name\n1,Ann\n".encode("utf-16-le"), "UTF-16 (the first line has NUL bytes"),
        ("id,name\n1,Ann\n".encode("utf-16-be"), "UTF-16 (the first line has NUL bytes"),
        ("id,name\n1,Ann\n".encode("utf-32"), "UTF-32 (it starts with the byte-order mark"),
        ("id,name\n1,Ann\n".encode("utf-32-be"), "UTF-32 (the first line has three NUL"),
    ],
)
def test_utf16_or_utf32_without_the_encoding_declared(
    tmp_path: Path, data: bytes, looks_like: str
) -> None:
    for name in ("a.csv", "a.jsonl"):
        path = write(tmp_path, name, data)
        with pytest.raises(SourceFileError) as exc:
            open_reader(path)
        assert f"looks like {looks_like}" in str(exc.value)
        assert "set the encoding to utf-16 / utf-32" in str(exc.value)


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", HEADER)
    with pytest.raises(ConfigError, match="unknown encoding"):
        open_reader(path, encoding="klingon")
    with pytest.raises(ConfigError, match="not supported"):
        open_reader(path, encoding="cp037")  # EBCDIC: line breaks are not ASCII bytes
    with pytest.raises(ConfigError, match="delimiter must be one character"):
        open_reader(path, delimiter=";;")
    with pytest.raises(ConfigError, match="must differ"):
        open_reader(path, delimiter='"')
    with pytest.raises(ConfigError, match="max_record_bytes"):
        open_reader(path, max_record_bytes=0)
    with pytest.raises(ConfigError, match="cannot tell the format"):
        open_reader(write(tmp_path, "a.dat", HEADER))


# --------------------------------------------------------------------------------------------
# gzip


def test_gzip_is_read_like_the_plain_file(tmp_path: Path) -> None:
    data = HEADER + b"".join(b"%d,n%d,c\n" % (i, i) for i in range(1000))
    plain = read_all(write(tmp_path, "a.csv", data))[1]
    reader, zipped = read_all(write(tmp_path, "a.csv.gz", gzip.compress(data)))
    assert reader.gzipped is True and reader.format == "csv"
    assert zipped == plain
    # detected by magic bytes too, whatever the name says
    reader, unnamed = read_all(write(tmp_path, "b.csv", gzip.compress(data)))
    assert reader.gzipped is True and unnamed == plain


def test_truncated_gzip_yields_records_before_the_damage(tmp_path: Path) -> None:
    data = HEADER + b"".join(
        b"%d,n%d,%s\n" % (i, i, os.urandom(8).hex().encode()) for i in range(20000)
    )
    packed = gzip.compress(data)
    path = write(tmp_path, "a.csv.gz", packed[: len(packed) // 2])
    seen: list[RawRecord] = []
    with open_reader(path) as reader, pytest.raises(SourceFileError) as exc:
        for rec in reader:
            seen.append(rec)
    # every record that can be decompressed in full came out
    readable = zlib.decompressobj(wbits=31).decompress(packed[: len(packed) // 2])
    complete = readable[: readable.rfind(b"\n") + 1]
    assert 0 < len(seen) == complete.count(b"\n") - 1 < 20000
    assert all(r.error is None for r in seen)
    check_accounting(complete, len(HEADER), seen)
    message = str(exc.value)
    assert message.startswith(path)
    assert "the gzip data is truncated or corrupt (Compressed file ended" in message
    assert f"the record starting at byte {seen[-1].byte_end} of the decompressed data" in message
    assert exc.value.byte_offset == seen[-1].byte_end
    assert exc.value.line == len(seen) + 2


def test_corrupt_gzip_header(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv.gz", b"\x1f\x8b\x08garbage-garbage-garbage")
    with pytest.raises(SourceFileError, match="gzip data is truncated or corrupt"):
        list(open_reader(path))


def test_bytes_read_counts_compressed_bytes_for_gzip(tmp_path: Path) -> None:
    data = HEADER + b"".join(b"%d,same,same\n" % i for i in range(50000))
    packed = gzip.compress(data)
    with open_reader(write(tmp_path, "a.csv.gz", packed)) as reader:
        for _ in reader:
            pass
        assert 0 < reader.bytes_read() <= len(packed) < len(data)
    with open_reader(write(tmp_path, "a.csv", data)) as reader:
        for _ in reader:
            pass
        assert reader.bytes_read() == len(data)


# --------------------------------------------------------------------------------------------
# JSONL


def test_jsonl_records_blank_lines_and_bom(tmp_path: Path) -> None:
    data = b'\xef\xbb\xbf{"a": 1}\n\n  \r\n{"a": [1, {"b": null}], "c": "\xc3\xa9"}\r\n{"a": 3}'
    reader, records = read_all(write(tmp_path, "a.jsonl", data))
    assert reader.format == "jsonl" and reader.header is None and reader.header_raw is None
    assert [r.data for r in records] == [{"a": 1}, {"a": [1, {"b": None}], "c": "é"}, {"a": 3}]
    assert [(r.offset, r.line) for r in records] == [(0, 1), (1, 4), (2, 5)]
    assert records[0].raw == b'\xef\xbb\xbf{"a": 1}\n'
    assert reader.position == ResumePoint(3, 6, len(data))
    check_accounting(data, 0, records, blank=b" \t\r\n")


@pytest.mark.parametrize(
    ("line", "kind", "message"),
    [
        (b'{"a": 1,}', "invalid_json", "invalid JSON: JSON is malformed"),
        (b'{"a": NaN}', "invalid_json", "NaN and Infinity are not JSON values (at byte 17)"),
        (b'{"a": -Infinity}', "invalid_json", "NaN and Infinity are not JSON values"),
        (b"[1, 2]", "not_an_object", "expected a JSON object {...}, got an array"),
        (b'"text"', "not_an_object", "got a string"),
        (b"null", "not_an_object", "got null"),
        (b'{"a": "\xff"}', "invalid_encoding", "invalid UTF-8 byte 0xff at byte 18"),
        (b'{"a": "x\x00"}', "nul_byte", "NUL byte (0x00) at byte 19"),
        (b'{"a": ' + b"[" * 64 + b"]" * 64 + b"}", "too_deep", "nested more than 64 levels"),
        (b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", "too_deep", "nested more than 64 levels"),
        # a key twice in one object: msgspec (like every JSON parser) keeps the last value
        (b'{"a": 1, "a": 2}', "duplicate_key", 'the key "a" appears twice in one JSON object'),
        (b'{"a": 1, "b": {"c": 1, "c": 1}}', "duplicate_key", 'the key "c" appears twice'),
        (b'{"a": [{"k": "x"}, {"k": 1, "k": 2}]}', "duplicate_key", 'the key "k"'),
        # colons inside strings (the count alone cannot tell), and one hidden by an escape
        (b'{"t": "12:30", "u:": "http://x", "t": ":"}', "duplicate_key", 'the key "t"'),
        (b'{"a\\u003a": 1, "a:": 2}', "duplicate_key", 'the key "a:"'),
        (b'{"x": 1, "x": "\\u003a\\u003a"}', "duplicate_key", 'the key "x"'),
        (b'{"x": 1, "x": "\\u003A\\u003A"}', "duplicate_key", 'the key "x"'),
        (b'{"\xc3\xa9": 1, "\\u00e9": 2}', "duplicate_key", 'the key "é"'),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, line: bytes, kind: str, message: str) -> None:
    data = b'{"ok": 1}\n\n' + line + b'\n{"ok": 2}\n'
    _, records = read_all(write(tmp_path, "a.jsonl", data))
    assert len(records) == 3
    assert errors_of(records) == [(1, kind)]
    assert records[1].raw == line + b"\n"
    assert records[1].error is not None
    assert records[1].error.startswith("line 3 (byte 11): ")
    assert message in records[1].error
    assert records[2].data == {"ok": 2} and records[2].line == 4
    check_accounting(data, 0, records, blank=b" \t\r\n")


@pytest.mark.parametrize(
    "line",
    [
        b'{"t": "12:30:00", "url": "http://x/y", "k:v": {"a:": ":", "b": [":", {"c": "::"}]}}',
        b'{"a\\u003a": 1, "a": 2, "b": "\\u003a:"}',  # "a:" and "a": two keys
        b'{"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}]}',  # one key in several objects
        b'{"x": "\\\\u003a", "x\\\\": 1}',  # a backslash, then u003a: no colon
        b"{}",
    ],
)
def test_jsonl_colons_escapes_and_repeated_names_are_not_a_key_twice(
    tmp_path: Path, line: bytes
) -> None:
    _, records = read_all(write(tmp_path, "a.jsonl", line + b"\n"))
    assert records[0].error is None
    assert records[0].data == json.loads(line)


def test_jsonl_a_key_twice_in_another_encoding(tmp_path: Path) -> None:
    data = '{"n": "é:1"}\n{"n": "é", "n": "è"}\n'.encode("cp1252")
    _, records = read_all(write(tmp_path, "a.jsonl", data), encoding="cp1252")
    assert records[0].data == {"n": "é:1"}
    assert errors_of(records) == [(1, "duplicate_key")]


def test_jsonl_64_levels_is_fine(tmp_path: Path) -> None:
    line = b'{"a": ' + b"[" * 63 + b"]" * 63 + b"}\n"
    _, records = read_all(write(tmp_path, "a.jsonl", line))
    assert records[0].error is None


def test_jsonl_record_over_max_record_bytes(tmp_path: Path) -> None:
    data = b'{"a": "' + b"x" * 100 + b'"}\n{"a": 2}\n'
    _, records = read_all(write(tmp_path, "a.ndjson", data), max_record_bytes=50)
    assert errors_of(records) == [(0, "record_too_large")]
    assert records[1].data == {"a": 2}


def test_jsonl_big_integers_keep_their_precision(tmp_path: Path) -> None:
    _, records = read_all(write(tmp_path, "a.jsonl", b'{"n": 123456789012345678901234567890}\n'))
    assert records[0].data == {"n": 123456789012345678901234567890}


# --------------------------------------------------------------------------------------------
# Resume


def test_resume_after_a_record_with_quoted_line_breaks(tmp_path: Path) -> None:
    data = HEADER + b'1,"Ann\nMarie\r\nJo","Oslo\rN"\n2,Bob,Rome\n3,Cy,Nice\n'
    path = write(tmp_path, "a.csv", data)
    with open_reader(path) as reader:
        first = next(reader)
        point = reader.position
    assert point == ResumePoint(1, 6, first.byte_end)
    full = read_all(path)[1]
    _, rest = read_all(path, start=point)
    assert rest == full[1:]
    assert rest[0].line == 6


def test_resume_does_not_read_the_skipped_records(tmp_path: Path) -> None:
    data = HEADER + b"".join(b"%d,name%d,city%d\n" % (i, i, i) for i in range(20000))
    path = write(tmp_path, "a.csv", data)
    with open_reader(path) as reader:
        records = list(islice(reader, 18000))
        point = reader.position

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            Counting.consumed += len(chunk)
            return chunk

        def readline(self, size: int | None = -1) -> bytes:
            chunk = super().readline(size)
            Counting.consumed += len(chunk)
            return chunk

    fileobj = Counting(data)
    with open_reader("registry.csv", fileobj=fileobj, start=point) as reader:
        first = next(reader)
    assert first.offset == 18000 and first.byte_start == records[-1].byte_end
    assert first.data == {"id": "18000", "name": "name18000", "city": "city18000"}
    assert Counting.consumed < len(data) // 2


def test_resume_point_must_be_at_a_line_start(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\r\n2,Bob,Rome\n"
    path = write(tmp_path, "a.csv", data)
    with pytest.raises(SourceChangedError, match="not the start of a line"):
        open_reader(path, start=ResumePoint(1, 3, 17))
    with pytest.raises(SourceChangedError, match="not the start of a line"):
        open_reader(path, start=ResumePoint(1, 3, 24))  # between CR and LF
    with pytest.raises(SourceChangedError, match="shorter"):
        open_reader(path, start=ResumePoint(9, 9, 10_000))
    with pytest.raises(ValueError, match="inside the header"):
        open_reader(path, start=ResumePoint(0, 1, 5))
    assert list(open_reader(path, start=ResumePoint(2, 4, len(data)))) == []


def test_fileobj_is_read_not_reopened_and_not_closed(tmp_path: Path) -> None:
    data = HEADER + b"1,Ann,Oslo\n2,Bob,Rome\n"
    path = write(tmp_path, "a.csv", data)
    with open(path, "rb") as f:
        f.read()  # the caller hashed it: positioned at the end
        os.remove(path)  # the name is gone, the open file still reads
        reader, records = read_all("/no/such/dir/a.csv", fileobj=f)
        assert not f.closed
        assert reader.path == "/no/such/dir/a.csv"
        assert [r.raw for r in records] == [b"1,Ann,Oslo\n", b"2,Bob,Rome\n"]
        _, rest = read_all("/no/such/dir/a.csv", fileobj=f, start=reader.position)
        assert rest == []
        _, again = read_all("/no/such/dir/a.csv", fileobj=f, start=ResumePoint(1, 3, 24))
        assert again == records[1:]
    with open(write(tmp_path, "b.csv", HEADER + b"1,A\xff,x\n"), "rb", buffering=0) as raw:
        _, records = read_all("b.csv", fileobj=raw)
        assert records[0].error is not None and "b.csv" not in records[0].error
        assert not raw.closed


def test_fileobj_errors_name_the_given_path(tmp_path: Path) -> None:
    with open(write(tmp_path, "x.csv", b""), "rb") as f:
        with pytest.raises(SourceFileError) as exc:
            open_reader("registry-2025.csv", fileobj=f)
        assert (
            str(exc.value) == "registry-2025.csv: the file is empty: a CSV file needs a header line"
        )


# --------------------------------------------------------------------------------------------
# reparse


def test_reparse_uses_the_readers_header_and_dialect(tmp_path: Path) -> None:
    data = b"a;b\n1;'x;y'\n2;oops;extra\n"
    with open_reader(write(tmp_path, "a.csv", data), delimiter=";", quotechar="'") as reader:
        records = list(reader)
        bad = records[1]
        assert bad.error_type == "field_count"
        again = reader.reparse(bad.raw)
        assert again.error_type == "field_count" and again.raw == bad.raw
        fixed = reader.reparse(
            b"2;'oops;extra'\n", at=ResumePoint(bad.offset, bad.line, bad.byte_start)
        )
        assert fixed.error is None
        assert fixed.data == {"a": "2", "b": "oops;extra"}
        assert (fixed.offset, fixed.line, fixed.byte_start) == (1, 3, bad.byte_start)
        assert reader.reparse(b"3;'multi\nline'\n").data == {"a": "3", "b": "multi\nline"}
        assert reader.reparse(b"\n").error_type == "empty_record"
        assert reader.reparse(b"3;x\n4;y\n").error_type == "multiple_records"
        unterminated = reader.reparse(b"3;'x\n")
        assert unterminated.error_type == "unterminated_quote"
        # reparse does not disturb the reader
        assert reader.position == ResumePoint(2, 4, len(data))


def test_reparse_jsonl(tmp_path: Path) -> None:
    with open_reader(write(tmp_path, "a.jsonl", b'{"a": 1}\n{"a": NaN}\n')) as reader:
        bad = list(reader)[1]
        assert bad.error_type == "invalid_json"
        assert reader.reparse(b'{"a": null}\n').data == {"a": None}
        assert reader.reparse(b"[1]").error_type == "not_an_object"


# --------------------------------------------------------------------------------------------
# detect_format


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path, "x.csv", HEADER)) == ("csv", False)
    assert detect_format(write(tmp_path, "x.TSV", HEADER)) == ("csv", False)
    assert detect_format(write(tmp_path, "x.txt", HEADER)) == ("csv", False)
    assert detect_format(write(tmp_path, "x.ndjson", b"{}")) == ("jsonl", False)
    assert detect_format(write(tmp_path, "x.json.gz", gzip.compress(b"{}"))) == ("jsonl", True)
    assert detect_format(write(tmp_path, "x.jsonl", gzip.compress(b"{}"))) == ("jsonl", True)
    assert detect_format(str(tmp_path / "missing.csv.gz")) == ("csv", True)
    assert detect_format(write(tmp_path, "x.dat", b"{}"), "JSONL") == ("jsonl", False)
    with pytest.raises(ConfigError, match="cannot tell the format"):
        detect_format(write(tmp_path, "x.gz", b""))
    with pytest.raises(ConfigError, match="unknown format 'xml'"):
        detect_format(write(tmp_path, "y.csv", b""), "xml")


# --------------------------------------------------------------------------------------------
# Properties

FIELD = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
SPECIAL = st.sampled_from(["", ",", '"', "\n", "\r", "\r\n", '""', " ", "a,b", 'x"y', "é", "𝄞"])
VALUE = st.one_of(FIELD, SPECIAL, st.lists(SPECIAL, max_size=4).map("".join))


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    ncols = draw(st.integers(1, 5))
    names = draw(
        st.lists(
            st.text(
                st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                min_size=1,
                max_size=8,
            ).filter(lambda s: s.strip() != ""),
            min_size=ncols,
            max_size=ncols,
            unique=True,
        )
    )
    rows = draw(st.lists(st.lists(VALUE, min_size=ncols, max_size=ncols), max_size=25))
    return names, rows


def csv_bytes(names: list[str], rows: list[list[str]], terminators: list[str], bom: bool) -> bytes:
    out = io.StringIO(newline="")
    for i, row in enumerate([names, *rows]):
        terminator = terminators[i % len(terminators)]
        # csv.writer quotes only the characters of its own line terminator: to write a bare
        # CR or LF terminator readably, quote every field.
        quoting = csv.QUOTE_MINIMAL if terminator == "\r\n" else csv.QUOTE_ALL
        csv.writer(out, lineterminator=terminator, quoting=quoting).writerow(row)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode()


PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@PROPERTY_SETTINGS
@given(
    table=tables(),
    terminators=st.lists(st.sampled_from(["\r\n", "\n", "\r"]), min_size=1, max_size=3),
    bom=st.booleans(),
)
def test_property_csv_round_trip(
    tmp_path: Path, table: tuple[list[str], list[list[str]]], terminators: list[str], bom: bool
) -> None:
    names, rows = table
    data = csv_bytes(names, rows, terminators, bom)
    reader, records = read_all(write(tmp_path, "p.csv", data))
    assert reader.header == names
    assert [r.error for r in records] == [None] * len(rows)
    assert [r.data for r in records] == [dict(zip(names, row, strict=True)) for row in rows]
    assert reader.header_raw is not None
    assert reader.header_raw + b"".join(r.raw for r in records) == data
    check_accounting(data, len(reader.header_raw), records)


def as_jsonl(names: list[str], rows: list[list[str]]) -> bytes:
    lines = [json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) for row in rows]
    return "".join(line + "\n" for line in lines).encode()


@PROPERTY_SETTINGS
@given(
    table=tables(),
    fmt=st.sampled_from(["csv", "jsonl"]),
    gzipped=st.booleans(),
    cut=st.integers(0, 30),
)
def test_property_resume_at_any_record(
    tmp_path: Path, table: tuple[list[str], list[list[str]]], fmt: str, gzipped: bool, cut: int
) -> None:
    names, rows = table
    data = (
        csv_bytes(names, rows, ["\r\n", "\n", "\r"], False)
        if fmt == "csv"
        else as_jsonl(names, rows)
    )
    name = f"r.{fmt}" + (".gz" if gzipped else "")
    path = write(tmp_path, name, gzip.compress(data) if gzipped else data)
    full = read_all(path)[1]
    assert len(full) == len(rows)
    k = min(cut, len(full))
    with open_reader(path) as reader:
        head = list(islice(reader, k))
        point = reader.position
    assert head == full[:k]
    _, rest = read_all(path, start=point)
    assert rest == full[k:]


NOISE = st.lists(
    st.sampled_from(
        [b"a", b",", b'"', b"\r", b"\n", b"\r\n", b"\xff", b"\x00", b"\xc3\xa9", b"x,y"]
    ),
    max_size=80,
).map(b"".join)


@PROPERTY_SETTINGS
@given(
    body=NOISE,
    max_record_bytes=st.sampled_from([8, 24, 8_388_608]),
    gzipped=st.booleans(),
    step=st.sampled_from([None, 1, 2, 3, 7]),
)
def test_property_garbage_never_loses_a_byte(
    tmp_path: Path, body: bytes, max_record_bytes: int, gzipped: bool, step: int | None
) -> None:
    """Whatever the bytes, every byte after the header is in exactly one record or in a blank
    line, line numbers are right, and resuming after any record gives the same records; also
    when the file returns short reads (``step``), which moves every block boundary."""
    data = b"h1,h2\n" + body
    stored = gzip.compress(data) if gzipped else data
    if gzipped and step == 1:
        step = 2  # GzipFile itself needs its 2-byte magic number in one read
    path = write(tmp_path, "g.csv" + (".gz" if gzipped else ""), stored)

    def reader(start: ResumePoint | None = None) -> RecordReader:
        fileobj = None if step is None else Trickle(stored, step)
        return open_reader(path, max_record_bytes=max_record_bytes, start=start, fileobj=fileobj)

    with reader() as r:
        records = list(r)
    check_accounting(data, 6, records)
    for k in range(len(records) + 1):
        with reader() as again:
            list(islice(again, k))
            point = again.position
        with reader(point) as resumed:
            assert list(resumed) == records[k:]


@PROPERTY_SETTINGS
@given(
    table=tables(),
    encoding=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"]),
    step=st.sampled_from([1, 2, 3, 5, 8, 4096]),
)
def test_property_utf16_utf32_round_trip_with_short_reads(
    table: tuple[list[str], list[list[str]]], encoding: str, step: int
) -> None:
    names, rows = table
    data = csv_bytes(names, rows, ["\r\n", "\n", "\r"], False).decode().encode(encoding)
    with open_reader("w.csv", encoding=encoding, fileobj=Trickle(data, step)) as reader:
        records = list(reader)
        assert reader.header == names
        assert reader.header_raw is not None
        assert reader.header_raw + b"".join(r.raw for r in records) == data
    assert [r.data for r in records] == [dict(zip(names, row, strict=True)) for row in rows]
    if records:
        k = len(records) // 2
        point = ResumePoint(k, records[k].line, records[k].byte_start)
        with open_reader("w.csv", encoding=encoding, fileobj=Trickle(data, step), start=point) as r:
            assert list(r) == records[k:]


@PROPERTY_SETTINGS
@given(body=NOISE)
def test_property_jsonl_garbage_never_loses_a_byte(tmp_path: Path, body: bytes) -> None:
    data = body.replace(b"a", b'{"a":1}')
    assume(looks_wide(data) is None)  # else a file-level error, tested above
    _, records = read_all(write(tmp_path, "g.jsonl", data))
    check_accounting(data, 0, records, blank=b" \t\r\n")
    for rec in records:
        assert rec.raw.strip(b" \t\r\n") != b""


def test_iterating_twice_continues() -> None:
    reader = open_reader("x.csv", fileobj=io.BytesIO(HEADER + b"1,a,b\n2,c,d\n"))
    it: Iterator[RawRecord] = iter(reader)
    assert next(it).offset == 0
    assert [r.offset for r in reader] == [1]
    reader.close()
    reader.close()


# A JSON object as its pairs, a key possibly twice: (key, value) lists, nested.
_JSON_KEYS = st.text(alphabet=st.sampled_from('ab:\\"é\u2028'), max_size=3)
_JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.text(alphabet=st.sampled_from('x:\\"é/'), max_size=4)
)


def _pairs(children: Any) -> Any:
    return st.lists(st.tuples(_JSON_KEYS, children), max_size=4).map(lambda p: ("obj", p))


_JSON_VALUES = st.recursive(
    _JSON_SCALARS, lambda c: _pairs(c) | st.lists(c, max_size=3), max_leaves=12
)


def _to_json(value: Any, ascii_only: bool, hide: str | None = None) -> str:
    """``value`` as JSON text; ``hide``: every colon inside a string written so (an
    escape, \\u003a or \\u003A)."""

    def text(s: str) -> str:
        out = json.dumps(s, ensure_ascii=ascii_only)
        return out.replace(":", hide) if hide else out

    if isinstance(value, tuple):  # an object, as its pairs (a key may repeat)
        return (
            "{"
            + ", ".join(f"{text(k)}: {_to_json(v, ascii_only, hide)}" for k, v in value[1])
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_to_json(v, ascii_only, hide) for v in value) + "]"
    return text(value) if isinstance(value, str) else json.dumps(value)


def _repeats_a_key(value: Any) -> bool:
    if isinstance(value, tuple):
        keys = [k for k, _ in value[1]]
        return len(set(keys)) < len(keys) or any(_repeats_a_key(v) for _, v in value[1])
    if isinstance(value, list):
        return any(_repeats_a_key(v) for v in value)
    return False


@PROPERTY_SETTINGS
@given(
    top=_pairs(_JSON_VALUES),
    ascii_only=st.booleans(),
    hide=st.sampled_from([None, "\\u003a", "\\u003A"]),
)
def test_jsonl_a_key_twice_is_found_exactly(
    tmp_path: Path, top: Any, ascii_only: bool, hide: str | None
) -> None:
    """A line is a ``duplicate_key`` record exactly when an object in it repeats a key
    (keys and strings full of colons, backslashes and escapes: ascii_only writes é as
    \\u00e9, hide every colon in a string as \\u003a); otherwise it is read as the json
    module reads it, and unless a colon is escaped the cheap check alone says so (no
    second parse of the line: jsonl_decoder.py)."""
    line = _to_json(top, ascii_only, hide).encode()
    _, records = read_all(write(tmp_path, "p.jsonl", line + b"\n"))
    assert len(records) == 1
    if _repeats_a_key(top):
        assert records[0].error_type == "duplicate_key"
    else:
        assert records[0].error is None
        assert records[0].data == json.loads(line)
        if hide is None:
            assert not jsonl_decoder._keys_twice(line, json.loads(line))
