"""The journal's events: immutable facts about what happened to a source and its records.

Every event is a msgspec Struct in one tagged union (``Event``), encoded by one codec
(``encode`` / ``decode``) to compact JSON. The envelope (position, source_id, record_offset,
event_type, schema_version, run_id, recorded_at, hashes) lives in the journal's columns; the
Struct is the payload. ``event_type`` is the class name and the union's tag: every payload
is a JSON object whose ``type`` is the event type, whatever its version.

Changing an event: add fields with defaults only (old payloads still decode). A change that
cannot be expressed that way gets a new ``SCHEMA_VERSION`` and an upcaster in ``decode``.
Stored payloads are never encoded again (the hash chain covers their bytes): ``decode``
reads every version ever written, to the one in-memory event.

Versions (the ``schema_version`` column; the payload's own keys tell them apart too):

* 1, every event: the Struct's fields as JSON, ``bytes`` in base64.
* 2, ``RecordParsed``: ``raw`` that is UTF-8 is stored as the text itself (``text``), not in
  base64; other bytes stay ``raw``. ``line``, ``byte_start`` and ``byte_end`` keep their
  keys (``graph browse`` reads them from the payload).
* 2, ``ProposeSucceeded``: ``results`` becomes ``r``, one array per fact (``answers.py``):
  about a tenth of the bytes of version 1 for the embedded graph's answers.
* 3, ``RecordParsed``: a CSV record whose parsed ``record`` can be built again from its own
  ``text`` leaves it out (``journal/parsed.py`` says how, and when it cannot): ``s`` is the
  offset of the record of the same run whose event keeps its ``record`` and adds ``m``, the
  CSV field each of its keys came from; ``x`` holds the values that came from no field.
  Decoding such a payload alone gives the event with ``shape`` set and an empty ``record``;
  the journal's readers (``journal/queries.py``, lineage) resolve it with the run's
  ``RunStarted`` (header and dialect) and that record. Other records are stored as in 2.

Imports: only value types below the journal (``graph.protocol``: the graph's answers, no
storage) and ``journal.answers`` (version 2 of the answers); nothing here reads or writes a
database.

Per record, a run journals ``RecordParsed`` (what was read and what the loader made of it)
and exactly one terminal event: ``ProposeSucceeded``, ``RecordFailed`` or ``RecordSkipped``
(``TERMINAL_EVENTS``). A record the reader could not decode has only ``RecordFailed``
(stage ``read``) carrying its raw bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec

from journal_loader.graph.protocol import ProposeResult
from journal_loader.journal.answers import compact, expand


class Event(msgspec.Struct, tag=True, kw_only=True, omit_defaults=True, frozen=True):
    SCHEMA_VERSION: ClassVar[int] = 1

    @property
    def event_type(self) -> str:
        return type(self).__name__


# --- source and run level (record_offset is NULL) -----------------------------------------


class SourceRegistered(Event, frozen=True):
    """A new source: (source_type, file_hash) seen for the first time."""

    source_type: str
    source_name: str
    file_name: str
    file_path: str
    file_hash: str
    file_size: int
    file_mtime: str
    version_label: str
    update_frequency: str
    format: str
    gzipped: bool = False
    loader: str = ""


class LoadStarted(Event, frozen=True):
    """The start of one complete pass over a source: the first one, or a ``--force`` reload.

    Projections count the records of the current load: the events after the last LoadStarted.
    """

    reason: str  # 'first' | 'force'


class RunStarted(Event, frozen=True):
    loader: str
    mode: str  # 'new' | 'resume'
    resume_offset: int = 0
    resume_line: int = 0
    resume_byte: int = 0
    start_from: int | None = None
    limit: int | None = None
    batch_size: int = 1000
    hostname: str = ""
    pid: int = 0
    version: str = ""
    header: list[str] | None = None
    header_raw: bytes | None = None
    reader: dict[str, Any] = {}
    # A run of one chunk of a split source (ChunksPlanned): its index; None for a whole file.
    chunk: int | None = None


class RunAbandoned(Event, frozen=True):
    """An earlier run of this source died without finishing; this run took over from it."""

    abandoned_run_id: str
    last_position: int | None = None
    reason: str = ""
    chunk: int | None = None  # the abandoned run was a run of this chunk


class SourceAbandoned(Event, frozen=True):
    """An operator (``journal-loader source abandon``) or a run of the same file name with
    new content (``superseded_by``) retired this partial source: health and ``status
    --stalled`` ignore it from now on. Nothing is deleted: its facts stay in the graph with
    their provenance, its failures in the DLQ. Should its exact content come back, a run
    resumes it as before."""

    reason: str
    superseded_by: int | None = None
    next_offset: int | None = None  # where it was left (the last checkpoint)


class BatchCommitted(Event, frozen=True):
    """The checkpoint: every record before ``next_offset`` is done. Resume seeks ``next_byte``.

    It is written in the same transaction as the batch's record events, so it can never
    point past (or short of) what was committed.
    """

    next_offset: int
    next_line: int
    next_byte: int
    # The batch's records by outcome. "imported" is the users' word (sources.records_imported);
    # the payload keeps its first name, so every journal decodes as it always did.
    imported: int = msgspec.field(default=0, name="succeeded")
    failed: int = 0
    skipped: int = 0
    # The checkpoint of one chunk of a split source (its own checkpoint stream); None for a
    # whole-file run. ``next_offset`` stays global (the record's index in the whole file).
    chunk: int | None = None


class ChunksPlanned(Event, frozen=True):
    """``submit --split``/``--chunk-records`` read the file once with the real reader and cut
    it into chunks at record boundaries: chunk ``i`` starts at ``starts[i]`` (the reader's
    resume point: record offset, line, byte) and ends where chunk ``i + 1`` starts, the last
    one at ``end`` (the end of the data, after ``records`` records). Each chunk is loaded by
    its own runs (``RunStarted.chunk``), with its own checkpoints, lock and lease; the source
    completes when every chunk has (journal_loader/runner/chunks.py). Journaled once per load,
    in the transaction that registers the source: planned twice, a file keeps its first plan.
    """

    starts: list[tuple[int, int, int]]
    end: tuple[int, int, int]
    records: int

    def bounds(self, chunk: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(start, end) of a chunk, as (offset, line, byte)."""
        end = self.starts[chunk + 1] if chunk + 1 < len(self.starts) else self.end
        return self.starts[chunk], end


