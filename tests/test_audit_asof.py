"""History as of any moment: ``status --as-of``, ``replay --until --into``, and the property
that makes them trustworthy: for random journals and random cut points, the projections
computed from the journal cut at a position (or a time) equal the live projections as they
were right after that position committed."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from journal_loader import run
from journal_loader.audit import Cut, parse_cut
from journal_loader.audit.asof import replay, status_as_of
from journal_loader.errors import UsageError
from journal_loader.storage import Store, open_store
from tests.support.audit import (
    JournalSim,
    Snapshot,
    asof_projections,
    cli,
    last_position,
    live_projections,
    write_pairs_csv,
)
from tests.support.loaders import PairLoader
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.properties import example_counts

# --- the property -----------------------------------------------------------------------------

STEP = st.sampled_from(["new", "batch", "batch", "batch", "finish", "restart", "resolve", "retry"])
OUTCOME = st.sampled_from(["ok", "ok", "fail", "invalid", "skip"])


def drive(sim: JournalSim, data: st.DataObject, steps: int) -> None:
    """A random but legal history: sources registered, batches of random outcomes, runs that
    finish completed, partial or failed (or die: no RunFinished), resumes, --force reloads
    (DLQ records of the previous load fail or succeed again), ``dlq retry`` of the current
    load's failures (answered ok, failed again, invalid or skipped) and ``dlq resolve``."""
    sim.register()
    for _ in range(steps):
        step = data.draw(STEP, label="step")
        if step == "new" and len(sim.sources) < 3:
            sim.register()
            continue
        src = data.draw(st.sampled_from(sim.sources), label="source")
        if step == "retry":
            dlq = sim.dlq_offsets(src, current_load=True)
            if dlq:
                chosen = data.draw(st.lists(st.sampled_from(dlq), min_size=1, unique=True))
                sim.retry(src, {o: data.draw(OUTCOME, label="answer") for o in chosen})
        elif step == "batch":
            if src.status != "processing":
                sim.restart(src)
            sim.batch(src, data.draw(st.lists(OUTCOME, max_size=6), label="outcomes"))
        elif step == "finish" and src.status == "processing":
            sim.finish(src, data.draw(st.sampled_from(["completed", "partial", "failed"])))
        elif step == "restart":
            sim.restart(src)
        elif step == "resolve":
            dlq = sim.dlq_offsets(src)
            if dlq:
                sim.resolve(src, data.draw(st.lists(st.sampled_from(dlq), min_size=1, unique=True)))


def check_cuts(sim: JournalSim, data: st.DataObject) -> None:
    snapshots = sim.snapshots
    store = sim.store
    picks = data.draw(
        st.lists(st.integers(0, len(snapshots) - 1), min_size=1, max_size=4), label="cuts"
    )
    for i in {*picks, len(snapshots) - 1}:
        snap: Snapshot = snapshots[i]
        assert asof_projections(store, Cut.at_position(snap.position)) == snap.projections, (
            f"as of position {snap.position} (snapshot {i})"
        )
        # the same moment as a time: every event of that transaction, none of the next
        assert asof_projections(store, Cut.at_time(snap.recorded_at)) == snap.projections
        # half a second later is still before the next transaction (one second apart)
        later = snap.recorded_at + dt.timedelta(milliseconds=500)
        assert asof_projections(store, Cut.at_time(later)) == snap.projections
    empty = {"sources": [], "failed_records": []}
    assert asof_projections(store, Cut.at_position(0)) == empty
    assert (
        asof_projections(store, Cut.at_time(snapshots[0].recorded_at - dt.timedelta(seconds=1)))
        == empty
    )


def _property(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextlib.contextmanager
def fresh_store(backend: str) -> Iterator[Store]:
    """A new database for each hypothesis example (function-scoped fixtures are not)."""
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix="jl_asof_")
        store = open_store(f"sqlite:///{tmp}/journal.db")
        try:
            yield store
        finally:
            store.dispose()
            shutil.rmtree(tmp, ignore_errors=True)
        return
    url, schema = make_pg_schema()
    store = open_store(url)
    try:
        yield store
    finally:
        store.dispose()
        drop_pg_schema(schema)


