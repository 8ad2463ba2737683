"""A batch's graph rows written behind the resolver (``Tx.write_behind``, issue 11): on
PostgreSQL the server inserts one part of a batch while the client resolves the next
records, in the same transaction.

What must hold, and is pinned here:

* the transaction's contract: the write runs; any other use of the transaction waits for it
  and sees its rows; while it runs, another is refused (the caller keeps its rows), never
  queued; its error is raised by the next use, by every use after it and by COMMIT, and the
  batch rolls back whole; the switch interval is put back once no write runs;
* ``write_behind_queued`` (the committer's last graph write while another still runs):
  never refused, run after the running write and only if it succeeded, without the two
  threads waiting for each other;
* the same graph, answers, DLQ and journal as proposing fact by fact with one write at the
  end, with a write after every record (the mixed file of tests/support/mixed.py: every
  way a record resolves and fails), also when the database itself refuses a record's row
  inside a write behind (the batch is redone record by record and that record alone fails);
* crash anywhere, rerun: tests/test_crash.py runs the example with the default setting,
  where each batch of 1,000 records writes behind; ``test_a_kill_while_a_write_runs`` kills
  a run inside one.
"""

from __future__ import annotations

import datetime as dt
import faulthandler
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from journal_loader import run
from journal_loader.config import load_config
from journal_loader.errors import JournalLoaderError, StorageError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.store import PROVENANCE_RECORD_COLUMNS
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import Tx
from journal_loader.switching import HELPER_SWITCH_INTERVAL
from tests.support.loaders import write_csv
from tests.support.mixed import COLUMNS, CONFIG, LOADER, ROWS, PerFact, answers, journal
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.snapshots import dlq_snapshot, graph_snapshot


def _count(store: Store) -> int:
    with store.read_tx() as tx:
        return int(tx.fetchone("SELECT count(*) FROM provenance_records")[0])


def _insert(tx: Tx, first: int, n: int, delay: float = 0.0) -> None:
    """``n`` provenance_records rows (a table without foreign keys), ids from ``first``."""
    if delay:
        time.sleep(delay)
    stamp = tx.graph_timestamp(dt.datetime.now(dt.UTC))
    rows = [(i, 1, i, "run", stamp, 1.0) for i in range(first, first + n)]
    tx.insert_rows("provenance_records", PROVENANCE_RECORD_COLUMNS, rows)


class _Gate:
    """Holds a write behind until the test has checked what it checks while that write
    runs (a sleep here raced the checks on a loaded machine). On a backend that writes at
    once, in the caller's thread, it is open from the start."""

    def __init__(self, *, open_now: bool) -> None:
        self._event = threading.Event()
        if open_now:
            self._event.set()

    def then(self, write: Callable[[], None]) -> Callable[[], None]:
        def held() -> None:
            assert self._event.wait(20), "the gate was never opened"
            write()

        return held

    def open(self) -> None:
        self._event.set()


def test_a_write_behind_is_seen_by_the_next_use_and_commits_with_the_batch(store: Store) -> None:
    store.ensure_schema()
    before = sys.getswitchinterval()
    with store.transaction() as tx:
        gate = _Gate(open_now=not tx.writes_behind)
        assert tx.write_behind(gate.then(lambda: _insert(tx, 1, 50)))
        if tx.writes_behind:  # PostgreSQL: in a thread; the next offer is refused meanwhile
            assert sys.getswitchinterval() <= HELPER_SWITCH_INTERVAL
            assert not tx.write_behind(lambda: _insert(tx, 1000, 1))
        gate.open()
        # the next use waits for the write, and sees its rows
        assert tx.fetchone("SELECT count(*) FROM provenance_records")[0] == 50
        assert tx.write_behind(lambda: _insert(tx, 51, 10))
    assert sys.getswitchinterval() == before
    assert _count(store) == 60


def test_a_failed_write_behind_breaks_the_transaction(store: Store) -> None:
    """Its error comes back at the next use and at every use after it (nothing else may run
    on a transaction the server has aborted), and at COMMIT: nothing of the batch stays."""
    store.ensure_schema()
    with pytest.raises(StorageError) as first, store.transaction() as tx:
        _insert(tx, 1, 5)
        assert tx.write_behind(lambda: _insert(tx, 1, 1))  # a duplicate primary key
        with pytest.raises(StorageError) as again:
            tx.fetchall("SELECT 1")
        with pytest.raises(StorageError) as more:
            tx.write_behind(lambda: _insert(tx, 100, 1))
        assert again.value is more.value
        raise again.value
    assert "provenance_records" in str(first.value) or "UNIQUE" in str(first.value).upper()
    assert _count(store) == 0