class Statistics(msgspec.Struct, kw_only=True):
    total_processed: int = 0
    # Records that ended with ProposeSucceeded: what sources.records_imported counts. Encoded
    # (RunFinished.statistics, RunReport.to_dict(), --json) as "successful", as before.
    imported: int = msgspec.field(default=0, name="successful")
    failed: int = 0
    skipped: int = 0
    entities_created: int = 0
    entities_matched: int = 0
    relationships_created: int = 0
    relationships_duplicate: int = 0
    relationships_updated: int = 0
    conflicts_detected: int = 0
    # Records proposed again after a crash or a retried batch (in doubt): their answers are
    # replays, and an entity_matched in them may be the first call's unjournaled creation.
    records_replayed: int = 0

    def add(self, other: Statistics) -> None:
        for f in self.__struct_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    @property
    def successful(self) -> int:
        """Deprecated: ``imported``."""
        return self.imported

    @successful.setter
    def successful(self, value: int) -> None:
        self.imported = value


class RunFinished(Event, frozen=True):
    status: str  # 'completed' | 'partial' | 'failed'
    reason: str = ""
    statistics: Statistics = msgspec.field(default_factory=Statistics)
    records_in_file: int | None = None
    # A chunk's run: ``chunk`` its index and ``chunk_status`` how the chunk's run ended, while
    # ``status`` is what the SOURCE is now (what the projections show): 'completed' only in the
    # RunFinished of the chunk that completes the last pending one, 'partial' when a chunk
    # completed and others have not, 'failed' when the chunk failed. The runner decides it in
    # the transaction that appends the event, holding the source's chain lock, so two chunks
    # finishing at once cannot both think they are not the last (tests/test_chunks.py).
    chunk: int | None = None
    chunk_status: str | None = None


# --- record level (record_offset is the record's 0-based index) --------------------------


