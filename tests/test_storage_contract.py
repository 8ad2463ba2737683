"""One contract, two backends: what the runner relies on from a Store, and what the layers
above rely on from the domain repositories (storage/*_store.py, storage/audit_reader.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from journal_loader.errors import (
    FatalError,
    IntegrityConflictError,
    SourceLockedError,
    StorageError,
)
from journal_loader.journal.events import LoadStarted
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage import Store, open_store, schema
from journal_loader.storage import sqlite as sqlite_backend
from journal_loader.storage.base import JOURNAL_COLUMNS, JournalAppend
from tests.support.journal_order import append_in


def _append(store: Store, n: int = 1, source_id: int = 1) -> list[int]:
    with store.transaction() as tx:
        rows = JournalWriter(source_id, "run-1", None).append(
            tx, [PendingEvent.of(None, LoadStarted(reason="first")) for _ in range(n)]
        )
    return [r.position for r in rows]


@pytest.mark.parametrize("statement", ["UPDATE journal SET payload = '{}'", "DELETE FROM journal"])
def test_journal_refuses_update_and_delete(store: Store, statement: str) -> None:
    _append(store, 3)
    with pytest.raises(StorageError, match="append-only"), store.transaction() as tx:
        tx.execute(statement)
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == 3


def test_journal_refuses_truncate_on_postgresql(pg_url: str) -> None:
    store = open_store(pg_url)
    _append(store, 2)
    with pytest.raises(StorageError, match="append-only: TRUNCATE"), store.transaction() as tx:
        tx.execute("TRUNCATE journal")
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == 2
    store.dispose()


def test_positions_increase_and_rows_round_trip(store: Store) -> None:
    first = _append(store, 3)
    second = _append(store, 2)
    assert first == sorted(first) and second == sorted(second) and first[-1] < second[0]
    with store.read() as conn:
        j = schema.journal
        row = conn.execute(
            select(j.c.event_type, j.c.payload, j.c.prev_hash, j.c.hash, j.c.recorded_at)
            .order_by(j.c.position)
            .limit(1)
        ).one()
    assert row[0] == "LoadStarted" and row[1] == '{"type":"LoadStarted","reason":"first"}'
    assert row[2] is None and len(bytes(row[3])) == 32
    recorded = row[4] if row[4].tzinfo else row[4].replace(tzinfo=dt.UTC)
    assert abs((dt.datetime.now(dt.UTC) - recorded).total_seconds()) < 60


def test_a_reader_bounded_by_high_water_never_sees_a_later_lower_position(pg_url: str) -> None:
    """Positions need not follow commit order (PostgreSQL: a later batch commits without
    waiting for an earlier one); a reader that stops at the high water still never sees an
    event appear below a position it has read: while a lower batch is in flight, the high
    water stays below it and the higher committed batch is not handed out yet."""
    from journal_loader.storage.journal_store import journal_store

    store = open_store(pg_url)
    journal = journal_store(store)
    with store.transaction() as tx:
        mine = append_in(tx, 1)
        theirs = _append(store, 1, source_id=2)  # commits while ours is open, without waiting
        assert theirs[0] > mine[0]
        with store.read_tx() as reader:
            assert journal.high_water(reader) == mine[0] - 1
            assert journal.events_after(reader, 0) == []
    with store.read_tx() as reader:
        assert journal.high_water(reader) == theirs[0]
        assert [e.position for e in journal.events_after(reader, 0)] == mine + theirs
    store.dispose()


def test_high_water_is_the_last_position_when_nothing_is_in_flight(store: Store) -> None:
    from journal_loader.storage.journal_store import journal_store

    journal = journal_store(store)
    with store.read_tx() as reader:
        assert journal.high_water(reader) == 0 and journal.events_after(reader, 0) == []
    first = _append(store, 3)
    second = _append(store, 2)
    with store.read_tx() as reader:
        assert journal.high_water(reader) == second[-1]
        entries = journal.events_after(reader, first[0], limit=3)
        assert [e.position for e in entries] == first[1:] + second[:1]
        assert entries[0].event_type == "LoadStarted" and entries[0].source_id == 1


def test_rollback_leaves_nothing(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as tx:
        JournalWriter(1, "r", None).append(tx, [PendingEvent.of(None, LoadStarted(reason="x"))])
        tx.insert_rows("loader_settings", ("name", "value"), [("a", "b")])
        raise Boom
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM loader_settings")).scalar_one() == 0


def test_savepoint_undoes_only_its_own_writes(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_rows("loader_settings", ("name", "value"), [("kept", "1")])
        with pytest.raises(StorageError), tx.savepoint():
            tx.insert_rows("loader_settings", ("name", "value"), [("gone", "1")])
            tx.run("INSERT INTO loader_settings (name, value) VALUES ('kept', 'dup')")
    with store.read() as conn:
        names = conn.execute(text("SELECT name FROM loader_settings")).scalars().all()
    assert names == ["kept"]


def test_unique_violation_is_an_integrity_conflict(store: Store) -> None:
    with pytest.raises(IntegrityConflictError), store.transaction() as tx:
        tx.insert_rows("loader_settings", ("name", "value"), [("a", "1"), ("a", "2")])


def test_missing_table_is_fatal(store: Store) -> None:
    with pytest.raises(FatalError), store.transaction() as tx:
        tx.execute("SELECT * FROM no_such_table")


def test_reserved_ids_are_unique_across_transactions(store: Store) -> None:
    seen: set[int] = set()
    for _ in range(3):
        with store.transaction() as tx:
            ids = tx.reserve_ids("nodes", 5) + [tx.next_id("nodes") for _ in range(5)]
            now = tx.timestamp(dt.datetime.now(dt.UTC))
            tx.insert_rows(
                "nodes",
                (
                    "id",
                    "node_type",
                    "name",
                    "norm_name",
                    "external_key",
                    "created_at",
                    "updated_at",
                ),
                [(i, "T", f"n{i}", f"n{i}", None, now, now) for i in ids],
            )
        assert not seen & set(ids)
        seen |= set(ids)
    assert len(seen) == 30


def test_source_lock_is_exclusive_and_names_the_holder(store: Store) -> None:
    lock = store.lock_source("t:abc", {"run_id": "run-first", "pid": 123, "hostname": "h"})
    assert lock.is_held() and not store.lock_is_free("t:abc")
    with pytest.raises(SourceLockedError, match="run-first") as info:
        store.lock_source("t:abc", {"run_id": "run-second"})
    assert info.value.exit_code == 75
    other = store.lock_source("t:other", {"run_id": "x"})  # other sources are independent
    other.release()
    lock.release()
    assert store.lock_is_free("t:abc")
    store.lock_source("t:abc", {"run_id": "run-third"}).release()


def test_lock_vanishes_when_its_holder_is_killed(db_url: str) -> None:
    store = open_store(db_url)
    script = textwrap.dedent(f"""
        import sys, time
        from journal_loader.storage import open_store
        s = open_store({db_url!r})
        lock = s.lock_source("t:held", {{"run_id": "child"}})
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(SourceLockedError, match="child"):
            store.lock_source("t:held", {"run_id": "parent"})
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 10  # the server notices the dead connection quickly
        while not store.lock_is_free("t:held") and time.monotonic() < deadline:
            time.sleep(0.05)
        store.lock_source("t:held", {"run_id": "parent"}).release()
    finally:
        child.kill()
        store.dispose()