def as_of_property(backend: str, data: st.DataObject) -> None:
    with fresh_store(backend) as store:
        sim = JournalSim(store)
        drive(sim, data, data.draw(st.integers(0, 25), label="steps"))
        check_cuts(sim, data)


@example_counts(15, 60)
def test_as_of_equals_the_live_projections_then_sqlite(examples: int) -> None:
    @_property(examples)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        as_of_property("sqlite", data)

    check()


@pytest.mark.postgres
@example_counts(5, 15)
def test_as_of_equals_the_live_projections_then_postgresql(examples: int) -> None:
    @_property(examples)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        as_of_property("postgresql", data)

    check()


def test_as_of_across_a_dlq_retry_and_a_resolve(store: Store) -> None:
    """A DLQ record answered again in the same load (``dlq retry``), another resolved: the
    counts and the DLQ right after each, computed from the journal, are the live ones."""
    sim = JournalSim(store)
    src = sim.register()
    sim.batch(src, ["ok", "invalid", "fail", "fail"])
    sim.finish(src, "completed")
    sim.retry(src, {1: "ok", 2: "fail"})
    sim.resolve(src, [3])
    for snap in sim.snapshots:
        assert asof_projections(store, Cut.at_position(snap.position)) == snap.projections
    final = sim.snapshots[-1].projections
    assert [r[1] for r in final["failed_records"]] == [1]  # source 1: only offset 2 left
    assert [r[2] for r in final["failed_records"]] == [2]


# --- real runs, both backends ---------------------------------------------------------------


class SnapshotAfterEachBatch:
    """A run observer: the live projections right after each batch committed."""

    def __init__(self, store: Store, into: list[tuple[int, dict[str, list[tuple[object, ...]]]]]):
        self.store = store
        self.into = into

    def on_batch(self, *_: object) -> None:
        self.into.append((last_position(self.store), live_projections(self.store)))


def test_as_of_matches_real_runs_at_every_commit(db_url: str, tmp_path: Path) -> None:
    """Partial runs (--limit), failures, skips, a second file, a --force reload: at every
    committed batch and run end, the as-of projections equal what was live then."""
    store = open_store(db_url)
    seen: list[tuple[int, dict[str, list[tuple[object, ...]]]]] = []
    observer = SnapshotAfterEachBatch(store, seen)
    first = write_pairs_csv(
        tmp_path / "pairs_a.csv",
        [
            ("Acme", "Springfield"),
            ("Bad Co", "BAD"),
            ("#note", "x"),
            ("Beta", "Shelbyville"),
            ("Gamma", "BAD"),
            ("Delta", "Ogdenville"),
            ("Acme", "Springfield"),
        ],
    )
    second = write_pairs_csv(tmp_path / "pairs_b.csv", [("Omega", "BAD"), ("Zeta", "Springfield")])

    def load(path: Path, **kw: object) -> None:
        run(PairLoader, path, db=db_url, batch_size=2, observers=[observer], **kw)  # type: ignore[arg-type]
        seen.append((last_position(store), live_projections(store)))

    load(first, limit=3)  # partial
    load(second)
    load(first)  # resumes, completes
    load(first, force=True)  # a new load of the same file
    assert len(seen) == 13  # 9 batches of 2 records and 4 run ends
    for position, expected in seen:
        assert asof_projections(store, Cut.at_position(position)) == expected, position
    statuses = [row[15] for row in seen[-1][1]["sources"]]
    assert statuses == ["completed", "completed"]
    store.dispose()


# --- status --as-of ---------------------------------------------------------------------------


