"""Lineage: from a node, attribute or relationship of the graph to every record that said so.

``provenance`` holds one row per (subject, record, run) assertion; each is joined to the
``RecordParsed`` event of the same source, record and run (the raw bytes, the line, the byte
range) and to its ``ProposeSucceeded`` (what the graph answered for that fact: created,
matched, duplicate). Oldest first.

The query (``lineage`` in ``storage/queries/audit.sql``) walks the primary key of the
subject's kind's table (``provenance_nodes`` etc., under the view ``provenance``), then
``ix_journal_source_offset`` once per assertion: its cost grows with the
number of assertions, not with the size of the journal.

A graph outside the journal's database (a Propose API deployment, ids such as ULIDs) has no
provenance rows here: its lineage is the journal's answers that name the id
(``answers_naming``: a scan of the ``ProposeSucceeded`` events, one per record, so it grows
with the journal), each joined to its record's ``RecordParsed``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from journal_loader.audit.base import AuditError, UnknownSubjectError, utc
from journal_loader.graph.protocol import GraphId
from journal_loader.journal.events import ProposeSucceeded, RecordParsed, RunStarted, decode
from journal_loader.journal.parsed import Resolver
from journal_loader.storage import Store
from journal_loader.storage.audit_reader import AnswerRow, AuditReader, LineageRow, audit_reader

SUBJECT_KINDS = ("node", "attribute", "relationship")


@dataclass(slots=True)
class Assertion:
    """One record of one source that asserted the subject, in one run."""

    source_id: int
    source_type: str | None
    source_name: str | None
    file_name: str | None
    file_path: str | None
    file_hash: str | None
    version: str | None
    record_offset: int
    fact_index: int
    run_id: str
    confidence: float
    line: int | None = None
    byte_start: int | None = None
    byte_end: int | None = None
    raw: bytes | None = None
    record: dict[str, Any] | None = None
    parsed_position: int | None = None
    parsed_hash: str | None = None
    position: int | None = None  # the ProposeSucceeded: when the graph took the fact
    recorded_at: dt.datetime | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    file_check: str | None = None  # with check_files: 'match' | 'differs' | 'missing' | ...
    replay: bool = False  # the answer of a record proposed again after a crash (in doubt)

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "source_type": self.source_type,
            "source_name": self.source_name,
            "file_name": self.file_name,
            "file_path": self.file_path,
            "file_sha256": self.file_hash,
            "version": self.version,
            "record_offset": self.record_offset,
            "line": self.line,
            "byte_start": self.byte_start,
            "byte_end": self.byte_end,
            "run_id": self.run_id,
            "recorded_at": None if self.recorded_at is None else self.recorded_at.isoformat(),
            "fact_index": self.fact_index,
            "confidence": self.confidence,
            "actions": self.actions,
            **_raw_json(self.raw),
            "record": self.record,
            "parsed_position": self.parsed_position,
            "parsed_hash": self.parsed_hash,
            "position": self.position,
            **({"replay": True} if self.replay else {}),
            **({"file_check": self.file_check} if self.file_check is not None else {}),
        }


def _raw_json(raw: bytes | None) -> dict[str, Any]:
    """``raw``: the record's bytes as text when they are UTF-8 (exactly them), else
    ``raw_base64`` as well (and ``raw`` with the undecodable bytes shown as escapes)."""
    if raw is None:
        return {"raw": None}
    try:
        return {"raw": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "raw": raw.decode("utf-8", "backslashreplace"),
            "raw_base64": base64.b64encode(raw).decode(),
        }


@dataclass(slots=True)
class Lineage:
    kind: str
    subject_id: GraphId
    subject: dict[str, Any]
    assertions: list[Assertion]
    total: int

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.subject_id,
            "subject": self.subject,
            "total_assertions": self.total,
            "assertions": [a.to_json() for a in self.assertions],
        }


def lineage(
    store: Store,
    kind: str,
    subject_id: GraphId,
    *,
    limit: int | None = None,
    check_files: bool = False,
) -> Lineage:
    """Every assertion of one subject, oldest first (at most ``limit`` of them; ``total``
    counts them all). ``check_files``: also read each record's bytes from the source file, if
    it is still where it was loaded from, and say whether they are the journaled ones.

    The subject is looked up in the embedded graph; an id it does not have (a Propose API
    deployment's) is looked up in the journal's answers."""
    if kind not in SUBJECT_KINDS:
        raise AuditError(f"unknown kind {kind!r}: one of {', '.join(SUBJECT_KINDS)}")
    reader = audit_reader(store)
    resolver = _parsed_resolver(reader)
    number = _as_int(subject_id)
    found = reader.subject(kind, number) if number is not None else None
    subject = _subject(found, kind) if found is not None else None
    if subject is None:
        key: GraphId = number if number is not None else str(subject_id)
        answered = _from_answers(store, kind, key, limit)
        if answered is None:
            raise UnknownSubjectError(f"no {kind} {subject_id} in {store.display_url}")
        if check_files:
            _check_files(answered.assertions)
        return answered
    assert number is not None
    seen: set[int] = set()
    assertions: list[Assertion] = []
    total = 0
    for row in reader.lineage(kind, number):
        if row.provenance_id in seen:  # one provenance row, however many events a run wrote
            continue
        seen.add(row.provenance_id)
        total += 1
        if limit is None or len(assertions) < limit:
            assertions.append(_assertion(row, kind, _entity_of(subject, kind), resolver))
    if check_files:
        _check_files(assertions)
    return Lineage(kind, number, subject, assertions, total)


def _as_int(value: GraphId) -> int | None:
    if isinstance(value, int):
        return value
    text = value.strip()
    return int(text) if text.isdigit() and (text == "0" or not text.startswith("0")) else None


def _from_answers(
    store: Store, kind: str, subject_id: GraphId, limit: int | None
) -> Lineage | None:
    """The lineage of a deployment's node or relationship: the journaled answers naming it.
    None when no answer does (attributes: the Propose API's answers name no attribute ids)."""
    if kind == "attribute":
        return None
    reader = audit_reader(store)
    resolver = _parsed_resolver(reader)
    assertions: list[Assertion] = []
    total = 0
    row: AnswerRow
    for row in reader.answers_naming(subject_id):
        event = decode(row.payload)
        assert isinstance(event, ProposeSucceeded)
        for index, result in enumerate(event.results):
            if kind == "node":
                actions = [a for a in result.actions if a.entity_id == subject_id]
            else:
                actions = [a for a in result.actions if a.relationship_id == subject_id]
            if not actions:
                continue
            total += 1
            if limit is not None and len(assertions) >= limit:
                continue
            a = Assertion(
                source_id=int(row.source_id),
                record_offset=int(row.record_offset),
                fact_index=index,
                run_id=row.run_id,
                confidence=float(actions[0].confidence or 0.0),
                source_type=row.source_type,
                source_name=row.source_name,
                version=row.source_version,
                file_name=row.file_name,
                file_path=row.file_path,
                file_hash=row.file_hash,
                position=int(row.position),
                recorded_at=_time(row.recorded_at),
                actions=[msgspec.to_builtins(act) for act in actions],
                replay=result.in_doubt,
            )
            parsed = reader.parsed_in_run(a.source_id, a.record_offset, a.run_id)
            if parsed is not None:
                _take_parsed(a, parsed.position, parsed.payload, parsed.hash, resolver)
            assertions.append(a)
    if total == 0:
        return None
    subject = {
        "id": subject_id,
        "description": f"{kind} {subject_id} of the Propose API (from the journal's answers)",
    }
    return Lineage(kind, subject_id, subject, assertions, total)


def _parsed_resolver(reader: AuditReader) -> Resolver:
    """Makes version-3 RecordParsed events whole (journal/parsed.py) with this reader."""

    def run_started(source_id: int, run_id: str) -> RunStarted | None:
        payload = reader.run_started_payload(source_id, run_id)
        event = None if payload is None else decode(payload)
        return event if isinstance(event, RunStarted) else None

    def parsed_at(source_id: int, run_id: str, record_offset: int) -> RecordParsed | None:
        row = reader.parsed_in_run(source_id, record_offset, run_id)
        event = None if row is None else decode(row.payload)
        return event if isinstance(event, RecordParsed) else None

    return Resolver(run_started, parsed_at)


def _take_parsed(
    a: Assertion, position: int, payload: str, digest: bytes, resolver: Resolver
) -> None:
    """The record as its RecordParsed journaled it: where it was, its bytes, its value."""
    parsed = decode(payload)
    assert isinstance(parsed, RecordParsed)
    parsed = resolver.resolve(parsed, a.source_id, a.run_id)
    a.parsed_position = int(position)
    a.parsed_hash = bytes(digest).hex()
    a.line, a.byte_start, a.byte_end = parsed.line, parsed.byte_start, parsed.byte_end
    a.raw, a.record = parsed.raw, parsed.record


def _subject(row: Any, kind: str) -> dict[str, Any] | None:
    if row is None:
        return None

    def node(r: Any) -> dict[str, Any]:
        return {"id": int(r[0]), "type": r[1], "name": r[2], "key": r[3]}

    if kind == "node":
        return {**node(row), "description": _describe_node(row[1:4])}
    if kind == "attribute":
        owner = node(row[4:8])
        return {
            "id": int(row[0]),
            "attr_type": row[1],
            "value": row[2],
            "node": owner,
            "description": f"{_describe_node(row[5:8])} {row[1]} = {row[2]!r}",
        }
    src, tgt = node(row[4:8]), node(row[8:12])
    return {
        "id": int(row[0]),
        "rel_type": row[1],
        "strength": float(row[2]),
        "source": src,
        "target": tgt,
        "description": f"{_describe_node(row[5:8])} -{row[1]}-> {_describe_node(row[9:12])}",
    }


def _describe_node(r: Any) -> str:
    node_type, name, key = r
    return f"{node_type} {name!r}" + (f" [{key}]" if key else "")


def _time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite, through the driver
        return utc(dt.datetime.fromisoformat(value))
    assert isinstance(value, dt.datetime)
    return utc(value)


def _entity_of(subject: dict[str, Any], kind: str) -> int:
    """The id the graph's answer names for the subject: the node itself, the node that owns
    the attribute, or the relationship."""
    return int(subject["node"]["id"]) if kind == "attribute" else int(subject["id"])


def _assertion(row: LineageRow, kind: str, answer_id: int, resolver: Resolver) -> Assertion:
    a = Assertion(
        source_id=int(row.source_id),
        record_offset=int(row.record_offset),
        fact_index=int(row.fact_index),
        run_id=row.run_id,
        confidence=float(row.confidence),
        source_type=row.source_type,
        source_name=row.source_name,
        version=row.source_version,
        file_name=row.file_name,
        file_path=row.file_path,
        file_hash=row.file_hash,
    )
    if row.parsed_position is not None:
        assert row.parsed_payload is not None and row.parsed_hash is not None
        _take_parsed(a, row.parsed_position, row.parsed_payload, row.parsed_hash, resolver)
        a.recorded_at = _time(row.parsed_at)
    if row.answer_position is not None:
        assert row.answer_payload is not None
        answered = decode(row.answer_payload)
        assert isinstance(answered, ProposeSucceeded)
        a.position = int(row.answer_position)
        a.recorded_at = _time(row.answer_at)
        if 0 <= a.fact_index < len(answered.results):
            a.actions = [
                msgspec.to_builtins(act)
                for act in answered.results[a.fact_index].actions
                if (act.relationship_id if kind == "relationship" else act.entity_id) == answer_id
            ]
    return a


def _check_files(assertions: list[Assertion]) -> None:
    """Compare each record's journaled bytes with the file it came from, when it is still
    there and still the same file (same SHA-256; computed once per file)."""
    file_ok: dict[str, str] = {}
    for a in assertions:
        if a.file_path is None or a.raw is None or a.byte_start is None:
            a.file_check = "no record bytes in the journal"
            continue
        path = Path(a.file_path)
        if a.file_path not in file_ok:
            file_ok[a.file_path] = _file_state(path, a.file_hash)
        state = file_ok[a.file_path]
        if state != "same file":
            a.file_check = state
            continue
        a.file_check = (
            "match" if _read_range(path, a.byte_start, len(a.raw)) == a.raw else "differs"
        )


def _read_range(path: Path, start: int, size: int) -> bytes:
    """Bytes ``start`` .. ``start + size`` of the file's (decompressed, for gzip) stream: the
    coordinates the reader journals."""
    import gzip

    with path.open("rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gzipped else path.open("rb") as f:
        f.seek(start)
        return f.read(size)


def _file_state(path: Path, sha256: str | None) -> str:
    if not path.is_file():
        return "file missing"
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "same file" if digest.hexdigest() == sha256 else "file changed since it was loaded"