def test_two_registrations_at_once_get_two_source_ids(pg_url: str) -> None:
    """Both transactions take an id before either commits: MAX(source_id) + 1 gave both the
    same one (and the second was refused by sources_pkey); the sequence gives two."""
    from journal_loader.storage.journal_store import journal_store

    store = open_store(pg_url)
    try:
        journal = journal_store(store)
        with store.transaction() as a, store.transaction() as b:
            first = journal.next_source_id(a)
            second = journal.next_source_id(b)
        assert first != second
    finally:
        store.dispose()


def test_source_ids_move_past_rows_written_without_the_sequence(pg_url: str) -> None:
    """A database filled by `replay --into` has sources the sequence never handed out: the
    next registration still gets a free id."""
    from journal_loader.storage.journal_store import journal_store

    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            tx.execute(
                "INSERT INTO sources (source_id, source_type, source_name, source_version, "
                "file_name, file_path, file_hash, file_size_bytes, records_processed, "
                "records_imported, records_failed, records_skipped, status, last_position, "
                "created_at, updated_at) VALUES (7, 't', 'n', 'v', 'f', 'p', 'h', 0, 0, 0, 0, 0, "
                "'completed', 0, now(), now())"
            )
        with store.transaction() as tx:
            assert journal_store(store).next_source_id(tx) == 8
    finally:
        store.dispose()


