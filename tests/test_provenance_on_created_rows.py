"""Migration 0011: a record's assertion of what it created is kept on the created row
(``prov_*`` columns of nodes, attributes and relationships), its other assertions in the
kinds' tables; the view ``provenance`` shows one row per assertion either way, and a graph
written before 0011 keeps showing the rows it showed."""

from __future__ import annotations

from sqlalchemy import text

from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.storage import open_store
from journal_loader.storage.migrate import upgrade
from tests.support.graph import Direct, rows
from tests.support.stores import bare_store

VIEW = (
    "SELECT id, subject_kind, subject_id, source_id, record_offset, fact_index, run_id,"
    " confidence FROM provenance ORDER BY id"
)
STORED = """
SELECT 'table', subject_id, id, record_id FROM provenance_nodes
UNION ALL SELECT 'table', subject_id, id, record_id FROM provenance_relationships
UNION ALL SELECT 'table', subject_id, id, record_id FROM provenance_attributes
UNION ALL SELECT 'row', id, prov_id, prov_record_id FROM nodes WHERE prov_id IS NOT NULL
UNION ALL SELECT 'row', id, prov_id, prov_record_id FROM relationships WHERE prov_id IS NOT NULL
UNION ALL SELECT 'row', id, prov_id, prov_record_id FROM attributes WHERE prov_id IS NOT NULL
ORDER BY 3"""


def test_a_graph_from_before_0011_shows_the_same_provenance_and_goes_on(db_url: str) -> None:
    old = bare_store(db_url)
    stamp = "1700000000000000" if old.dialect == "sqlite" else "CURRENT_TIMESTAMP"
    try:
        upgrade(old.engine, "0010")
        with old.engine.begin() as conn:
            for node_id, name in ((1, "A"), (2, "B")):
                conn.execute(
                    text(
                        "INSERT INTO nodes (id, node_type, name, norm_name, created_at,"
                        f" updated_at) VALUES (:id, :t, :n, :nn, {stamp}, {stamp})"
                    ),
                    {
                        "id": node_id,
                        "t": "Company" if node_id == 1 else "City",
                        "n": name,
                        "nn": name.lower(),
                    },
                )
            conn.execute(
                text(
                    "INSERT INTO provenance_records (id, source_id, record_offset, run_id,"
                    f" created_at, confidence) VALUES (2, 1, 0, 'run-a', {stamp}, 0.9)"
                )
            )
            for pid, subject in ((1, 1), (2, 2)):
                conn.execute(
                    text(
                        "INSERT INTO provenance_nodes (subject_id, id, record_id, fact_index)"
                        " VALUES (:s, :id, 2, 0)"
                    ),
                    {"s": subject, "id": pid},
                )
            if old.dialect == "postgresql":  # as the graph leaves them: the last ids handed out
                conn.execute(text("SELECT setval(pg_get_serial_sequence('nodes', 'id'), 2)"))
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('provenance_records', 'id'), 2)")
                )
            before = [tuple(r) for r in conn.execute(text(VIEW))]
        upgrade(old.engine)
    finally:
        old.dispose()
    store = open_store(db_url)
    try:
        assert rows(store, VIEW) == before  # untouched, and shown as before
        assert len(before) == 2
        # A new record: node A (there before) and a new node C, related. A's assertion goes
        # in the table; C's and the new relationship's on their own rows.
        result = Direct(EmbeddedGraph(store), store).propose(("Company", "A"), ("City", "C"), "IN")
        p = result.provenance_ids
        assert len(p) == 3 and min(p) == 3  # the ids go on
        a, c, rel = result.source_entity_id, result.target_entity_id, result.relationship_id
        assert a == 1 and c not in (1, 2)
        record = max(p)
        assert rows(store, STORED) == [
            ("table", 1, 1, 2),
            ("table", 2, 2, 2),
            ("table", 1, p[0], record),
            ("row", c, p[1], record),
            ("row", rel, p[2], record),
        ]
        after = rows(store, VIEW)
        assert after[:2] == before
        assert [(r[0], r[1], r[2]) for r in after[2:]] == [
            (p[0], "node", 1),
            (p[1], "node", c),
            (p[2], "relationship", rel),
        ]
        # one row per assertion: what lineage and `graph node` read
        lineage = "SELECT id FROM provenance WHERE subject_kind = :k AND subject_id = :s"
        assert rows(store, lineage, k="node", s=1) == [(1,), (p[0],)]
        assert rows(store, lineage, k="node", s=c) == [(p[1],)]
    finally:
        store.dispose()
