"""The next batch planned while this one's rows are written (issue 11): ``BatchLoop`` reads
batch N+1 before N commits, and ``BatchCommitter`` hands N's journal rows (and on PostgreSQL
its last graph rows) to a write behind, parses N+1 and collects its facts meanwhile, then
applies N's projections and commits N (``_append_behind_and_plan_ahead``). On SQLite the
journal's rows go in by one statement that runs without the GIL (``SQLiteTx.journal_insert``).

What must hold, and is pinned here on both backends:

* the same graph, answers, DLQ and journal as a load that plans nothing ahead, and every
  batch planned once (a plan made ahead is the one its batch uses);
* a transient error inside that write (the journal's insert) retries the batch, and the
  result is still the same;
* a read error after the batches read ahead ends the run where it ends without reading
  ahead: every record before the damage committed, none after it;
* PostgreSQL, a write behind still running when a batch's records are all resolved: the
  batch's last graph rows are queued behind it while the next batch is planned
  (``Tx.write_behind_queued``), with the same result as handing them over once it ended,
  also with a deadlock injected inside those writes (tests/test_crash.py kills a run just
  after such a write);
* an error the loader raises while the next batch is planned is that batch's: the batch
  being committed commits, and the run fails at the next one, as without planning ahead;
* crash anywhere, rerun: tests/test_crash.py kills runs at every boundary, with a batch
  planned ahead in memory;
* SQLite COMMITs behind (``Tx.commit_behind``: the journal's rows, the fault point, the
  lock check and COMMIT in one thread while the next batch is planned): the same load as
  committing in the run's thread; a COMMIT that fails in SQLite rolls its batch back and
  the load ends the same; a batch committed behind while the run's thread raises stays
  committed, its chain whole.
"""

from __future__ import annotations

import gzip
import io
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from journal_loader import faults, run
from journal_loader.errors import TransientError, UsageError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.runner.committer import BatchCommitter
from journal_loader.runner.lease import Lease
from journal_loader.storage import Store, open_store
from journal_loader.storage import sqlite as sqlite_backend
from journal_loader.storage.postgres import PostgresTx
from journal_loader.storage.sqlite import SQLiteTx
from tests.support.loaders import PairLoader, write_csv
from tests.support.mixed import COLUMNS, CONFIG, LOADER, ROWS, answers, journal
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.slow_server import HeldWrites
from tests.support.snapshots import dlq_snapshot, graph_snapshot, sources_snapshot


@pytest.fixture
def two_pg(two_urls: tuple[str, str]) -> tuple[str, str]:
    """Two fresh databases of one backend (both backends; the name is older than that)."""
    return two_urls


class Plans:
    """Counts ``_plan`` calls per batch, and the batches whose rows were written behind
    while the next was planned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The batches themselves, not their ids: a batch freed after its commit may leave its
        # id to a later list (CPython reuses the memory), and two batches planned once each
        # then look like one planned twice (seen once in CI on PostgreSQL).
        self.planned: list[list[Any]] = []
        self.ahead = 0
        plan, append = BatchCommitter._plan, BatchCommitter._append_behind_and_plan_ahead

        def counted_plan(committer: BatchCommitter, batch: list[Any]) -> Any:
            self.planned.append(batch)
            return plan(committer, batch)

        def counted_append(committer: BatchCommitter, tx: Any, events: Any) -> None:
            self.ahead += 1
            append(committer, tx, events)

        monkeypatch.setattr(BatchCommitter, "_plan", counted_plan)
        monkeypatch.setattr(BatchCommitter, "_append_behind_and_plan_ahead", counted_append)


def _mixed(tmp_path: Path) -> tuple[Path, Path]:
    """The mixed file three times over, with a record of the wrong width (a read error,
    concluded while a batch is planned) in each copy, and the records that read answers
    last (from them on, a batch is proposed fact by fact and nothing is planned ahead)."""
    rows = [r for r in ROWS if r[6] != "read"] * 3 + [r for r in ROWS if r[6] == "read"]
    data = write_csv(tmp_path / "mixed.csv", COLUMNS, rows)
    lines = data.read_bytes().splitlines(keepends=True)
    for at in (30, 20, 5):
        lines.insert(at, b"a record,of the wrong width\n")
    data.write_bytes(b"".join(lines))
    (tmp_path / "mixed_loader.py").write_text(LOADER)
    config = tmp_path / "mixed.yaml"
    config.write_text(CONFIG + "processing:\n  retry_delay: 0.01\n  retry_max_delay: 0.05\n")
    return data, config


def _load(store: Store, data: Path, config: Path, **kwargs: Any) -> dict[str, Any]:
    """Load; the run's counts (which the committer sums from the batches it committed)."""
    report = run(config=config, file=data, store=store, batch_size=8, **kwargs)
    assert report.status == "completed", report.message
    return msgspec.structs.asdict(report.statistics)