def test_advisory_locks_are_capped_per_call(pg_url: str) -> None:
    """20,000 names (a first-load batch of 5,000 records names about that many) would
    overflow the server's shared lock table ("out of shared memory"): past the cap they share
    bucket locks, and a name still excludes another transaction that wants it."""
    import psycopg
    from sqlalchemy import make_url

    from journal_loader.storage.base import lock_key
    from journal_loader.storage.postgres import MAX_ADVISORY_LOCKS, bucket_key

    store = open_store(pg_url)
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        names = [f"name:Company:acme {i}" for i in range(20_000)]
        with store.transaction() as tx:
            tx.advisory_xact_lock("graph-entities", names)
            held = tx.fetchone(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )[0]
            assert 0 < held <= MAX_ADVISORY_LOCKS
            ns = store.namespace
            bucket = lock_key(f"{ns}:graph-entities:{names[123]}") % MAX_ADVISORY_LOCKS
            wanted = bucket_key(ns, "graph-entities", bucket)
            with psycopg.connect(admin, autocommit=True) as other:
                got = other.execute("SELECT pg_try_advisory_lock(%s)", (wanted,)).fetchone()
                assert got is not None and got[0] is False
    finally:
        store.dispose()


def test_journal_store_reads_what_a_run_wrote(db_url: str, tmp_path: Path) -> None:
    """JournalStore, the repository the runner resumes and fences with, answers the same on
    both backends: where the source stands, its chain head, its checkpoint, one record's
    events, and a lease that a newer generation takes away."""
    from journal_loader import run
    from journal_loader.storage.journal_store import journal_store
    from tests.support.loaders import PairLoader, write_csv

    rows = [[f"Company {i}", f"City {i % 3}"] for i in range(10)]
    data = write_csv(tmp_path / "pairs.csv", ["name", "city"], rows)
    report = run(PairLoader, data, db=db_url, batch_size=4, limit=8)
    assert report.status == "partial" and report.source_id is not None
    source_id = report.source_id
    store = open_store(db_url)
    try:
        journal = journal_store(store)
        with store.transaction() as tx:
            row = journal.source_for_run(tx, "pairs", report.file_hash)
            assert row is not None and row.source_id == source_id
            assert row.status == "partial" and row.current_run_id == report.run_id
            assert journal.source_by_identity(tx, "pairs", "no such hash") is None
            last = tx.fetchone(
                "SELECT position, hash FROM journal WHERE source_id = :s "
                "ORDER BY position DESC LIMIT 1",
                {"s": source_id},
            )
            assert row.last_position == int(last[0])
            assert journal.chain_head(tx, source_id) == bytes(last[1])
            assert journal.chain_head(tx, source_id + 1) is None
            mark = journal.load_mark(tx, source_id)
            assert mark is not None and mark.event_type == "BatchCommitted"
            entry = journal.event_at(tx, mark.position)
            assert entry is not None and entry.event_type == "BatchCommitted"
            assert entry.payload == mark.payload and entry.recorded_at.tzinfo is not None
            events = journal.record_events(tx, source_id, 5)
            assert [e.event_type for e in events] == ["RecordParsed", "ProposeSucceeded"]
            assert journal.record_events(tx, source_id, 8) == []  # past --limit
            assert journal.attempts_after(tx, source_id, 0) == []  # an embedded graph's run
            assert journal.next_source_id(tx) == source_id + 1
            now = dt.datetime.now(dt.UTC)
            first = journal.acquire_lease(tx, source_id, "run-a", "host", 1, now)
            second = journal.acquire_lease(tx, source_id, "run-b", "host", 2, now)
            assert second == first + 1
            assert not journal.check_lease(tx, source_id, first, now)  # fenced out
            assert journal.check_lease(tx, source_id, second, now)
    finally:
        store.dispose()


# --- the domain repositories: what the layers above rely on, on both backends ----------------


def _journal(
    store: Store, source_id: int, run_id: str, events: list[tuple[int | None, Any]]
) -> None:
    """Append events to a source's chain in one transaction, the projections applied."""
    from journal_loader import projections
    from journal_loader.storage.journal_store import journal_store

    with store.transaction() as tx:
        head = journal_store(store).chain_head(tx, source_id)
        writer = JournalWriter(source_id, run_id, head)
        rows = writer.append(tx, [PendingEvent.of(o, e) for o, e in events])
        projections.apply(tx, rows)


