"""Helpers for the embedded graph's tests (no tests here).

``ScriptLoader`` reads a JSONL file whose every line lists the facts to propose, so a test
spells out its facts and runs them through the real runner; ``propose_results`` and
``dlq`` read back what the journal says happened.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import text

from journal_loader import Loader, ProposeClient, ProposeResult
from journal_loader.graph.embedded import EmbeddedGraph
from journal_loader.graph.protocol import Entity
from journal_loader.journal.events import ProposeSucceeded, decode
from journal_loader.storage import Store


def entity(spec: Any) -> Any:
    """["Company", "Acme"] / ["Company", "Acme", "C1"] / {"type":..., "name":..., ...}."""
    if isinstance(spec, dict):
        return Entity(**spec)
    return tuple(spec)


class ScriptLoader(Loader):
    """Each JSONL line: {"facts": [{"source": [...], "target": [...], "rel": "X", ...}]}.

    Extra keys of a fact are propose_fact's keyword arguments."""

    name = "script"
    source_type = "script"

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        results = []
        for fact in record["facts"]:
            kwargs = {k: v for k, v in fact.items() if k not in ("source", "target", "rel")}
            results.append(
                graph.propose_fact(
                    entity(fact["source"]), entity(fact["target"]), fact["rel"], **kwargs
                )
            )
        return results


def fact(source: Any, target: Any, rel: str, **kwargs: Any) -> dict[str, Any]:
    return {
        "source": list(source) if isinstance(source, tuple) else source,
        "target": list(target) if isinstance(target, tuple) else target,
        "rel": rel,
        **kwargs,
    }


def write_script(path: Path, records: list[list[dict[str, Any]]]) -> Path:
    path.write_text("".join(json.dumps({"facts": facts}) + "\n" for facts in records))
    return path


def propose_results(store: Store) -> dict[int, list[ProposeResult]]:
    """record offset -> the results journaled for it (last load wins)."""
    out: dict[int, list[ProposeResult]] = {}
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT record_offset, payload FROM journal "
                "WHERE event_type = 'ProposeSucceeded' ORDER BY position"
            )
        )
        for offset, payload in rows:
            event = decode(payload)
            assert isinstance(event, ProposeSucceeded)
            out[int(offset)] = event.results
    return out


def dlq(store: Store) -> dict[int, tuple[str, str, str]]:
    """record offset -> (stage, error_type, message)."""
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT record_offset, stage, error_type, error_message FROM failed_records "
                "ORDER BY record_offset"
            )
        )
        return {int(r[0]): (r[1], r[2], r[3]) for r in rows}


def rows(store: Store, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


class Direct:
    """Drives an EmbeddedGraph the way the runner does, without the journal."""

    def __init__(self, graph: EmbeddedGraph, store: Store) -> None:
        self.graph = graph
        self.store = store
        self.offset = 0

    @contextlib.contextmanager
    def batch(self) -> Iterator[EmbeddedGraph]:
        try:
            with self.store.transaction() as tx:
                self.graph.begin_batch(tx)
                yield self.graph
                self.graph.flush(tx)
        except BaseException:
            self.graph.after_rollback()
            raise
        self.graph.after_commit()

    @contextlib.contextmanager
    def record(self) -> Iterator[EmbeddedGraph]:
        self.graph.begin_record(1, self.offset, "test-run")
        self.offset += 1
        try:
            yield self.graph
        except BaseException:
            self.graph.abort_record()
            raise
        self.graph.finish_record()

    def propose(self, *args: Any, **kwargs: Any) -> ProposeResult:
        """One fact, in its own record and batch."""
        with self.batch() as g, self.record():
            return g.propose_fact(*args, **kwargs)
