"""Several loaders at once on one PostgreSQL: records/s, CPU and lock waits by worker count.

    python bench/bench_scale.py [--sources 4] [--rows 20000] [--workers 1,2,4]
                                [--pg postgresql://postgres@127.0.0.1/test] [--modes ...]

A "worker" here is one `journal-loader run` process; W workers work through the S source
files (a queue: each takes the next file when it finishes one), as `jobs run`, cron or a
worker fleet would. Modes:

* ``journal``: a loader whose ``propose`` does nothing (the journal, projections and
  checkpoints alone: where the journal's append lock shows);
* ``graph-first``: the example loader, embedded graph, into an empty graph (the sources
  share registered agents, cities, states: batches keep creating the same new entities);
* ``graph-refresh``: the same files again with ``--force`` once the graph has them (their
  entities exist: no entity locks).
* ``split``: ONE file of sources x rows rows, the example loader into an empty graph.
  1 worker is a plain run of the whole file (the baseline); W workers are ``submit --split
  8`` (its planning pass is inside the measured time) and W ``worker --until-empty``
  processes working through the 8 chunks' jobs.

For each mode the 1-worker run is the baseline, in the same invocation. Printed per run:
records/s of wall time; records per CPU-second (the loaders' CPU, from the children's
rusage, plus the PostgreSQL server's, from /proc: live backends and what the postmaster
reaped), which stays comparable on a busy machine where wall time does not; the ratio of
each to the 1-worker run; and lock waits, sampled every 20 ms: of the loaders' sessions in
pg_stat_activity that were active (``samples``), the share waiting on a lock, by lock kind,
and the share waiting on the journal's append lock itself (``append``: the session's pg_locks
row on ``PostgresStore.journal_append_key``, not granted); ``held``: the share of the samples
in which some session held that lock. Only the benchmark's own sessions count: each run's
URL names an application_name of its own (a test suite running beside it on the same server
stays out of the numbers).
"""

from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from journal_loader.storage import open_store
from journal_loader.storage.postgres import PostgresStore

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "examples" / "business_registry" / "loader.yaml"
SEEDS = (1101, 2202, 3303, 4404, 5505, 6606, 7707, 8808)
CLK_TCK = os.sysconf("SC_CLK_TCK")

NULL_LOADER = """
from journal_loader import Loader


class NullLoader(Loader):
    name = "null"
    source_type = "bench_null"

    def parse(self, raw):
        return dict(raw)

    def propose(self, record, graph):
        return []
"""
NULL_CONFIG = """
loader: {name: "null", class: "null_loader.py:NullLoader"}
source: {type: bench_null, name: "journal only", format: csv}
processing: {batch_size: 5000}
"""


def _generate(folder: Path, sources: int, rows: int) -> list[Path]:
    sys.path.insert(0, str(REPO / "bench"))
    import generate_registry

    files = []
    for i in range(sources):
        path = folder / f"business_registry_2025{(i % 12) + 1:02d}01_{i}.csv"
        generate_registry.generate(path, rows=rows, seed=SEEDS[i % len(SEEDS)] + i)
        files.append(path)
    return files