def _registered(source_id: int) -> Any:
    from journal_loader.journal.events import SourceRegistered

    return SourceRegistered(
        source_type="pairs",
        source_name="pairs",
        version_label="v1",
        file_name=f"f{source_id}.csv",
        file_path=f"/data/f{source_id}.csv",
        file_hash=f"{source_id:064x}",
        file_size=10,
        file_mtime="2026-01-01T00:00:00Z",
        update_frequency="daily",
        format="csv",
    )


def test_json_text_reads_a_payload_field_in_each_dialect(store: Store) -> None:
    """One text for both dialects: JSON_TEXT(alias.payload, 'field') becomes the backend's JSON
    accessor when queries are loaded, and reads the field's text."""
    from journal_loader.storage.sql import render_dialect

    _append(store, 2)
    sql = render_dialect(
        "SELECT JSON_TEXT(j.payload, 'reason'), JSON_TEXT(j.payload, 'missing') "
        "FROM journal j ORDER BY j.position",
        store.dialect,
    )
    assert "JSON_TEXT" not in sql
    with store.read() as conn:
        assert [tuple(r) for r in conn.execute(text(sql))] == [("first", None), ("first", None)]
    with pytest.raises(ValueError, match="JSON_TEXT"):
        render_dialect("SELECT JSON_TEXT(payload -> 'x', 'y')", store.dialect)


def test_audit_reader_streams_bounded_batches_in_position_order(store: Store) -> None:
    from journal_loader.journal.events import LoadStarted
    from journal_loader.storage.audit_reader import EVENT_COLUMNS, audit_reader

    reader = audit_reader(store)
    assert reader.last_position() == 0 and not reader.source_exists(1)
    _journal(store, 1, "run-a", [(None, _registered(1)), (None, LoadStarted(reason="first"))])
    _journal(store, 2, "run-b", [(None, _registered(2)), (None, LoadStarted(reason="first"))])
    _journal(store, 1, "run-a", [(None, LoadStarted(reason="force"))])
    last = reader.last_position()
    assert last == 5 and reader.source_exists(2) and not reader.source_exists(3)
    assert reader.claimed_heads() == {1: 5, 2: 4} and reader.claimed_heads(2) == {2: 4}

    batches = list(reader.event_batches(last=last, batch=2))
    assert [len(b) for b in batches] == [2, 2, 1]
    rows = [r for b in batches for r in b]
    assert len(rows[0]) == len(EVENT_COLUMNS)
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (1, 1, "SourceRegistered"),
        (2, 1, "LoadStarted"),
        (3, 2, "SourceRegistered"),
        (4, 2, "LoadStarted"),
        (5, 1, "LoadStarted"),
    ]
    one = [r[0] for b in reader.event_batches(last=last, source_id=1, from_position=2) for r in b]
    assert one == [2, 5]
    bounded = [r[0] for b in reader.event_batches(last=3) for r in b]
    assert bounded == [1, 2, 3]  # what was committed when the walk began, nothing after


def test_audit_reader_answers_naming_takes_an_id_literally(store: Store) -> None:
    """The candidates of a deployment id's lineage: LIKE wildcards in the id are literal."""
    from journal_loader.graph.protocol import Action, ProposeResult
    from journal_loader.journal.events import ProposeSucceeded
    from journal_loader.storage.audit_reader import audit_reader

    def answer(entity: str | int) -> ProposeSucceeded:
        action = Action(action="entity_created", role="source", entity_id=entity)
        return ProposeSucceeded(results=[ProposeResult(status="success", actions=[action])])

    _journal(
        store,
        1,
        "run-a",
        [(None, _registered(1)), (0, answer("ab_1")), (1, answer("abx1")), (2, answer(4242))],
    )
    reader = audit_reader(store)
    found = reader.answers_naming("ab_1")
    assert [(a.record_offset, a.file_name, a.run_id) for a in found] == [(0, "f1.csv", "run-a")]
    assert [a.record_offset for a in reader.answers_naming("ab%")] == []
    assert [a.record_offset for a in reader.answers_naming(4242)] == [2]


