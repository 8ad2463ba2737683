"""RecordParsed version 3 (journal_loader/journal/parsed.py): a record its own text rebuilds
is journaled without it, and every reader sees the same event as before."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal_loader import run
from journal_loader.journal import parsed as parsed_module
from journal_loader.journal.events import RecordParsed, RunStarted, decode, encode
from journal_loader.journal.parsed import Resolver, ShapeCache, TextContext, UnresolvableRecord
from journal_loader.journal.queries import events_after, record_events
from journal_loader.sources.options import ReaderOptions
from journal_loader.sources.readers import open_reader
from journal_loader.sources.records import RawRecord
from journal_loader.storage import open_store
from tests.support.audit import cli_json
from tests.support.example import EXAMPLE_CONFIG, EXAMPLE_DATA
from tests.support.pg import drop_pg_schema, make_pg_schema


def _started(header: list[str], delimiter: str = ",", quotechar: str = '"') -> RunStarted:
    return RunStarted(
        loader="t",
        mode="new",
        header=header,
        reader={"format": "csv", "delimiter": delimiter, "quotechar": quotechar},
    )


def _line(fields: list[str], delimiter: str, quotechar: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quotechar=quotechar, lineterminator="\n").writerow(fields)
    return out.getvalue().encode()


def _round_trip(
    started: RunStarted, records: list[tuple[bytes, dict[str, Any]]]
) -> list[RecordParsed]:
    """Journal the records as one batch would (encode), read them back (decode) and make
    them whole with a resolver over what was stored."""
    context = TextContext.of(started)
    assert context is not None
    shapes = ShapeCache(context)
    stored = {}
    for offset, (raw, record) in enumerate(records):
        event = shapes.event(offset, offset + 2, 0, len(raw), raw, record)
        stored[offset] = encode(event)
    resolver = Resolver(
        lambda _source, _run: started,
        lambda _source, _run, offset: _decoded(stored[offset]),
    )
    return [resolver.resolve(_decoded(stored[o]), 1, "run") for o in range(len(records))]


def _decoded(payload: bytes) -> RecordParsed:
    event = decode(payload)
    assert isinstance(event, RecordParsed)
    return event


field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    width=st.integers(1, 6),
    rows=st.lists(st.lists(field_text, min_size=6, max_size=6), min_size=1, max_size=12),
    renames=st.lists(st.booleans(), min_size=6, max_size=6),
    computed=st.lists(st.sampled_from([None, "int", "upper", "missing"]), min_size=6, max_size=6),
    dialect=st.sampled_from([(",", '"'), (";", "'"), ("\t", '"'), ("|", "`")]),
)
def test_every_record_comes_back_exactly(
    width: int,
    rows: list[list[str]],
    renames: list[bool],
    computed: list[str | None],
    dialect: tuple[str, str],
) -> None:
    """Whatever the fields (quotes, delimiters, newlines, empty ones, equal ones) and
    whatever the loader made of them (renamed keys, values it computed, keys it dropped):
    the record read back is the record journaled, value for value, type for type, in order."""
    delimiter, quotechar = dialect
    header = [f"col {i}" for i in range(width)]
    started = _started(header, delimiter, quotechar)
    records = []
    for row in rows:
        fields = row[:width]
        record: dict[str, Any] = {}
        for i, value in enumerate(fields):
            key = f"k{i}" if renames[i] else header[i]
            how = computed[i]
            if how == "missing":
                continue
            record[key] = len(value) if how == "int" else value.upper() if how == "upper" else value
        records.append((_line(fields, delimiter, quotechar), record))
    back = _round_trip(started, records)
    assert [(list(e.record.items())) for e in back] == [list(r.items()) for _, r in records]
    for event, (_, record) in zip(back, records, strict=True):
        assert [type(v) for v in event.record.values()] == [type(v) for v in record.values()]
        assert event.shape is None and event.fields is None and event.extra is None


def _new_readers_fields(context: TextContext, text: str) -> list[str] | None:
    """Version 1 of the split as first written: a new reader over the whole text, every
    time (TextContext.fields reuses one for a line with quotes)."""
    body = text
    if body.endswith("\n"):
        body = body[:-2] if body.endswith("\r\n") else body[:-1]
    if context.quotechar not in body and "\n" not in body and "\r" not in body:
        fields = body.split(context.delimiter)
    else:
        try:
            rows = list(
                csv.reader(
                    io.StringIO(text, newline=""),
                    delimiter=context.delimiter,
                    quotechar=context.quotechar,
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
    return fields if len(fields) == len(context.header) else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.text(alphabet=[",", ";", '"', "'", "a", "é", " ", "\r", "\n", "\x00"], max_size=14)
        | st.lists(st.sampled_from(["a", "", '"a,b"', '"a""b"', "'x'", " "]), max_size=4).map(
            ",".join
        ),
        min_size=1,
        max_size=6,
    ),
    width=st.integers(1, 4),
    dialect=st.sampled_from([(",", '"'), (";", "'"), (",", "'")]),
    ending=st.sampled_from(["", "\n", "\r\n"]),
)
def test_fields_of_one_line_equal_a_new_readers(
    texts: list[str], width: int, dialect: tuple[str, str], ending: str
) -> None:
    """Whatever the texts, in whatever order (a reused reader must carry nothing from one
    text to the next: an open quote, an error half way through a line), ``fields`` answers
    what a new reader answers: the same fields, or None."""
    context = TextContext(tuple(f"c{i}" for i in range(width)), *dialect)
    for text in texts:
        line = text + ending
        assert context.fields(line) == _new_readers_fields(context, line), repr(line)


def _read(
    tmp: Path, body: bytes, header: list[str], dialect: tuple[str, str], encoding: str = "utf-8"
) -> tuple[RunStarted, list[RawRecord]]:
    """The file's records as the run reads them, and the RunStarted it would journal."""
    delimiter, quotechar = dialect
    path = tmp / "f.csv"
    path.write_bytes(_line(header, delimiter, quotechar) + body)
    options = ReaderOptions(delimiter=delimiter, quotechar=quotechar, encoding=encoding)
    with open_reader(str(path), options) as reader:
        records = list(reader)
        started = _started(list(reader.header), delimiter, quotechar)
        started = msgspec.structs.replace(
            started, reader=reader.options.journaled(format=reader.format, gzipped=False)
        )
    return started, records


