"""Faults for real (issue 4): transient and fatal database errors, killed connections, lost
locks, a full disk, a read-only database, a Propose target that goes away. Each test ends
by checking that nothing was lost and nothing was applied twice."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, make_url, text

from journal_loader import faults, run
from journal_loader.errors import TransientError
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.protocol import ProposeResult
from journal_loader.projections import rebuild
from journal_loader.storage import Store, open_store
from tests.support.loaders import PairLoader, write_csv
from tests.support.pg import PG_URL, drop_pg_schema, make_pg_schema
from tests.support.snapshots import dlq_snapshot, graph_snapshot, sources_snapshot, terminal_counts

HEADER = ["name", "city"]
ROWS = 120
BATCH = 20
FAST = {"processing": {"retry_delay": 0.01, "retry_max_delay": 0.05}}


@pytest.fixture(autouse=True)
def _no_faults() -> Iterator[None]:
    faults.reset(None)
    yield
    faults.reset(None)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [[f"Company {i}", "BAD" if i % 17 == 0 else f"City {i % 9}"] for i in range(ROWS)]
    return write_csv(tmp_path / "pairs.csv", HEADER, rows)


@pytest.fixture(scope="module")
def clean_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("clean")
    rows = [[f"Company {i}", "BAD" if i % 17 == 0 else f"City {i % 9}"] for i in range(ROWS)]
    path = write_csv(tmp / "pairs.csv", HEADER, rows)
    url = f"sqlite:///{tmp / 'clean.db'}"
    assert run(PairLoader, path, db=url, batch_size=BATCH).status == "completed"
    store = open_store(url)
    state = _state(store)
    store.dispose()
    return state


def _state(store: Store) -> dict[str, Any]:
    terminals = terminal_counts(store)
    return {
        "graph": graph_snapshot(store),
        "sources": [s[2:] for s in sources_snapshot(store)],
        "dlq": [d[1:] for d in dlq_snapshot(store)],
        "terminals": (sorted(terminals), set(terminals.values())),
    }


def _equals_clean(store: Store, clean: dict[str, Any]) -> None:
    state = _state(store)
    assert state["terminals"] == (list(range(ROWS)), {1})
    assert state["graph"] == clean["graph"]
    assert state["sources"] == clean["sources"]
    assert state["dlq"] == clean["dlq"]
    assert rebuild(store, check=True).ok


class Retries:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_retry(self, kind: str, message: str, delay: float) -> None:
        self.seen.append(message)


# --- PostgreSQL: errors raised by the server ------------------------------------------------


@pytest.fixture
def pg(pg_url: str) -> Iterator[tuple[str, str]]:
    """(url with a unique application_name, that name)."""
    app = f"jl-test-{uuid.uuid4().hex[:10]}"
    url = make_url(pg_url).update_query_dict({"application_name": app})
    yield url.render_as_string(hide_password=False), app


def _admin() -> psycopg.Connection[Any]:
    url = make_url(PG_URL or "").set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def _install_fault_trigger(store: Store, table: str, errcode: str, at: list[int]) -> None:
    """Raise SQLSTATE ``errcode`` at the given insert counts into ``table``. The counter is a
    sequence: it survives the rollback the error causes, so each fault fires once."""
    with store.transaction() as tx:
        tx.execute("CREATE SEQUENCE fault_seq")
        tx.execute(f"""
            CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF nextval('fault_seq') IN ({", ".join(map(str, at))}) THEN
                RAISE EXCEPTION 'injected fault' USING ERRCODE = '{errcode}';
              END IF;
              RETURN NEW;
            END $$""")
        tx.execute(
            f"CREATE TRIGGER fault BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION fault()"
        )


@pytest.mark.parametrize(
    ("errcode", "table"), [("40001", "journal"), ("40P01", "relationships"), ("55P03", "nodes")]
)
def test_transient_server_errors_are_retried_without_duplicates(
    pg: tuple[str, str], data: Path, clean_state: dict[str, Any], errcode: str, table: str
) -> None:
    url, _ = pg
    store = open_store(url)
    _install_fault_trigger(store, table, errcode, [5, 90, 91])
    retries = Retries()
    report = run(PairLoader, data, db=url, batch_size=BATCH, config=FAST, observers=[retries])
    assert report.status == "completed", report.message
    assert len(retries.seen) == 3 and all(errcode in r for r in retries.seen)
    assert report.statistics.total_processed == ROWS  # each record counted once
    _equals_clean(store, clean_state)
    store.dispose()


class RetryKinds:
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def on_retry(self, kind: str, message: str, delay: float) -> None:
        self.kinds.append(kind)


@pytest.mark.parametrize("errcode", ["23505", "40P01"])
def test_conflicts_retry_on_their_own_budget(
    pg: tuple[str, str], data: Path, clean_state: dict[str, Any], errcode: str
) -> None:
    """A unique key another loader committed first, or a deadlock, is a conflict, not an
    outage: 8 in a row are retried although max_retries is 1 and the circuit breaker 2, and
    nothing doubles."""
    url, _ = pg
    store = open_store(url)
    _install_fault_trigger(store, "nodes", errcode, list(range(3, 11)))
    kinds = RetryKinds()
    config = {"processing": {**FAST["processing"], "max_retries": 1, "circuit_breaker": 2}}
    report = run(PairLoader, data, db=url, batch_size=BATCH, config=config, observers=[kinds])
    assert report.status == "completed", report.message
    assert kinds.kinds == ["conflict"] * 8
    assert report.statistics.total_processed == ROWS
    _equals_clean(store, clean_state)
    store.dispose()


def test_endless_conflicts_give_up_saying_what_happened(pg: tuple[str, str], data: Path) -> None:
    url, _ = pg
    store = open_store(url)
    _install_fault_trigger(store, "nodes", "23505", list(range(1, 200)))
    report = run(PairLoader, data, db=url, batch_size=BATCH, config=FAST)
    assert report.status == "failed"
    assert "another loader kept writing the same rows first (20 conflicts in a row" in (
        report.message
    )
    assert "database or target is back" not in report.message
    assert sources_snapshot(store)[0][4] == 0  # the first batch never committed
    store.dispose()


def test_permission_denied_fails_fast(pg: tuple[str, str], data: Path) -> None:
    url, _ = pg
    store = open_store(url)
    _install_fault_trigger(store, "provenance_nodes", "42501", [30])  # (a table of the view's)
    retries = Retries()
    report = run(PairLoader, data, db=url, batch_size=BATCH, config=FAST, observers=[retries])
    assert report.status == "failed" and report.exit_code == 1
    assert "42501" in report.message and retries.seen == []  # not retried
    assert sources_snapshot(store)[0][2] == "failed"
    assert sources_snapshot(store)[0][4] < ROWS  # stopped at once
    store.dispose()


@pytest.mark.parametrize("boundary", ["before_propose", "before_commit", "after_commit"])
def test_terminated_connection_is_retried(
    pg: tuple[str, str], data: Path, clean_state: dict[str, Any], boundary: str
) -> None:
    """pg_terminate_backend on the loader's connection mid-batch, right before COMMIT, and
    between batches: the batch is retried on a new connection, nothing doubles."""
    url, app = pg
    killed: list[int] = []

    def terminate(n: int) -> None:
        if n in (3, 4) and len(killed) < 2:
            with _admin() as admin:
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (app,),
                ).fetchall()
            killed.append(len(rows))

    faults.on(boundary, terminate)
    store = open_store(url)
    report = run(PairLoader, data, db=url, batch_size=BATCH, config=FAST)
    assert report.status == "completed", report.message
    assert killed and killed[0] >= 1
    _equals_clean(store, clean_state)
    store.dispose()


def test_run_that_loses_its_lock_stops_before_its_next_write(
    pg: tuple[str, str], data: Path, clean_state: dict[str, Any]
) -> None:
    url, _ = pg
    store = open_store(url)
    run_id: list[str] = []

    class Remember:
        def on_start(self, info: dict[str, Any]) -> None:
            run_id.append(info["run_id"])

    def kill_lock(n: int) -> None:
        if n == 2:
            with _admin() as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (f"journal-loader run {run_id[0]}",),
                )

    faults.on("after_commit", kill_lock)
    report = run(PairLoader, data, db=url, batch_size=BATCH, observers=[Remember()])
    assert report.status == "failed" and "lost its lock" in report.message
    with store.read() as conn:
        after = conn.execute(
            text("SELECT COUNT(*) FROM journal WHERE event_type = 'BatchCommitted'")
        ).scalar_one()
    assert after == 2  # nothing written after the lock was lost
    faults.reset(None)
    assert run(PairLoader, data, db=url, batch_size=BATCH).status == "completed"
    _equals_clean(store, clean_state)
    store.dispose()


# --- both backends ---------------------------------------------------------------------------


def test_a_newer_run_fences_out_the_old_one(
    db_url: str, data: Path, clean_state: dict[str, Any]
) -> None:
    """A run whose lease generation moved on (a newer run took over the source) stops before
    its next write; it never appends after its successor started."""
    store = open_store(db_url)

    def take_over(n: int) -> None:
        if n == 2:
            with store.transaction() as tx:
                tx.run("UPDATE source_leases SET generation = generation + 1")

    faults.on("after_commit", take_over)
    report = run(PairLoader, data, db=db_url, batch_size=BATCH)
    assert report.status == "failed" and "lost source" in report.message
    with store.read() as conn:
        kinds = conn.execute(text("SELECT event_type FROM journal ORDER BY position")).scalars()
        assert "RunFinished" not in list(kinds)  # not even its end: it is not its source now
    faults.reset(None)
    again = run(PairLoader, data, db=db_url, batch_size=BATCH)
    assert again.status == "completed" and again.resumed_from == 2 * BATCH
    _equals_clean(store, clean_state)
    store.dispose()


class FlakyTarget(EmbeddedGraph):
    """The embedded graph behind an outage: ``propose_fact`` raises a transient error (as a
    remote Propose API does with 503 + Retry-After) for the calls in ``down``."""

    def __init__(self, store: Store, down: range) -> None:
        super().__init__(store)
        self.calls = 0
        self.down = down

    def propose_fact(self, *args: Any, **kwargs: Any) -> ProposeResult:
        self.calls += 1
        if self.calls in self.down:
            raise TransientError("Propose API: 503 Service Unavailable", retry_after=0.01)
        return super().propose_fact(*args, **kwargs)


def test_target_outage_waits_and_loses_nothing(
    db_url: str, data: Path, clean_state: dict[str, Any]
) -> None:
    store = open_store(db_url)
    retries = Retries()
    report = run(
        PairLoader,
        data,
        db=db_url,
        batch_size=BATCH,
        config=FAST,
        observers=[retries],
        graph=FlakyTarget(store, range(30, 33)),
    )
    assert report.status == "completed" and len(retries.seen) == 3
    assert "503" in retries.seen[0]
    _equals_clean(store, clean_state)  # no record of the outage went to the DLQ
    store.dispose()


def test_outage_longer_than_the_retries_fails_the_run_and_the_rerun_completes(
    db_url: str, data: Path, clean_state: dict[str, Any]
) -> None:
    store = open_store(db_url)
    cfg = {"processing": {"retry_delay": 0.01, "retry_max_delay": 0.02, "max_retries": 2}}
    report = run(
        PairLoader,
        data,
        db=db_url,
        batch_size=BATCH,
        config=cfg,
        graph=FlakyTarget(store, range(50, 10_000)),
    )
    assert report.status == "failed" and "giving up after 2 retries" in report.message
    assert dlq_snapshot(store) == [] or all(r[4] == "ValidationError" for r in dlq_snapshot(store))
    done_before = sources_snapshot(store)[0][4]
    assert 0 < done_before < ROWS
    recovered = run(PairLoader, data, db=db_url, batch_size=BATCH)
    assert recovered.status == "completed" and recovered.resumed_from == done_before
    _equals_clean(store, clean_state)
    store.dispose()


def test_circuit_breaker_stops_a_run_that_keeps_failing(db_url: str, data: Path) -> None:
    store = open_store(db_url)
    cfg = {
        "processing": {
            "retry_delay": 0.001,
            "retry_max_delay": 0.002,
            "max_retries": 50,
            "circuit_breaker": 4,
        }
    }
    retries = Retries()
    report = run(
        PairLoader,
        data,
        db=db_url,
        batch_size=BATCH,
        config=cfg,
        observers=[retries],
        graph=FlakyTarget(store, range(1, 10_000)),
    )
    assert report.status == "failed" and "4 transient failures in a row" in report.message
    assert len(retries.seen) == 3  # the fourth failure opens the circuit instead of a retry
    store.dispose()


# --- SQLite: the disk ------------------------------------------------------------------------


def test_sqlite_disk_full_fails_clearly_and_keeps_the_checkpoint(
    sqlite_url: str, data: Path, clean_state: dict[str, Any]
) -> None:
    first = run(PairLoader, data, db=sqlite_url, batch_size=BATCH, limit=2 * BATCH)
    assert first.status == "partial"
    store = open_store(sqlite_url)
    with store.read() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()

    @event.listens_for(store.engine, "connect")
    def tiny_disk(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages + 2}")

    store.engine.dispose()  # the store keeps its connection open: the next one gets the limit
    report = run(PairLoader, data, db=sqlite_url, batch_size=BATCH, store=store)
    assert report.status == "failed"
    assert "full" in report.message.lower()
    event.remove(store.engine, "connect", tiny_disk)
    fresh = open_store(sqlite_url)
    assert sources_snapshot(fresh)[0][4] == 2 * BATCH  # the checkpoint did not move
    assert run(PairLoader, data, db=sqlite_url, batch_size=BATCH).status == "completed"
    _equals_clean(fresh, clean_state)
    fresh.dispose()
    store.dispose()


def test_sqlite_read_only_database_fails_clearly(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "journal.db"
    run(PairLoader, data, db=f"sqlite:///{path}", batch_size=BATCH, limit=BATCH)
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    with pytest.raises(Exception, match=r"readonly|read-only") as info:
        run(PairLoader, data, db=read_only, batch_size=BATCH)
    assert getattr(info.value, "exit_code", None) == 1
    store = open_store(f"sqlite:///{path}")
    assert sources_snapshot(store)[0][4] == BATCH
    store.dispose()


def test_drop_schema_helper_is_idempotent() -> None:
    if not PG_URL:
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    _, schema = make_pg_schema()
    drop_pg_schema(schema)
    drop_pg_schema(schema)
