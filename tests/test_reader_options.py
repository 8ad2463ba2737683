"""ReaderOptions: one copy of the reader's defaults, from the config to a run's journal and
back to the DLQ's re-parser, with the journal's bytes as they were before the class."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from journal_loader import run
from journal_loader.api import make_target, run_options
from journal_loader.config import Config, config_from_dict
from journal_loader.dlq import list_entries, retry
from journal_loader.errors import ConfigError
from journal_loader.journal.events import RunStarted, decode
from journal_loader.runner import RunOptions
from journal_loader.sources.readers import ReaderOptions, open_reader
from journal_loader.storage import open_store
from tests.support.loaders import PairLoader

# A RunStarted.reader exactly as runs journaled it before ReaderOptions existed: an event's
# bytes feed its source's hash chain, so these keys, their order and their spelling stay.
JOURNALED_BEFORE = (
    b'"reader":{"format":"csv","gzipped":false,"encoding":"latin-1","delimiter":";",'
    b'"quotechar":"\'","field_size_limit":4096,"max_record_bytes":65536}'
)
LATIN1_CONFIG: dict[str, Any] = {
    "source": {
        "encoding": "latin-1",
        "delimiter": ";",
        "quotechar": "'",
        "field_size_limit": 4096,
        "max_record_bytes": 65536,
    }
}


class Lenient(PairLoader):
    def validate(self, record: Mapping[str, Any]) -> list[str]:
        return []


def _latin1_pairs(path: Path) -> Path:
    path.write_bytes("name;city\nCafé Zürich;BAD\nBäckerei;Köln\n".encode("latin-1"))
    return path


def test_the_defaults_are_one_copy() -> None:
    defaults = ReaderOptions()
    assert Config().source.reader_options() == defaults
    assert RunOptions().reader == defaults
    assert run_options(Config(), PairLoader(Config())).reader == defaults
    assert (defaults.encoding, defaults.delimiter, defaults.quotechar) == ("utf-8", None, '"')
    assert (defaults.field_size_limit, defaults.max_record_bytes) == (1_048_576, 8_388_608)


def test_the_config_reaches_the_run_options() -> None:
    cfg = config_from_dict(LATIN1_CONFIG)
    assert run_options(cfg, PairLoader(cfg)).reader == ReaderOptions(
        encoding="latin-1",
        delimiter=";",
        quotechar="'",
        field_size_limit=4096,
        max_record_bytes=65536,
    )


def test_bad_sizes_are_config_errors_wherever_the_options_are_made() -> None:
    with pytest.raises(ConfigError, match="field_size_limit must be a positive integer"):
        ReaderOptions(field_size_limit=0)
    with pytest.raises(ConfigError, match="max_record_bytes must be a positive integer"):
        ReaderOptions(max_record_bytes=True)


def test_open_reader_takes_options_and_overrides(tmp_path: Path) -> None:
    path = str(_latin1_pairs(tmp_path / "pairs.csv"))
    latin1 = ReaderOptions(encoding="latin-1", delimiter=";")
    with open_reader(path, latin1) as reader:
        assert [r.data for r in reader] == [
            {"name": "Café Zürich", "city": "BAD"},
            {"name": "Bäckerei", "city": "Köln"},
        ]
        assert reader.options == latin1
    with open_reader(path, encoding="latin-1", delimiter=";") as reader:
        assert reader.options == latin1
    with open_reader(path, latin1, delimiter=",") as reader:
        assert reader.header == ["name;city"]


def test_a_run_journals_its_reader_options_as_before(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    report = run(
        PairLoader,
        _latin1_pairs(tmp_path / "pairs.csv"),
        db=f"sqlite:///{db}",
        config=LATIN1_CONFIG,
    )
    assert (report.status, report.statistics.imported, report.statistics.failed) == (
        "completed",
        1,
        1,
    )
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute(
            "SELECT payload FROM journal WHERE event_type = ?", ("RunStarted",)
        ).fetchone()
    assert JOURNALED_BEFORE in payload.encode()
    started = decode(payload)
    assert isinstance(started, RunStarted)
    assert ReaderOptions.from_journal(started.reader) == ReaderOptions(
        format="csv",
        encoding="latin-1",
        delimiter=";",
        quotechar="'",
        field_size_limit=4096,
        max_record_bytes=65536,
    )


def test_older_journals_mappings_read_with_the_defaults() -> None:
    assert ReaderOptions.from_journal({}) == ReaderOptions()
    assert ReaderOptions.from_journal({"format": "jsonl", "gzipped": True}) == ReaderOptions(
        format="jsonl"
    )
    with pytest.raises(msgspec.ValidationError):
        ReaderOptions.from_journal({"max_record_bytes": "lots"})


def test_an_old_run_started_still_reparses() -> None:
    # A RunStarted as the code before ReaderOptions wrote it (header "name;city\n").
    old = (
        b'{"type":"RunStarted","loader":"pairs","mode":"new","header":["name","city"],'
        b'"header_raw":"bmFtZTtjaXR5Cg==",' + JOURNALED_BEFORE + b"}"
    )
    started = decode(old)
    assert isinstance(started, RunStarted)
    reader = open_reader(
        "<journal>",
        ReaderOptions.from_journal(started.reader),
        fileobj=io.BytesIO(started.header_raw or b""),
    )
    with reader:
        again = reader.reparse("Café Zürich;'Köln; Altstadt'\n".encode("latin-1"))
    assert again.data == {"name": "Café Zürich", "city": "Köln; Altstadt"}


def test_dlq_retry_reparses_with_the_journaled_options(db_url: str, tmp_path: Path) -> None:
    path = _latin1_pairs(tmp_path / "pairs.csv")
    report = run(PairLoader, path, db=db_url, config=LATIN1_CONFIG)
    assert report.statistics.failed == 1
    path.unlink()  # the retry reads the journal only
    store = open_store(db_url)
    try:
        cfg = Config()
        done = retry(store, Lenient(cfg), make_target(store, cfg), source_id=report.source_id)
        assert [(o.outcome, o.record_offset) for o in done.outcomes] == [("succeeded", 0)]
        assert list_entries(store) == []
    finally:
        store.dispose()


def test_dlq_retry_of_a_tsv_source(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("name\tcity\nAcme\tBAD\nBolt\tBoston\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    report = run(PairLoader, path, db=db)
    assert (report.statistics.imported, report.statistics.failed) == (1, 1)
    store = open_store(db)
    try:
        cfg = Config()
        done = retry(store, Lenient(cfg), make_target(store, cfg), source_id=report.source_id)
        assert [o.outcome for o in done.outcomes] == ["succeeded"]
    finally:
        store.dispose()


def test_a_tsv_source_journals_the_tab_it_read_with_and_old_journals_reparse_by_name(
    tmp_path: Path,
) -> None:
    from journal_loader.dlq import _reparser  # the re-parser of a journal's RunStarted

    path = tmp_path / "pairs.tsv"
    path.write_text("name\tcity\nAcme\tBAD\nBolt\tBoston\n", encoding="utf-8")
    db = tmp_path / "journal.db"
    run(PairLoader, path, db=f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute(
            "SELECT payload FROM journal WHERE event_type = 'RunStarted'"
        ).fetchone()
    started = decode(payload.encode())
    assert isinstance(started, RunStarted)
    assert started.reader["delimiter"] == "\t"
    # A journal written before: the delimiter null. The file's name still says tab.
    old = msgspec.structs.replace(started, reader={**started.reader, "delimiter": None})
    raw = b"Acme\tBAD\n"
    for name, expected in (("pairs.tsv", {"name": "Acme", "city": "BAD"}), ("p.csv", None)):
        rec = _reparser(old, name)(
            {"record_offset": 0, "line_number": 2, "byte_start": 9, "raw_input": raw}
        )
        if expected is None:  # a .csv name: commas, so the header's one column
            assert rec.data != {"name": "Acme", "city": "BAD"}
        else:
            assert rec.data == expected
