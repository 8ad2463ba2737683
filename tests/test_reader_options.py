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


# --- JSONL: a key twice in one object (duplicate_keys) --------------------------------------


def test_duplicate_keys_error_or_last_and_nothing_else() -> None:
    assert ReaderOptions().duplicate_keys == "error"
    assert Config().source.reader_options().duplicate_keys == "error"
    cfg = config_from_dict({"source": {"duplicate_keys": "last"}})
    assert run_options(cfg, PairLoader(cfg)).reader == ReaderOptions(duplicate_keys="last")
    with pytest.raises(ConfigError, match="duplicate_keys must be one of error, last"):
        ReaderOptions(duplicate_keys="first")
    with pytest.raises(ConfigError, match=r"source\.duplicate_keys"):
        config_from_dict({"source": {"duplicate_keys": "first"}})


def test_duplicate_keys_last_loads_the_last_value_journals_it_and_the_dlq_rereads_so(
    tmp_path: Path,
) -> None:
    """With ``duplicate_keys: last`` a record with a key twice is read as JSON parsers read
    it (the last value), the option is journaled (and only then: a default run's bytes are
    as before, test_a_run_journals_its_reader_options_as_before), and a DLQ retry re-reads
    such a record with it, without the file."""
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        b'{"name": "Acme", "city": "BAD", "name": "Bolt"}\n'  # fails validation (city)
        b'{"name": "Cora", "city": "Oslo", "city": "Rome"}\n'
    )
    db = tmp_path / "journal.db"
    report = run(
        PairLoader, path, db=f"sqlite:///{db}", config={"source": {"duplicate_keys": "last"}}
    )
    assert (report.statistics.imported, report.statistics.failed) == (1, 1)
    with sqlite3.connect(db) as conn:
        (payload,) = conn.execute(
            "SELECT payload FROM journal WHERE event_type = 'RunStarted'"
        ).fetchone()
        names = {n for (n,) in conn.execute("SELECT name FROM nodes")}
    assert names == {"Cora", "Rome"}  # the last values
    started = decode(payload.encode())
    assert isinstance(started, RunStarted)
    assert started.reader["duplicate_keys"] == "last"
    assert ReaderOptions.from_journal(started.reader).duplicate_keys == "last"
    path.unlink()
    store = open_store(f"sqlite:///{db}")
    try:
        cfg = Config()
        done = retry(store, Lenient(cfg), make_target(store, cfg), source_id=report.source_id)
        assert [(o.outcome, o.record_offset) for o in done.outcomes] == [("succeeded", 0)]
        with sqlite3.connect(db) as conn:
            names = {n for (n,) in conn.execute("SELECT name FROM nodes")}
        assert "Bolt" in names and "Acme" not in names
    finally:
        store.dispose()


def test_duplicate_keys_error_by_default_and_the_dlq_rereads_so(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(b'{"name": "Acme", "city": "Oslo", "name": "Bolt"}\n')
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    report = run(PairLoader, path, db=db)
    assert (report.statistics.imported, report.statistics.failed) == (0, 1)
    store = open_store(db)
    try:
        (entry,) = list_entries(store)
        assert (
            entry["error_type"] == "duplicate_key"
            and '"name" appears twice' in entry["error_message"]
        )
        cfg = Config()
        done = retry(store, Lenient(cfg), make_target(store, cfg), source_id=report.source_id)
        assert [o.outcome for o in done.outcomes] == ["failed"]
    finally:
        store.dispose()
