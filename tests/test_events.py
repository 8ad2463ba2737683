"""The codec: every event type round-trips through the one encoder/decoder (hypothesis)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal_loader.graph.protocol import Action, Conflict, ProposeResult
from journal_loader.journal import events as ev

text = st.text(max_size=40)
ints = st.integers(min_value=0, max_value=2**53)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | text
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
records = st.dictionaries(text, json_value, max_size=6)

actions = st.builds(
    Action,
    action=st.sampled_from(["entity_created", "entity_matched", "relationship_created", "error"]),
    role=st.none() | st.sampled_from(["source", "target"]),
    entity_id=st.none() | ints,
    relationship_id=st.none() | ints,
    confidence=st.none() | st.floats(0, 1),
    match_reason=st.none() | text,
    message=st.none() | text,
)
results = st.builds(
    ProposeResult,
    status=st.sampled_from(["success", "conflicts", "error"]),
    overall_confidence=st.floats(0, 1),
    actions=st.lists(actions, max_size=4),
    conflicts=st.lists(
        st.builds(
            Conflict,
            relationship_id=ints,
            relationship_type=text,
            source_entity_id=ints,
            target_entity_id=ints,
        ),
        max_size=2,
    ),
    provenance_ids=st.lists(ints, max_size=4),
    attribute_ids=st.lists(ints, max_size=4),
    source_entity_id=st.none() | ints,
    idempotency_key=st.none() | text,
)
statistics = st.builds(ev.Statistics, **{f: ints for f in ev.Statistics.__struct_fields__})

STRATEGIES: dict[type[ev.Event], Any] = {
    ev.SourceRegistered: st.builds(
        ev.SourceRegistered,
        source_type=text,
        source_name=text,
        file_name=text,
        file_path=text,
        file_hash=text,
        file_size=ints,
        file_mtime=text,
        version_label=text,
        update_frequency=text,
        format=text,
        gzipped=st.booleans(),
        loader=text,
    ),
    ev.LoadStarted: st.builds(ev.LoadStarted, reason=text),
    ev.RunStarted: st.builds(
        ev.RunStarted,
        loader=text,
        mode=text,
        resume_offset=ints,
        resume_line=ints,
        resume_byte=ints,
        start_from=st.none() | ints,
        limit=st.none() | ints,
        header=st.none() | st.lists(text, max_size=5),
        header_raw=st.none() | st.binary(max_size=50),
    ),
    ev.RunAbandoned: st.builds(
        ev.RunAbandoned, abandoned_run_id=text, last_position=st.none() | ints, reason=text
    ),
    ev.SourceAbandoned: st.builds(
        ev.SourceAbandoned,
        reason=text,
        superseded_by=st.none() | ints,
        next_offset=st.none() | ints,
    ),
    ev.BatchCommitted: st.builds(
        ev.BatchCommitted,
        next_offset=ints,
        next_line=ints,
        next_byte=ints,
        imported=ints,
        failed=ints,
        skipped=ints,
    ),
    ev.RunFinished: st.builds(
        ev.RunFinished,
        status=text,
        reason=text,
        statistics=statistics,
        records_in_file=st.none() | ints,
    ),
    ev.RecordParsed: st.builds(
        ev.RecordParsed,
        line=ints,
        byte_start=ints,
        byte_end=ints,
        raw=st.binary(max_size=200),
        record=records,
    ),
    ev.ProposeAttempted: st.builds(ev.ProposeAttempted, key=text, in_doubt=st.booleans()),
    ev.ProposeSucceeded: st.builds(
        ev.ProposeSucceeded, results=st.lists(results, max_size=3), retry_of=st.none() | ints
    ),
    ev.RecordFailed: st.builds(
        ev.RecordFailed,
        stage=st.sampled_from(["read", "parse", "validate", "propose"]),
        error_type=text,
        message=text,
        line=ints,
        raw=st.none() | st.binary(max_size=200),
        record=st.none() | records,
        details=st.dictionaries(text, json_scalar, max_size=3),
        retry_of=st.none() | ints,
    ),
    ev.RecordSkipped: st.builds(ev.RecordSkipped, reason=text, raw=st.none() | st.binary()),
    ev.RecordResolved: st.builds(
        ev.RecordResolved, note=text, resolved_by=text, failure_position=st.none() | ints
    ),
}


def test_every_event_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(ev.EVENT_CLASSES.values())


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_round_trip(cls: type[ev.Event]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(STRATEGIES[cls])
    def check(event: ev.Event) -> None:
        payload = ev.encode(event)
        back = ev.decode(payload)
        assert type(back) is cls
        assert back == event
        assert ev.encode(back) == payload  # canonical: re-encoding gives the same bytes
        assert msgspec.json.decode(payload)["type"] == cls.__name__

    check()


def test_unknown_event_type_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        ev.decode(b'{"type":"RecordTeleported","line":1}')


def test_old_payload_without_new_optional_fields_still_decodes() -> None:
    # Evolving an event by adding defaulted fields must keep old journals readable.
    old = b'{"type":"RecordFailed","stage":"read","error_type":"x","message":"m"}'
    decoded = ev.decode(old)
    assert isinstance(decoded, ev.RecordFailed)
    assert decoded.raw is None and decoded.details == {} and decoded.retry_of is None
