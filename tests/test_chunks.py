"""One big file, split (journal_loader/runner/chunks.py): a planned file loaded chunk by
chunk, in any order, with kills and stale runs, equals one sequential run of the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal_loader import api, faults, projections
from journal_loader.audit.verify import verify
from journal_loader.errors import ConfigError
from journal_loader.runner import RunStatus
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import utcnow
from journal_loader.storage.journal_store import chunk_lease_key, journal_store
from tests.support.loaders import PairLoader, write_csv
from tests.support.properties import example_counts
from tests.support.snapshots import dlq_snapshot, graph_snapshot, sources_snapshot, terminal_counts

NAMES = ["acme", "beta", "multi\nline", "gamma, inc", "delta"]
CITIES = ["oslo", "rome", "lima"]


def _csv_bytes(rows: list[tuple[str, str, str]], crlf: bool, bom: bool) -> bytes:
    nl = "\r\n" if crlf else "\n"

    def q(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n\r') else v

    out = [("\ufeff" if bom else "") + "name,city"]
    for kind, name, city in rows:
        if kind == "bad_quote":  # a quoted field glued to more text: bad_quote, to the DLQ
            out.append(f'{name},"{city}"x')
        elif kind == "skip":
            out.append(f"#{name},{city}")
        else:
            out.append(f"{q(name)},{q(city)}")
    return (nl.join(out) + nl).encode()


def _sequential(tmp: Path, file: Path, batch: int) -> Store:
    store = open_store(f"sqlite:///{tmp}/sequential.db")
    api.run(PairLoader, file, store=store, batch_size=batch)
    return store


def _state(store: Store) -> dict[str, Any]:
    return {
        "graph": graph_snapshot(store),
        "dlq": dlq_snapshot(store),
        "sources": sources_snapshot(store),
        "terminal": terminal_counts(store),
    }


def _check_whole(store: Store) -> None:
    assert set(terminal_counts(store).values()) <= {1}
    assert projections.rebuild(store, check=True).differences == []
    assert verify(store).ok


rows_st = st.lists(
    st.tuples(
        st.sampled_from(["good", "good", "good", "bad_quote", "skip", "bad_city"]),
        st.sampled_from(NAMES),
        st.sampled_from(CITIES),
    ).map(lambda r: (r[0], r[1], "BAD") if r[0] == "bad_city" else r),
    min_size=1,
    max_size=40,
)


@example_counts(15, 150)
def test_chunks_in_any_order_equal_one_sequential_run(tmp_path: Path, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        rows=rows_st,
        crlf=st.booleans(),
        bom=st.booleans(),
        split=st.integers(1, 9),
        batch=st.integers(1, 5),
        order=st.randoms(use_true_random=False),
        kills=st.dictionaries(
            st.integers(0, 8),
            st.tuples(st.sampled_from(faults.BOUNDARIES), st.integers(1, 4)),
            max_size=3,
        ),
    )
    def check(
        rows: Any,
        crlf: bool,
        bom: bool,
        split: int,
        batch: int,
        order: Any,
        kills: dict[int, tuple[str, int]],
    ) -> None:
        case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        case.mkdir()
        file = case / "big.csv"
        file.write_bytes(_csv_bytes(rows, crlf, bom))
        one = _sequential(case, file, batch)
        many = open_store(f"sqlite:///{case}/chunks.db")
        try:
            planned = api.plan(PairLoader, file, store=many, split=split)
            assert planned.plan is not None
            queue = list(range(planned.plan.count))
            order.shuffle(queue)
            while queue:
                i = queue.pop(0)
                kill = kills.pop(i, None)
                if kill is not None:
                    # the chunk's run dies at a batch boundary (before or after its commit),
                    # as a kill -9 there leaves it; it is run again later, in any order
                    boundary, nth = kill

                    def die(n: int, nth: int = nth) -> None:
                        if n == nth:
                            raise _Killed

                    faults.on(boundary, die)
                    try:
                        report = api.run(PairLoader, file, store=many, chunk=i, batch_size=batch)
                    except _Killed:
                        queue.insert(order.randint(0, len(queue)), i)
                        continue
                    finally:
                        faults.reset(None)
                else:
                    report = api.run(PairLoader, file, store=many, chunk=i, batch_size=batch)
                assert report.status == RunStatus.COMPLETED, report.message
            assert _state(many) == _state(one)
            _check_whole(many)
        finally:
            one.dispose()
            many.dispose()

    check()


def _file(tmp_path: Path, n: int = 60) -> Path:
    rows = [[f"c{i}", CITIES[i % 3] if i % 11 else "BAD"] for i in range(n)]
    return write_csv(tmp_path / "big.csv", ["name", "city"], rows)


def test_planning_twice_keeps_the_first_plan(tmp_path: Path) -> None:
    file = _file(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    first = api.plan(PairLoader, file, store=store, split=4)
    assert first.new and first.plan is not None and first.plan.count == 4
    api.run(PairLoader, file, store=store, chunk=2)
    again = api.plan(PairLoader, file, store=store, split=7)
    assert not again.new and again.plan is not None
    assert again.plan.event == first.plan.event  # the first plan, not a new one of 7 chunks
    assert again.states is not None
    assert [s.state for s in again.states] == ["pending", "pending", "completed", "pending"]
    with store.read() as conn:
        planned = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM journal WHERE event_type = 'ChunksPlanned'"
        ).scalar()
    assert planned == 1


def test_a_whole_file_run_of_a_planned_source_is_refused(tmp_path: Path) -> None:
    file = _file(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    api.plan(PairLoader, file, store=store, chunk_records=25)
    with pytest.raises(ConfigError, match="split into chunks"):
        api.run(PairLoader, file, store=store)


class _Killed(BaseException):
    """Ends the run where it stands, like SIGKILL: no RunFinished, the lock released."""


def test_a_chunk_killed_mid_way_resumes(tmp_path: Path) -> None:
    file = _file(tmp_path, 80)
    one = _sequential(tmp_path, file, 4)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    planned = api.plan(PairLoader, file, store=store, split=3)
    assert planned.plan is not None

    def kill(n: int) -> None:
        if n == 2:
            raise _Killed

    faults.on("after_commit", kill)
    try:
        with pytest.raises(_Killed):
            api.run(PairLoader, file, store=store, chunk=1, batch_size=4)
    finally:
        faults.reset(None)
    states = api.plan(PairLoader, file, store=store, split=3).states
    assert states is not None and states[1].state == "running"
    assert states[1].records_done == 8
    for i in (0, 1, 2):
        assert api.run(PairLoader, file, store=store, chunk=i, batch_size=4).status == "completed"
    with store.read() as conn:
        abandoned = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM journal WHERE event_type = 'RunAbandoned'"
        ).scalar()
    assert abandoned == 1
    assert _state(store) == _state(one)
    _check_whole(store)


def test_a_completed_chunk_is_not_loaded_again(tmp_path: Path) -> None:
    file = _file(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    api.plan(PairLoader, file, store=store, split=2)
    assert api.run(PairLoader, file, store=store, chunk=0).status == "completed"
    before = terminal_counts(store)
    again = api.run(PairLoader, file, store=store, chunk=0)  # the job delivered twice
    assert again.status == RunStatus.ALREADY_PROCESSED
    assert terminal_counts(store) == before
    assert sources_snapshot(store)[0][2] == "partial"  # chunk 1 still to go
    api.run(PairLoader, file, store=store, chunk=1)
    assert sources_snapshot(store)[0][2] == "completed"


def test_a_stale_chunk_run_is_fenced_out(tmp_path: Path) -> None:
    """A chunk's lease generation is its own: another chunk taken over leaves this run
    alone; this chunk taken over (a newer run bumped its generation) stops it unwritten."""
    file = _file(tmp_path, 80)
    one = _sequential(tmp_path, file, 4)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    api.plan(PairLoader, file, store=store, split=2)
    js = journal_store(store)

    def bump(chunk: int) -> Any:
        def after(n: int) -> None:
            if n == 1:
                with store.transaction() as tx:
                    js.acquire_lease(tx, chunk_lease_key(1, chunk), "other", "h", 1, utcnow())

        return after

    faults.on("after_commit", bump(1))
    try:
        assert api.run(PairLoader, file, store=store, chunk=0, batch_size=4).status == "completed"
    finally:
        faults.reset(None)
    faults.on("after_commit", bump(1))
    try:
        fenced = api.run(PairLoader, file, store=store, chunk=1, batch_size=4)
    finally:
        faults.reset(None)
    assert fenced.status == "failed" and "lost source" in fenced.message
    assert api.run(PairLoader, file, store=store, chunk=1, batch_size=4).status == "completed"
    assert _state(store) == _state(one)
    _check_whole(store)


def test_chunks_side_by_side_on_postgresql(tmp_path: Path) -> None:
    """8 chunks in 8 threads at once on PostgreSQL (the chain lock, the chunk leases, the
    source's status decided by the last chunk) equal one sequential run; the hash chain
    verifies and the projections rebuild to the live ones."""
    import os
    import threading

    from tests.support.pg import drop_pg_schema, make_pg_schema
    from tests.support.snapshots import content_state

    if not os.environ.get("JOURNAL_LOADER_TEST_PG_URL"):
        pytest.skip("JOURNAL_LOADER_TEST_PG_URL is not set: PostgreSQL tests skipped")
    rows = [[f"c{i % 50}", f"city{i % 7}" if i % 13 else "BAD"] for i in range(1200)]
    file = write_csv(tmp_path / "big.csv", ["name", "city"], rows)
    (one_url, one_schema), (many_url, many_schema) = make_pg_schema(), make_pg_schema()
    try:
        api.run(PairLoader, file, db=one_url, batch_size=50)
        planned = api.plan(PairLoader, file, db=many_url, split=8)
        assert planned.plan is not None and planned.plan.count == 8
        done: list[str] = []

        def work(i: int) -> None:
            done.append(str(api.run(PairLoader, file, db=many_url, chunk=i, batch_size=50).status))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert done == ["completed"] * 8
        assert content_state(many_url) == content_state(one_url)
        store = open_store(many_url)
        try:
            _check_whole(store)
        finally:
            store.dispose()
    finally:
        drop_pg_schema(one_schema)
        drop_pg_schema(many_schema)


class _Lenient(PairLoader):
    """The loader after a fix: BAD is a city after all (a `dlq retry` succeeds)."""

    def validate(self, record: Any) -> list[str]:
        return []


def test_a_dlq_retry_between_a_chunks_batches_keeps_one_chain(store: Store, tmp_path: Path) -> None:
    """`dlq retry` holds the source's lock, which no chunk run takes: a chunk runs between
    two of the retry's batches. The retry must append after the chunk's events (one hash
    chain), not after the head it read when it started."""
    from journal_loader.api import make_target
    from journal_loader.config import Config
    from journal_loader.dlq import retry
    from journal_loader.runner import RunOptions

    file = _file(tmp_path, 80)
    api.plan(PairLoader, file, store=store, split=2)
    assert api.run(PairLoader, file, store=store, chunk=0, batch_size=4).status == "completed"
    ran: list[str] = []

    def chunk_between(n: int) -> None:
        if n == 1 and not ran:  # after the retry's first batch, before its second
            ran.append(str(api.run(PairLoader, file, store=store, chunk=1, batch_size=4).status))

    faults.on("after_commit", chunk_between)
    try:
        report = retry(
            store,
            _Lenient(Config()),
            make_target(store, Config()),
            source_id=1,
            options=RunOptions(batch_size=1),
        )
    finally:
        faults.reset(None)
    assert ran == ["completed"]
    assert report.count("succeeded") >= 2
    assert verify(store).ok  # one chain: without the retry's shared writer, a fork
    assert projections.rebuild(store, check=True).differences == []
    assert sources_snapshot(store)[0][2] == "completed"


def test_abandoning_a_split_source(store: Store, tmp_path: Path) -> None:
    """`source abandon` of a split source: refused while a chunk's run is alive (it holds
    only its chunk's lock, not the source's), done once the runs are dead, on one chain,
    every chunk's lease generation bumped (a frozen chunk run can never append after it)."""
    from journal_loader.abandon import abandon
    from journal_loader.errors import SourceLockedError

    file = _file(tmp_path, 90)
    api.plan(PairLoader, file, store=store, split=3)
    assert api.run(PairLoader, file, store=store, chunk=0, batch_size=4).status == "completed"

    def kill(n: int) -> None:
        if n == 2:
            raise _Killed

    faults.on("after_commit", kill)
    try:
        with pytest.raises(_Killed):
            api.run(PairLoader, file, store=store, chunk=1, batch_size=4)
    finally:
        faults.reset(None)
    refused: list[str] = []

    def abandon_while_alive(n: int) -> None:
        if n == 1:
            with pytest.raises(SourceLockedError, match="chunk 2 of source 1") as e:
                abandon(store, 1, "too slow")
            refused.append(str(e.value))

    faults.on("after_commit", abandon_while_alive)
    try:
        assert api.run(PairLoader, file, store=store, chunk=2, batch_size=4).status == "completed"
    finally:
        faults.reset(None)
    assert refused and sources_snapshot(store)[0][2] == "partial"

    def generations() -> list[int]:
        with store.read() as conn:
            return [
                conn.exec_driver_sql(
                    f"SELECT generation FROM source_leases WHERE source_id = {key}"
                ).scalar()
                or 0
                for key in (chunk_lease_key(1, i) for i in range(3))
            ]

    before = generations()
    done = abandon(store, 1, "chunk 1's data is wrong")
    assert not done.already
    assert [g - b for g, b in zip(generations(), before, strict=True)] == [1, 1, 1]
    assert sources_snapshot(store)[0][2] == "abandoned"
    assert verify(store).ok
    assert projections.rebuild(store, check=True).differences == []


