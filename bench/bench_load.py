"""The core benchmark (issue 2): records/s through journal-loader, and resume start-up.

    python bench/bench_load.py [--rows 200000] [--pg postgresql://postgres@127.0.0.1/test]
                               [--only sqlite|postgresql] [--skip-graph]

Prints, for each backend:

* baseline (same process, same file): parse the CSV and insert two ~200-byte JSON events
  per record with the raw driver in 10k-row transactions: the ceiling for "journaled";
* the journal alone: a loader whose ``propose`` does nothing (RecordParsed +
  ProposeSucceeded + projections + checkpoints), as records/s and as a ratio to the baseline;
* the example loader with the embedded graph (5 facts per record);
* resume start-up: time from ``run()`` to the first record of a run resuming at 10%, 50% and
  90% of the file (hash the file, lock, read the checkpoint, seek), against the time a full
  read of the file takes.

Targets on the 2-core machine: >= 5,000 records/s (SQLite) and 3,000 (PostgreSQL) with the
embedded graph; >= 100,000 and 50,000 with a no-op propose; resume start-up < 0.2 s.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from journal_loader import Loader, ProposeClient, ProposeResult, run
from journal_loader.sources.readers import open_reader

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "business_registry" / "loader.yaml"


def _module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class NullLoader(Loader):
    """Journals every record (RecordParsed + ProposeSucceeded), proposes nothing."""

    name = "null"
    source_type = "bench_null"

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(raw)

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        return []


class FirstRecord:
    """Observer: when did the first batch get going (start-up = registration + seek)."""

    def __init__(self) -> None:
        self.started: float | None = None

    def on_start(self, info: dict[str, Any]) -> None:
        self.started = time.perf_counter()


def baseline(path: Path, backend: str, pg_url: str | None) -> float:
    """CSV parse + two JSON events per record, raw driver, 10k-row transactions."""
    payload = json.dumps({"type": "RecordParsed", "line": 1, "x": "y" * 150})
    t0 = time.perf_counter()
    n = 0
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        batch: list[tuple[Any, ...]] = []
        if backend == "sqlite":
            db = sqlite3.connect(Path(tempfile.mkdtemp()) / "base.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE j (p INTEGER PRIMARY KEY, s INT, o INT, t TEXT, payload TEXT)")
            for row in rows:
                n += 1
                record = json.dumps(dict(enumerate(row)))
                batch += [(1, n, "RecordParsed", record), (1, n, "ProposeSucceeded", payload)]
                if len(batch) >= 20_000:
                    db.execute("BEGIN")
                    db.executemany("INSERT INTO j (s, o, t, payload) VALUES (?, ?, ?, ?)", batch)
                    db.execute("COMMIT")
                    batch.clear()
            db.execute("BEGIN")
            db.executemany("INSERT INTO j (s, o, t, payload) VALUES (?, ?, ?, ?)", batch)
            db.execute("COMMIT")
        else:
            assert pg_url
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {schema}")
            try:
                with psycopg.connect(pg_url, options=f"-csearch_path={schema}") as db:
                    db.execute(
                        "CREATE TABLE j (p BIGSERIAL PRIMARY KEY, s INT, o INT, t TEXT, "
                        "payload TEXT)"
                    )
                    db.commit()
                    with db.cursor() as cur:
                        copy_ctx = cur.copy("COPY j (s, o, t, payload) FROM STDIN")
                        copy = copy_ctx.__enter__()
                        for row in rows:
                            n += 1
                            record = json.dumps(dict(enumerate(row)))
                            copy.write_row((1, n, "RecordParsed", record))
                            copy.write_row((1, n, "ProposeSucceeded", payload))
                            if n % 10_000 == 0:
                                copy_ctx.__exit__(None, None, None)
                                db.commit()
                                copy_ctx = cur.copy("COPY j (s, o, t, payload) FROM STDIN")
                                copy = copy_ctx.__enter__()
                        copy_ctx.__exit__(None, None, None)
                    db.commit()
            finally:
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return n / (time.perf_counter() - t0)


class Databases:
    def __init__(self, backend: str, pg_url: str | None, tmp: Path) -> None:
        self.backend, self.pg_url, self.tmp, self.schemas = backend, pg_url, tmp, []

    def new(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / f'{uuid.uuid4().hex[:8]}.db'}"
        assert self.pg_url
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        base = self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options=-csearch_path%3D{schema}"

    def close(self) -> None:
        if self.schemas:
            with psycopg.connect(self.pg_url or "", autocommit=True) as admin:
                for schema in self.schemas:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")


def bench_backend(backend: str, data: Path, rows: int, pg_url: str | None, graph: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    dbs = Databases(backend, pg_url, tmp)
    try:
        base = baseline(data, backend, pg_url)
        print(
            f"\n[{backend}] baseline (csv parse + 2 events/record, raw driver): "
            f"{base:,.0f} records/s"
        )

        url = dbs.new()
        t0 = time.perf_counter()
        report = run(NullLoader, data, db=url, batch_size=10_000)
        null_rate = rows / (time.perf_counter() - t0)
        assert report.status == "completed", report.message
        print(
            f"[{backend}] journal only (no-op propose, batch 10,000): {null_rate:,.0f} records/s"
            f"  ({null_rate / base:.0%} of baseline)"
        )

        # Resume start-up: journal a partial load up to each cut, then time a resumed run's
        # start (file hash + lock + checkpoint + seek) to its first batch.
        t0 = time.perf_counter()
        with open_reader(str(data)) as reader:
            for _ in reader:
                pass
        full_read = time.perf_counter() - t0
        for share in (0.1, 0.5, 0.9):
            url = dbs.new()
            run(NullLoader, data, db=url, batch_size=10_000, limit=int(rows * share))
            first = FirstRecord()
            t0 = time.perf_counter()
            report = run(NullLoader, data, db=url, batch_size=10_000, limit=1, observers=[first])
            assert report.resumed_from == int(rows * share), report
            assert first.started is not None
            startup = first.started - t0
            print(
                f"[{backend}] resume at {share:.0%}: start-up {startup * 1000:.0f} ms "
                f"(full read of the file: {full_read * 1000:.0f} ms; "
                f"ratio {startup / full_read:.2f})"
            )

        if graph:
            for batch in (1000, 5000):
                url = dbs.new()
                t0 = time.perf_counter()
                report = run(config=CONFIG, file=data, db=url, batch_size=batch)
                rate = rows / (time.perf_counter() - t0)
                assert report.status == "completed", report.message
                s = report.statistics
                print(
                    f"[{backend}] example loader, embedded graph (batch {batch:,}): "
                    f"{rate:,.0f} records/s ({rate / base:.1%} of baseline); "
                    f"{s.entities_created:,} entities, {s.relationships_created:,} "
                    "relationships created"
                )
    finally:
        dbs.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg", default="postgresql://postgres@/test?host=/var/run/postgresql")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--skip-graph", action="store_true")
    args = ap.parse_args()
    gen = _module("generate_registry", REPO / "bench" / "generate_registry.py")
    data_dir = REPO / "bench" / "data"
    data_dir.mkdir(exist_ok=True)
    data = data_dir / f"registry_{args.rows}_20251001.csv"
    if not data.exists():
        gen.generate(str(data), args.rows)
    print(f"{args.rows:,} rows, {data.stat().st_size / 1e6:.1f} MB: {data}")
    for backend in ("sqlite", "postgresql"):
        if args.only and backend != args.only:
            continue
        bench_backend(
            backend,
            data,
            args.rows,
            args.pg if backend == "postgresql" else None,
            not args.skip_graph,
        )
    _ = io


if __name__ == "__main__":
    main()