def test_ops_store_reads_a_sources_runs_and_outcomes(store: Store) -> None:
    from journal_loader.journal.events import (
        LoadStarted,
        ProposeSucceeded,
        RecordFailed,
        RecordSkipped,
        RunFinished,
        RunStarted,
    )
    from journal_loader.storage.ops_store import ops_store
    from journal_loader.storage.queue_store import queue_store

    _journal(
        store,
        1,
        "run-a",
        [
            (None, _registered(1)),
            (None, LoadStarted(reason="first")),
            (None, RunStarted(loader="pairs", mode="new")),
            (0, RecordFailed(stage="parse", error_type="ValueError", message="bad 1")),
            (1, RecordFailed(stage="parse", error_type="ValueError", message="bad 2")),
            (None, RunFinished(status="partial")),
        ],
    )
    _journal(
        store,
        1,
        "run-b",
        [
            (None, RunStarted(loader="pairs", mode="resume", resume_offset=2)),
            (0, ProposeSucceeded(results=[], retry_of=4)),
            (1, RecordSkipped(reason="empty", retry_of=5)),
            (None, RunFinished(status="completed", records_in_file=2)),
        ],
    )
    ops = ops_store(store)
    with store.read() as conn:
        b_start = conn.execute(
            text("SELECT MIN(position) FROM journal WHERE run_id = 'run-b'")
        ).scalar()
    # after: the source's last position before the run (dlq retry reads it first)
    for after in (0, b_start - 1):
        outcomes = ops.run_outcomes(1, "run-b", after)
        assert sorted((o, kind) for o, kind, _ in outcomes) == [
            (0, "ProposeSucceeded"),
            (1, "RecordSkipped"),
        ]
    assert sorted((o, kind) for o, kind, _ in ops.run_outcomes(1, "run-a", 0)) == [
        (0, "RecordFailed"),
        (1, "RecordFailed"),
    ]
    assert ops.run_outcomes(1, "run-a", b_start - 1) == []  # only what follows `after`
    finished = sorted(ops.run_finished_events(1))
    assert [run for run, _ in finished] == ["run-a", "run-b"]
    assert '"status":"partial"' in finished[0][1]
    retry = ops.retry_source(1)
    assert retry.load_started == 2 and '"mode":"resume"' in retry.run_started
    assert retry.source["file_name"] == "f1.csv"
    row = ops.source_row(1)
    assert row is not None and row["status"] == "completed" and row["records_skipped"] == 1
    assert ops.source_row(2) is None
    assert ops.dlq_depth("pairs") == 0 and ops.dlq_entries() == []
    assert [r["source_id"] for r in ops.source_status()] == [1]
    assert (queue_store(store) is None) == (not store.is_server)


def test_sqlite_writers_take_turns(tmp_path: Path) -> None:
    """A second process's write transaction gets in between a busy writer's transactions
    (storage/sqlite.py, SQLiteStore.transaction: the writers' turnstile). Without it the
    second writer's busy handler polls every up to 100 ms and misses gaps of microseconds:
    it waited for all of the first writer's transactions (or failed after 60 s)."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    store = open_store(url)
    with store.transaction() as tx:
        tx.run("CREATE TABLE scratch (id INTEGER PRIMARY KEY, who TEXT NOT NULL)")
    b_done = tmp_path / "B.done"
    busy = textwrap.dedent(f"""
        import os, time
        from journal_loader.storage import open_store
        s = open_store({url!r})
        tickets = s.lock_dir / "writers"
        for i in range(40):  # back to back, as a runner's batches, 10 ms each
            with s.transaction() as tx:
                tx.run("INSERT INTO scratch (who) VALUES ('A')")
                time.sleep(0.01)
                # From the 4th on, in its turn until B is queued or done: the parent
                # queues B once it sees 3 rows, and a parent the scheduler leaves waiting
                # for ~90 ms used to find A's 40 all written (a race, not the turnstile).
                deadline = time.monotonic() + 60
                while (i >= 3 and len(os.listdir(tickets)) < 2
                       and not os.path.exists({str(b_done)!r}) and time.monotonic() < deadline):
                    time.sleep(0.0005)
    """)
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with store.read() as conn:
                if conn.execute(text("SELECT count(*) FROM scratch")).scalar() >= 3:
                    break
            time.sleep(0.005)
        with store.transaction() as tx:
            tx.run("INSERT INTO scratch (who) VALUES ('B')")
        b_done.touch()
        assert child.wait(60) == 0
        with store.read() as conn:
            order = [w for (w,) in conn.execute(text("SELECT who FROM scratch ORDER BY id"))]
    finally:
        child.kill()
        store.dispose()
    assert order.count("A") == 40
    assert order.index("B") < 12, order  # in a few turns, not after the other's 40


_BUSY_WRITER = textwrap.dedent("""
    import os, sys, time
    from journal_loader.storage import open_store
    url, who, ready, go, done, other_done = sys.argv[1:7]
    s = open_store(url)
    tickets = s.lock_dir / "writers"
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    for _ in range(40):  # back to back, as a runner's batches
        with s.transaction() as tx:
            tx.run("INSERT INTO scratch (who) VALUES (?)", (who,))
            time.sleep(0.003)
            # In its turn, until the other writer is queued (its ticket drawn) or done: a
            # writer the scheduler starts late, or leaves unscheduled between two
            # transactions, is not yet queued, and what this test checks is the order of
            # writers that are (a sleep alone left that to the scheduler).
            deadline = time.monotonic() + 60
            while (len(os.listdir(tickets)) < 2 and not os.path.exists(other_done)
                   and time.monotonic() < deadline):
                time.sleep(0.0005)
    open(done, "w").close()
    s.dispose()