class RecordParsed(Event, frozen=True):
    SCHEMA_VERSION: ClassVar[int] = 3

    line: int
    byte_start: int
    byte_end: int
    raw: bytes
    record: dict[str, Any]
    # Version 3 (journal/parsed.py), None on an event as readers see it: ``shape``, the
    # offset of the record whose keys and field map this one's record follows (its
    # ``record`` is then built from ``raw``); ``extra``, its values from no field;
    # ``fields``, on that record, the field of each key (-1: none).
    shape: int | None = None
    extra: list[Any] | None = None
    fields: list[int] | None = None

    @property
    def unresolved(self) -> bool:
        """Its record is still to be built from its text (journal/parsed.py)."""
        return self.shape is not None


class ProposeAttempted(Event, frozen=True):
    """About to propose this record to a target outside the journal's transaction (a Propose
    API in another database), journaled and committed before the calls: if no outcome
    follows (a crash), the record is in doubt and the next run proposes it again.
    ``key`` is the idempotency key's prefix (file hash, offset); the fact index completes it.
    """

    key: str
    in_doubt: bool = False
    # This attempt's token (a target that keeps its outcomes stores it with them: on resume
    # the outcome of exactly this attempt is found, or known never to have committed).
    attempt: str = ""


class ProposeSucceeded(Event, frozen=True):
    """What the graph did for every fact of the record (ids created or matched, conflicts)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    results: list[ProposeResult]
    retry_of: int | None = None  # position of the RecordFailed this retry answers
    # The answers an earlier, in-doubt attempt got, read back from the target's outcome table
    # (not proposed again): exactly those of the one call.
    recovered: bool = False


class RecordFailed(Event, frozen=True):
    stage: str  # 'read' | 'parse' | 'validate' | 'propose'
    error_type: str
    message: str
    line: int = 0
    byte_start: int = 0
    byte_end: int = 0
    raw: bytes | None = None
    record: dict[str, Any] | None = None
    details: dict[str, Any] = {}
    retry_of: int | None = None


class RecordSkipped(Event, frozen=True):
    reason: str
    line: int = 0
    byte_start: int = 0
    byte_end: int = 0
    raw: bytes | None = None
    retry_of: int | None = None


class RecordResolved(Event, frozen=True):
    """A person decided a failed record is not to be loaded (``dlq resolve``): it leaves the
    DLQ; the source's counts keep it as failed."""

    note: str
    resolved_by: str
    failure_position: int | None = None


EventType = (
    SourceRegistered
    | LoadStarted
    | RunStarted
    | RunAbandoned
    | SourceAbandoned
    | BatchCommitted
    | ChunksPlanned
    | RunFinished
    | RecordParsed
    | ProposeAttempted
    | ProposeSucceeded
    | RecordFailed
    | RecordSkipped
    | RecordResolved
)

EVENT_CLASSES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        SourceRegistered,
        LoadStarted,
        RunStarted,
        RunAbandoned,
        SourceAbandoned,
        BatchCommitted,
        ChunksPlanned,
        RunFinished,
        RecordParsed,
        ProposeAttempted,
        ProposeSucceeded,
        RecordFailed,
        RecordSkipped,
        RecordResolved,
    )
}

TERMINAL_EVENTS = ("ProposeSucceeded", "RecordFailed", "RecordSkipped")

# --- the codec ------------------------------------------------------------------------------
#
# What is stored for RecordParsed and ProposeSucceeded (version 2) differs from the in-memory
# event: each has a wire Struct with the same tag that reads both versions, and an upcaster
# from the wire Struct to the event. The others are stored as they are.


class _RecordParsedWire(msgspec.Struct, tag="RecordParsed", kw_only=True, omit_defaults=True):
    line: int
    byte_start: int
    byte_end: int
    raw: bytes | None = None  # version 1 always; version 2 when the bytes are not UTF-8
    text: str | None = None  # version 2: the bytes are this text in UTF-8
    record: dict[str, Any] | None = None  # left out in version 3 when ``s`` is there
    s: int | None = None  # version 3: the offset of the record this one's shape is from
    x: list[Any] | None = None  # version 3: the values from no field, in key order
    m: list[int] | None = None  # version 3: on that record, each key's field (-1: none)


