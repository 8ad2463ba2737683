"""PostgreSQL's ids come from each table's sequence in blocks, kept as runs of consecutive
values (``IdRuns`` in journal_loader/storage/postgres.py), not as one deque entry an id.

* ``IdRuns`` hands out exactly what a deque of the same values hands out, in the same order,
  for any runs added and any takes between them (hypothesis).
* A refill's runs are what the sequence gave: with an increment of 3 every value is a run
  of its own, and values another session took between two refills are never handed out.
* The next batch's ids, topped up on a connection of their own while a batch's last rows
  are written (``Store.top_up_ids``), are the ids a load without it takes, and a top-up
  that fails changes nothing.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg.pq import TransactionStatus
from sqlalchemy import text

from journal_loader import run
from journal_loader.storage import Store, open_store, postgres
from journal_loader.storage.postgres import IdRuns, PostgresStore, PostgresTx
from tests.support.example import registry, typed_config
from tests.support.pg import drop_pg_schema, make_pg_schema, pg_admin_url

# An operation: ("add", gap before the run, its length) or ("take", n) or ("one",)
_op = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.integers(0, 6)),
    st.tuples(st.just("take"), st.integers(0, 9)),
    st.tuples(st.just("one")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_op, max_size=40))
def test_runs_hand_out_what_a_deque_of_the_same_ids_hands_out(ops: list[tuple]) -> None:
    runs, model = IdRuns(), deque[int]()
    next_value = 1
    for op in ops:
        if op[0] == "add":
            start = next_value + op[1]
            runs.add(start, start + op[2])
            model.extend(range(start, start + op[2]))
            next_value = start + op[2]
        elif op[0] == "take":
            n = min(op[1], len(model))
            assert runs.take(n) == [model.popleft() for _ in range(n)]
        elif model:
            assert runs.take_one() == model.popleft()
        assert runs.size == len(model)
    with pytest.raises(ValueError, match="wanted"):
        runs.take(len(model) + 1)
    assert runs.take(len(model)) == list(model)


@pytest.mark.postgres
def test_a_refill_hands_out_exactly_the_values_the_sequence_gave() -> None:
    url, schema = make_pg_schema()
    store = open_store(url)
    try:
        with store.transaction() as tx:
            sequence = tx.fetchall("SELECT pg_get_serial_sequence('nodes', 'id')")[0][0]
            tx.execute(f"ALTER SEQUENCE {sequence} INCREMENT BY 3")
        with store.transaction() as tx:
            first = tx.reserve_ids("nodes", 4)
            one = tx.next_id("nodes")
        assert first == [1, 4, 7, 10] and one == 13  # every value a run of its own
        held = store._id_pools["nodes"].size  # type: ignore[attr-defined]
        # another session takes values between this refill and the next
        with psycopg.connect(pg_admin_url(), autocommit=True) as other:
            theirs = [other.execute(f"SELECT nextval('{sequence}')").fetchone()[0] for _ in "ab"]
        with store.transaction() as tx:
            later = tx.reserve_ids("nodes", held + 3)  # the block, then a refill
        ours = [*first, one, *later]
        assert len(set(ours)) == len(ours)
        assert not set(theirs) & set(ours)
        assert all(v % 3 == 1 for v in ours)
        assert later[held - 1] < theirs[0] < theirs[1] < later[held]
        assert later[held:] == [theirs[1] + 3 * k for k in (1, 2, 3)]
    finally:
        store.dispose()
        drop_pg_schema(schema)


def _with_ids(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """The graph's rows with their ids, and every record's answers as journaled (the ids in
    them included): two loads that took the same ids agree on all of it."""
    queries = {
        "nodes": "SELECT id, node_type, norm_name, external_key, prov_id FROM nodes",
        "attributes": "SELECT id, node_id, attr_type, value, prov_id FROM attributes",
        "relationships": "SELECT id, source_node_id, rel_type, target_node_id, prov_id "
        "FROM relationships",
        "provenance": "SELECT subject_kind, subject_id, id, record_offset, fact_index "
        "FROM provenance",
        "answers": "SELECT record_offset, payload FROM journal "
        "WHERE event_type = 'ProposeSucceeded'",
    }
    with store.read() as conn:
        return {k: sorted(map(tuple, conn.execute(text(q)).all())) for k, q in queries.items()}


class IdFetches:
    """Counts the refills made on a batch's connection, and the top-ups (a thread, on a
    connection of its own) that fetched ids."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.in_batch = self.topped_up = 0
        refill, top_up = PostgresTx._refill, PostgresStore._top_up

        def counted_refill(tx: PostgresTx, table: str, pool: IdRuns, n: int) -> None:
            self.in_batch += 1
            refill(tx, table, pool, n)

        def counted_top_up(
            store: PostgresStore, short: dict[str, int], fetched: dict[str, IdRuns]
        ) -> None:
            top_up(store, short, fetched)
            self.topped_up += any(runs.size for runs in fetched.values())

        monkeypatch.setattr(PostgresTx, "_refill", counted_refill)
        monkeypatch.setattr(PostgresStore, "_top_up", counted_top_up)