""")


def test_sqlite_busy_writers_alternate(tmp_path: Path) -> None:
    """Two processes writing back to back take strict turns (storage/sqlite.py,
    _WriterQueue): a writer coming back for its next transaction queues behind the one
    already waiting. With the first turnstile, one exclusive flock, the releaser took the
    lock again before the woken waiter ran: runs of 2-25 transactions by one writer, and
    under load one writer's whole job before the other's first (the --workers 2 test in
    tests/test_ops_jobs.py failed 2 runs in 8)."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    store = open_store(url)
    with store.transaction() as tx:
        tx.run("CREATE TABLE scratch (id INTEGER PRIMARY KEY, who TEXT NOT NULL)")
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _BUSY_WRITER,
                url,
                who,
                str(tmp_path / who),
                str(go),
                str(tmp_path / f"{who}.done"),
                str(tmp_path / f"{other}.done"),
            ]
        )
        for who, other in ("AB", "BA")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / who).exists() for who in "AB"):
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.005)
        go.touch()
        assert [c.wait(60) for c in children] == [0, 0]
        with store.read() as conn:
            order = "".join(w for (w,) in conn.execute(text("SELECT who FROM scratch ORDER BY id")))
    finally:
        for c in children:
            c.kill()
        store.dispose()
    assert sorted(order) == ["A"] * 40 + ["B"] * 40
    # Every prefix: neither writer more than 2 turns ahead (one may start a moment earlier)
    ahead = [order[:n].count("A") - order[:n].count("B") for n in range(1, len(order) + 1)]
    assert max(abs(a) for a in ahead) <= 2, order


