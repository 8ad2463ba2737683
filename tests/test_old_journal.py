"""A journal written by an earlier version of journal-loader still verifies, replays and
shows the same history.

tests/fixtures/old_journal.db.gz was written once by the code of the commit that added it
(tests/fixtures/make_old_journal.py): the example's records in two runs (the first stopped at
--limit 100, the second resumed), every event in encoding version 1. Event encodings may
change; stored payloads are never re-encoded, so whatever the encoding of new events, these
must keep decoding to the same events and their hashes must keep matching their bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import projections
from journal_loader.journal.events import decode, encode
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage import open_store
from tests.support.audit import cli, live_projections

FIXTURE = Path(__file__).parent / "fixtures" / "old_journal.db.gz"
EVENTS = 317
FIRST_RUN_FINISHED = 206  # the position of the first run's RunFinished (partial)


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A copy of the fixture (the test may write to it), its schema brought up to date."""
    path = tmp_path / "old_journal.db"
    with gzip.open(FIXTURE, "rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    result = cli("db", "upgrade", "--db", f"sqlite:///{path}")
    assert result.exit_code == 0, result.output
    return path


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def stored(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_the_fixture_is_in_the_first_encoding(old_db: Path) -> None:
    kinds = stored(
        old_db,
        "SELECT event_type, schema_version, COUNT(*), MIN(substr(payload, 1, 1)) FROM journal "
        "GROUP BY event_type, schema_version ORDER BY event_type",
    )
    assert kinds == [
        ("BatchCommitted", 1, 5, "{"),
        ("LoadStarted", 1, 1, "{"),
        ("ProposeSucceeded", 1, 149, "{"),
        ("RecordFailed", 1, 3, "{"),
        ("RecordParsed", 1, 152, "{"),
        ("RecordSkipped", 1, 2, "{"),
        ("RunFinished", 1, 2, "{"),
        ("RunStarted", 1, 2, "{"),
        ("SourceRegistered", 1, 1, "{"),
    ]


def test_an_old_journal_verifies(old_db: Path) -> None:
    result = cli("verify", "--db", url(old_db), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    report.pop("seconds")
    assert report == {
        "ok": True,
        "events": EVENTS,
        "sources": 1,
        "last_position": EVENTS,
        "first_broken_position": None,
        "total_breaks": 0,
        "breaks": [],
        "heads_checked": 0,
    }
    # And as a third party checks it (README "The canonical bytes and the hash chain"), with
    # hashlib alone: the stored bytes are the hashed ones.
    head = b""
    rows = stored(
        old_db,
        "SELECT source_id, record_offset, event_type, schema_version, run_id, recorded_at, "
        "payload, prev_hash, hash FROM journal ORDER BY position",
    )
    for source, offset, kind, version, run, at, payload, prev, digest in rows:
        canonical = (
            f"{source}\n{'' if offset is None else offset}\n{kind}\n{version}\n{run}\n"
            + at.replace(" ", "T")
            + "Z\n"
            + payload
        ).encode()
        assert (prev or b"") == head
        assert hashlib.sha256(head + canonical).digest() == digest
        head = digest
    assert len(rows) == EVENTS


def test_an_old_journal_rebuilds_the_projections_it_stored(old_db: Path) -> None:
    store = open_store(url(old_db))
    before = live_projections(store)
    # records in file, processed, imported, failed, skipped, status, error
    assert [r[10:17] for r in before["sources"]] == [(154, 154, 149, 3, 2, "completed", None)]
    # source, record offset, line
    assert [r[1:4] for r in before["failed_records"]] == [
        (1, 150, 152),
        (1, 152, 154),
        (1, 153, 155),
    ]

    check = cli("projections", "rebuild", "--check", "--db", url(old_db))
    assert check.exit_code == 0, check.output
    assert "projections match the journal (sources 1 rows, failed_records 3 rows;" in check.stdout
    rebuilt = cli("projections", "rebuild", "--db", url(old_db))
    assert rebuilt.exit_code == 0, rebuilt.output
    assert live_projections(store) == before
    store.dispose()


def test_an_old_journal_replays(old_db: Path, tmp_path: Path) -> None:
    store = open_store(url(old_db))
    at_first = tmp_path / "first.db"
    result = cli(
        "replay", "--db", url(old_db), "--until", str(FIRST_RUN_FINISHED), "--into", url(at_first)
    )
    assert result.exit_code == 0, result.output
    then = open_store(url(at_first))
    (source,) = live_projections(then)["sources"]
    assert source[10:17] == (None, 100, 99, 0, 1, "partial", None)
    assert live_projections(then)["failed_records"] == []
    then.dispose()

    at_end = tmp_path / "end.db"
    result = cli("replay", "--db", url(old_db), "--until", str(EVENTS), "--into", url(at_end))
    assert result.exit_code == 0, result.output
    now = open_store(url(at_end))
    assert live_projections(now) == live_projections(store)
    with now.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == 0
    now.dispose()
    store.dispose()


HISTORY_0 = """\
source 1: business_registry_20251001.csv (business_registry, version 2025-Q4, sha256 88e423d1397c), record 0

#4  2026-11-29 13:38:22  run 5a9208db  RecordParsed
    line: 2
    byte_start: 195
    byte_end: 381
    raw: C1000447,4431 Ridge Hwy LLC,Domestic Limited Liability Company,10/12/2016,AMARA U. KIM,2118 2ND ST,FL 1022,JOLIET,IL,60449,381 S CENTER ST,,EVANSTON,IL,60202,US,POINT (-87.6515 42.0298)
    record:
      corp_number: C1000447
      legal_name: 4431 Ridge Hwy LLC
      corporation_type: Domestic Limited Liability Company
      effective_date: 10/12/2016
      agent_name: AMARA U. KIM
      ra_address1: 2118 2ND ST
      ra_address2: FL 1022
      ra_city: JOLIET
      ra_state: IL
      ra_zip: 60449
      ho_address1: 381 S CENTER ST
      ho_address2:
      ho_city: EVANSTON
      ho_state: IL
      ho_zip: 60202
      ho_country: US
      ho_location: POINT (-87.6515 42.0298)

#5  2026-11-29 13:38:22  run 5a9208db  ProposeSucceeded
    graph: 5 fact(s): 5 success
      fact 0: success (confidence 1): source entity 1 created (new_entity, 1); target entity 2 created (new_entity, 1); relationship 1 created
      fact 1: success (confidence 1): source entity 2 matched (exact_name_match, 1); target entity 3 created (new_entity, 1); relationship 2 created
      fact 2: success (confidence 1): source entity 1 matched (external_key, 1); target entity 4 created (new_entity, 1); relationship 3 created
      fact 3: success (confidence 1): source entity 5 created (new_entity, 1); target entity 1 matched (external_key, 1); relationship 4 created
      fact 4: success (confidence 1): source entity 5 matched (exact_name_match, 1); target entity 6 created (new_entity, 1); relationship 5 created
"""

RECORD_152 = """\
    line: 154
    byte_start: 31904
    byte_end: 32112
    raw: C1002917,TANAKA & MITCHELL L.L.P.,Foreign Limited Liability Partnership,00/12/2019,ANDREW B. MÜLLER,5783 2ND WAY,FL 1957,EVANSTON,IL,60204,4272 MONROE DR,,ARLINGTON,VA,22213-7449,US,POINT (-77.0594 38.8334)
    record:
      corp_number: C1002917
      legal_name: TANAKA & MITCHELL L.L.P.
      corporation_type: Foreign Limited Liability Partnership
      effective_date: 00/12/2019
      agent_name: ANDREW B. MÜLLER
      ra_address1: 5783 2ND WAY
      ra_address2: FL 1957
      ra_city: EVANSTON
      ra_state: IL
      ra_zip: 60204
      ho_address1: 4272 MONROE DR
      ho_address2:
      ho_city: ARLINGTON
      ho_state: VA
      ho_zip: 22213-7449
      ho_country: US
      ho_location: POINT (-77.0594 38.8334)
"""

HISTORY_152 = f"""\
source 1: business_registry_20251001.csv (business_registry, version 2025-Q4, sha256 88e423d1397c), record 152

#312  2026-11-29 13:38:22  run 7f1d3a84  RecordParsed
{RECORD_152}
#313  2026-11-29 13:38:22  run 7f1d3a84  RecordFailed
    stage: validate
    error_type: ValidationError
    message: field 'effective_date': '00/12/2019' is not a date in the format MM/DD/YYYY
{RECORD_152}"""

HISTORY_98 = """\
source 1: business_registry_20251001.csv (business_registry, version 2025-Q4, sha256 88e423d1397c), record 98

#202  2026-11-29 13:38:22  run 5a9208db  RecordSkipped
    reason: no corporation type
    line: 100
    byte_start: 20712
    byte_end: 20872
    raw: C1000902,RODRIGUEZ TAVERN III LLC,,04/10/2013,"LEWIS, BETTY",7148 W GRAND PL,ROOM 611,EVANSTON,IL,60209,6673 PARK PL,,TORINO,TO,10134,IT,POINT (7.7264 45.0986)
"""


@pytest.mark.parametrize(
    ("offset", "expected"), [(0, HISTORY_0), (152, HISTORY_152), (98, HISTORY_98)]
)
def test_an_old_journal_shows_the_same_history(old_db: Path, offset: int, expected: str) -> None:
    result = cli("history", "1", str(offset), "--db", url(old_db))
    assert result.exit_code == 0, result.output
    assert result.stdout == expected


@pytest.mark.parametrize("offset", [0, 98, 152])
def test_old_events_in_json_are_their_stored_payloads(old_db: Path, offset: int) -> None:
    """Version 1 payloads are the events' fields as JSON: what ``history --json`` shows of an
    old event is exactly what was stored."""
    result = cli("history", "1", str(offset), "--db", url(old_db), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["events"]
    payloads = stored(
        old_db,
        "SELECT position, event_type, payload FROM journal WHERE source_id = 1 "
        "AND record_offset = ? ORDER BY position",
        offset,
    )
    assert [(e["position"], e["event_type"], e["event"]) for e in shown] == [
        (p, kind, json.loads(payload)) for p, kind, payload in payloads
    ]


def test_an_old_journal_shows_the_same_lineage(old_db: Path) -> None:
    result = cli("lineage", "relationship", "3", "--db", url(old_db))
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "relationship 3: Company '4431 Ridge Hwy LLC' [C1000447] -HEADQUARTERED_AT-> "
        "Address '381 S CENTER ST, EVANSTON, IL'\n"
        "asserted by 1 record(s), oldest first\n"
        "\n"
        "1. source 1: business_registry_20251001.csv (business_registry, version 2025-Q4, "
        "sha256 88e423d1397c)\n"
        "   record 0, line 2, bytes 195-381, run 5a9208db, 2026-11-29 13:38:22 UTC, position 5\n"
        "   graph: relationship_created (fact 2, confidence 0.9)\n"
        "   raw:   C1000447,4431 Ridge Hwy LLC,Domestic Limited Liability Company,10/12/2016,"
        "AMARA U. KIM,2118 2ND ST,FL 1022,JOLIET,IL,60449,381 S CENTER ST,,EVANSTON,IL,60202,"
        "US,POINT (-87.6515 42.0298)\n"
    )


# --- the same events in today's encoding ---------------------------------------------------


def test_every_old_event_decodes_and_keeps_its_meaning_in_todays_encoding(old_db: Path) -> None:
    rows = stored(old_db, "SELECT event_type, payload FROM journal ORDER BY position")
    sizes: dict[str, list[int]] = {}
    for kind, payload in rows:
        event = decode(payload)
        assert event.event_type == kind
        again = encode(event)
        assert decode(again) == event
        sizes.setdefault(kind, [0, 0])
        sizes[kind][0] += len(payload.encode())
        sizes[kind][1] += len(again)
    # the record-level events of this journal in version 1, and today's version of them
    assert (sizes["ProposeSucceeded"][0], sizes["RecordParsed"][0]) == (345_601, 126_201)
    assert sizes["ProposeSucceeded"][1] < sizes["ProposeSucceeded"][0] / 10
    assert sizes["RecordParsed"][1] < sizes["RecordParsed"][0]
    print(
        {kind: size for kind, size in sizes.items() if kind in ("ProposeSucceeded", "RecordParsed")}
    )


def rewrite(old_db: Path, new_db: Path) -> None:
    """The fixture's events appended again by today's writer, transaction by transaction (one
    per run and time), with the same run ids and times: positions and projections must come
    out the same; only the payloads (and so the hashes) differ."""
    rows = stored(
        old_db,
        "SELECT source_id, record_offset, run_id, recorded_at, payload FROM journal "
        "ORDER BY position",
    )
    store = open_store(url(new_db))
    heads: dict[int, bytes | None] = {}
    i = 0
    while i < len(rows):
        source_id, _, run_id, at, _ = rows[i]
        j = i
        while j < len(rows) and rows[j][2:4] == (run_id, at):
            j += 1
        when = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
        writer = JournalWriter(source_id, run_id, heads.get(source_id))
        with store.transaction() as tx:
            pending = [PendingEvent.of(r[1], decode(r[4])) for r in rows[i:j]]
            projections.apply(tx, writer.append(tx, pending, when))
        writer.confirm()
        heads[source_id] = writer.head
        i = j
    store.dispose()


def test_todays_encoding_shows_the_same_history(old_db: Path, tmp_path: Path) -> None:
    new_db = tmp_path / "new.db"
    rewrite(old_db, new_db)
    versions = stored(
        new_db,
        "SELECT event_type, schema_version FROM journal "
        "WHERE event_type IN ('RecordParsed', 'ProposeSucceeded') GROUP BY 1, 2 ORDER BY 1",
    )
    assert versions == [("ProposeSucceeded", 2), ("RecordParsed", 3)]

    verified = cli("verify", "--db", url(new_db))
    assert verified.exit_code == 0, verified.output
    old_store, new_store = open_store(url(old_db)), open_store(url(new_db))
    assert live_projections(new_store) == live_projections(old_store)
    check = cli("projections", "rebuild", "--check", "--db", url(new_db))
    assert check.exit_code == 0, check.output
    for offset, expected in ((0, HISTORY_0), (152, HISTORY_152), (98, HISTORY_98)):
        assert cli("history", "1", str(offset), "--db", url(new_db)).stdout == expected
        old_json = json.loads(
            cli("history", "1", str(offset), "--db", url(old_db), "--json").stdout
        )
        new_json = json.loads(
            cli("history", "1", str(offset), "--db", url(new_db), "--json").stdout
        )
        for event in old_json["events"] + new_json["events"]:
            event.pop("hash")  # the payloads differ, so do their hashes; nothing else
        assert new_json == old_json
    old_store.dispose()
    new_store.dispose()


# --- a journal of encoding version 2 (before RecordParsed version 3) ------------------------
#
# tests/fixtures/journal_v2.db.gz: the same input and runs as old_journal.db.gz, written by
# tests/fixtures/make_old_journal.py at commit 5da22f3, the last before RecordParsed version
# 3 (journal_loader/journal/parsed.py): every RecordParsed holds its record (version 2),
# every ProposeSucceeded its answers as arrays (version 2).
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "journal_v2.db.gz"


@pytest.fixture
def v2_db(tmp_path: Path) -> Path:
    path = tmp_path / "journal_v2.db"
    with gzip.open(FIXTURE_V2, "rb") as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    result = cli("db", "upgrade", "--db", f"sqlite:///{path}")
    assert result.exit_code == 0, result.output
    return path


def _without_times(text: str) -> str:
    """History or lineage text without what differs between two loads of the same input:
    times and run ids."""
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( UTC)?", "<time>", text)
    return re.sub(r"run [0-9a-f]{8}", "run <id>", text)


def test_a_version_2_journal_is_in_version_2(v2_db: Path) -> None:
    kinds = stored(
        v2_db,
        "SELECT event_type, schema_version, COUNT(*) FROM journal "
        "WHERE event_type IN ('RecordParsed', 'ProposeSucceeded') GROUP BY 1, 2 ORDER BY 1",
    )
    assert kinds == [("ProposeSucceeded", 2, 149), ("RecordParsed", 2, 152)]
    payloads = stored(v2_db, "SELECT payload FROM journal WHERE event_type = 'RecordParsed'")
    assert all("record" in json.loads(p) for (p,) in payloads)


def test_a_version_2_journal_verifies_rebuilds_and_replays(v2_db: Path, tmp_path: Path) -> None:
    result = cli("verify", "--db", url(v2_db), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["ok"], report["events"], report["total_breaks"]) == (True, EVENTS, 0)
    check = cli("projections", "rebuild", "--check", "--db", url(v2_db))
    assert check.exit_code == 0, check.output
    store = open_store(url(v2_db))
    at_end = tmp_path / "end.db"
    replayed = cli("replay", "--db", url(v2_db), "--until", str(EVENTS), "--into", url(at_end))
    assert replayed.exit_code == 0, replayed.output
    now = open_store(url(at_end))
    assert live_projections(now) == live_projections(store)
    now.dispose()
    store.dispose()


def test_a_version_2_journal_shows_the_same_history_and_lineage(v2_db: Path, old_db: Path) -> None:
    """The same input, journaled in versions 1 and 2: today's code shows both the same."""
    for offset in (0, 98, 152):
        v1 = cli("history", "1", str(offset), "--db", url(old_db))
        v2 = cli("history", "1", str(offset), "--db", url(v2_db))
        assert v2.exit_code == 0, v2.output
        assert _without_times(v2.stdout) == _without_times(v1.stdout)
    v1 = cli("lineage", "relationship", "3", "--db", url(old_db))
    v2 = cli("lineage", "relationship", "3", "--db", url(v2_db))
    assert v2.exit_code == 0, v2.output
    assert _without_times(v2.stdout) == _without_times(v1.stdout)