def test_status_as_of_cli(db_url: str, tmp_path: Path) -> None:
    path = write_pairs_csv(
        tmp_path / "pairs.csv", [("Acme", "Springfield"), ("Bad", "BAD"), ("Beta", "X")]
    )
    run(PairLoader, path, db=db_url, batch_size=1, limit=2)  # partial: 2 records, 1 failed
    store = open_store(db_url)
    middle = last_position(store)
    run(PairLoader, path, db=db_url, batch_size=1)  # completes
    now = cli("status", "--db", db_url, "--json")
    assert now.exit_code == 0
    live = json.loads(now.stdout)
    assert [r["status"] for r in live] == ["completed"]

    then = json.loads(cli("status", "--db", db_url, "--json", "--as-of", str(middle)).stdout)
    assert then["as_of"]["position"] == middle
    (row,) = then["sources"]
    assert (row["status"], row["records_processed"], row["records_failed"], row["dlq_depth"]) == (
        "partial",
        2,
        1,
        1,
    )
    assert row["health"] == "PARTIAL"

    # the latest position as of now is the live status (health aside: judged at the cut)
    latest = json.loads(
        cli("status", "--db", db_url, "--json", "--as-of", str(last_position(store))).stdout
    )
    keys = [
        "source_id",
        "status",
        "records_processed",
        "records_imported",
        "records_failed",
        "records_skipped",
        "dlq_depth",
        "records_in_file",
        "current_run_id",
    ]
    assert [{k: r[k] for k in keys} for r in latest["sources"]] == [
        {k: r[k] for k in keys} for r in live
    ]

    text_out = cli("status", "--db", db_url, "--as-of", str(middle))
    assert text_out.exit_code == 0
    assert f"as of position {middle}" in text_out.stdout and "partial" in text_out.stdout
    before = cli("status", "--db", db_url, "--as-of", "2000-01-01")
    assert before.exit_code == 0 and "no sources" in before.stdout

    # a time: the moment of the middle position's event
    with store.read() as conn:
        stamp = conn.execute(
            text("SELECT recorded_at FROM journal WHERE position = :p"), {"p": middle}
        ).scalar_one()
    when = stamp if isinstance(stamp, dt.datetime) else dt.datetime.fromisoformat(stamp)
    when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when
    by_time = json.loads(
        cli("status", "--db", db_url, "--json", "--as-of", when.isoformat()).stdout
    )
    assert by_time["as_of"]["position"] == middle
    assert by_time["sources"][0]["status"] == "partial"
    store.dispose()


def test_status_without_as_of_is_unchanged(db_url: str, tmp_path: Path) -> None:
    run(PairLoader, write_pairs_csv(tmp_path / "p.csv", [("A", "B")]), db=db_url)
    plain = cli("status", "--db", db_url)
    assert plain.exit_code == 0
    assert "as of" not in plain.stdout and "completed" in plain.stdout
    help_text = cli("status", "--help").stdout
    assert "--as-of" in help_text and "--stalled" in help_text


@pytest.mark.parametrize(
    ("value", "message"),
    [("yesterday", "neither a journal position"), ("-5", "neither a journal position")],
)
def test_status_as_of_rejects_bad_moments(sqlite_url: str, value: str, message: str) -> None:
    result = cli("status", "--db", sqlite_url, "--as-of", value)
    assert result.exit_code == 2
    assert message in result.stderr


def test_status_as_of_and_stalled_do_not_mix(sqlite_url: str) -> None:
    result = cli("status", "--db", sqlite_url, "--as-of", "1", "--stalled")
    assert result.exit_code == 2 and "--stalled" in result.stderr


def test_parse_cut() -> None:
    assert parse_cut("1234") == Cut.at_position(1234)
    assert parse_cut(" #77 ") == Cut.at_position(77)
    assert parse_cut("2026-01-31") == Cut.at_time(dt.datetime(2026, 1, 31, tzinfo=dt.UTC))
    assert parse_cut("2026-01-31T12:00:00") == Cut.at_time(
        dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    )
    assert parse_cut("2026-01-31T13:00:00+01:00") == Cut.at_time(
        dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    )
    assert parse_cut("2026-01-31T12:00:00Z").time == dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    with pytest.raises(UsageError):
        parse_cut("2026-13-01")
    with pytest.raises(UsageError):
        parse_cut("1; DROP TABLE journal")


# --- replay -------------------------------------------------------------------------------------