def _postgres_cpu_seconds() -> float:
    """CPU of every postgres process now alive, plus what the postmaster reaped."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if not name.startswith("postgres"):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += utime + stime + cutime + cstime
    return total / CLK_TCK


def _children_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class LockSampler(threading.Thread):
    """Samples the loaders' sessions every ``interval`` seconds: of the active ones, how many
    wait on a lock, on which kind, and how many on the journal's append lock; and in how many
    samples some session held the append lock."""

    def __init__(
        self, pg_url: str, application_name: str, append_key: int, interval: float = 0.02
    ) -> None:
        super().__init__(daemon=True)
        self.pg_url = pg_url
        self.application_name = application_name
        unsigned = append_key & 0xFFFFFFFFFFFFFFFF
        self.append_hi, self.append_lo = unsigned >> 32, unsigned & 0xFFFFFFFF
        self.interval = interval
        self.stop = threading.Event()
        self.ticks = 0
        self.held = 0  # ticks in which a session held the append lock
        self.active = 0
        self.append_waits = 0
        self.waits: collections.Counter[str] = collections.Counter()

    def run(self) -> None:
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            while not self.stop.is_set():
                held = False
                for state, wtype, wevent, append in conn.execute(
                    "SELECT a.state, a.wait_event_type, a.wait_event, ("
                    "  SELECT bool_or(l.granted) FROM pg_locks l WHERE l.pid = a.pid"
                    "  AND l.locktype = 'advisory' AND l.objsubid = 1"
                    "  AND l.classid::bigint = %s AND l.objid::bigint = %s) "
                    "FROM pg_stat_activity a "
                    "WHERE a.application_name = %s AND a.pid <> pg_backend_pid()",
                    (self.append_hi, self.append_lo, self.application_name),
                ):
                    held = held or append is True
                    if state != "active":
                        continue
                    self.active += 1
                    if wtype == "Lock":
                        self.waits[wevent] += 1
                    if append is False:  # a row of the append lock's, not granted: waiting
                        self.append_waits += 1
                self.ticks += 1
                self.held += held
                time.sleep(self.interval)


class Schemas:
    def __init__(self, pg_url: str) -> None:
        self.pg_url, self.names = pg_url, []

    def new(self) -> tuple[str, str, int]:
        """A migrated schema: (URL of it, the application_name its sessions go by, the key
        of its journal append lock)."""
        schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            admin.execute(f"CREATE SCHEMA {schema}")
        self.names.append(schema)
        base = self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)
        sep = "&" if "?" in base else "?"
        app = f"journal-loader-{schema}"
        url = f"{base}{sep}options=-csearch_path%3D{schema}&application_name={app}"
        store = open_store(url)  # migrated on first use
        assert isinstance(store, PostgresStore)
        key = store.journal_append_key
        store.dispose()
        return url, app, key

    def close(self) -> None:
        with psycopg.connect(self.pg_url, autocommit=True) as admin:
            for schema in self.names:
                admin.execute(f"DROP SCHEMA {schema} CASCADE")


def _load(config: Path, files: list[Path], db: str, workers: int, force: bool) -> list[int]:
    """W processes work through the files; returns the exit codes."""
    queue = list(files)
    running: list[subprocess.Popen[bytes]] = []
    codes = []
    while queue or running:
        while queue and len(running) < workers:
            cmd = [sys.executable, "-m", "journal_loader", "run", str(config), str(queue.pop(0))]
            cmd += ["--db", db, "--quiet", *(["--force"] if force else [])]
            running.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(0.02)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            codes.append(p.returncode)
            if p.returncode:
                assert p.stderr is not None
                print(f"    a run exited {p.returncode}: {p.stderr.read().decode()[-400:]}")
    return codes


SPLIT = 8


def _load_split(config: Path, file: Path, db: str, workers: int) -> list[int]:
    """As on many machines: ``submit --split 8`` (its planning pass measured), then W
    ``worker --until-empty`` processes through the chunks' jobs."""

    def cli(*args: str) -> list[str]:
        return [sys.executable, "-m", "journal_loader", *args, "--db", db]

    subprocess.run(
        cli("submit", str(config), str(file), "--split", str(SPLIT)),
        capture_output=True,
        check=True,
    )
    running = [
        subprocess.Popen(
            cli("worker", "--until-empty", "--log-level", "WARNING"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    codes = []
    for p in running:
        assert p.stderr is not None
        err = p.stderr.read().decode()
        codes.append(p.wait())
        if p.returncode:
            print(f"    a worker exited {p.returncode}: {err[-400:]}")
    return codes


def measure(
    mode: str, config: Path, files: list[Path], rows: int, workers: int, schemas: Schemas, pg: str
) -> dict[str, Any]:
    db, app, append_key = schemas.new()
    if mode == "split":  # the queue's tables (procrastinate's schema)
        subprocess.run(
            [sys.executable, "-m", "journal_loader", "db", "upgrade", "--db", db],
            capture_output=True,
            check=True,
        )
    if mode == "graph-refresh":  # the graph has every entity already
        _load(config, files, db, len(files), force=False)
    sampler = LockSampler(pg, app, append_key)
    sampler.start()
    cpu0, pg0, t0 = _children_cpu_seconds(), _postgres_cpu_seconds(), time.perf_counter()
    if mode == "split" and workers > 1:
        codes = _load_split(config, files[0], db, workers)
    else:
        codes = _load(config, files, db, workers, force=mode == "graph-refresh")
    wall = time.perf_counter() - t0
    cpu = (_children_cpu_seconds() - cpu0) + (_postgres_cpu_seconds() - pg0)
    sampler.stop.set()
    sampler.join()
    records = rows * len(files) if mode != "split" else rows
    waits = sum(sampler.waits.values())
    return {
        "workers": workers,
        "ok": all(c == 0 for c in codes),
        "wall_rate": records / wall,
        "cpu_rate": records / cpu,
        "lock_share": waits / sampler.active if sampler.active else 0.0,
        "append_share": sampler.append_waits / sampler.active if sampler.active else 0.0,
        "samples": sampler.active,
        "held_share": sampler.held / sampler.ticks if sampler.ticks else 0.0,
        "locks": dict(sampler.waits.most_common(3)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=4)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per source file")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--modes", default="journal,graph-first,graph-refresh,split")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    files = _generate(tmp, args.sources, args.rows)
    (tmp / "null_loader.py").write_text(NULL_LOADER)
    null_config = tmp / "null.yaml"
    null_config.write_text(NULL_CONFIG)
    schemas = Schemas(args.pg)
    print(
        f"{args.sources} sources x {args.rows:,} rows, PostgreSQL {args.pg}, {os.cpu_count()} CPUs"
    )
    try:
        for mode in args.modes.split(","):
            config = null_config if mode == "journal" else CONFIG
            mode_files, mode_rows = files, args.rows
            if mode == "split":  # one file as long as all the sources together
                mode_rows = args.rows * args.sources
                big = tmp / "business_registry_20250101_big.csv"
                if not big.exists():
                    sys.path.insert(0, str(REPO / "bench"))
                    import generate_registry

                    generate_registry.generate(big, rows=mode_rows, seed=SEEDS[0])
                mode_files = [big]
            print(f"\n{mode}")
            print(
                f"  {'workers':>7} {'rec/s':>9} {'x1':>6} {'rec/CPU-s':>10} {'x1':>6} "
                f"{'lock waits':>10} {'append':>6} {'samples':>7} {'held':>5}  top lock kinds"
            )
            base: dict[str, Any] | None = None
            for w in workers:
                m = measure(mode, config, mode_files, mode_rows, w, schemas, args.pg)
                base = base or m
                print(
                    f"  {w:>7} {m['wall_rate']:>9,.0f} {m['wall_rate'] / base['wall_rate']:>6.2f}"
                    f" {m['cpu_rate']:>10,.0f} {m['cpu_rate'] / base['cpu_rate']:>6.2f}"
                    f" {m['lock_share']:>10.0%} {m['append_share']:>6.0%} {m['samples']:>7}"
                    f" {m['held_share']:>5.0%}"
                    f"  {m['locks']}" + ("" if m["ok"] else "  (a run failed)")
                )
    finally:
        schemas.close()
        shutil.rmtree(tmp, ignore_errors=True)  # the generated sources


if __name__ == "__main__":
    main()
