"""``export``: the journal as JSON lines with envelope and hashes, streamed; every hash can be
recomputed from the export alone."""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from journal_loader.audit import base
from journal_loader.audit.export import export_events
from journal_loader.journal.events import LoadStarted, RecordParsed
from journal_loader.journal.writer import JournalWriter, PendingEvent
from journal_loader.storage import Store
from tests.support.audit import JournalSim, cli


def two_sources(store: Store) -> None:
    sim = JournalSim(store)
    a, b = sim.register(), sim.register()
    sim.batch(a, ["ok", "fail", "skip"])
    sim.batch(b, ["ok", "invalid"])
    sim.finish(a, "completed")


def recompute(line: dict[str, Any], prev: bytes | None) -> bytes:
    """The documented canonical bytes, from the exported fields only."""
    offset = "" if line["record_offset"] is None else str(line["record_offset"])
    head = (
        f"{line['source_id']}\n{offset}\n{line['event_type']}\n{line['schema_version']}\n"
        f"{line['run_id']}\n{line['recorded_at']}\n"
    )
    return hashlib.sha256((prev or b"") + head.encode() + line["payload"].encode()).digest()


def test_export_jsonl_can_be_verified_alone(db_url: str, store: Store) -> None:
    two_sources(store)
    result = cli("export", "--db", db_url, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    with store.read() as conn:
        count = conn.execute(text("SELECT COUNT(*) FROM journal")).scalar_one()
    assert len(lines) == count
    assert [x["position"] for x in lines] == sorted(x["position"] for x in lines)
    heads: dict[int, bytes] = {}
    for x in lines:
        prev = heads.get(x["source_id"])
        assert x["prev_hash"] == (None if prev is None else prev.hex())
        assert recompute(x, prev).hex() == x["hash"]
        heads[x["source_id"]] = bytes.fromhex(x["hash"])
        assert x["recorded_at"].endswith("Z") and "T" in x["recorded_at"]
        assert json.loads(x["payload"])["type"] == x["event_type"]
    assert set(lines[0]) == {
        "position", "source_id", "record_offset", "event_type", "schema_version", "run_id",
        "recorded_at", "prev_hash", "hash", "payload",
    }  # fmt: skip


def test_export_of_one_source_from_a_position(db_url: str, store: Store, tmp_path: Path) -> None:
    two_sources(store)
    everything = [json.loads(x) for x in cli("export", "--db", db_url).stdout.splitlines()]
    middle = everything[len(everything) // 2]["position"]
    out = tmp_path / "source2.jsonl"
    result = cli("export", "--db", db_url, "--source", "2", "--from", str(middle), "-o", str(out))
    assert result.exit_code == 0, result.output
    got = [json.loads(x) for x in out.read_text().splitlines()]
    expected = [x for x in everything if x["source_id"] == 2 and x["position"] >= middle]
    assert got == expected and got
    assert f"{len(got)} events written to {out}" in result.stderr
    unknown = cli("export", "--db", db_url, "--source", "7")
    assert unknown.exit_code == 2 and "no source 7" in unknown.stderr


def test_export_is_the_same_in_small_batches(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_sources(store)
    whole = io.BytesIO()
    export_events(store, whole)
    monkeypatch.setattr(base, "FETCH_ROWS", 3)
    batched = io.BytesIO()
    export_events(store, batched)
    assert batched.getvalue() == whole.getvalue()


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.size += len(b)
        return len(b)


def test_export_streams_in_constant_memory(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 events (about 14 MB of JSON lines) go out holding about one fetch (1,000 rows)
    and one 1 MB output buffer in memory, not the journal."""
    monkeypatch.setattr(base, "FETCH_ROWS", 1000)
    raw = b"x" * 200
    with store.transaction() as tx:
        writer = JournalWriter(1, "run-1", None)
        writer.append(tx, [PendingEvent.of(None, LoadStarted(reason="first"))])
        writer.confirm()
        for chunk in range(4):
            writer.append(
                tx,
                [
                    PendingEvent.of(
                        o,
                        RecordParsed(
                            line=o + 2, byte_start=0, byte_end=200, raw=raw, record={"o": o}
                        ),
                    )
                    for o in range(chunk * 5000, (chunk + 1) * 5000)
                ],
            )
            writer.confirm()
    sink = _Sink()
    tracemalloc.start()
    try:
        n = export_events(store, sink)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_001
    assert sink.size > 12_000_000
    assert peak < 5_000_000, f"peak {peak} bytes for {sink.size} bytes written"
