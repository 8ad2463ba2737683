"""Where a long load's time, writes and memory go (issue 11: flat rec/s and RSS in file size).

    python bench/probe_scale.py --rows 300000 [--batch 1000] [--every 20]
        [--pragma wal_autocheckpoint=10000 ...] [--no-thread] [--cache-limit N]
        [--dirty-every K] [--tracemalloc] [--page-size BYTES]
        [--base-db big.db --file more.csv]     # steady state: more rows onto a copy

One SQLite load of the example loader with the embedded graph, in this process; every
``--every`` batches one line: records so far, user and system CPU per record, the graph's
lookups (cache misses) per record, records per wall- and CPU-second over the window, commit
time per batch (from the journal append's end to the commit's end: the COMMIT with its
fsync, and SQLite's own checkpoints when ``--no-thread``), bytes this process wrote per
record (``/proc/self/io`` write_bytes: the WAL and the checkpoints), the database and WAL
sizes, RSS, and the sizes of the graph's caches. At the end a summary line (also the main
thread's CPU per record: without the checkpointer thread's).

``--dirty-every K``: the run's own checkpoints off, a checkpoint after each batch from this
probe, and every K batches the pages that batch wrote to the WAL, by table and index
(``dbstat``). ``--page-size``: a new database with that page size (fixed by its first write).
``--base-db``: start from a copy of a database a longer load left
(``--keep``), to compare settings at one size in seconds rather than minutes (copied 4 KiB
at a time: a bulk copy leaves the file in large page-cache folios, and each 4 KiB page
SQLite then writes dirties a whole folio). ``--tracemalloc``: at the end, the top
allocation sites of what is still alive (slow: small sizes only). A probe, not the
benchmark of record (bench_load.py is).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_load

from journal_loader import run
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.runner.committer import BatchCommitter
from journal_loader.storage import open_store

QUERIES: dict[str, int] = {}
QUERY_SECONDS: dict[str, float] = {}


def _count_queries() -> None:
    """Count the graph's lookups (cache misses) per record."""
    from journal_loader.graph.store import GraphStore

    for name in (
        "find_nodes",
        "find_attributes",
        "find_relationship",
        "find_relationships_between",
        "load_fuzzy",
    ):
        original = getattr(GraphStore, name)
        QUERIES[name] = 0
        QUERY_SECONDS[name] = 0.0

        def counted(self: Any, *a: Any, _o: Any = original, _n: str = name, **kw: Any) -> Any:
            QUERIES[_n] += 1
            t = time.perf_counter()
            try:
                return _o(self, *a, **kw)
            finally:
                QUERY_SECONDS[_n] += time.perf_counter() - t

        setattr(GraphStore, name, counted)


def _io_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wal_pages(wal: Path) -> list[int]:
    """The page numbers of the frames in a WAL file (truncated after each batch here)."""
    import struct

    data = wal.read_bytes() if wal.exists() else b""
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    pages = []
    at = 32
    while at + 24 + page_size <= len(data):
        pages.append(struct.unpack(">I", data[at : at + 4])[0])
        at += 24 + page_size
    return pages


