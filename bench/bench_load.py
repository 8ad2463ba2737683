"""The core benchmark (issue 2): records/s through journal-loader, and resume start-up.

    python bench/bench_load.py [--rows 200000] [--pg postgresql://postgres@127.0.0.1/test]
                               [--only sqlite|postgresql] [--skip-graph]
    python bench/bench_load.py --scaling [--sizes 20000,200000,1000000] [--batch 1000]

Prints, for each backend:

* baseline (same process, same file): parse the CSV and insert two ~200-byte JSON events
  per record with the raw driver in 10k-row transactions: the ceiling for "journaled";
* the journal alone: a loader whose ``propose`` does nothing (RecordParsed +
  ProposeSucceeded + projections + checkpoints), as records/s and as a ratio to the baseline;
* the example loader with the embedded graph (5 facts per record);
* resume start-up: time from ``run()`` to the first record of a run resuming at 10%, 50% and
  90% of the file (hash the file, lock, read the checkpoint, seek), against the time a full
  read of the file takes.

Each rate is given per wall-second (``N records/s``, the figure the README's table shows)
and per CPU-second: this process's CPU (``time.process_time``: the loader, and SQLite, which
runs in it) plus, on PostgreSQL, the CPU of the server backends that served the load
(``utime + stime`` from ``/proc/<pid>/stat``, the pids from ``pg_stat_activity`` by the
run's ``application_name``, sampled every 0.1 s while it runs: a backend's last 0.1 s
before it exits can be missed). On a shared machine wall-clock rates swing with the other
processes' load; CPU rates much less. The end: this process's peak RSS.

Each backend runs in a process of its own, and the example's batch-5,000 load in another
(a process's earlier loads, and the rows this script keeps to write them again, cost a
later load CPU); each measured run starts once the previous one's writes have landed
(``settle``: ``os.sync`` and, on PostgreSQL, ``CHECKPOINT``).

``--scaling``: the example loader with the embedded graph at each size of ``--sizes``
(files from bench/generate_registry.py, deterministic), each load in a process of its own,
so that its peak RSS is its own: records per wall- and CPU-second, peak RSS, and both rates
relative to the first size (flat = the graph's growth costs nothing per record; on a
shared machine, trust the CPU ratio).

Targets on the 2-core machine: >= 5,000 records/s (SQLite) and 3,000 (PostgreSQL) with the
embedded graph; >= 100,000 and 50,000 with a no-op propose; resume start-up < 0.2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg

from journal_loader import Loader, ProposeClient, ProposeResult, run
from journal_loader.sources.readers import open_reader
from journal_loader.storage import open_store
from journal_loader.storage.base import JournalAppend, Tx
from journal_loader.storage.sqlite import SQLiteTx

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


_TICKS = os.sysconf("SC_CLK_TCK")
CORES = len(os.sched_getaffinity(0))  # the cores this process (and the machine's server) may use


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a local process, in seconds (None: gone, or not on this machine)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _TICKS


class ServerCPU:
    """The CPU of the PostgreSQL backends whose application_name is one of ``names``, summed
    over every backend seen while it ran: a thread polls pg_stat_activity and /proc."""

    def __init__(self, pg_url: str, names: list[str]) -> None:
        self.pg_url, self.names = pg_url, names
        self.last: dict[int, float] = {}
        self.own_cpu = 0.0  # this thread's CPU, not the load's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ServerCPU:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        t0 = time.thread_time()
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            while True:
                done = self._stop.is_set()  # then this is the last look, after the load
                pids = conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = ANY(%s)",
                    (self.names,),
                ).fetchall()
                for (pid,) in pids:
                    self.last.setdefault(pid, 0.0)
                for pid in self.last:
                    cpu = _proc_cpu(pid)
                    if cpu is not None:
                        self.last[pid] = cpu
                if done:
                    break
                self._stop.wait(0.1)
        self.own_cpu = time.thread_time() - t0

    @property
    def seconds(self) -> float:
        return sum(self.last.values())


#: The PostgreSQL server to CHECKPOINT before each measured run (main() sets it).
SETTLE_PG_URL: str | None = None


def settle() -> None:
    """Let the previous measured run's writes land before the next one starts: the kernel's
    dirty pages (os.sync) and, where a PostgreSQL server is in use, its dirty buffers
    (CHECKPOINT). Without it a run paid for the one before it: on 2026-11-30 the table's
    journal-only PostgreSQL run, right after the SQLite loads and the PostgreSQL baseline,
    gave 42,593 records/s with 1.51 s of server CPU, and 58,358 / 60,078 with 0.87 s run
    alone (bench/HISTORY.md, session 13)."""
    os.sync()
    if SETTLE_PG_URL:
        try:
            with psycopg.connect(SETTLE_PG_URL, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
        except psycopg.Error as e:  # (CHECKPOINT needs a superuser or pg_checkpoint)
            print(f"(not settled: CHECKPOINT refused: {e})", file=sys.stderr)


class Meter:
    """Wall and CPU seconds of what runs inside ``with``: this process's CPU, and with
    ``server`` the PostgreSQL backends' (whose processes all start inside it: the names are
    new). ``records``: how many records that was, once known. Entering it settles first
    (``settle``), before the clocks start."""

    def __init__(self, server: ServerCPU | None = None) -> None:
        self.server = server
        self.wall = self.loader_cpu = self.server_cpu = 0.0
        self.records = 0
        self._stopped = False
        self.on_server = server is not None  # the server's CPU is in cpu_rate

    def __enter__(self) -> Meter:
        settle()
        if self.server:
            self.server.__enter__()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.wall = time.perf_counter() - self._wall
        self.loader_cpu = time.process_time() - self._cpu
        if self.server:
            self.server.__exit__()
            self.loader_cpu -= self.server.own_cpu
            self.server_cpu = self.server.seconds

    @property
    def cpu_rate(self) -> float:
        return self.records / (self.loader_cpu + self.server_cpu)

    @property
    def cores_busy(self) -> float:
        """The share of the machine's cores the run kept busy: its CPU seconds over the wall
        time of every core. A rate is at most ``cpu_rate`` times the cores, so this is how
        much more any overlap could give (README, "What two cores allow")."""
        return (self.loader_cpu + self.server_cpu) / (self.wall * CORES)

    def cpu_text(self, base: Meter | None = None) -> str:
        """``N records per CPU-second (loader a s + server b s of CPU, x% of baseline's);
        y% of the 2 cores busy``"""
        parts = f"loader {self.loader_cpu:.2f} s"
        if self.on_server:
            parts += f" + server {self.server_cpu:.2f} s"
        share = f", {self.cpu_rate / base.cpu_rate:.0%} of baseline's" if base else ""
        return (
            f"{self.cpu_rate:,.0f} records per CPU-second ({parts} of CPU{share}); "
            f"{self.cores_busy:.0%} of the {CORES} cores busy"
        )


def _app_name() -> str:
    return f"bench_{uuid.uuid4().hex[:12]}"


def _server(pg_url: str | None, *names: str) -> ServerCPU | None:
    return ServerCPU(pg_url, list(names)) if pg_url else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def baseline(path: Path, backend: str, pg_url: str | None) -> Meter:
    """CSV parse + two JSON events per record, raw driver, 10k-row transactions."""
    payload = json.dumps({"type": "RecordParsed", "line": 1, "x": "y" * 150})
    app = _app_name()
    meter = Meter(_server(pg_url if backend == "postgresql" else None, app))
    meter.__enter__()
    n = 0
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        next(rows)
        batch: list[tuple[Any, ...]] = []
        if backend == "sqlite":
            base_dir = Path(tempfile.mkdtemp(prefix="bench-base-"))
            db = sqlite3.connect(base_dir / "base.db", isolation_level=None)
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
            db.close()
        else:
            assert pg_url
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(f"CREATE SCHEMA {schema}")
            try:
                with psycopg.connect(
                    pg_url, options=f"-csearch_path={schema}", application_name=app
                ) as db:
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
                    meter.__exit__()  # before the backend exits with the connection
            finally:
                meter.__exit__()
                with psycopg.connect(pg_url, autocommit=True) as admin:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")
    if backend == "sqlite":
        meter.__exit__()
        shutil.rmtree(base_dir, ignore_errors=True)
    meter.records = n
    return meter


class Databases:
    def __init__(self, backend: str, pg_url: str | None, tmp: Path) -> None:
        self.backend, self.pg_url, self.tmp, self.schemas = backend, pg_url, tmp, []

    def new(self, app: str | None = None) -> str:
        """A new database; on PostgreSQL a schema, its connections named ``app``."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.tmp / f'{uuid.uuid4().hex[:8]}.db'}"
        assert self.pg_url
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        self.schemas.append(schema)
        base = self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        sep = "&" if "?" in base else "?"
        name = f"&application_name={app}" if app else ""
        return f"{base}{sep}options=-csearch_path%3D{schema}{name}"

    def measured(self) -> tuple[str, str, Meter]:
        """A new database, a run id, and a meter for a run() into it (on PostgreSQL: the
        run's connections, and its lock's, which names itself after the run)."""
        app, run_id = _app_name(), str(uuid.uuid4())
        url = self.new(app)
        server = _server(self.pg_url, app, f"journal-loader run {run_id}")
        return url, run_id, Meter(server if self.backend == "postgresql" else None)

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # SQLite's files (2.7 GB at a million rows)
        if self.schemas:
            with psycopg.connect(self.pg_url or "", autocommit=True) as admin:
                for schema in self.schemas:
                    admin.execute(f"DROP SCHEMA {schema} CASCADE")


def bench_backend(backend: str, data: Path, rows: int, pg_url: str | None, graph: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
    dbs = Databases(backend, pg_url, tmp)
    try:
        base_meter = baseline(data, backend, pg_url)
        base = base_meter.records / base_meter.wall
        print(
            f"\n[{backend}] baseline (csv parse + 2 events/record, raw driver): "
            f"{base:,.0f} records/s; {base_meter.cpu_text()}"
        )

        url, run_id, meter = dbs.measured()
        with meter:
            # The store is this function's, so its connections (and their backends) live
            # until the meter has read their CPU; opening it (the migrations) is measured.
            store = open_store(url)
            report = run(NullLoader, data, store=store, batch_size=10_000, run_id=run_id)
        store.dispose()
        meter.records = rows
        null_rate = rows / meter.wall
        assert report.status == "completed", report.message
        print(
            f"[{backend}] journal only (no-op propose, batch 10,000): {null_rate:,.0f} records/s"
            f"  ({null_rate / base:.0%} of baseline); {meter.cpu_text(base_meter)}"
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
                capture = RowCapture() if batch == 1000 else None
                if capture is None:
                    # In a process of its own, like each size of --scaling: not after the
                    # load above and its replay (millions of rows kept in this process; a
                    # process's earlier loads cost a later one CPU: see main()).
                    meter, created = graph_load_elsewhere(backend, rows, batch, pg_url)
                else:
                    report, meter = graph_load(dbs, data, batch, capture)
                    s = report.statistics
                    created = (s.entities_created, s.relationships_created)
                rate = rows / meter.wall
                print(
                    f"[{backend}] example loader, embedded graph (batch {batch:,}): "
                    f"{rate:,.0f} records/s ({rate / base:.1%} of baseline); "
                    f"{meter.cpu_text(base_meter)}; "
                    f"{created[0]:,} entities, {created[1]:,} relationships created"
                )
                if capture is not None:
                    # The same rows, written again with the same bulk insert in the same
                    # batch transactions, into a fresh database: what the database part of
                    # this load costs alone, with no Python deciding what to write.
                    ceiling = capture.replay(dbs)
                    ceiling.records = rows
                    ceiling_rate = rows / ceiling.wall
                    print(
                        f"[{backend}] its rows alone (the {capture.rows_per_record(rows):.1f} "
                        f"rows/record it wrote, bulk-inserted again in its {len(capture.batches)}"
                        f" batch transactions): {ceiling_rate:,.0f} records/s; "
                        f"{ceiling.cpu_text()}; the load is at {rate / ceiling_rate:.0%} "
                        f"of it ({meter.cpu_rate / ceiling.cpu_rate:.0%} per CPU-second)"
                    )
    finally:
        dbs.close()


class RowCapture:
    """Every row a load bulk-inserts (``Tx.insert_rows``: the graph's tables and the
    journal), kept per transaction, to be written again by ``replay``: the ceiling for the
    example loader's schema. Lookups, updates and checkpoints are not in it."""

    def __init__(self) -> None:
        # per transaction: (table, columns, rows), or ("journal", None, a JournalAppend)
        self.batches: list[list[tuple[str, tuple[str, ...] | None, Any]]] = []
        self._tx: object = None

    def _add(self, tx: Tx, entry: tuple[str, tuple[str, ...] | None, Any]) -> None:
        if tx is not self._tx:
            self._tx = tx
            self.batches.append([])
        self.batches[-1].append(entry)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        original = Tx.insert_rows
        original_journal = SQLiteTx.journal_insert  # (PostgreSQL's goes by insert_rows)

        def insert_rows(tx: Tx, table: str, columns: Any, rows: Any) -> None:
            self._add(tx, (table, tuple(columns), list(rows)))  # the rows are tuples
            original(tx, table, columns, rows)

        def journal_insert(tx: SQLiteTx, rows: JournalAppend) -> Any:
            self._add(tx, ("journal", None, rows))
            return original_journal(tx, rows)

        Tx.insert_rows = insert_rows  # type: ignore[method-assign]
        SQLiteTx.journal_insert = journal_insert  # type: ignore[method-assign]
        try:
            yield
        finally:
            Tx.insert_rows = original  # type: ignore[method-assign]
            SQLiteTx.journal_insert = original_journal  # type: ignore[method-assign]
            self._tx = None

    def rows_per_record(self, records: int) -> float:
        return (
            sum(len(r) if c else len(r.positions) for b in self.batches for _t, c, r in b) / records
        )

    def replay(self, dbs: Databases) -> Meter:
        url, _run_id, meter = dbs.measured()
        store = open_store(url)  # the schema, from the migrations (not measured)
        try:
            with meter:
                for batch in self.batches:
                    with store.transaction() as tx:
                        for table, columns, rows in batch:
                            if columns is None:
                                tx.insert_journal(rows)
                            else:
                                tx.insert_rows(table, columns, rows)
        finally:
            store.dispose()
        return meter


def graph_load(
    dbs: Databases, data: Path, batch: int, capture: RowCapture | None = None
) -> tuple[Any, Meter]:
    """The example loader with the embedded graph, measured (its rows kept in ``capture``,
    a list copy per table and batch)."""
    url, run_id, meter = dbs.measured()
    with meter, capture.installed() if capture else contextlib.nullcontext():
        store = open_store(url)  # see the journal-only run
        report = run(config=CONFIG, file=data, store=store, batch_size=batch, run_id=run_id)
    store.dispose()
    assert report.status == "completed", report.message
    meter.records = report.statistics.total_processed
    return report, meter


def data_file(rows: int) -> Path:
    """The bench generator's file of ``rows`` rows (deterministic; made once, kept)."""
    data_dir = REPO / "bench" / "data"
    data_dir.mkdir(exist_ok=True)
    data = data_dir / f"registry_{rows}_20251001.csv"
    if not data.exists():
        gen = _module("generate_registry", REPO / "bench" / "generate_registry.py")
        gen.generate(str(data), rows)
    return data


def one_graph_load(backend: str, rows: int, batch: int, pg_url: str | None) -> None:
    """One measured load in this process, as a JSON line (for --scaling's table)."""
    data = data_file(rows)
    dbs = Databases(backend, pg_url, Path(tempfile.mkdtemp(prefix=f"bench-{backend}-")))
    try:
        report, meter = graph_load(dbs, data, batch)
    finally:
        dbs.close()
    out = {
        "rows": rows,
        "records": report.statistics.total_processed,
        "wall": meter.wall,
        "loader_cpu": meter.loader_cpu,
        "server_cpu": meter.server_cpu,
        "peak_rss_mb": peak_rss_mb(),
        "entities_created": report.statistics.entities_created,
        "relationships_created": report.statistics.relationships_created,
    }
    print(json.dumps(out))


def graph_load_elsewhere(
    backend: str, rows: int, batch: int, pg_url: str | None
) -> tuple[Meter, tuple[int, int]]:
    """``one_graph_load`` in a new process: its meter, and the entities and relationships
    it created."""
    cmd = [sys.executable, __file__, "--one-graph-load", "--rows", str(rows)]
    cmd += ["--only", backend, "--batch", str(batch)]
    if pg_url:
        cmd += ["--pg", pg_url]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    meter = Meter()
    meter.wall, meter.loader_cpu, meter.server_cpu = r["wall"], r["loader_cpu"], r["server_cpu"]
    meter.records = r["records"]
    meter.on_server = backend == "postgresql"
    return meter, (r["entities_created"], r["relationships_created"])


def scaling(backends: list[str], sizes: list[int], batch: int, pg_url: str) -> None:
    for backend in backends:
        print(
            f"\n[{backend}] scaling: example loader, embedded graph, batch {batch:,} "
            "(each size in a process of its own)"
        )
        print(
            f"{'rows':>12} {'records/s':>10} {'per CPU-s':>10} {'server CPU':>10} "
            f"{'cores busy':>10} {'peak RSS':>10}   vs the first size (per wall-s, per CPU-s)"
        )
        first: tuple[float, float] | None = None
        for rows in sizes:
            data_file(rows)  # generated here, not inside the measured process
            cmd = [sys.executable, __file__, "--one-graph-load", "--rows", str(rows)]
            cmd += ["--only", backend, "--batch", str(batch), "--pg", pg_url]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rate = r["records"] / r["wall"]
            cpu_rate = r["records"] / (r["loader_cpu"] + r["server_cpu"])
            first = first or (rate, cpu_rate)
            server = f"{r['server_cpu']:.1f} s" if backend == "postgresql" else "-"
            busy = (r["loader_cpu"] + r["server_cpu"]) / (r["wall"] * CORES)
            print(
                f"{rows:>12,} {rate:>10,.0f} {cpu_rate:>10,.0f} {server:>10} {busy:>10.0%} "
                f"{r['peak_rss_mb']:>7,.0f} MB   {rate / first[0]:.2f}, {cpu_rate / first[1]:.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--pg", default="postgresql://postgres@/test?host=/var/run/postgresql")
    ap.add_argument("--only", choices=["sqlite", "postgresql"])
    ap.add_argument("--skip-graph", action="store_true")
    ap.add_argument("--scaling", action="store_true", help="the scaling table (see above)")
    ap.add_argument("--sizes", default="20000,200000,1000000", help="rows, for --scaling")
    ap.add_argument("--batch", type=int, default=1000, help="batch size, for --scaling")
    ap.add_argument("--one-graph-load", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    backends = [b for b in ("sqlite", "postgresql") if not args.only or b == args.only]
    global SETTLE_PG_URL
    SETTLE_PG_URL = args.pg if "postgresql" in backends else None
    if args.one_graph_load:
        pg = args.pg if backends[0] == "postgresql" else None
        one_graph_load(backends[0], args.rows, args.batch, pg)
        return
    if args.scaling:
        scaling(backends, [int(n) for n in args.sizes.split(",")], args.batch, args.pg)
        return
    data = data_file(args.rows)
    if len(backends) > 1:
        # Each backend in a process of its own, so that neither runs in what the other left
        # in this process's heap (measured: journal only on PostgreSQL ran at 45,694
        # records/s after SQLite's graph loads in the same process, 59,899 after only
        # SQLite's journal-only run; bench/HISTORY.md, session 13).
        for backend in backends:
            cmd = [sys.executable, __file__, "--only", backend, "--rows", str(args.rows)]
            cmd += ["--pg", args.pg] + (["--skip-graph"] if args.skip_graph else [])
            sys.stdout.flush()
            subprocess.run(cmd, check=True)
        return
    print(f"{args.rows:,} rows, {data.stat().st_size / 1e6:.1f} MB: {data}")
    for backend in backends:
        bench_backend(
            backend,
            data,
            args.rows,
            args.pg if backend == "postgresql" else None,
            not args.skip_graph,
        )
    print(f"\npeak RSS of this process (the loads above but batch 5,000): {peak_rss_mb():,.0f} MB")
    _ = io


if __name__ == "__main__":
    main()