def test_commit_raises_the_error_of_a_write_nobody_waited_for(store: Store) -> None:
    store.ensure_schema()
    with pytest.raises(JournalLoaderError), store.transaction() as tx:
        _insert(tx, 1, 5)
        tx.write_behind(lambda: _insert(tx, 3, 1, delay=0.1))  # no use after it
    assert _count(store) == 0


def test_a_rollback_waits_for_the_write_still_running(store: Store) -> None:
    """An exception while a write runs: the connection is rolled back only once the write
    ended (never two threads on one connection); the exception is the one raised."""
    store.ensure_schema()
    done = threading.Event()

    def slow() -> None:
        _insert(tx, 1, 5, delay=0.3)
        done.set()

    with pytest.raises(KeyError), store.transaction() as tx:
        tx.write_behind(slow)
        raise KeyError("the resolver fails")
    assert done.is_set()
    assert _count(store) == 0


def test_a_queued_write_runs_after_the_one_running_and_commits_with_it(store: Store) -> None:
    """``write_behind_queued`` while a write runs: the caller goes on at once (nothing
    refused), the queued write starts only once the first has ended (it sees its rows), the
    first write's own use of the transaction does not wait for the one queued after it (it
    did once: the two threads waited for each other), and both commit with the batch."""
    store.ensure_schema()
    seen: list[int] = []

    def second(tx: Tx) -> None:
        seen.append(int(tx.fetchone("SELECT count(*) FROM provenance_records")[0]))
        _insert(tx, 51, 10)

    # Were the two threads to wait for each other again, this test would hang, not fail:
    # then the process dumps its threads' stacks and exits after 30 s (a failed test run).
    faulthandler.dump_traceback_later(30, exit=True)
    try:
        _queue_after_a_slow_write(store, second)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert seen == [50]
    assert _count(store) == 60


def _queue_after_a_slow_write(store: Store, second: Callable[[Tx], None]) -> None:
    with store.transaction() as tx:
        gate = _Gate(open_now=not tx.writes_behind)
        assert tx.write_behind(gate.then(lambda: _insert(tx, 1, 50)))
        # PostgreSQL: both in threads, the caller never waits. Had it waited for the first
        # write, held until the gate opens below, the gate's wait would have run out and
        # failed that write (and this test).
        tx.write_behind_queued(lambda: second(tx))
        if tx.writes_behind:
            assert tx.behind_running
        gate.open()
        assert tx.fetchone("SELECT count(*) FROM provenance_records")[0] == 60
        assert not tx.behind_running


def test_a_write_queued_after_a_failed_one_does_not_run(store: Store) -> None:
    """The first write fails: the one queued after it does not run, and the error is the
    first's, raised by the next use of the transaction; the batch rolls back whole."""
    store.ensure_schema()
    ran: list[bool] = []

    def second() -> None:
        ran.append(True)
        _insert(tx, 100, 1)

    with pytest.raises(StorageError) as failed, store.transaction() as tx:
        _insert(tx, 1, 5)
        if tx.writes_behind:
            assert tx.write_behind(lambda: _insert(tx, 1, 1, delay=0.2))  # a duplicate key
            tx.write_behind_queued(second)
            tx.fetchall("SELECT 1")
        else:  # SQLite writes at once: the failing write raises where it is offered
            tx.write_behind_queued(lambda: _insert(tx, 1, 1))
    assert ran == []
    assert "provenance_records" in str(failed.value) or "UNIQUE" in str(failed.value).upper()
    assert _count(store) == 0


def _dlq(store: Store) -> list[tuple[object, ...]]:
    """The DLQ, with the database's name and the node ids taken out of the messages: a
    batch redone record by record takes new ids (PostgreSQL's sequences never hand one out
    twice), so the two loads' ids differ (what they name is compared by ``_answers``)."""
    url = store.display_url
    return [
        (*r[:5], re.sub(r"\b\d+ '", "<id> '", str(r[5]).replace(url, "<db>")), r[6])
        for r in dlq_snapshot(store)
    ]


