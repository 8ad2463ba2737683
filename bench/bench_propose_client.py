#!/usr/bin/env python3
"""Benchmark: loading into an existing Propose API through PostgresProposeClient, against
the pattern users run today (a connection and a commit per proposal).

The Propose API is the tests' PL/pgSQL stand-in (tests/sql/propose_fact.sql, the deployments'
exact ``propose_fact`` signature), installed in fresh schemas of the PostgreSQL database
named by ``--pg`` (default ``$JOURNAL_LOADER_TEST_PG_URL``). The input is the synthetic
business registry (bench/generate_registry.py, seeded), loaded by the example loader
(examples/business_registry/loader.py, about 5 facts per record).

* ``journal-loader, same database``: ``run()`` with ``PostgresProposeClient(store)``: the
  function in the journal's database, one connection, one transaction per batch (a savepoint
  per record), journal events and checkpoints included;
* ``journal-loader, separate database``: ``PostgresProposeClient(store, url=...)``: the
  function reached over one connection, a record's calls in one remote transaction, batches
  in the runner's two phases;
* ``connection + commit per proposal``: the same loader and the same function, called the
  way users' scripts do today: for every fact, connect, call, commit, disconnect (no
  journal at all). It is slow, so it runs on the first ``--baseline-records`` records.

Prints records/s (wall clock) for each and the ratios to the baseline.

    .venv/bin/python bench/bench_propose_client.py [--records N] [--baseline-records M]
                                                   [--batch-size B] [--pg URL]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
from sqlalchemy import make_url  # noqa: E402

from journal_loader import run  # noqa: E402
from journal_loader.config import load_config  # noqa: E402
from journal_loader.errors import SkipRecord  # noqa: E402
from journal_loader.factory import loader_from_config  # noqa: E402
from journal_loader.graph.postgres_client import PostgresProposeClient  # noqa: E402
from journal_loader.storage import open_store  # noqa: E402

EXAMPLE_CONFIG = REPO / "examples" / "business_registry" / "loader.yaml"
SQL_FILE = REPO / "tests" / "sql" / "propose_fact.sql"
NODE_TYPES = ["Company", "Person", "City", "State", "Address"]
REL_TYPES = ["LOCATED_IN", "IN_STATE", "HEADQUARTERED_AT", "REGISTERED_AGENT_OF", "HAS_ADDRESS"]


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def schema(base_url: str) -> Iterator[str]:
    """A fresh schema with the Propose API stand-in; yields a URL using it."""
    name = f"jl_bench_{uuid.uuid4().hex[:10]}"
    admin = _libpq(base_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    url = (
        make_url(base_url)
        .set(drivername="postgresql+psycopg")
        .update_query_dict({"options": f"-csearch_path={name}"})
        .render_as_string(hide_password=False)
    )
    try:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            conn.execute(SQL_FILE.read_text(encoding="utf-8"))
            for t in NODE_TYPES:
                conn.execute("INSERT INTO kg_node_types VALUES (%s)", (t,))
            for t in REL_TYPES:
                conn.execute("INSERT INTO kg_relationship_types VALUES (%s, NULL)", (t,))
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def facts_in(url: str) -> int:
    with psycopg.connect(_libpq(url)) as conn:
        row = conn.execute("SELECT count(DISTINCT idempotency_key) FROM kg_provenance").fetchone()
        return int(row[0]) if row else 0


def journal_loader_run(url: str, data: Path, batch_size: int, remote: str | None) -> float:
    store = open_store(url)
    client = PostgresProposeClient(
        store, url=remote, source_name="bench", source_type="business_registry"
    )
    try:
        started = time.perf_counter()
        report = run(
            config=EXAMPLE_CONFIG, file=data, store=store, graph=client, batch_size=batch_size
        )
        elapsed = time.perf_counter() - started
    finally:
        client.close()
        store.dispose()
    if report.status != "completed":
        raise SystemExit(f"the run did not complete: {report.status} {report.message}")
    return report.statistics.total_processed / elapsed


class ConnectionPerProposal(PostgresProposeClient):
    """The same function, called as users' scripts do today: connect, call, commit
    (autocommit), disconnect, for every proposal."""

    def _call(self, rec: Any, params: dict[str, Any]) -> Any:
        try:
            return super()._call(rec, params)
        finally:
            self.close()


def per_proposal_run(url: str, data: Path, records: int) -> float:
    loader = loader_from_config(load_config(EXAMPLE_CONFIG))
    client = ConnectionPerProposal(url=url, source_name="bench", source_type="business_registry")
    done = 0
    started = time.perf_counter()
    with data.open(newline="", encoding="utf-8") as f:
        for offset, row in enumerate(csv.DictReader(f)):
            if offset >= records:
                break
            done += 1
            try:
                record = loader.parse(row)
            except SkipRecord:
                continue
            if record is None or loader.validate(record):
                continue
            client.begin_record(0, offset, "bench")
            loader.propose(record, client)
            client.finish_record()
    elapsed = time.perf_counter() - started
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=3000)
    p.add_argument("--baseline-records", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--pg", default=os.environ.get("JOURNAL_LOADER_TEST_PG_URL"))
    args = p.parse_args(argv)
    if not args.pg:
        p.error("give --pg postgresql://... (or set JOURNAL_LOADER_TEST_PG_URL)")

    sys.path.insert(0, str(REPO / "bench"))
    import generate_registry

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "business_registry_20251001.csv"
        generate_registry.generate(data, args.records)
        figures: list[tuple[str, float, int]] = []
        with schema(args.pg) as url:
            rate = journal_loader_run(url, data, args.batch_size, None)
            figures.append(("journal-loader, same database", rate, args.records))
            print(f"  same database: {facts_in(url)} facts", file=sys.stderr)
        with schema(args.pg) as journal, schema(args.pg) as remote:
            rate = journal_loader_run(journal, data, args.batch_size, remote)
            figures.append(("journal-loader, separate database", rate, args.records))
        with schema(args.pg) as url:
            n = min(args.baseline_records, args.records)
            rate = per_proposal_run(url, data, n)
            figures.append(("connection + commit per proposal", rate, n))

    baseline = figures[-1][1]
    print(f"{'pattern':38} {'records':>8} {'records/s':>10} {'vs per-proposal':>16}")
    for name, rate, n in figures:
        print(f"{name:38} {n:>8} {rate:>10.1f} {rate / baseline:>15.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