def test_status_shows_each_chunk(db_url: str, store: Store, tmp_path: Path) -> None:
    """`status` (text and --json) lists each chunk of a split source still loading: its
    state and records done of its records. A source whose runs all hold chunk locks (never
    the source's own) is not DEAD while a chunk runs; it is once none does."""
    import json

    from click.testing import CliRunner

    from journal_loader.cli import main

    file = _file(tmp_path, 90)
    url = db_url
    planned = api.plan(PairLoader, file, store=store, split=3)
    assert planned.plan is not None
    sizes = [planned.plan.bounds(i)[1].offset - planned.plan.bounds(i)[0].offset for i in range(3)]
    assert api.run(PairLoader, file, store=store, chunk=0, batch_size=4).status == "completed"

    def kill(n: int) -> None:
        if n == 2:
            raise _Killed

    faults.on("after_commit", kill)
    try:
        with pytest.raises(_Killed):
            api.run(PairLoader, file, store=store, chunk=1, batch_size=4)
    finally:
        faults.reset(None)

    def status() -> tuple[dict[str, Any], str, int]:
        as_json = CliRunner().invoke(main, ["status", "--db", url, "--json"])
        text = CliRunner().invoke(main, ["status", "--db", url])
        stalled = CliRunner().invoke(main, ["status", "--db", url, "--stalled"])
        assert as_json.exit_code == 0 and text.exit_code == 0, as_json.output + text.output
        return json.loads(as_json.output)[0], text.output, stalled.exit_code

    row, text, stalled = status()
    assert row["health"] == "DEAD" and stalled == 1  # chunk 1's run died, nothing runs
    assert row["chunks"] == [
        {"chunk": 0, "state": "completed", "records_done": sizes[0], "records": sizes[0]},
        {"chunk": 1, "state": "dead", "records_done": 8, "records": sizes[1]},
        {"chunk": 2, "state": "pending", "records_done": 0, "records": sizes[2]},
    ]
    assert f"dead       8 / {sizes[1]}" in text, text
    seen: list[tuple[dict[str, Any], str, int]] = []

    def look(n: int) -> None:
        if n == 1:
            seen.append(status())

    faults.on("after_commit", look)
    try:
        assert api.run(PairLoader, file, store=store, chunk=2, batch_size=4).status == "completed"
    finally:
        faults.reset(None)
    row, text, stalled = seen[0]
    assert [c["state"] for c in row["chunks"]] == ["completed", "dead", "running"]
    assert row["chunks"][2]["records_done"] == 4
    assert row["health"] != "DEAD" and stalled == 0
    assert "running    4 / " in text, text
    assert api.run(PairLoader, file, store=store, chunk=1, batch_size=4).status == "completed"
    row, text, stalled = status()
    assert row["status"] == "completed" and [c["state"] for c in row["chunks"]] == ["completed"] * 3
    assert "chunk" not in text.splitlines()[-1]  # a completed source's chunks: --json only


