#!/usr/bin/env python3
"""Benchmark of the record readers: full-read speed, and resume start-up by seeking.

Generates (seeded, so byte-identical every time) a CSV of ``--records`` records (default
1,000,000) with 17 columns in ``bench/data/`` (git-ignored; reused when present), plus its gzip
and a JSONL twin, then prints:

* full read: records/s (wall clock and CPU time: the CPU figure is steadier on a busy machine),
  and for plain CSV also with ``reader.position`` read after every record (as the runner does)
  and, for scale, the bare csv module with no byte accounting;
* resume: time from ``open_reader(start=...)`` to the first record when resuming at 10%, 50%
  and 90% of the records, and its ratio to the full read. For plain files this is a seek,
  so near-constant; for gzip the seek decompresses up to the point (without parsing).

    .venv/bin/python bench/bench_reader.py [--records N] [--data-dir DIR] [--no-jsonl]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from journal_loader.sources.readers import ResumePoint, open_reader

COLUMNS = [
    "entity_id",
    "name",
    "registration_number",
    "entity_type",
    "status",
    "formed_on",
    "dissolved_on",
    "street",
    "city",
    "state",
    "postcode",
    "country",
    "agent_name",
    "email",
    "phone",
    "employees",
    "notes",
]
SEED = 20251001
PERCENTS = (10, 50, 90)

_WORDS = ["ACME", "NORTH", "RIVER", "STONE", "BLUE", "PINE", "DELTA", "SUMMIT", "OAK", "IRON"]
_SUFFIX = ["LLC", "INC", "CORP", "LP", "CO"]
_CITIES = ["SPRINGFIELD", "RIVERSIDE", "FRANKLIN", "GREENVILLE", "BRISTOL", "SALEM", "MADISON"]
_STATES = ["IL", "MA", "OH", "TX", "CA", "NY", "WA", "GA"]


def generate(path: Path, records: int) -> None:
    """Write the benchmark CSV: mostly plain rows; some names with commas and quotes, and one
    note in a thousand spanning two lines (quoted), as real exports have."""
    rnd = random.Random(SEED)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for i in range(records):
            name = f"{rnd.choice(_WORDS)} {rnd.choice(_WORDS)} {rnd.choice(_SUFFIX)}"
            if rnd.random() < 0.03:
                name = f'{rnd.choice(_WORDS)}, "{rnd.choice(_WORDS)}" & SONS, {rnd.choice(_SUFFIX)}'
            note = ""
            r = rnd.random()
            if r < 0.001:
                note = "moved office\nsee filing " + str(rnd.randrange(10**6))
            elif r < 0.2:
                note = "annual report filed"
            writer.writerow(
                [
                    i + 1,
                    name,
                    f"C{rnd.randrange(10**7):07d}",
                    rnd.choice(("LLC", "CORPORATION", "LP", "NONPROFIT")),
                    rnd.choice(("ACTIVE", "ACTIVE", "ACTIVE", "DISSOLVED", "SUSPENDED")),
                    f"{rnd.randint(1950, 2025)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                    "" if rnd.random() < 0.8 else f"{rnd.randint(2000, 2025)}-01-15",
                    f"{rnd.randint(1, 9999)} {rnd.choice(_WORDS).title()} St",
                    rnd.choice(_CITIES),
                    rnd.choice(_STATES),
                    f"{rnd.randrange(100000):05d}",
                    "US",
                    f"{rnd.choice(_WORDS).title()} Agents Inc",
                    f"info{i}@example.com",
                    f"+1-555-{rnd.randrange(10000):04d}",
                    rnd.randint(0, 5000),
                    note,
                ]
            )
    os.replace(tmp, path)


def to_jsonl(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".tmp")
    with open(src, newline="", encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as out:
        rows = csv.reader(f)
        header = next(rows)
        for row in rows:
            out.write(json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False) + "\n")
    os.replace(tmp, dst)


def to_gzip(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".tmp")
    with (
        open(src, "rb") as f,
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz,
    ):
        while chunk := f.read(1 << 20):
            gz.write(chunk)
    os.replace(tmp, dst)


@dataclass
class FullRead:
    records: int
    wall: float
    cpu: float
    points: dict[int, ResumePoint]


def full_read(path: Path, records: int) -> FullRead:
    marks = {records * p // 100: p for p in PERCENTS}
    points: dict[int, ResumePoint] = {}
    n = 0
    errors = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with open_reader(str(path)) as reader:
        for rec in reader:
            n += 1
            if rec.error is not None:
                errors += 1
            if n in marks:
                points[marks[n]] = reader.position
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if n != records or errors:
        raise SystemExit(f"{path}: read {n} records with {errors} errors, expected {records}")
    return FullRead(n, wall, cpu, points)


def read_with_positions(path: Path) -> tuple[float, float, int]:
    """A full read asking ``reader.position`` after every record, as the runner does."""
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with open_reader(str(path)) as reader:
        for _ in reader:
            reader.position  # noqa: B018
            n += 1
    return time.perf_counter() - wall0, time.process_time() - cpu0, n


def baseline(path: Path) -> tuple[float, float, int]:
    """For scale: the bare csv module (text mode, no byte offsets, no checks) + dict(zip)."""
    n = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows)
        for row in rows:
            dict(zip(header, row, strict=False))
            n += 1
    return time.perf_counter() - wall0, time.process_time() - cpu0, n


def resume_first(path: Path, point: ResumePoint) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with open_reader(str(path), start=point) as reader:
        first = next(iter(reader))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if first.offset != point.offset or first.byte_start != point.byte or first.error:
        raise SystemExit(f"{path}: resumed at {point} but got {first}")
    return wall, cpu


def report(label: str, path: Path, records: int, with_positions: bool = False) -> None:
    size = path.stat().st_size
    best: FullRead | None = None
    for _ in range(2):  # the better of two runs: the machine may be busy
        run = full_read(path, records)
        if best is None or run.cpu < best.cpu:
            best = run
    assert best is not None
    print(f"\n{label}: {path.name} ({size / 1e6:.1f} MB)")
    print(
        f"  full read     {best.wall:7.2f} s wall  {best.records / best.wall:>9,.0f} rec/s   "
        f"{best.cpu:7.2f} s CPU  {best.records / best.cpu:>9,.0f} rec/s"
    )
    if with_positions:
        wall, cpu, n = min(read_with_positions(path) for _ in range(2))
        print(
            f"  + .position   {wall:7.2f} s wall  {n / wall:>9,.0f} rec/s   "
            f"{cpu:7.2f} s CPU  {n / cpu:>9,.0f} rec/s   (read after every record)"
        )
        wall, cpu, n = min(baseline(path) for _ in range(2))
        print(
            f"  bare csv      {wall:7.2f} s wall  {n / wall:>9,.0f} rec/s   "
            f"{cpu:7.2f} s CPU  {n / cpu:>9,.0f} rec/s   (csv.reader + dict(zip), for scale)"
        )
    for pct in PERCENTS:
        point = best.points[pct]
        wall, cpu = min(resume_first(path, point) for _ in range(3))
        print(
            f"  resume at {pct:2d}%  first record after {wall * 1000:8.1f} ms wall "
            f"({wall / best.wall:6.2%} of a full read), {cpu * 1000:8.1f} ms CPU "
            f"({cpu / best.cpu:6.2%})   [offset {point.offset}, byte {point.byte}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--no-jsonl", action="store_true", help="skip the JSONL figures")
    args = parser.parse_args()
    records: int = args.records
    args.data_dir.mkdir(parents=True, exist_ok=True)
    plain = args.data_dir / f"reader_{records}.csv"
    zipped = args.data_dir / f"reader_{records}.csv.gz"
    jsonl = args.data_dir / f"reader_{records}.jsonl"
    t0 = time.perf_counter()
    if not plain.exists():
        generate(plain, records)
    if not zipped.exists():
        to_gzip(plain, zipped)
    if not args.no_jsonl and not jsonl.exists():
        to_jsonl(plain, jsonl)
    print(f"data ready in {time.perf_counter() - t0:.1f} s ({args.data_dir})")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    report("CSV", plain, records, with_positions=True)
    report("CSV, gzip", zipped, records)
    if not args.no_jsonl:
        report("JSONL", jsonl, records)


if __name__ == "__main__":
    main()