# Whole files: any text at all (quotes, delimiters, CR, LF, CRLF inside and between fields,
# NUL, bytes that are not UTF-8) among well-formed lines.
file_text = st.lists(
    st.text(alphabet=[",", ";", '"', "'", "a", "é", " ", "\r", "\n", "\x00"], max_size=12).map(
        str.encode
    )
    | st.lists(st.sampled_from(["a", "", '"a,b"', '"a""b"', "'x'", " ", '"a\nb"', '"c\rd"']))
    .map(",".join)
    .map(str.encode)
    | st.sampled_from([b"\xff,a", b"a,\xe9", b"\r", b"\r\n"]),
    max_size=10,
).map(lambda parts: b"\n".join(parts))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=file_text,
    width=st.integers(1, 3),
    dialect=st.sampled_from([(",", '"'), (";", "'"), (",", "'")]),
    ending=st.sampled_from([b"", b"\n", b"\r\n"]),
)
def test_the_readers_fields_are_the_split_of_the_text_and_change_no_event(
    tmp_path_factory: pytest.TempPathFactory,
    body: bytes,
    width: int,
    dialect: tuple[str, str],
    ending: bytes,
) -> None:
    """``RawRecord.fields`` (the reader's split, kept so that RecordParsed need not split the
    text again) is exactly what TextContext.fields makes of the record's text, wherever the
    reader keeps it; it keeps it for every record that is one line of UTF-8 without a CR
    before its end; and the events built with it are the events built without it, byte for
    byte (journal/parsed.py, sources/csv_decoder.py)."""
    started, records = _read(
        tmp_path_factory.mktemp("r"), body + ending, [f"c{i}" for i in range(width)], dialect
    )
    context = TextContext.of(started)
    assert context is not None
    with_fields, without = ShapeCache(context), ShapeCache(context)
    for rec in records:
        if rec.data is None:
            assert rec.fields is None
            continue
        try:
            text: str | None = rec.raw.decode()
        except UnicodeDecodeError:
            text = None
        split = None if text is None else context.fields(text)
        if rec.fields is not None:
            assert rec.fields == split, rec
        body = text or ""  # without its terminator, as TextContext.fields sees it
        body = body[:-2] if body.endswith("\r\n") else body.removesuffix("\n")
        one_line = text is not None and "\r" not in body and "\n" not in body
        assert (rec.fields is not None) == one_line, rec
        record = dict(rec.data)
        args = (rec.offset, rec.line, rec.byte_start, rec.byte_end, rec.raw, record)
        assert encode(with_fields.event(*args, rec.fields)) == encode(without.event(*args))


def test_the_reader_keeps_no_fields_for_another_encoding(tmp_path: Path) -> None:
    """Latin-1 text: RecordParsed reads raw bytes as UTF-8, so the reader's split of the
    Latin-1 text is not the record's split there; the record is journaled whole."""
    started, records = _read(
        tmp_path, "\u00e9t\u00e9,b\n".encode("latin-1"), ["a", "b"], (",", '"'), "latin-1"
    )
    assert [r.data for r in records] == [{"a": "\u00e9t\u00e9", "b": "b"}]
    assert records[0].fields is None
    context = TextContext.of(started)
    assert context is not None
    rec = records[0]
    event = ShapeCache(context).event(
        0, 2, rec.byte_start, rec.byte_end, rec.raw, dict(rec.data or {})
    )
    assert event.record == {"a": "\u00e9t\u00e9", "b": "b"} and event.fields is None