class WriteEveryRecord(EmbeddedGraph):
    """The rows of each record handed to a write behind as soon as the record is done."""

    write_behind_records = 1


def _load(url: str, graph_class: type[EmbeddedGraph], data: Path, config: Path) -> Store:
    store = open_store(url)
    store.ensure_schema()
    if store.dialect == "sqlite":
        sql = (
            "CREATE TRIGGER test_refuse BEFORE INSERT ON nodes WHEN NEW.name = 'Refused' "
            "BEGIN SELECT RAISE(ABORT, 'the test refuses this name'); END"
        )
    else:
        sql = "ALTER TABLE nodes ADD CONSTRAINT test_refuse CHECK (name <> 'Refused')"
    with store.transaction() as tx:
        tx.execute(sql)
    cfg = load_config(config)
    for i in range(2):  # the second load (--force) finds everything committed
        graph = graph_class.from_config(store, cfg)
        report = run(config=config, file=data, store=store, graph=graph, batch_size=8, force=i > 0)
        assert report.status == "completed", report.message
    return store


@pytest.mark.parametrize("refused", [False, True])
def test_writing_behind_every_record_answers_as_fact_by_fact(
    two_urls: tuple[str, str], tmp_path: Path, refused: bool
) -> None:
    """Lookups in a batch see the batch's own rows written so far (as in safe mode), and
    that changes no answer. ``refused``: a record whose node the database refuses, in the
    middle of a batch: its write fails behind the resolver, the batch is redone record by
    record, and that record alone is in the DLQ, as in the reference."""
    rows = [r for r in ROWS if r[6] != "read"] * 2 + [r for r in ROWS if r[6] == "read"]
    if refused:
        rows.insert(11, ["Refused", "", "", "Boston", "", "", ""])
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG)
    behind = _load(two_urls[0], WriteEveryRecord, data, config)
    reference = _load(two_urls[1], PerFact, data, config)
    try:
        assert graph_snapshot(behind) == graph_snapshot(reference)
        assert answers(behind) == answers(reference)
        assert _dlq(behind) == _dlq(reference)
        assert journal(behind) == journal(reference)
        refusals = [r for r in dlq_snapshot(behind) if "refuse" in str(r[5])]
        assert len(refusals) == (1 if refused else 0), dlq_snapshot(behind)
    finally:
        behind.dispose()
        reference.dispose()


@pytest.mark.postgres
def test_a_transient_error_inside_a_write_behind_retries_the_batch(
    pg_url: str, tmp_path: Path
) -> None:
    """A deadlock reported to the write behind's thread (a trigger raises SQLSTATE 40P01 at
    the 9th node inserted, once: its counter is a sequence, which the rollback keeps): the
    batch is retried whole, as any transient error, and nothing is lost or doubled."""
    rows = [r for r in ROWS if r[6] != "read"] * 2
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG + "processing:\n  retry_delay: 0.01\n  retry_max_delay: 0.05\n")
    faulty = open_store(pg_url)
    faulty.ensure_schema()
    with faulty.transaction() as tx:
        tx.execute("CREATE SEQUENCE fault_seq")
        tx.execute("""
            CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('fault_seq') = 9 THEN
                RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
              END IF;
              RETURN NEW;
            END $$""")
        tx.execute(
            "CREATE TRIGGER fault BEFORE INSERT ON nodes FOR EACH ROW EXECUTE FUNCTION fault()"
        )
    retries: list[str] = []

    class Seen:
        def on_retry(self, kind: str, message: str, delay: float) -> None:
            retries.append(message)

    graph = WriteEveryRecord.from_config(faulty, load_config(config))
    report = run(
        config=config,
        file=data,
        store=faulty,
        graph=graph,
        batch_size=8,
        observers=[Seen()],
    )
    assert report.status == "completed", report.message
    assert len(retries) == 1 and "40P01" in retries[0], retries
    reference_url, schema = make_pg_schema()
    reference = open_store(reference_url)
    try:
        graph = PerFact.from_config(reference, load_config(config))
        report = run(config=config, file=data, store=reference, graph=graph, batch_size=8)
        assert report.status == "completed", report.message
        assert graph_snapshot(faulty) == graph_snapshot(reference)
        assert answers(faulty) == answers(reference)
        assert _dlq(faulty) == _dlq(reference)
        assert journal(faulty) == journal(reference)
    finally:
        faulty.dispose()
        reference.dispose()
        drop_pg_schema(schema)