@pytest.fixture
def other_url(request: pytest.FixtureRequest, tmp_path: Path, db_url: str) -> Iterator[str]:
    """Where to replay into: the same kind of database as ``db_url``, empty."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'audit.db'}"
        return
    url, schema = make_pg_schema()
    try:
        yield url
    finally:
        drop_pg_schema(schema)


def test_replay_writes_the_projections_as_of_then(db_url: str, other_url: str) -> None:
    store = open_store(db_url)
    sim = JournalSim(store)
    src = sim.register()
    sim.batch(src, ["ok", "fail", "skip", "invalid"])
    sim.finish(src, "partial")
    cut_snapshot = sim.snapshots[-1]
    sim.retry(src, {1: "ok"})
    sim.resolve(src, [3])
    sim.restart(src)
    sim.batch(src, ["ok"])
    sim.finish(src, "completed")

    result = cli(
        "replay", "--db", db_url, "--until", str(cut_snapshot.position), "--into", other_url
    )
    assert result.exit_code == 0, result.output
    assert "sources 1 rows, failed_records 2 rows" in result.stdout
    target = open_store(other_url)
    assert live_projections(target) == cut_snapshot.projections
    with target.read() as conn:
        notes = dict(
            conn.execute(
                text("SELECT name, value FROM loader_settings WHERE name LIKE 'replay.%'")
            ).all()
        )
        assert conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one() == 0
    assert notes["replay.position"] == str(cut_snapshot.position)
    assert notes["replay.cut"] == f"position {cut_snapshot.position}"

    # again, later: the target's projections are replaced, not added to
    result = cli(
        "replay", "--db", db_url, "--until", str(last_position(store)), "--into", other_url
    )
    assert result.exit_code == 0, result.output
    assert live_projections(target) == live_projections(store)
    # and the status an auditor sees there is the one of that moment
    (row,) = json.loads(cli("status", "--db", other_url, "--json").stdout)
    assert (row["status"], row["dlq_depth"]) == ("completed", 0)
    target.dispose()
    store.dispose()


def test_replay_across_backends(sqlite_url: str, pg_url: str) -> None:
    """SQLite journal -> PostgreSQL auditor database, and back: same rows."""
    store = open_store(sqlite_url)
    sim = JournalSim(store)
    src = sim.register()
    sim.batch(src, ["ok", "fail", "invalid", "skip"])
    sim.finish(src, "failed")
    replay(store, Cut.at_position(last_position(store)), pg_url)
    target = open_store(pg_url)
    assert live_projections(target) == live_projections(store)
    target.dispose()
    store.dispose()


def test_replay_refuses_a_database_with_a_journal(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    sim = JournalSim(store)
    sim.register()
    other = f"sqlite:///{tmp_path / 'busy.db'}"
    busy = JournalSim(open_store(other))
    busy.register()
    result = cli("replay", "--db", db_url, "--until", "1", "--into", other)
    assert result.exit_code == 1
    assert "has a journal of its own" in result.stderr
    same = cli("replay", "--db", db_url, "--until", "1", "--into", db_url)
    assert same.exit_code == 1 and "another database" in same.stderr
    store.dispose()


def test_status_as_of_function(store: Store) -> None:
    sim = JournalSim(store)
    a = sim.register()
    sim.batch(a, ["ok", "fail"])
    b = sim.register()
    sim.batch(b, ["skip"])
    cut = sim.snapshots[1].position
    rows = status_as_of(store, Cut.at_position(cut))
    assert [
        (r["source_id"], r["status"], r["records_processed"], r["dlq_depth"]) for r in rows
    ] == [(1, "processing", 2, 1)]
    everything = status_as_of(store, Cut.at_position(10**9))
    assert [r["source_id"] for r in everything] == [1, 2]
    # processing for longer than the stall threshold, judged at the cut's moment
    late = status_as_of(store, Cut.at_time(sim.clock + dt.timedelta(hours=2)))
    assert {r["health"] for r in late} == {"STALLED"}


def test_replay_shows_no_passwords(pg_url: str, tmp_path: Path) -> None:
    """Passwords in either URL reach neither the output nor the target's notes (the test
    server trusts local connections, so the password is ignored for the login itself)."""
    from sqlalchemy import make_url

    secret = "s3cret-Pa55"
    with_password = make_url(pg_url).set(password=secret).render_as_string(hide_password=False)
    JournalSim(open_store(with_password)).register()
    target = f"sqlite:///{tmp_path / 'audit.db'}"
    result = cli("replay", "--db", with_password, "--until", "10", "--into", target)
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    with open_store(target).read() as conn:
        notes = dict(conn.execute(text("SELECT name, value FROM loader_settings")).all())
    assert secret not in json.dumps(notes) and "***" in notes["replay.from"]
    into_pg = cli("replay", "--db", target, "--until", "1", "--into", with_password)
    assert into_pg.exit_code == 1 and secret not in into_pg.output  # it has a journal