class _ProposeSucceededWire(
    msgspec.Struct, tag="ProposeSucceeded", kw_only=True, omit_defaults=True
):
    results: list[ProposeResult] = []  # version 1
    r: list[Any] | None = None  # version 2: one array per fact (answers.py), or a result
    retry_of: int | None = None
    recovered: bool = False


def _record_parsed_wire(ev: RecordParsed) -> _RecordParsedWire:
    raw = ev.raw
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return _RecordParsedWire(
            line=ev.line, byte_start=ev.byte_start, byte_end=ev.byte_end, raw=raw, record=ev.record
        )
    if ev.shape is not None:  # version 3: the record is built again from the text
        return _RecordParsedWire(
            line=ev.line,
            byte_start=ev.byte_start,
            byte_end=ev.byte_end,
            text=text,
            s=ev.shape,
            x=ev.extra or None,
        )
    return _RecordParsedWire(
        line=ev.line,
        byte_start=ev.byte_start,
        byte_end=ev.byte_end,
        text=text,
        record=ev.record,
        m=ev.fields,
    )


def _record_parsed(wire: _RecordParsedWire) -> RecordParsed:
    if wire.text is not None:
        raw = wire.text.encode()
    elif wire.raw is not None:
        raw = wire.raw
    else:
        raise msgspec.ValidationError("RecordParsed without raw or text")
    if wire.record is None and wire.s is None:
        raise msgspec.ValidationError("RecordParsed without record or s")
    return RecordParsed(
        line=wire.line,
        byte_start=wire.byte_start,
        byte_end=wire.byte_end,
        raw=raw,
        record={} if wire.record is None else wire.record,
        shape=wire.s if wire.record is None else None,
        extra=(wire.x or []) if wire.record is None else None,
        fields=wire.m,
    )


def _propose_succeeded_wire(ev: ProposeSucceeded) -> _ProposeSucceededWire:
    return _ProposeSucceededWire(
        r=compact(ev.results), retry_of=ev.retry_of, recovered=ev.recovered
    )


def _propose_succeeded(wire: _ProposeSucceededWire) -> ProposeSucceeded:
    results = wire.results if wire.r is None else expand(wire.r)
    return ProposeSucceeded(results=results, retry_of=wire.retry_of, recovered=wire.recovered)


# How an event is stored (the current version) and read back (every version).
_DOWNCAST: dict[type[Event], Callable[[Any], msgspec.Struct]] = {
    RecordParsed: _record_parsed_wire,
    ProposeSucceeded: _propose_succeeded_wire,
}
_UPCAST: dict[type[msgspec.Struct], Callable[[Any], Event]] = {
    _RecordParsedWire: _record_parsed,
    _ProposeSucceededWire: _propose_succeeded,
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    SourceRegistered
    | LoadStarted
    | RunStarted
    | RunAbandoned
    | SourceAbandoned
    | BatchCommitted
    | ChunksPlanned
    | RunFinished
    | _RecordParsedWire
    | ProposeAttempted
    | _ProposeSucceededWire
    | RecordFailed
    | RecordSkipped
    | RecordResolved
)


# Every record of a loader that proposes nothing ends with these bytes: the codec's own
# output, made once (measured: 0.36 us an encode, against one attribute check or three).
_NOTHING_PROPOSED = _encoder.encode(_propose_succeeded_wire(ProposeSucceeded(results=[])))


def encode(event: Event) -> bytes:
    """The one codec: compact JSON, the tag first (``{"type":"RecordParsed",...}``), in the
    event's current version (``SCHEMA_VERSION``)."""
    if (
        event.__class__ is ProposeSucceeded
        and not event.results
        and event.retry_of is None
        and not event.recovered
    ):
        return _NOTHING_PROPOSED
    down = _DOWNCAST.get(type(event))
    return _encoder.encode(event if down is None else down(event))


def decode(payload: bytes | str) -> Event:
    """The event a payload of any version holds."""
    result = _decoder.decode(payload)
    up = _UPCAST.get(type(result))
    if up is not None:
        return up(result)
    assert isinstance(result, Event)
    return result


def to_builtins(event: Event) -> dict[str, Any]:
    """A plain dict for JSON output (bytes become base64, like in the payload)."""
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out
