"""Journal bytes per record of the example loader (issue 11, item 3): a deterministic figure.

    python bench/bench_journal_bytes.py [--rows 3000] [--batch-size 1000] [--encode-loops 3]

Loads the first ``--rows`` records of the example (examples/business_registry; past its
3,000 rows, the bench generator's file of that many rows) into a new SQLite database with
the embedded graph, then prints, per event type, how many events and how many payload bytes
(UTF-8, as hashed), and the journal's payload bytes divided by the records, beside what the
same events take in version 1 (every event's Struct as JSON, as before issue 11). Also the
time to encode the stored events again with today's codec (``journal.events.encode``) and
to decode them, per event (CPU time, best of ``--encode-loops``), and the database's size
per record.

``--write``: the same events appended again to a new SQLite journal, a transaction per 1,000
records (encode, hash chain, insert, commit), once with each version's encoding (version 1:
the Structs as JSON, as before issue 11), as records per CPU-second and per wall-second
(best of ``--encode-loops``). CPU is this process's; SQLite runs in it.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402

from journal_loader import run  # noqa: E402
from journal_loader.journal.events import Event, decode, encode  # noqa: E402
from journal_loader.journal.queries import events_after  # noqa: E402
from journal_loader.journal.writer import JournalWriter, PendingEvent  # noqa: E402
from journal_loader.storage import open_store  # noqa: E402

EXAMPLE = REPO / "examples" / "business_registry"
EXAMPLE_ROWS = 3000


def _data(rows: int, work: Path) -> Path:
    if rows <= EXAMPLE_ROWS:
        lines = (EXAMPLE / "data" / "business_registry_20251001.csv").read_bytes()
        head = lines.splitlines(True)[: rows + 1]  # the example has no quoted newlines
        path = work / "business_registry_20251001.csv"
        path.write_bytes(b"".join(head))
        return path
    spec = importlib.util.spec_from_file_location(
        "generate_registry", REPO / "bench" / "generate_registry.py"
    )
    assert spec and spec.loader
    gen: Any = importlib.util.module_from_spec(spec)
    sys.modules["generate_registry"] = gen
    spec.loader.exec_module(gen)
    data_dir = REPO / "bench" / "data"
    data_dir.mkdir(exist_ok=True)
    path = data_dir / f"registry_{rows}_20251001.csv"
    if not path.exists():
        gen.generate(str(path), rows)
    return path


def _best(loops: int, fn: Any) -> float:
    """The least CPU time of ``loops`` calls (CPU, not wall: the machine is shared)."""
    best = float("inf")
    for _ in range(loops):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def write_rates(
    events: list[tuple[int | None, Event]], records: int, work: Path, loops: int
) -> None:
    """Append ``events`` with each codec, the codecs taking turns (a shared machine's load
    then weighs on both alike); the best of ``loops`` of each."""
    codecs = {"version 1 (JSON of the Structs)": msgspec.json.Encoder().encode, "current": encode}
    best = {name: [float("inf"), float("inf")] for name in codecs}
    for i in range(loops):
        for name, codec in codecs.items():
            store = open_store(f"sqlite:///{work / f'write-{len(name)}-{i}.db'}")
            writer = JournalWriter(1, "00000000-0000-0000-0000-000000000000", None)
            per_batch = 2000  # about 1,000 records of two events
            wall, cpu = time.perf_counter(), time.process_time()
            for k in range(0, len(events), per_batch):
                pending = [PendingEvent(o, e, codec(e)) for o, e in events[k : k + per_batch]]
                with store.transaction() as tx:
                    writer.append(tx, pending)
                writer.confirm()
            best[name][0] = min(best[name][0], time.process_time() - cpu)
            best[name][1] = min(best[name][1], time.perf_counter() - wall)
            store.dispose()
    for name, (cpu_s, wall_s) in best.items():
        print(
            f"write, {name}: {records / cpu_s:,.0f} records per CPU-second, "
            f"{records / wall_s:,.0f} per wall-second"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=EXAMPLE_ROWS)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--encode-loops", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="also time appending the events")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-bytes-"))
    data = _data(args.rows, work)
    db = work / "journal.db"
    report = run(
        config=EXAMPLE / "loader.yaml", file=data, db=f"sqlite:///{db}", batch_size=args.batch_size
    )
    assert report.status == "completed", report.message
    records = report.statistics.total_processed
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT event_type, schema_version, payload, record_offset FROM journal ORDER BY position"
    ).fetchall()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    # The events as readers see them: a version-3 RecordParsed without its record is made
    # whole (journal/parsed.py), for the version-1 sizes and --write
    store = open_store(f"sqlite:///{db}")
    with store.transaction() as tx:
        seen = [e.event for e in events_after(tx, 0, limit=len(rows) + 1)]
    store.dispose()
    assert len(seen) == len(rows)
    version_1 = msgspec.json.Encoder().encode  # what every event was before issue 11
    by_type: dict[tuple[str, int], list[int]] = {}
    payloads: dict[str, list[bytes]] = {}
    for (kind, version, payload, _), event in zip(rows, seen, strict=True):
        data_bytes = payload.encode()
        n = by_type.setdefault((kind, version), [0, 0, 0])
        n[0] += 1
        n[1] += len(data_bytes)
        n[2] += len(version_1(event))
        payloads.setdefault(kind, []).append(data_bytes)
    total = sum(n[1] for n in by_type.values())
    total_1 = sum(n[2] for n in by_type.values())
    print(f"{records:,} records of {data.name}, {len(rows):,} events")
    print(
        f"{'event_type':<18} {'ver':>3} {'events':>7} {'bytes':>11} {'bytes/event':>11} "
        f"{'in version 1':>12}"
    )
    for (kind, version), (count, size, size_1) in sorted(by_type.items()):
        print(
            f"{kind:<18} {version:>3} {count:>7,} {size:>11,} {size / count:>11,.0f} "
            f"{size_1 / count:>12,.0f}"
        )
    print(
        f"journal payload bytes per record: {total / records:,.0f} "
        f"(the same events in version 1: {total_1 / records:,.0f})"
    )
    print(f"database size per record (SQLite, checkpointed): {db.stat().st_size / records:,.0f}")
    for kind in ("RecordParsed", "ProposeSucceeded"):
        stored = payloads.get(kind, [])
        if not stored:
            continue
        events = [decode(p) for p in stored]
        enc = _best(args.encode_loops, lambda events=events: [encode(e) for e in events])
        dec = _best(args.encode_loops, lambda stored=stored: [decode(p) for p in stored])
        print(
            f"{kind}: encode {enc / len(events) * 1e6:.2f} us, "
            f"decode {dec / len(events) * 1e6:.2f} us of CPU per event"
        )
    if args.write:
        per_record = [(r[3], e) for r, e in zip(rows, seen, strict=True) if r[3] is not None]
        write_rates(per_record, records, work, args.encode_loops)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
