"""A journal that shows any edit: ``verify`` recomputes the hash chains and finds the first
broken position; ``--export-heads`` / ``--against`` catch what a chain alone cannot (deleted
tail events, a chain rewritten from an edit onwards). Every tamper is made as the table's
owner would: on SQLite with the append-only triggers dropped, on PostgreSQL with
``ALTER TABLE journal DISABLE TRIGGER USER``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader import run
from journal_loader.audit.verify import Head, canonical_time, read_heads, verify
from journal_loader.errors import UsageError
from journal_loader.journal.chain import canonical, format_time
from journal_loader.projections import rebuild
from journal_loader.storage import Store
from tests.support.audit import JournalSim, as_owner_without_guards, cli, write_pairs_csv
from tests.support.loaders import PairLoader


def journal_of_two_sources(store: Store) -> JournalSim:
    """Source 1 and source 2, their events interleaved, 30-odd events in all."""
    sim = JournalSim(store)
    a = sim.register()
    b = sim.register()
    sim.batch(a, ["ok", "fail", "skip"])
    sim.batch(b, ["ok", "ok"])
    sim.batch(a, ["invalid", "ok"])
    sim.finish(b, "completed")
    sim.batch(a, ["ok"])
    sim.finish(a, "partial")
    return sim


def events_of(store: Store, source_id: int) -> list[int]:
    with store.read() as conn:
        return [
            int(r[0])
            for r in conn.execute(
                text("SELECT position FROM journal WHERE source_id = :s ORDER BY position"),
                {"s": source_id},
            )
        ]


def verify_json(db_url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("verify", "--db", db_url, "--json", *extra)
    return result.exit_code, json.loads(result.stdout)


# --- an intact journal ------------------------------------------------------------------------


def test_verify_passes_on_an_intact_journal(db_url: str, tmp_path: Path, store: Store) -> None:
    path = write_pairs_csv(
        tmp_path / "p.csv", [("Acme", "Springfield"), ("Bad", "BAD"), ("#", "x")]
    )
    run(PairLoader, path, db=db_url, batch_size=1)
    journal_of_two_sources(store)
    result = cli("verify", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert "journal intact" in result.stdout and "3 source(s)" in result.stdout
    code, report = verify_json(db_url, "--source", "2")
    assert code == 0 and report["ok"] and report["events"] == len(events_of(store, 2))


def test_verify_an_unknown_source_is_an_error(db_url: str, store: Store) -> None:
    journal_of_two_sources(store)
    result = cli("verify", "--db", db_url, "--source", "99")
    assert result.exit_code == 2  # an id that does not exist is a usage error
    assert result.stderr.startswith("error: no source 99 in the journal")


# --- edits ------------------------------------------------------------------------------------


EDITS = {
    "garbage_time": "UPDATE journal SET recorded_at = 'yesterday' WHERE position = :p",
    "payload": "UPDATE journal SET payload = replace(payload, 'record 3 is bad', "
    "'record 3 is fine') WHERE position = :p",
    "recorded_at": "UPDATE journal SET recorded_at = :t WHERE position = :p",
    "event_type": "UPDATE journal SET event_type = 'RecordSkipped' WHERE position = :p",
    "run_id": "UPDATE journal SET run_id = 'someone-else' WHERE position = :p",
    "record_offset": "UPDATE journal SET record_offset = 4 WHERE position = :p",
    "source_id": "UPDATE journal SET source_id = 2 WHERE position = :p",
}


@pytest.mark.parametrize("column", list(EDITS))
def test_verify_catches_an_edited_event(db_url: str, store: Store, column: str) -> None:
    journal_of_two_sources(store)
    with store.read() as conn:
        target = conn.execute(
            text(
                "SELECT position FROM journal "
                "WHERE event_type = 'RecordFailed' AND record_offset = 3"
            )
        ).scalar_one()
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    as_owner_without_guards(store, (EDITS[column], {"p": target, "t": later}))

    code, report = verify_json(db_url)
    assert code == 1 and not report["ok"]
    assert report["first_broken_position"] == target
    first = report["breaks"][0]
    assert first["position"] == target and first["kind"] in ("hash", "prev_hash")
    if column != "source_id":
        # the one edit is one break: the rest of the chain checks out from the stored hash
        assert report["total_breaks"] == 1 and first["kind"] == "hash"
    text_out = cli("verify", "--db", db_url)
    assert text_out.exit_code == 1
    assert f"first broken position {target}" in text_out.stderr
    if column != "source_id":
        assert cli("verify", "--db", db_url, "--source", "2").exit_code == 0  # untouched


def test_verify_catches_a_deleted_event(db_url: str, store: Store) -> None:
    journal_of_two_sources(store)
    positions = events_of(store, 1)
    gone, after = positions[5], positions[6]
    as_owner_without_guards(store, ("DELETE FROM journal WHERE position = :p", {"p": gone}))
    code, report = verify_json(db_url)
    assert code == 1
    assert report["first_broken_position"] == after
    assert [b["kind"] for b in report["breaks"]] == ["prev_hash"]
    assert f"position {positions[4]}" in report["breaks"][0]["message"]


def test_verify_catches_a_deleted_first_event(db_url: str, store: Store) -> None:
    journal_of_two_sources(store)
    first, second = events_of(store, 2)[:2]
    as_owner_without_guards(store, ("DELETE FROM journal WHERE position = :p", {"p": first}))
    code, report = verify_json(db_url)
    assert code == 1 and report["first_broken_position"] == second
    assert "events before it were deleted" in report["breaks"][0]["message"]


def test_verify_catches_a_deleted_tail_with_exported_heads(
    db_url: str, store: Store, tmp_path: Path
) -> None:
    """Deleting a source's last events leaves a shorter chain that is valid. The sources
    projection still names the old last event; once it is rebuilt from the shortened journal,
    only the heads exported earlier show what was deleted."""
    journal_of_two_sources(store)
    heads = tmp_path / "heads.json"
    exported = cli("verify", "--db", db_url, "--export-heads", str(heads))
    assert exported.exit_code == 0, exported.output
    assert f"written to {heads}" in exported.stdout
    saved = {h.source_id: h for h in read_heads(heads)}
    assert saved[1].position == events_of(store, 1)[-1]
    assert saved[1].events == len(events_of(store, 1))

    tail = events_of(store, 1)[-2:]
    as_owner_without_guards(
        store, ("DELETE FROM journal WHERE position >= :p AND source_id = 1", {"p": tail[0]})
    )
    code, report = verify_json(db_url)  # the projection still remembers
    assert code == 1 and [b["kind"] for b in report["breaks"]] == ["missing_tail"]

    rebuild(store)  # a careful tamperer rebuilds the projections: the chain alone is fine now
    code, report = verify_json(db_url)
    assert code == 0 and report["ok"]

    code, report = verify_json(db_url, "--against", str(heads))
    assert code == 1
    assert report["first_broken_position"] == tail[-1]
    assert [b["kind"] for b in report["breaks"]] == ["head_missing"]
    assert report["heads_checked"] == 2
    text_out = cli("verify", "--db", db_url, "--against", str(heads))
    assert text_out.exit_code == 1
    assert "no longer in the journal" in text_out.stderr
    assert cli("verify", "--db", db_url, "--against", str(heads), "--source", "2").exit_code == 0


def test_verify_catches_a_rewritten_chain_with_exported_heads(
    db_url: str, store: Store, tmp_path: Path
) -> None:
    """Edit an event and recompute every later hash of its source: the chain is consistent
    again, only the exported head's hash reveals it."""
    journal_of_two_sources(store)
    heads = tmp_path / "heads.json"
    assert cli("verify", "--db", db_url, "--export-heads", str(heads)).exit_code == 0
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT position, source_id, record_offset, event_type, schema_version, payload, "
                "run_id, recorded_at FROM journal WHERE source_id = 1 ORDER BY position"
            )
        ).all()
    statements: list[tuple[str, dict[str, Any]]] = []
    prev: bytes | None = None
    for r in rows:
        payload = r[5].replace("record 3 is bad", "record 3 is fine")
        stamp = canonical_time(r[7] if isinstance(r[7], str) else format_time(r[7]))
        digest = hashlib.sha256(
            (prev or b"") + canonical(r[1], r[2], r[3], r[4], r[6], stamp, payload.encode())
        ).digest()
        statements.append(
            (
                "UPDATE journal SET payload = :payload, prev_hash = :prev, hash = :hash "
                "WHERE position = :p",
                {"payload": payload, "prev": prev, "hash": digest, "p": r[0]},
            )
        )
        prev = digest
    assert sum("record 3 is fine" in p["payload"] for _, p in statements) == 1
    as_owner_without_guards(store, *statements)
    code, report = verify_json(db_url)
    assert code == 0, report  # a consistent chain
    code, report = verify_json(db_url, "--against", str(heads))
    assert code == 1 and [b["kind"] for b in report["breaks"]] == ["head_changed"]
    assert report["first_broken_position"] == rows[-1][0]