def _example(tmp_path: Path) -> tuple[Path, Path]:
    data = registry(tmp_path / "registry.csv", rows=400, seed=11)
    return data, typed_config(tmp_path / "config", "id_runs", batch=40)


@pytest.mark.postgres
@pytest.mark.parametrize("top_up_fails", [False, True])
def test_ids_topped_up_ahead_are_the_ids_a_load_without_it_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, top_up_fails: bool
) -> None:
    """The committer tops up the next batch's ids on a connection of their own while this
    batch's last rows are written (``BatchCommitter._top_up_ids``): the batches then fetch
    none on their own connection, and the load takes the same ids, graph and answers as a
    load that fetches every id on the batch's connection. A top-up that fails (its
    connection lost) changes nothing but where the ids come from."""
    monkeypatch.setattr(postgres, "_ID_BLOCK", 10)  # a refill every batch, not every fifth
    data, config = _example(tmp_path)
    (url, schema), (ref_url, ref_schema) = make_pg_schema(), make_pg_schema()
    store, reference = open_store(url), open_store(ref_url)
    try:
        with monkeypatch.context() as m:
            m.setattr(PostgresStore, "top_up_ids", lambda store, wanted: None)
            without = IdFetches(m)
            report = run(config=config, file=data, store=reference)
            assert report.status == "completed", report.message
        batches = 400 // 40
        assert without.in_batch >= batches and without.topped_up == 0
        failed: list[str] = []
        if top_up_fails:
            real = postgres._refill_ids

            def lost(cursor: Any, *args: Any) -> None:
                if cursor.connection.info.transaction_status == TransactionStatus.IDLE:
                    failed.append("top-up")  # (a batch's connection is inside its transaction)
                    raise psycopg.OperationalError("the connection was lost")
                real(cursor, *args)

            monkeypatch.setattr(postgres, "_refill_ids", lost)
        fetches = IdFetches(monkeypatch)
        report = run(config=config, file=data, store=store)
        assert report.status == "completed", report.message
        if top_up_fails:
            assert len(failed) >= batches - 2 and fetches.topped_up == 0
            assert fetches.in_batch >= batches
        else:
            # a batch not planned ahead (the first two here) fetches its own ids, one refill
            # a table; a batch planned ahead and topped up fetches none
            assert fetches.topped_up >= batches - 2, fetches.topped_up
            assert fetches.in_batch <= 4 * (batches - fetches.topped_up), fetches.in_batch
        assert _with_ids(store) == _with_ids(reference)
    finally:
        store.dispose()
        reference.dispose()
        drop_pg_schema(schema)
        drop_pg_schema(ref_schema)