def test_a_batch_of_the_example_keeps_one_record_whole() -> None:
    """The example's records follow the first one's keys and fields: that one keeps its
    record (with the field map), the others only their text and a reference."""
    lines = EXAMPLE_DATA.read_bytes().splitlines(True)
    header = next(csv.reader([lines[0].decode()]))
    names = ["k" + h.lower().replace(" ", "_") for h in header]
    records = []
    for raw in lines[1:41]:
        fields = next(csv.reader([raw.decode()]))
        records.append((raw, dict(zip(names, fields, strict=True))))
    context = TextContext.of(_started(header))
    assert context is not None
    shapes = ShapeCache(context)
    events = [shapes.event(o, o + 2, 0, len(raw), raw, rec) for o, (raw, rec) in enumerate(records)]
    assert events[0].fields == list(range(len(header)))
    assert all(e.shape == 0 and e.extra == [] for e in events[1:])
    whole = sum(len(encode(RecordParsed(line=1, byte_start=0, byte_end=1, raw=r, record=d)))
                for r, d in records)  # fmt: skip
    lean = sum(len(encode(e)) for e in events)
    assert lean < whole * 0.5, (lean, whole)
    assert _round_trip(_started(header), records) == [
        RecordParsed(line=o + 2, byte_start=0, byte_end=len(r), raw=r, record=d)
        for o, (r, d) in enumerate(records)
    ]


def test_records_it_cannot_rebuild_are_stored_whole() -> None:
    context = TextContext.of(_started(["a", "b"]))
    assert context is not None
    shapes = ShapeCache(context)
    latin = "é,x\n".encode("latin-1")  # not UTF-8: kept as bytes, record whole
    assert shapes.event(0, 2, 0, 4, latin, {"a": "é", "b": "x"}).fields is None
    # three fields for a header of two: no split to rebuild from
    assert shapes.event(1, 3, 0, 6, b"1,2,3\n", {"a": "1", "b": "2"}).fields is None
    # a JSON Lines run has no CSV context at all
    assert TextContext.of(RunStarted(loader="t", mode="new", reader={"format": "jsonl"})) is None
    # past the shapes a batch may define, records are whole
    for i in range(parsed_module.MAX_SHAPES_PER_BATCH):
        assert shapes.event(10 + i, 9, 0, 4, b"x,y\n", {f"k{i}": "x", "b": "y"}).fields
    assert shapes.event(99, 9, 0, 4, b"x,y\n", {"new": "x", "b": "y"}).fields is None
    shapes.reset()  # a new batch: shapes again
    assert shapes.event(100, 9, 0, 4, b"x,y\n", {"new": "x", "b": "y"}).fields == [0, 1]


def test_a_reference_to_a_missing_record_is_an_error_not_a_guess() -> None:
    started = _started(["a"])
    event = RecordParsed(line=3, byte_start=0, byte_end=2, raw=b"x\n", record={}, shape=7)
    resolver = Resolver(lambda _s, _r: started, lambda _s, _r, _o: None)
    with pytest.raises(UnresolvableRecord, match="no RecordParsed at offset 7"):
        resolver.resolve(_decoded(encode(event)), 1, "run")


def _load(db: str, tmp_path: Path, lean: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not lean:
        monkeypatch.setattr(TextContext, "of", classmethod(lambda cls, started: None))
    report = run(config=EXAMPLE_CONFIG, db=db, batch_size=250)
    assert report.status == "completed", report.message
    monkeypatch.undo()


def test_history_lineage_and_the_event_stream_are_the_same_as_whole_records(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example loaded twice, once with every record whole (version 2) and once lean:
    every record's history, the journal read in order, and lineage show the same events;
    the lean journal's RecordParsed payloads are less than half the bytes."""
    schema = None
    if db_url.startswith("sqlite"):
        whole_url = f"sqlite:///{tmp_path / 'whole.db'}"
    else:
        whole_url, schema = make_pg_schema()
    try:
        _compare(whole_url, db_url, tmp_path, monkeypatch)
    finally:
        if schema is not None:
            drop_pg_schema(schema)


def _compare(whole_url: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load(whole_url, tmp_path, False, monkeypatch)
    _load(db_url, tmp_path, True, monkeypatch)
    views = []
    sizes = []
    for url in (whole_url, db_url):
        store = open_store(url)
        with store.transaction() as tx:
            history = [
                [msgspec.to_builtins(e.event) for e in record_events(tx, 1, offset)]
                for offset in range(0, 3000, 7)
            ]
            stream = [
                msgspec.to_builtins(e.event)
                for e in events_after(tx, 0, limit=100_000)
                if e.record_offset is not None
            ]
            payloads = tx.fetchall(
                "SELECT payload FROM journal WHERE event_type = 'RecordParsed'", {}
            )
        sizes.append(sum(len(str(p[0])) for p in payloads))
        store.dispose()
        lineage = [
            cli_json("lineage", kind, str(subject), "--db", url)
            for kind, subject in (("node", 5), ("node", 27), ("relationship", 3))
        ]
        for found in lineage:
            for a in found["assertions"]:
                a.pop("run_id")
                a.pop("recorded_at")
                a.pop("parsed_hash")  # the stored bytes differ, so do their hashes
        views.append((history, stream, lineage))
    assert views[0] == views[1]
    assert sizes[1] < sizes[0] / 2, sizes