class Probe:
    def __init__(self, db_path: Path, every: int) -> None:
        self.db_path, self.every = db_path, every
        self.graph: EmbeddedGraph | None = None
        self.batches = 0
        self.commit_s = 0.0
        self._append_end = 0.0
        self.window: dict[str, float] = {}
        self.lines: list[dict[str, Any]] = []
        self.dirty_every = 0
        self._reset(0)

    def _reset(self, records: int) -> None:
        self.window = {
            "wall": time.perf_counter(),
            "cpu": time.process_time(),
            "io": _io_write_bytes(),
            "records": records,
            "commit": self.commit_s,
            "batches": self.batches,
            "utime": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
            "stime": resource.getrusage(resource.RUSAGE_SELF).ru_stime,
            **{f"q_{k}": v for k, v in QUERIES.items()},
            **{f"qs_{k}": v for k, v in QUERY_SECONDS.items()},
        }

    def _dirty_pages(self) -> None:
        """(--dirty-every) the pages this batch wrote, by table or index; then a checkpoint
        (the run's own are off), so the next batch's frames are its own."""
        import sqlite3

        wal = self.db_path.with_name(self.db_path.name + "-wal")
        pages = _wal_pages(wal)
        if self.batches % self.dirty_every == 0:
            conn = sqlite3.connect(self.db_path)
            wanted = set(pages)
            names: dict[str, int] = {}
            for name, pageno in conn.execute("SELECT name, pageno FROM dbstat"):
                if pageno in wanted:
                    names[name] = names.get(name, 0) + 1
            conn.close()
            top = sorted(names.items(), key=lambda kv: -kv[1])
            print(
                json.dumps(
                    {
                        "batch": self.batches,
                        "frames": len(pages),
                        "distinct": len(wanted),
                        "by": top,
                    }
                )
            )
        conn = sqlite3.connect(self.db_path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def on_batch(self, stats: Any, position: Any, bytes_read: int) -> None:
        self.batches += 1
        if self.dirty_every:
            self._dirty_pages()
        if self.batches % self.every:
            return
        records = stats.total_processed
        w = self.window
        n = records - w["records"]
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        g = self.graph
        caches = {}
        if g is not None:
            caches = {
                "by_key": len(g._by_key),
                "absent": len(g._absent_keys),
                "by_name": len(g._by_name),
                "by_alias": len(g._by_alias),
                "key_of": len(g._key_of),
                "attrs": len(g._attrs),
                "attr_vals": sum(len(v) for v in g._attrs.values()),
                "rels": len(g._rels),
                "pairs": len(g._pairs),
            }
        ru = resource.getrusage(resource.RUSAGE_SELF)
        line = {
            "records": records,
            "user_us": 1e6 * (ru.ru_utime - w["utime"]) / n,
            "sys_us": 1e6 * (ru.ru_stime - w["stime"]) / n,
            **{f"q_{k}": (v - w.get(f"q_{k}", 0)) / n for k, v in QUERIES.items()},
            # the lookups' wall time, microseconds per record
            **{
                f"q_{k}_us": 1e6 * (v - w.get(f"qs_{k}", 0.0)) / n for k, v in QUERY_SECONDS.items()
            },
            "rec_s": n / (time.perf_counter() - w["wall"]),
            "rec_cpu_s": n / max(1e-9, time.process_time() - w["cpu"]),
            "commit_ms": 1000 * (self.commit_s - w["commit"]) / (self.batches - w["batches"]),
            "kb_written_rec": (_io_write_bytes() - w["io"]) / 1024 / n,
            "db_mb": self.db_path.stat().st_size / 2**20,
            "wal_mb": wal.stat().st_size / 2**20 if wal.exists() else 0.0,
            "rss_mb": _rss_mb(),
            **caches,
        }
        self.lines.append(line)
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in line.items()}))
        sys.stdout.flush()
        self._reset(records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--every", type=int, default=20)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--cache-limit", type=int, default=0, help="the graph's cache_limit")
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument("--base-db", help="start from a copy of this database")
    ap.add_argument("--file", help="load this file (default: the generator's of --rows)")
    ap.add_argument("--no-thread", action="store_true", help="SQLite's own checkpoints")
    ap.add_argument("--dirty-every", type=int, default=0, help="pages written per batch")
    ap.add_argument("--page-size", type=int, default=0, help="a new database's page size")
    ap.add_argument("--pragma", action="append", default=[], help="name=value, on connect")
    args = ap.parse_args()
    data = Path(args.file) if args.file else bench_load.data_file(args.rows)
    tmp = Path(tempfile.mkdtemp(prefix="probe-"))
    db = tmp / f"{uuid.uuid4().hex[:8]}.db"
    if args.base_db:
        # in 4 KiB writes: a bulk copy leaves the page cache in large folios, and then each
        # random 4 KiB page SQLite writes dirties (and writes back) a whole folio
        with open(args.base_db, "rb") as src, open(db, "wb") as dst:
            while chunk := src.read(4096):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    if args.page_size and not args.base_db:
        # a new database's page size is fixed by its first write (WAL mode's header)
        con = sqlite3.connect(db)
        con.execute(f"PRAGMA page_size = {int(args.page_size)}")
        con.execute("PRAGMA journal_mode = WAL")
        con.close()
    probe = Probe(db, args.every)
    probe.dirty_every = args.dirty_every
    if args.dirty_every:
        args.pragma.append("wal_autocheckpoint=0")

    init = EmbeddedGraph.__init__

    def capture(self: EmbeddedGraph, *a: Any, **kw: Any) -> None:
        if args.cache_limit:
            kw["cache_limit"] = args.cache_limit
        init(self, *a, **kw)
        probe.graph = self

    EmbeddedGraph.__init__ = capture  # type: ignore[method-assign]

    append = BatchCommitter.append

    def timed_append(self: BatchCommitter, tx: Any, events: Any) -> None:
        append(self, tx, events)
        probe._append_end = time.perf_counter()

    BatchCommitter.append = timed_append  # type: ignore[method-assign]
    # a batch planned ahead appends here instead (and plans the next batch first)
    behind = BatchCommitter._append_behind_and_plan_ahead

    def timed_behind(self: BatchCommitter, tx: Any, events: Any) -> None:
        behind(self, tx, events)
        probe._append_end = time.perf_counter()

    BatchCommitter._append_behind_and_plan_ahead = timed_behind  # type: ignore[method-assign]
    after_commit = EmbeddedGraph.after_commit

    def timed_after_commit(self: EmbeddedGraph) -> None:
        probe.commit_s += time.perf_counter() - probe._append_end
        after_commit(self)

    EmbeddedGraph.after_commit = timed_after_commit  # type: ignore[method-assign]

    _count_queries()
    if args.no_thread:
        from journal_loader.storage.sqlite import SQLiteStore

        SQLiteStore.checkpoint_thread = False
    store = open_store(f"sqlite:///{db}")
    if args.pragma:
        from sqlalchemy import event

        @event.listens_for(store.engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            for p in args.pragma:
                dbapi_conn.execute(f"PRAGMA {p}")

        store.engine.dispose()  # the next connection gets them
    if args.tracemalloc:
        tracemalloc.start(8)
    wall, cpu, io = time.perf_counter(), time.process_time(), _io_write_bytes()
    main_cpu = time.thread_time()
    report = run(
        config=bench_load.CONFIG,
        file=data,
        store=store,
        batch_size=args.batch,
        observers=[probe],
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    main_cpu = time.thread_time() - main_cpu
    written = _io_write_bytes() - io
    assert report.status == "completed", report.message
    n = report.statistics.total_processed
    summary = {
        "summary": True,
        "rows": args.rows,
        "records": n,
        "rec_s": round(n / wall),
        "rec_cpu_s": round(n / cpu),
        "kb_written_rec": round(written / 1024 / n, 1),
        "db_mb": round(db.stat().st_size / 2**20, 1),
        "peak_rss_mb": round(bench_load.peak_rss_mb()),
        "commit_ms": round(1000 * probe.commit_s / max(1, probe.batches), 2),
        "pragmas": args.pragma,
        "page_size": sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0],
        "thread": not args.no_thread,
        "cache_limit": args.cache_limit,
        "find_nodes_rec": round(QUERIES["find_nodes"] / n, 3),
        "main_thread_cpu_rec_us": round(1e6 * main_cpu / n, 1),
    }
    if args.tracemalloc:
        gc.collect()
        snap = tracemalloc.take_snapshot()
        for stat in snap.statistics("traceback")[:15]:
            print(f"{stat.size / 2**20:8.1f} MB {stat.count:>9} blocks")
            for frame in stat.traceback.format()[-6:]:
                print("    " + frame)
    store.dispose()
    print(json.dumps(summary))
    if args.keep:
        print(f"kept: {db}")
    else:
        import shutil

        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
