"""The graph tables' timestamps (``created_at``, ``updated_at``): what each write stamps, how
SQLite stores them since migration 0009 (integer microseconds since the epoch, UTC: 8 bytes
instead of 26 of text, issue 11's database growth per record), and that 0009 converts the
rows written before it to the same instants, to the microsecond."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from journal_loader.graph.browse import node
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.storage import Store, open_store
from journal_loader.storage.base import epoch_micros, graph_time
from journal_loader.storage.migrate import upgrade
from tests.support.graph import Direct, rows

TABLES = {
    "nodes": ("created_at", "updated_at"),
    "attributes": ("created_at",),
    "relationships": ("created_at", "updated_at"),
    "provenance_records": ("created_at",),
}


def _graph(store: Store) -> EmbeddedGraph:
    return EmbeddedGraph(
        store, node_types=["Company", "City"], relationship_types=["LOCATED_IN", "OWNS"]
    )


def _stamps(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: rows(store, f"SELECT id, {', '.join(cols)} FROM {table} ORDER BY id")
        for table, cols in TABLES.items()
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_every_graph_row_carries_its_batch_time_and_updates_move_updated_at(
    store: Store,
) -> None:
    """A batch stamps what it inserts with its own time; a later batch that gives a keyless
    node its key, or a relationship a higher strength, moves that row's ``updated_at`` and
    nothing else. ``graph node`` shows the instants in ISO 8601 UTC on both backends."""
    d = Direct(_graph(store), store)
    before = _now()
    first = d.propose(
        ("Company", "Agent Corp"),
        ("City", "Springfield"),
        "LOCATED_IN",
        source_attributes={"status": "active"},
        strength=0.5,
    )
    between = _now()
    time.sleep(0.01)
    second = d.propose(("Company", "AGENT CORP", "C9"), ("City", "Springfield"), "LOCATED_IN")
    after = _now()
    assert second.source_entity_id == first.source_entity_id

    stamps = _stamps(store)
    if store.dialect == "sqlite":  # the stored form: integers, in every column, every row
        for table, cols in TABLES.items():
            kinds = rows(store, f"SELECT {', '.join(f'typeof({c})' for c in cols)} FROM {table}")
            assert kinds and {k for row in kinds for k in row} == {"integer"}, table
    read = {t: [tuple(graph_time(v) for v in r[1:]) for r in rs] for t, rs in stamps.items()}
    company, city = read["nodes"]
    assert before <= company[0] <= between and between <= company[1] <= after  # keyed later
    assert before <= city[0] == city[1] <= between  # untouched by the second batch
    assert before <= read["attributes"][0][0] <= between
    (rel,) = read["relationships"]
    assert before <= rel[0] <= between <= rel[1] <= after  # strength 0.5 -> 1.0
    assert [r[0] for r in read["provenance_records"]] == sorted(
        r[0] for r in read["provenance_records"]
    )

    view = node(store, first.source_entity_id)
    assert view.node["created_at"] == company[0].isoformat()
    assert view.node["updated_at"] == company[1].isoformat()
    assert view.node["created_at"].endswith("+00:00")


def _bare_store(db_url: str) -> Store:
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)


# Text as journal-loader wrote it before 0009 (SQLITE_TIME_FORMAT), and as a hand-written
# row or CURRENT_TIMESTAMP gives it (no fraction; ISO with a T and an offset).
OLD_TEXT = [
    "2026-11-29 23:59:59.999999",
    "2026-11-30 00:00:00",
    "2026-01-02T03:04:05.000006+00:00",
    "1999-12-31 23:59:59.5",
]


def test_migration_0009_converts_old_text_to_the_same_instants(db_url: str) -> None:
    """Graph rows written at 0008 read back as the same instants after 0009; on SQLite they
    are integers afterwards, and the node view shows what it showed before, in ISO form."""
    old = _bare_store(db_url)
    expected: dict[int, tuple[dt.datetime, dt.datetime]] = {}
    try:
        upgrade(old.engine, "0008")
        with old.engine.begin() as conn:
            for i, created in enumerate(OLD_TEXT, start=1):
                updated = OLD_TEXT[-i]
                conn.execute(
                    text(
                        "INSERT INTO nodes (id, node_type, name, norm_name, created_at,"
                        " updated_at) VALUES (:id, 'City', :n, :n, :c, :u)"
                    ),
                    {"id": i, "n": f"city {i}", "c": created, "u": updated},
                )
                conn.execute(
                    text(
                        "INSERT INTO attributes (id, node_id, attr_type, value, norm_value,"
                        " created_at) VALUES (:id, :id, 'status', 'x', 'x', :c)"
                    ),
                    {"id": i, "c": created},
                )
                conn.execute(
                    text(
                        "INSERT INTO provenance_records (id, source_id, record_offset, run_id,"
                        " created_at) VALUES (:id, 1, :id, 'r', :c)"
                    ),
                    {"id": i, "c": created},
                )
                parse = dt.datetime.fromisoformat
                expected[i] = (
                    parse(created).replace(tzinfo=dt.UTC),
                    parse(updated).replace(tzinfo=dt.UTC),
                )
            conn.execute(
                text(
                    "INSERT INTO relationships (id, source_node_id, rel_type, target_node_id,"
                    " strength, created_at, updated_at)"
                    " VALUES (1, 1, 'NEAR', 2, 1.0, :c, :u)"
                ),
                {"c": OLD_TEXT[0], "u": OLD_TEXT[1]},
            )
        upgrade(old.engine)
    finally:
        old.dispose()
    store = open_store(db_url)
    try:
        stamps = _stamps(store)
        got = {r[0]: (graph_time(r[1]), graph_time(r[2])) for r in stamps["nodes"]}
        assert got == expected
        assert {r[0]: graph_time(r[1]) for r in stamps["attributes"]} == {
            i: e[0] for i, e in expected.items()
        }
        assert {r[0]: graph_time(r[1]) for r in stamps["provenance_records"]} == {
            i: e[0] for i, e in expected.items()
        }
        ((_, rc, ru),) = stamps["relationships"]
        assert (graph_time(rc), graph_time(ru)) == (expected[1][0], expected[2][0])
        if store.dialect == "sqlite":
            assert rows(store, "SELECT created_at, updated_at FROM nodes WHERE id = 1") == [
                (epoch_micros(expected[1][0]), epoch_micros(expected[1][1]))
            ]
        view = node(store, 1)
        assert view.node["created_at"] == "2026-11-29T23:59:59.999999+00:00"
        assert view.node["updated_at"] == "1999-12-31T23:59:59.500000+00:00"
    finally:
        store.dispose()


@settings(deadline=None)  # a stall on a loaded CI machine is not a failure
@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-7, minutes=-30))]),
    )
)
def test_epoch_micros_round_trips_to_the_same_instant(value: dt.datetime) -> None:
    stored = epoch_micros(value)
    assert isinstance(stored, int)
    assert graph_time(stored) == value
    assert graph_time(stored).tzinfo == dt.UTC  # type: ignore[union-attr]
    assert graph_time(value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()) == value
