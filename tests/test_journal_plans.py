"""The journal's statements on a run's way in (resume: the checkpoint, the chunks' marks,
the attempts in doubt, the chain's head, a record's events), and a DLQ retry's read of its
outcomes, are index searches on
PostgreSQL when the journal has never been analysed: autovacuum off, as on this project's
test server, or a journal that grew faster than it ran. Their cost then stays flat in the
journal's size, which resume start-up needs (issue 11: under 50 ms at 90% of a file).

Why a plan test: without statistics the planner takes an open range such as `position >
:after` for a third of the table and scans all of it; the answers stay the same, and only
a long journal shows the time (in_doubt: 74 ms at 2 million events, 0.3 ms as a search)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text

from journal_loader.storage import open_store
from journal_loader.storage.sql import load_queries

QUERIES = Path(__file__).resolve().parent.parent / "journal_loader" / "storage" / "queries"

# the statements a run's start reads the journal with (runner/registration.py, chunks.py)
RESUME = [
    "checkpoint",
    "plan_mark",
    "chunk_marks",
    "in_doubt",
    "record_events",
    "run_started_payload",
    "parsed_payload_in_run",
    "chain_head",
    "events_after",
]


@pytest.mark.postgres
def test_resume_statements_search_a_journal_without_statistics(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        with store.transaction() as tx:
            tx.execute("ALTER TABLE journal SET (autovacuum_enabled = false)")
            # 60,000 events of one source, a batch's BatchCommitted every 1,000
            tx.execute(
                "INSERT INTO journal (position, source_id, record_offset, event_type,"
                " schema_version, payload, run_id, recorded_at, prev_hash, hash)"
                " SELECT g, 1, CASE WHEN g % 1000 = 0 THEN NULL ELSE g END,"
                " CASE WHEN g % 1000 = 0 THEN 'BatchCommitted'"
                " WHEN g % 2 = 0 THEN 'ProposeSucceeded' ELSE 'RecordParsed' END,"
                " 1, '{}', 'run-1', now(), NULL, '\\x00'::bytea"
                " FROM generate_series(1, 60000) g"
            )
            tx.execute(
                "INSERT INTO sources (source_id, source_type, source_name, source_version,"
                " file_name, file_path, file_hash, file_size_bytes, records_processed,"
                " records_imported, records_failed, records_skipped, status, last_position,"
                " created_at, updated_at) VALUES (1, 't', 't', '1', 'f', 'f', 'h', 0, 0, 0,"
                " 0, 0, 'processing', 60000, now(), now())"
            )
        with store.read() as conn:
            analysed = conn.execute(
                text(
                    "SELECT reltuples >= 0 FROM pg_class WHERE relname = 'journal'"
                    " AND relnamespace = to_regnamespace(current_schema())"
                )
            ).scalar()
            assert analysed is False, "the premise: no statistics"
        sql = load_queries(QUERIES / "journal.sql", "postgresql")
        params = {
            "source_id": 1,
            "after": 59_000,  # the last checkpoint: the tail of the journal
            "upto": 60_000,
            "limit": 100,
            "record_offset": 59_001,
            "run_id": "run-1",
        }
        for name in RESUME:
            wanted = {k: v for k, v in params.items() if f":{k}" in sql[name]}
            with store.transaction() as tx:
                plan = "\n".join(r[0] for r in tx.fetchall("EXPLAIN " + sql[name], wanted))
            assert not re.findall(r"Seq Scan on journal\b", plan), f"{name} scans:\n{plan}"
        # A DLQ retry's outcomes: a search of the key after the source's last position
        # before the retry, not a read of every event of the source through its index.
        run_outcomes = load_queries(QUERIES / "ops.sql", "postgresql")["run_outcomes"]
        with store.transaction() as tx:
            plan = "\n".join(r[0] for r in tx.fetchall("EXPLAIN " + run_outcomes, params))
        assert not re.findall(r"Seq Scan on journal\b", plan), plan
        assert "journal_pkey" in plan and "ix_journal_source" not in plan, plan
    finally:
        store.dispose()