def test_a_worker_counts_each_chunks_records(tmp_path: Path) -> None:
    """The worker's per-chunk metrics, fed by a real chunk run: records by chunk index
    (batch by batch), and a chunk's run counted as running only while it runs."""
    from journal_loader.ops.fleet import ChunkProgress, WorkerMetrics

    file = _file(tmp_path, 90)
    store = open_store(f"sqlite:///{tmp_path}/j.db")
    planned = api.plan(PairLoader, file, store=store, split=3)
    assert planned.plan is not None
    metrics = WorkerMetrics("w")

    def value(name: str, chunk: int) -> float | None:
        return metrics.registry.get_sample_value(name, {"worker": "w", "chunk": str(chunk)})

    during: list[tuple[float | None, float | None]] = []

    def look(n: int) -> None:
        during.append(
            (
                value("journal_loader_worker_chunk_records_total", 1),
                value("journal_loader_worker_running_chunks", 1),
            )
        )

    faults.on("after_commit", look)
    try:
        report = api.run(
            PairLoader,
            file,
            store=store,
            chunk=1,
            batch_size=4,
            observers=[ChunkProgress(metrics, 1)],
        )
    finally:
        faults.reset(None)
    assert report.status == "completed"
    # at a batch's commit, the batches before it are counted (on_batch follows the commit)
    assert during[:3] == [(None, 1.0), (4.0, 1.0), (8.0, 1.0)]
    records = planned.plan.bounds(1)[1].offset - planned.plan.bounds(1)[0].offset
    assert value("journal_loader_worker_chunk_records_total", 1) == records
    assert value("journal_loader_worker_running_chunks", 1) == 0
    assert value("journal_loader_worker_chunk_records_total", 0) is None  # never ran here
    again = api.run(PairLoader, file, store=store, chunk=1, observers=[ChunkProgress(metrics, 1)])
    assert again.status == RunStatus.ALREADY_PROCESSED
    assert value("journal_loader_worker_running_chunks", 1) == 0  # never below 0
    assert value("journal_loader_worker_chunk_records_total", 1) == records