def test_heads_are_not_exported_from_a_broken_journal(
    db_url: str, store: Store, tmp_path: Path
) -> None:
    journal_of_two_sources(store)
    position = events_of(store, 2)[1]
    as_owner_without_guards(
        store, ("UPDATE journal SET run_id = 'x' WHERE position = :p", {"p": position})
    )
    heads = tmp_path / "heads.json"
    result = cli("verify", "--db", db_url, "--export-heads", str(heads))
    assert result.exit_code == 1
    assert "heads NOT written" in result.stderr and not heads.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the heads file"),
        ("{not json", "not a heads file (not JSON"),
        ('{"heads": []}', 'expected "format"'),
        (
            '{"format": "journal-loader chain heads v1", "heads": [{"source_id": 1, '
            '"position": 3, "hash": "abcd"}]}',
            "a head is malformed",
        ),
    ],
)
def test_unusable_heads_files_are_usage_errors(
    sqlite_url: str, tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "heads.json"
    if content is not None:
        path.write_text(content)
    result = cli("verify", "--db", sqlite_url, "--against", str(path))
    assert result.exit_code == 2
    assert message in result.stderr
    with pytest.raises(UsageError):
        read_heads(path)


def test_verify_function_reports_heads(store: Store) -> None:
    sim = journal_of_two_sources(store)
    report = verify(store)
    assert report.ok and report.events == sum(len(events_of(store, s)) for s in (1, 2))
    assert report.heads[1] == Head(
        1, events_of(store, 1)[-1], sim.sources[0].head or b"", len(events_of(store, 1))
    )


def test_canonical_time_forms() -> None:
    assert canonical_time("2026-01-31 12:00:00.000001") == "2026-01-31T12:00:00.000001Z"
    assert canonical_time("2026-01-31T12:00:00.000001Z") == "2026-01-31T12:00:00.000001Z"
    assert canonical_time("2026-01-31 13:00:00+01:00") == "2026-01-31T12:00:00.000000Z"
    assert (
        canonical_time(dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)) == "2026-01-31T12:00:00.000000Z"
    )