def _dlq(store: Store) -> list[tuple[object, ...]]:
    """The DLQ with the database's name and node ids out of the messages (as in
    tests/test_write_behind.py: the two loads' schemas and ids differ)."""
    url = store.display_url
    return [
        (*r[:5], re.sub(r"\b\d+ '", "<id> '", str(r[5]).replace(url, "<db>")), r[6])
        for r in dlq_snapshot(store)
    ]


def _payloads(store: Store) -> list[tuple[str, int | None, str]]:
    """The events whose payloads do not name the database or its ids, payload and all: what
    each record was parsed into, each skip, and each batch's checkpoint with its counts."""
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT event_type, record_offset, payload FROM journal WHERE event_type IN "
                "('RecordParsed', 'RecordSkipped', 'BatchCommitted') ORDER BY position"
            )
        ).all()
    return [(str(t), o, str(p)) for t, o, p in rows]


def _same(one: Store, other: Store) -> None:
    assert graph_snapshot(one) == graph_snapshot(other)
    assert answers(one) == answers(other)
    assert _dlq(one) == _dlq(other)
    assert journal(one) == journal(other)
    assert _payloads(one) == _payloads(other)
    assert sources_snapshot(one) == sources_snapshot(other)  # the counts of every outcome


def test_planning_ahead_answers_as_without_it(
    two_pg: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, config = _mixed(tmp_path)
    reference = open_store(two_pg[1])
    ahead = open_store(two_pg[0])
    try:
        with monkeypatch.context() as m:
            m.setattr(BatchCommitter, "plans_ahead", property(lambda self: False))
            counted = _load(reference, data, config)
        plans = Plans(monkeypatch)
        assert _load(ahead, data, config) == counted
        batches = -(-sum(1 for _ in data.open()) // 8)  # lines / 8, rounded up (one spare)
        assert plans.ahead >= batches - 2, (plans.ahead, batches)
        # each batch planned once: the plan made ahead is the one its batch used
        assert len(plans.planned) == len({id(b) for b in plans.planned}), len(plans.planned)
        _same(ahead, reference)
    finally:
        reference.dispose()
        ahead.dispose()


def test_a_transient_error_in_the_rows_written_behind_retries_the_batch(
    two_pg: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transient error inside the write the next batch is planned beside, once: the batch
    is retried whole (planning its records again), the next one uses its plan, and nothing
    is lost or doubled. On PostgreSQL SQLSTATE 40P01 from a trigger on the journal at its
    40th row; on SQLite (whose triggers cannot raise a transient error) "database is
    locked" raised by the journal's insert of the fourth batch, in the write's thread."""
    data, config = _mixed(tmp_path)
    faulty = open_store(two_pg[0])
    faulty.ensure_schema()
    threads: list[str] = []
    if faulty.dialect == "postgresql":
        with faulty.transaction() as tx:
            tx.execute("CREATE SEQUENCE fault_seq")
            tx.execute("""
                CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF nextval('fault_seq') = 40 THEN
                    RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
                  END IF;
                  RETURN NEW;
                END $$""")
            tx.execute(
                "CREATE TRIGGER fault BEFORE INSERT ON journal FOR EACH ROW "
                "EXECUTE FUNCTION fault()"
            )
        expected = "40P01"
    else:
        journal_insert = SQLiteTx.journal_insert

        def locked_once(tx: SQLiteTx, rows: Any) -> Any:
            insert = journal_insert(tx, rows)

            def write() -> None:
                threads.append(threading.current_thread().name)
                if len(threads) == 4:
                    raise TransientError("database is locked (injected)")
                insert()

            return write

        monkeypatch.setattr(SQLiteTx, "journal_insert", locked_once)
        expected = "database is locked"
    retries: list[str] = []

    class Seen:
        def on_retry(self, kind: str, message: str, delay: float) -> None:
            retries.append(message)

    reference = open_store(two_pg[1])
    try:
        plans = Plans(monkeypatch)
        counted = _load(faulty, data, config, observers=[Seen()])
        assert len(retries) == 1 and expected in retries[0], retries
        assert plans.ahead > 0
        if threads:  # the journal's insert ran behind: in a thread of its own
            assert threads[3] != threading.main_thread().name, threads
        monkeypatch.undo()  # the fault and the counting
        monkeypatch.setattr(BatchCommitter, "plans_ahead", property(lambda self: False))
        assert _load(reference, data, config) == counted  # the retried batch counted once
        _same(faulty, reference)
    finally:
        faulty.dispose()
        reference.dispose()


class SlowServer:
    """A server slower than the client (tests/support/slow_server.py, ``HeldWrites``): each
    graph write behind is held until the run's thread waits for it or queues behind it, so
    a write still runs when a batch's records are all resolved, however fast the client;
    counts the batches whose last graph rows were queued behind it
    (``Tx.write_behind_queued``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(EmbeddedGraph, "write_behind_records", 2)
        self._held = HeldWrites(monkeypatch.setattr)

    @property
    def queued(self) -> int:
        return self._held.queued


@pytest.mark.postgres
@pytest.mark.parametrize("deadlock", [False, True])
def test_the_last_graph_rows_queued_behind_a_running_write_answer_as_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deadlock: bool
) -> None:
    """PostgreSQL, a write behind still running when the batch's records are resolved: the
    next batch is planned first, the batch's last graph rows queued behind that write, and
    the chain's reservation, the journal's rows and the projections follow
    (``_append_behind_and_plan_ahead``). The same graph, answers, DLQ, journal and counts as
    handing the last rows over once that write has ended. ``deadlock``: SQLSTATE 40P01 from
    a trigger at the 10th node (of 16), inside a write behind; the batch is retried whole."""
    data, config = _mixed(tmp_path)
    (queued_url, queued_schema), (ref_url, ref_schema) = make_pg_schema(), make_pg_schema()
    queued, reference = open_store(queued_url), open_store(ref_url)
    retries: list[str] = []

    class Seen:
        def on_retry(self, kind: str, message: str, delay: float) -> None:
            retries.append(message)

    try:
        if deadlock:
            queued.ensure_schema()
            with queued.transaction() as tx:
                tx.execute("CREATE SEQUENCE fault_seq")
                tx.execute("""
                    CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                      IF nextval('fault_seq') = 10 THEN
                        RAISE EXCEPTION 'injected deadlock' USING ERRCODE = '40P01';
                      END IF;
                      RETURN NEW;
                    END $$""")
                tx.execute(
                    "CREATE TRIGGER fault BEFORE INSERT ON nodes FOR EACH ROW "
                    "EXECUTE FUNCTION fault()"
                )
        with monkeypatch.context() as m:
            SlowServer(m)
            m.setattr(PostgresTx, "behind_running", property(lambda tx: False))
            counted = _load(reference, data, config)
        slow = SlowServer(monkeypatch)
        plans = Plans(monkeypatch)
        assert _load(queued, data, config, observers=[Seen()]) == counted
        assert slow.queued == plans.ahead and plans.ahead > 5, (slow.queued, plans.ahead)
        assert len(retries) == (1 if deadlock else 0) and all("40P01" in r for r in retries)
        _same(queued, reference)
    finally:
        queued.dispose()
        reference.dispose()
        drop_pg_schema(queued_schema)
        drop_pg_schema(ref_schema)


def test_a_read_error_after_batches_read_ahead_ends_the_run_where_it_ends_without(
    two_pg: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip file cut short: the batch being read ahead ends at the damage. The batch before
    it commits, then the records read before the damage, then the run fails, as without
    reading ahead (tests/test_bad_input.py, on SQLite)."""
    body = b"name,city\n" + b"".join(b"Company %d,City\n" % i for i in range(5000))
    whole = gzip.compress(body)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    readable = gzip.GzipFile(fileobj=io.BytesIO(path.read_bytes()))
    complete = 0
    try:
        for line in readable:
            complete += line.endswith(b"\n")
    except EOFError:
        pass
    results = []
    for url, planning in zip(two_pg, (True, False), strict=True):
        with monkeypatch.context() as m:
            if not planning:
                m.setattr(BatchCommitter, "plans_ahead", property(lambda self: False))
            plans = Plans(m)
            report = run(PairLoader, path, db=url, batch_size=500)
        assert report.status == "failed" and report.exit_code == 1
        assert "gzip" in report.message.lower() and str(path) in report.message
        assert (plans.ahead > 0) is planning
        store = open_store(url)
        src = sources_snapshot(store)[0]
        assert src[2] == "failed" and src[4] == complete - 1  # minus the header
        counted = msgspec.structs.asdict(report.statistics)
        results.append((src[1:], _payloads(store), graph_snapshot(store), counted))
        store.dispose()
    assert results[0] == results[1]


class StopsAtTwenty(PairLoader):
    """Raises an error that stops the run (not a record's own) at the 21st record: in the
    third batch of 8, planned while the second one's rows are written (the first batch is
    not read ahead: fail-fast is armed until a record succeeds)."""

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        if raw["name"] == "Company 20":
            raise UsageError("the loader cannot go on at Company 20")
        return super().parse(raw)


def test_an_error_planning_the_next_batch_is_that_batchs_not_this_ones(
    two_pg: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first two batches commit; the run then fails at the third, as without planning
    ahead (the error neither rolls the second batch back nor has it retried)."""
    rows = [[f"Company {i}", "X"] for i in range(30)]
    path = write_csv(tmp_path / "p.csv", ["name", "city"], rows)
    results = []
    for url, planning in zip(two_pg, (True, False), strict=True):
        with monkeypatch.context() as m:
            if not planning:
                m.setattr(BatchCommitter, "plans_ahead", property(lambda self: False))
            plans = Plans(m)
            report = run(StopsAtTwenty, path, db=url, batch_size=8)
        assert report.status == "failed" and "Company 20" in report.message
        assert (plans.ahead > 0) is planning
        store = open_store(url)
        results.append((report.exit_code, sources_snapshot(store)[0][1:], _payloads(store)))
        store.dispose()
    assert results[0] == results[1]
    assert results[0][1][3] == 16  # the first two batches' records, committed


def test_a_sqlite_library_without_the_json_operators_inserts_by_executemany_and_plans_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.38 has no ``->>``: its journal goes in by ``executemany`` in the run's
    thread (``_ONE_STATEMENT_JOURNAL``), so nothing is written behind and nothing planned
    ahead (``appends_behind``), and the load is the same as with the one statement."""
    data, config = _mixed(tmp_path)
    urls = [f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'old.db'}"]
    stores = [open_store(u) for u in urls]
    try:
        plans = Plans(monkeypatch)
        counted = _load(stores[0], data, config)
        assert plans.ahead > 0
        monkeypatch.undo()
        monkeypatch.setattr(sqlite_backend, "_ONE_STATEMENT_JOURNAL", False)
        monkeypatch.setattr(SQLiteTx, "appends_behind", False)
        executemany: list[int] = []
        insert_rows = SQLiteTx._insert_rows

        def counted_rows(tx: SQLiteTx, table: str, columns: Any, rows: Any) -> None:
            if table == "journal":
                executemany.append(len(rows))
            insert_rows(tx, table, columns, rows)

        monkeypatch.setattr(SQLiteTx, "_insert_rows", counted_rows)
        old = Plans(monkeypatch)
        assert _load(stores[1], data, config) == counted
        assert old.ahead == 0 and executemany
        _same(stores[1], stores[0])
    finally:
        for s in stores:
            s.dispose()


# --- SQLite commits behind: COMMIT in the thread that inserts the journal's rows ----------
class Commits:
    """The threads SQLite's COMMITs behind ran in (``SQLiteTx._commit_in_thread``); with
    ``sabotage``, the n-th of them first leaves a row that breaks a foreign key, checked at
    COMMIT (``PRAGMA defer_foreign_keys``): that COMMIT fails in SQLite itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sabotage: int = 0) -> None:
        self.threads: list[str] = []
        self.failed: list[str] = []
        self.steps: list[tuple[str, str]] = []  # (lock check | before_commit | COMMIT, thread)
        commit, check_lock = SQLiteTx._commit_in_thread, Lease.check_lock

        def checked(lease: Lease) -> None:
            self.steps.append(("lock check", threading.current_thread().name))
            check_lock(lease)

        def boundary(n: int) -> None:
            self.steps.append(("before_commit", threading.current_thread().name))

        monkeypatch.setattr(Lease, "check_lock", checked)
        # (this test's own callbacks, dropped with the monkeypatch)
        monkeypatch.setattr(faults, "_callbacks", {})
        monkeypatch.setattr(faults, "_counts", {})
        faults.on("before_commit", boundary)

        def counted(tx: SQLiteTx) -> None:
            self.threads.append(threading.current_thread().name)
            self.steps.append(("COMMIT", threading.current_thread().name))
            if len(self.threads) == sabotage:
                cur = tx.cursor
                cur.execute("PRAGMA defer_foreign_keys = ON")
                cur.execute(
                    "INSERT INTO attributes (id, node_id, attr_type, value, norm_value, "
                    "created_at) VALUES (1000000000, 1000000000, 'orphan', 'x', 'x', 0)"
                )
                try:
                    commit(tx)
                except Exception as e:
                    self.failed.append(str(e))
                    raise
                raise AssertionError("a COMMIT with a broken foreign key succeeded")
            commit(tx)

        monkeypatch.setattr(SQLiteTx, "_commit_in_thread", counted)


def _sqlite_pair(tmp_path: Path) -> tuple[Store, Store]:
    return (
        open_store(f"sqlite:///{tmp_path / 'behind.db'}"),
        open_store(f"sqlite:///{tmp_path / 'here.db'}"),
    )


def test_sqlite_commits_behind_what_it_commits_in_the_runs_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's COMMIT in the thread that inserts its journal rows, while the next batch
    is planned: the same graph, answers, DLQ, journal and counts as committing in the run's
    thread, and every batch planned ahead committed behind (BatchCommitter.
    _append_behind_and_plan_ahead)."""
    data, config = _mixed(tmp_path)
    behind, here = _sqlite_pair(tmp_path)
    try:
        with monkeypatch.context() as m:
            m.setattr(SQLiteTx, "commits_behind", False)
            commits = Commits(m)
            counted = _load(here, data, config)
            assert commits.threads == []
        plans = Plans(monkeypatch)
        commits = Commits(monkeypatch)
        assert _load(behind, data, config) == counted
        assert plans.ahead > 5 and len(commits.threads) == plans.ahead, (plans.ahead, commits)
        assert threading.main_thread().name not in commits.threads
        # each COMMIT behind comes after the fault point and the lock check, in its thread
        # (a run that lost its lock must not commit: Lease.check_lock)
        for i, step in enumerate(commits.steps):
            if step[0] == "COMMIT":
                assert commits.steps[i - 2 : i] == [
                    ("before_commit", step[1]),
                    ("lock check", step[1]),
                ], commits.steps[max(0, i - 3) : i + 1]
        _same(behind, here)
    finally:
        behind.dispose()
        here.dispose()


def test_a_commit_that_fails_behind_rolls_its_batch_back_and_the_load_ends_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third COMMIT behind fails in SQLite (a deferred foreign key): its batch rolls back
    whole, the row that broke the key with it, and is done again; the load ends as one that
    commits in the run's thread, every outcome counted once."""
    data, config = _mixed(tmp_path)
    behind, here = _sqlite_pair(tmp_path)
    try:
        commits = Commits(monkeypatch, sabotage=3)
        counted = _load(behind, data, config)
        assert len(commits.failed) == 1 and "FOREIGN KEY" in commits.failed[0], commits.failed
        monkeypatch.undo()
        monkeypatch.setattr(SQLiteTx, "commits_behind", False)
        assert _load(here, data, config) == counted
        _same(behind, here)
        with behind.read() as conn:
            assert not conn.execute(
                text("SELECT count(*) FROM attributes WHERE attr_type = 'orphan'")
            ).scalar()
    finally:
        behind.dispose()
        here.dispose()


class Halt(BaseException):
    """Not an Exception: the planning ahead does not keep it for its batch."""


class HaltsAtTwenty(PairLoader):
    """Raises Halt at the 21st record: in the third batch of 8, planned while the second
    one is committed behind."""

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        if raw["name"] == "Company 20" and not getattr(self, "go_on", False):
            raise Halt
        return super().parse(raw)


class GoesOn(HaltsAtTwenty):
    go_on = True


def test_a_batch_committed_behind_stays_committed_when_the_runs_thread_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's thread raises while the second batch's COMMIT runs behind: that COMMIT
    ends, and the batch is committed, journaled and counted as such. The journal's chain
    holds (``verify``: the run's last events are chained after the batch), and a rerun
    resumes after it and ends as one clean load."""
    from journal_loader.audit.verify import verify

    rows = [[f"Company {i}", "X"] for i in range(30)]
    path = write_csv(tmp_path / "p.csv", ["name", "city"], rows)
    url, clean_url = (f"sqlite:///{tmp_path / n}" for n in ("halted.db", "clean.db"))
    commits = Commits(monkeypatch)
    with pytest.raises(Halt):
        run(HaltsAtTwenty, path, db=url, batch_size=8)
    assert len(commits.threads) == 1  # the second batch's, behind
    store = open_store(url)
    try:
        assert verify(store).ok
        assert sources_snapshot(store)[0][4] == 16  # both batches' records, committed
        report = run(GoesOn, path, db=url, batch_size=8)
        assert report.status == "completed", report.message
        assert report.statistics.total_processed == 14  # resumed after the second batch
        assert verify(store).ok
        assert run(GoesOn, path, db=clean_url, batch_size=8).status == "completed"
        clean = open_store(clean_url)
        try:
            assert graph_snapshot(store) == graph_snapshot(clean)
            assert _payloads(store) == _payloads(clean)
        finally:
            clean.dispose()
    finally:
        store.dispose()
