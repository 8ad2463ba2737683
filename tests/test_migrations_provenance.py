"""Migration 0007 moves a graph's provenance into a table per subject kind: the view
``provenance`` shows the same rows after it as before, and new assertions go on with the
same sequence of ids."""

from __future__ import annotations

from sqlalchemy import text

from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.storage import Store, open_store
from journal_loader.storage.migrate import upgrade
from tests.support.graph import Direct, rows

# (id, kind, subject, record id, fact index, confidence): record 3 has one confidence,
# record 7 two (its last subject's is the record's), record 8 a single subject
SUBJECTS = [
    (1, "node", 1, 3, 0, 0.9),
    (2, "node", 2, 3, 0, 0.9),
    (3, "relationship", 1, 3, 0, 0.9),
    (4, "node", 1, 7, 0, 0.5),
    (5, "attribute", 1, 7, 0, 0.5),
    (6, "node", 3, 7, 1, 0.75),
    (7, "relationship", 2, 7, 1, 0.75),
    (8, "attribute", 1, 8, 0, 1.0),
]
RECORDS = [(3, 1, 0, "run-a"), (7, 1, 1, "run-a"), (8, 2, 0, "run-b")]
VIEW = (
    "SELECT id, subject_kind, subject_id, source_id, record_offset, fact_index, run_id,"
    " confidence FROM provenance ORDER BY id"
)


def _bare_store(db_url: str) -> Store:
    """A store on the URL without running its migrations."""
    if db_url.startswith("sqlite"):
        from journal_loader.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url)
    from journal_loader.storage.postgres import PostgresStore

    return PostgresStore(db_url)


def test_migration_0007_keeps_every_provenance_row(db_url: str) -> None:
    old = _bare_store(db_url)
    try:
        upgrade(old.engine, "0006")
        with old.engine.begin() as conn:
            for record_id, source_id, offset, run_id in RECORDS:
                conn.execute(
                    text(
                        "INSERT INTO provenance_records (id, source_id, record_offset, run_id,"
                        " created_at) VALUES (:id, :s, :o, :r, CURRENT_TIMESTAMP)"
                    ),
                    {"id": record_id, "s": source_id, "o": offset, "r": run_id},
                )
            for pid, kind, subject, record_id, fact_index, confidence in SUBJECTS:
                conn.execute(
                    text(
                        "INSERT INTO provenance_subjects (subject_kind, subject_id, id,"
                        " record_id, fact_index, confidence) VALUES (:k, :s, :id, :r, :f, :c)"
                    ),
                    {
                        "k": kind,
                        "s": subject,
                        "id": pid,
                        "r": record_id,
                        "f": fact_index,
                        "c": confidence,
                    },
                )
            if old.dialect == "postgresql":  # as the graph leaves it: the last id handed out
                conn.execute(
                    text("SELECT setval(pg_get_serial_sequence('provenance_records', 'id'), 8)")
                )
            before = [tuple(r) for r in conn.execute(text(VIEW))]
        upgrade(old.engine)
    finally:
        old.dispose()
    store = open_store(db_url)
    try:
        assert rows(store, VIEW) == before
        assert [r[0] for r in before] == list(range(1, 9))
        # only the subjects whose confidence is not their record's keep one of their own
        own = rows(
            store,
            "SELECT id FROM provenance_nodes WHERE confidence IS NOT NULL UNION ALL "
            "SELECT id FROM provenance_attributes WHERE confidence IS NOT NULL UNION ALL "
            "SELECT id FROM provenance_relationships WHERE confidence IS NOT NULL",
        )
        assert sorted(r[0] for r in own) == [4, 5]
        result = Direct(EmbeddedGraph(store), store).propose(("Company", "A"), ("City", "B"), "IN")
        assert min(result.provenance_ids) == 9  # the ids go on
    finally:
        store.dispose()