def test_sqlite_writers_queue_survives_a_killed_writer(tmp_path: Path) -> None:
    """A writer killed (SIGKILL) in its turn, with a writer queued behind it: the kernel
    drops its flocks, the queued writer goes on, its ticket file is removed by a later
    writer, and the killed transaction left nothing (storage/sqlite.py, _WriterQueue)."""
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    store = open_store(url)
    with store.transaction() as tx:
        tx.run("CREATE TABLE scratch (id INTEGER PRIMARY KEY, who TEXT NOT NULL)")
    inside = tmp_path / "inside"
    hold = textwrap.dedent(f"""
        import time
        from journal_loader.storage import open_store
        s = open_store({url!r})
        with s.transaction() as tx:
            tx.run("INSERT INTO scratch (who) VALUES ('killed')")
            open({str(inside)!r}, "w").close()
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", hold])
    try:
        deadline = time.monotonic() + 60
        while not inside.exists():
            assert time.monotonic() < deadline and child.poll() is None, "the child did not start"
            time.sleep(0.005)
        queued = threading.Thread(target=_insert_one, args=(store, "queued"))
        queued.start()
        # Until the thread has drawn its ticket (a 0.3 s sleep could end before it had,
        # on a loaded machine), then a moment more: it must still be waiting.
        deadline = time.monotonic() + 60
        while len(os.listdir(store.lock_dir / "writers")) < 2:  # the child's and ours
            assert time.monotonic() < deadline, "the second writer never queued"
            time.sleep(0.005)
        time.sleep(0.3)
        assert queued.is_alive(), "the second writer did not wait for the first"
        assert len(os.listdir(store.lock_dir / "writers")) == 2
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
        queued.join(60)
        assert not queued.is_alive()
        _insert_one(store, "after")
        with store.read() as conn:
            rows = [w for (w,) in conn.execute(text("SELECT who FROM scratch ORDER BY id"))]
        assert rows == ["queued", "after"]
        assert os.listdir(store.lock_dir / "writers") == []
    finally:
        child.kill()
        store.dispose()


def _insert_one(store: Store, who: str) -> None:
    with store.transaction() as tx:
        tx.run("INSERT INTO scratch (who) VALUES (?)", (who,))


def test_upgrade_at_head_does_not_wait_for_a_writer(tmp_path: Path) -> None:
    """A process that found no schema and waited for another's migration finds the schema
    at head under the migration lock and writes nothing (storage/base.py, Store.upgrade).
    Before, Alembic began a write transaction anyway and, on SQLite, waited in the busy
    handler for a writer that commits back to back; here the writer holds its transaction
    until upgrade() has returned, so waiting would never end."""
    url = f"sqlite:///{tmp_path / 'head.db'}"
    store = open_store(url)  # migrates: the schema is at head
    inside, release = tmp_path / "inside", tmp_path / "release"
    hold = textwrap.dedent(f"""
        import os, time
        from journal_loader.storage import open_store
        s = open_store({url!r})
        with s.transaction() as tx:
            tx.run("DELETE FROM failed_records")
            open({str(inside)!r}, "w").close()
            while not os.path.exists({str(release)!r}):
                time.sleep(0.01)
        s.dispose()
    """)
    child = subprocess.Popen([sys.executable, "-c", hold])
    try:
        deadline = time.monotonic() + 60
        while not inside.exists():
            assert time.monotonic() < deadline and child.poll() is None, "the child did not start"
            time.sleep(0.005)
        upgraded = threading.Thread(target=store.upgrade, daemon=True)
        upgraded.start()
        upgraded.join(20)
        assert not upgraded.is_alive(), "upgrade() at head waited for the writer"
        assert child.poll() is None  # the writer was inside its transaction all along
    finally:
        release.touch()
        assert child.wait(60) == 0
        store.dispose()


def _wal_frames(db: Path) -> int:
    """Frames in use in a WAL file (those whose salt is the header's: a restarted WAL
    keeps its size and the old frames after the new ones)."""
    data = db.with_name(db.name + "-wal").read_bytes()
    page_size, salt = int.from_bytes(data[8:12], "big"), data[16:24]
    frames, at = 0, 32
    while at + 24 + page_size <= len(data) and data[at + 8 : at + 16] == salt:
        frames += 1
        at += 24 + page_size
    return frames


def test_sqlite_checkpoints_in_a_thread_and_the_wal_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 (storage/sqlite.py, _Checkpointer): the writer's own checkpoints only past a
    backstop, a thread copies the WAL into the database after each commit, and once the WAL
    holds ``restart_frames`` frames a write transaction waits for that copy, so its commit
    starts the WAL over. What was committed is in the database file by then, read by a
    connection that does not read the WAL; at dispose the WAL is checkpointed and gone."""
    from journal_loader.storage.sqlite import _Checkpointer

    monkeypatch.setattr(_Checkpointer, "restart_frames", 20)
    monkeypatch.setattr(_Checkpointer, "min_interval", 0.0)
    db = tmp_path / "ckpt.db"
    store = open_store(f"sqlite:///{db}")
    try:
        with store.transaction() as tx:
            tx.run("CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        most = 0
        for i in range(60):
            with store.transaction() as tx:
                for j in range(10):
                    tx.run(
                        "INSERT INTO scratch (id, v) VALUES (:id, :v)",
                        {"id": i * 10 + j, "v": "x" * 1500},
                    )
                time.sleep(0.003)  # a batch's work, inside its transaction as a runner's
            if i >= 10:  # past the schema's frames, written before any checkpoint
                most = max(most, _wal_frames(db))
        assert "sqlite-checkpoint ckpt.db" in {t.name for t in threading.enumerate()}
        # started over past 20 frames (+ what commits while a copy is under way); else 400+
        assert most < 60, most
        # the database file alone (no WAL read) has the rows copied so far: all of them
        # once the thread has copied the last commit (polled: a fixed 0.5 s sleep could end
        # first on a loaded machine)
        deadline, copied = time.monotonic() + 30, 0
        while copied != 600 and time.monotonic() < deadline:
            ro = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
            try:
                copied = ro.execute("SELECT count(*) FROM scratch").fetchone()[0]
            except sqlite3.DatabaseError:
                # "malformed": immutable=1 reads the file without a lock, and the thread may
                # be copying pages into it at that moment (a torn read, not a torn file: the
                # next poll reads it whole); seen once in a full run on a loaded machine
                copied = -1
            finally:
                ro.close()
            time.sleep(0.05)
        assert copied == 600
    finally:
        store.dispose()
    assert not db.with_name(db.name + "-wal").exists()
    assert "sqlite-checkpoint ckpt.db" not in {t.name for t in threading.enumerate()}


def test_sqlite_checkpoints_without_the_thread(tmp_path: Path) -> None:
    """``SQLiteStore.checkpoint_thread = False``: SQLite's own checkpoints, after commit."""
    from journal_loader.storage.sqlite import SQLiteStore

    class Inline(SQLiteStore):
        checkpoint_thread = False

    db = tmp_path / "inline.db"
    store = Inline(f"sqlite:///{db}")
    try:
        store.ensure_schema()
        with store.transaction() as tx:
            tx.run("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")
            tx.run("INSERT INTO scratch (id) VALUES (1)")
        assert "sqlite-checkpoint inline.db" not in {t.name for t in threading.enumerate()}
        with store.read() as conn:
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
    finally:
        store.dispose()


# --- a batch's journal rows: Tx.insert_journal against Tx.insert_rows ------------------------

_payload_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_journal_batches = st.lists(
    st.tuples(
        st.none() | st.integers(0, 2**62),  # the record's offset
        st.sampled_from(["RecordParsed", "ProposeSucceeded", "BatchCommitted", "RécordÉvent"]),
        st.integers(1, 9),  # the schema version
        _payload_text.map(str.encode),
    ),
    min_size=1,
    max_size=30,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    events=_journal_batches,
    head=st.none() | st.binary(min_size=32, max_size=32),
    statement_bytes=st.sampled_from([64 << 20, 1, 40]),
)
def test_insert_journal_writes_the_rows_insert_rows_writes(
    store: Store, events: list[Any], head: bytes | None, statement_bytes: int
) -> None:
    """Every column, type and all, on both backends: SQLite writes a batch's journal with
    one statement (``SQLiteTx.journal_insert``: the payloads cut from one blob, the hashes
    from another, the rest from JSON), and with several when the payloads outgrow
    ``_JOURNAL_STATEMENT_BYTES`` (each statement's first ``prev_hash`` is then the row
    before it). Whatever the payload's text (any character but NUL: PostgreSQL's text has
    none), the rows are those ``insert_rows`` writes."""
    hashes = [hashlib.sha256(b"%d" % i + p).digest() for i, (*_, p) in enumerate(events)]
    reads = []
    with store.transaction() as tx:
        stamp = tx.timestamp(dt.datetime(2026, 11, 30, 8, 0, 0, 123456, tzinfo=dt.UTC))
        written = []
        for one_statement in (True, False):
            batch = JournalAppend(
                tx.reserve_positions(len(events)),
                7,
                "run-ü",
                stamp,
                head,
                [e[0] for e in events],
                [e[1] for e in events],
                [e[2] for e in events],
                [e[3] for e in events],
                hashes,
            )
            if one_statement:
                old, sqlite_backend._JOURNAL_STATEMENT_BYTES = (
                    sqlite_backend._JOURNAL_STATEMENT_BYTES,
                    statement_bytes,
                )
                try:
                    tx.insert_journal(batch)
                finally:
                    sqlite_backend._JOURNAL_STATEMENT_BYTES = old
            else:
                tx.insert_rows("journal", JOURNAL_COLUMNS, batch.rows())
            written.append(batch.positions)
        typed = ", typeof(payload), typeof(prev_hash), typeof(record_offset)"
        for positions in written:
            rows = tx.fetchall(
                f"SELECT {', '.join(JOURNAL_COLUMNS[1:])}"
                f"{typed if store.dialect == 'sqlite' else ''} FROM journal "
                "WHERE position >= :lo AND position <= :hi ORDER BY position",
                {"lo": positions[0], "hi": positions[-1]},
            )
            reads.append(
                [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
            )
    assert reads[0] == reads[1]
    assert len(reads[0]) == len(events)
    assert [r[7] for r in reads[0]] == [head, *hashes[:-1]]  # prev_hash: the row before
    assert [r[4] for r in reads[0]] == [e[3].decode() for e in events]  # the payload as text
