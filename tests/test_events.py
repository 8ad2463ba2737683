"""The codec: every event type round-trips through the one encoder/decoder (hypothesis);
payloads of every version ever written decode to the same events."""

from __future__ import annotations

import ast
import base64
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal_loader.graph.protocol import Action, Conflict, ProposeResult
from journal_loader.journal import events as ev
from journal_loader.journal.answers import compact
from tests.support.answers import compact_reference

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


@st.composite
def graph_answers(draw: st.DrawFn, exact: bool = True) -> ProposeResult:
    """Answers shaped like the embedded graph's (source entity, target entity, relationship;
    provenance and attribute ids mostly in runs), which version 2 stores as arrays. With
    ``exact=False`` one field may break the shape (then the answer is stored whole)."""
    graph_id = ints | text if not exact else ints | st.text(max_size=8)
    src, tgt = draw(graph_id), draw(graph_id)
    rel_id = draw(st.none() | graph_id)
    reasons = st.sampled_from(
        ["new_entity", "exact_name_match", "external_key", "alias_match", "fuzzy_match", "x"]
    )
    confidence = st.just(1.0) | st.floats(0, 1)

    def entity(role: str, entity_id: Any) -> Any:
        return st.builds(
            Action,
            action=st.sampled_from(["entity_created", "entity_matched", "entity_merged"]),
            role=st.just(role),
            entity_id=st.just(entity_id),
            confidence=st.none() | confidence,
            match_reason=st.none() | reasons,
        )

    def id_runs() -> Any:
        run = st.tuples(st.integers(0, 2**40), st.integers(1, 7)).map(
            lambda t: list(range(t[0], t[0] + t[1]))
        )
        return st.lists(run, max_size=3).map(lambda rs: [i for r in rs for i in r]) | st.lists(
            ints, max_size=5
        )

    shared = draw(confidence)
    result = ProposeResult(
        status=draw(st.sampled_from(["success", "conflicts", "error", "other"])),
        overall_confidence=shared if draw(st.booleans()) else draw(confidence),
        actions=[
            draw(entity("source", src)),
            draw(entity("target", tgt)),
            Action(
                action=draw(
                    st.sampled_from(
                        ["relationship_created", "relationship_duplicate", "relationship_x"]
                    )
                ),
                relationship_id=rel_id,
            ),
        ],
        provenance_ids=draw(id_runs()),
        attribute_ids=draw(id_runs()),
        source_entity_id=src,
        target_entity_id=tgt,
        relationship_id=rel_id,
        idempotency_key=draw(st.none() | text),
        in_doubt=draw(st.booleans()),
    )
    if exact:
        return result
    change = draw(st.sampled_from(["none", "source", "relationship", "role", "message", "ids"]))
    if change == "source":
        result.source_entity_id = draw(st.none() | graph_id)
    elif change == "relationship":
        result.actions[2].confidence = 0.5
    elif change == "role":
        result.actions[0].role = None
    elif change == "message":
        result.actions[1].message = draw(text)
    elif change == "ids":
        result.provenance_ids = [*result.provenance_ids, draw(text)]
    return result


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
        chunk=st.none() | ints,
    ),
    ev.ChunksPlanned: st.builds(
        ev.ChunksPlanned,
        starts=st.lists(st.tuples(ints, ints, ints), min_size=1, max_size=5),
        end=st.tuples(ints, ints, ints),
        records=ints,
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
        ev.ProposeSucceeded,
        results=st.lists(results | graph_answers(exact=False), max_size=5),
        retry_of=st.none() | ints,
        recovered=st.booleans(),
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


# --- versions -------------------------------------------------------------------------------

# The codec of version 1, for every event: the Struct as JSON (what journals written before
# issue 11 hold; tests/test_old_journal.py reads such a journal).
version_1 = msgspec.json.Encoder().encode


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_version_1_payloads_decode_to_the_same_event(cls: type[ev.Event]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(STRATEGIES[cls])
    def check(event: ev.Event) -> None:
        assert ev.decode(version_1(event)) == event

    check()


def test_the_versions_written_now() -> None:
    assert {
        c.__name__: c.SCHEMA_VERSION for c in ev.EVENT_CLASSES.values() if c.SCHEMA_VERSION != 1
    } == {
        "RecordParsed": 3,  # version 3: the record left out where its text rebuilds it
        "ProposeSucceeded": 2,
    }


@settings(max_examples=200, deadline=None)
@given(st.lists(graph_answers(), max_size=6), st.none() | ints)
def test_graph_answers_are_stored_as_arrays(answers: list[ProposeResult], retry_of: Any) -> None:
    event = ev.ProposeSucceeded(results=answers, retry_of=retry_of)
    payload = ev.encode(event)
    stored = msgspec.json.decode(payload)
    assert stored["type"] == "ProposeSucceeded" and "results" not in stored
    assert all(isinstance(item, list) for item in stored["r"])
    assert ev.decode(payload) == event
    assert len(payload) < len(version_1(event)) or not answers


# The example's first record as the embedded graph answered it, and as version 2 stores it:
# the stored form is fixed forever (the tables of codes are append-only), so these bytes
# must keep decoding to this event.
def _fact(
    src: int, s_how: tuple[str, str], tgt: int, t_how: tuple[str, str], rel: int,
    prov: list[int], attrs: list[int],
) -> ProposeResult:  # fmt: skip
    return ProposeResult(
        status="success",
        overall_confidence=1.0,
        actions=[
            Action(
                action=s_how[0], role="source", entity_id=src, confidence=1.0, match_reason=s_how[1]
            ),
            Action(
                action=t_how[0], role="target", entity_id=tgt, confidence=1.0, match_reason=t_how[1]
            ),
            Action(action="relationship_created", relationship_id=rel),
        ],
        provenance_ids=list(prov),
        attribute_ids=attrs,
        source_entity_id=src,
        target_entity_id=tgt,
        relationship_id=rel,
    )


NEW = ("entity_created", "new_entity")
NAME = ("entity_matched", "exact_name_match")
KEY = ("entity_matched", "external_key")
EXAMPLE_ANSWER = ev.ProposeSucceeded(
    results=[
        _fact(1, NEW, 2, NEW, 1, [1, 2, 3, 4, 5, 6], [1, 2, 3]),
        _fact(2, NAME, 3, NEW, 2, [7, 8], []),
        _fact(1, KEY, 4, NEW, 3, [9, 10, 11, 12, 13], [1, 2, 3, 4, 5, 6]),
        _fact(5, NEW, 1, KEY, 4, [14, 15], [1, 2, 3]),
        _fact(5, NAME, 6, NEW, 5, [16, 17, 18], [7]),
    ]
)
EXAMPLE_ANSWER_V1 = (
    b'{"type":"ProposeSucceeded","results":[{"status":"success","overall_confidence":1.0,"actions":[{"action":"entity_created","role":"source","entity_id":1,"confidence":1.0,"match_reason":"new_entity"},{"action":"entity_created","role":"target","entity_id":2,"confidence":1.0,"match_reason":"new_entity"},{"action":"relationship_created","relationship_id":1}],"provenance_ids":[1,2,3,4,5,6],"attribute_ids":[1,2,3],"source_entity_id":1,"target_entity_id":2,"relationship_id":1},'
    b'{"status":"success","overall_confidence":1.0,"actions":[{"action":"entity_matched","role":"source","entity_id":2,"confidence":1.0,"match_reason":"exact_name_match"},{"action":"entity_created","role":"target","entity_id":3,"confidence":1.0,"match_reason":"new_entity"},{"action":"relationship_created","relationship_id":2}],"provenance_ids":[7,8],"source_entity_id":2,"target_entity_id":3,"relationship_id":2},'
    b'{"status":"success","overall_confidence":1.0,"actions":[{"action":"entity_matched","role":"source","entity_id":1,"confidence":1.0,"match_reason":"external_key"},{"action":"entity_created","role":"target","entity_id":4,"confidence":1.0,"match_reason":"new_entity"},{"action":"relationship_created","relationship_id":3}],"provenance_ids":[9,10,11,12,13],"attribute_ids":[1,2,3,4,5,6],"source_entity_id":1,"target_entity_id":4,"relationship_id":3},'
    b'{"status":"success","overall_confidence":1.0,"actions":[{"action":"entity_created","role":"source","entity_id":5,"confidence":1.0,"match_reason":"new_entity"},{"action":"entity_matched","role":"target","entity_id":1,"confidence":1.0,"match_reason":"external_key"},{"action":"relationship_created","relationship_id":4}],"provenance_ids":[14,15],"attribute_ids":[1,2,3],"source_entity_id":5,"target_entity_id":1,"relationship_id":4},'
    b'{"status":"success","overall_confidence":1.0,"actions":[{"action":"entity_matched","role":"source","entity_id":5,"confidence":1.0,"match_reason":"exact_name_match"},{"action":"entity_created","role":"target","entity_id":6,"confidence":1.0,"match_reason":"new_entity"},{"action":"relationship_created","relationship_id":5}],"provenance_ids":[16,17,18],"attribute_ids":[7],"source_entity_id":5,"target_entity_id":6,"relationship_id":5}]}'
)
EXAMPLE_ANSWER_V2 = (
    b'{"type":"ProposeSucceeded","r":[[0,1,0,1,0,2,0,1,[1,6],[1,3]],[0,1,1,2,0,3,0,2,[0,2]],'
    b"[0,1,2,1,0,4,0,3,[0,5],[-3,6]],[0,1,0,5,2,1,0,4,[0,2],[-6,3]],[0,1,1,5,0,6,0,5,[0,3],[3,1]]]}"
)


_ODD = [None, "source", "target", "x", 0, 1, 0.5, 1.0, "01J"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            graph_answers(),
            st.none()
            | st.tuples(st.integers(0, 2), st.sampled_from(list(Action.__struct_fields__)))
            | st.sampled_from(["source_entity_id", "target_entity_id", "relationship_id"]),
            st.sampled_from(_ODD),
        ),
        max_size=6,
    )
)
def test_answers_are_encoded_as_version_2_was_first_written(changes: list[Any]) -> None:
    """``compact`` reads the shape field by field now: any answer, usual or with any one
    field off the shape, gives the bytes of the version first written (and journaled)."""
    answers = []
    for answer, where, value in changes:
        if isinstance(where, tuple):
            setattr(answer.actions[where[0]], where[1], value)
        elif where is not None:
            setattr(answer, where, value)
        answers.append(answer)
    encode = msgspec.json.Encoder().encode
    assert encode(compact(answers)) == encode(compact_reference(answers))


def test_the_example_answer_in_both_versions() -> None:
    assert version_1(EXAMPLE_ANSWER) == EXAMPLE_ANSWER_V1  # as the fixture journal holds it
    assert ev.encode(EXAMPLE_ANSWER) == EXAMPLE_ANSWER_V2
    assert ev.decode(EXAMPLE_ANSWER_V1) == ev.decode(EXAMPLE_ANSWER_V2) == EXAMPLE_ANSWER
    assert (len(EXAMPLE_ANSWER_V1), len(EXAMPLE_ANSWER_V2)) == (2193, 179)


@pytest.mark.parametrize(
    "r",
    [
        "[[0,1,0,1,0,2]]",
        "[[7,1,0,1,0,2,0,1]]",
        '[[0,"x",0,1,0,2,0,1]]',
        "[[0,1,0,1,0,2,0,1,[1]]]",
        "[3]",
    ],
)
def test_a_broken_version_2_answer_is_refused(r: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        ev.decode(f'{{"type":"ProposeSucceeded","r":{r}}}')


def test_a_retried_and_recovered_answer_keeps_its_keys() -> None:
    """``retry_of`` and ``recovered`` stay top-level keys of the payload, as in version 1."""
    event = ev.ProposeSucceeded(results=[], retry_of=41, recovered=True)
    assert ev.encode(event) == b'{"type":"ProposeSucceeded","r":[],"retry_of":41,"recovered":true}'
    assert (
        ev.decode(b'{"type":"ProposeSucceeded","results":[],"retry_of":41,"recovered":true}')
        == event
    )


def test_an_answer_with_no_facts_is_the_codecs_own_bytes() -> None:
    """A journal-only record's answer comes from a constant: the same bytes the encoder
    makes, and it still decodes to the event."""
    event = ev.ProposeSucceeded(results=[])
    assert ev.encode(event) == b'{"type":"ProposeSucceeded","r":[]}'
    assert ev.encode(event) == msgspec.json.encode(ev._propose_succeeded_wire(event))
    assert ev.decode(ev.encode(event)) == event
    assert ev.encode(ev.ProposeSucceeded(results=[], retry_of=0)) == (
        b'{"type":"ProposeSucceeded","r":[],"retry_of":0}'
    )


def test_an_answer_that_is_not_the_graphs_usual_shape_is_stored_whole() -> None:
    error = ProposeResult(status="error", actions=[Action(action="error", message="no")])
    remote = ProposeResult(
        status="success",
        overall_confidence=0.75,
        actions=[
            Action(action="entity_matched", role="source", entity_id="01J", confidence=0.75, match_reason="fuzzy_match"),
            Action(action="entity_created", role="target", entity_id="01K", confidence=1.0, match_reason="new_entity"),
            Action(action="relationship_created", relationship_id="01L"),
        ],
        provenance_ids=["01M"],
        source_entity_id="01J",
        target_entity_id="01K",
        relationship_id="01L",
        idempotency_key="abc:7",
        in_doubt=True,
    )  # fmt: skip
    event = ev.ProposeSucceeded(results=[error, remote])
    payload = ev.encode(event)
    assert payload == (
        b'{"type":"ProposeSucceeded","r":[{"status":"error","actions":[{"action":"error","message":"no"}]},'
        b'{"status":"success","overall_confidence":0.75,"actions":[{"action":"entity_matched","role":"source","entity_id":"01J","confidence":0.75,"match_reason":"fuzzy_match"},'
        b'{"action":"entity_created","role":"target","entity_id":"01K","confidence":1.0,"match_reason":"new_entity"},{"action":"relationship_created","relationship_id":"01L"}],'
        b'"provenance_ids":["01M"],"source_entity_id":"01J","target_entity_id":"01K","relationship_id":"01L","idempotency_key":"abc:7","in_doubt":true}]}'
    )
    assert ev.decode(payload) == event
    # with integer provenance ids the same answer is an array (text entity ids stay text:
    # lineage's scan of the answers finds them by their quoted text)
    remote.provenance_ids = [70, 71]
    assert ev.encode(ev.ProposeSucceeded(results=[remote])) == (
        b'{"type":"ProposeSucceeded","r":[[0,[0.75,0.75,1],4,"01J",0,"01K",0,"01L",[70,2],[],"abc:7",true]]}'
    )


def test_record_parsed_stores_utf8_as_text_and_other_bytes_in_base64() -> None:
    record = {"name": "MÜLLER", "n": 1}
    text_event = ev.RecordParsed(
        line=2, byte_start=3, byte_end=13, raw="MÜLLER,1\n".encode(), record=record
    )
    assert (
        ev.encode(text_event)
        == (
            '{"type":"RecordParsed","line":2,"byte_start":3,"byte_end":13,"text":"MÜLLER,1\\n",'
            '"record":{"name":"MÜLLER","n":1}}'
        ).encode()
    )
    latin1 = ev.RecordParsed(
        line=2, byte_start=3, byte_end=12, raw="MÜLLER,1\n".encode("latin-1"), record=record
    )
    b64 = base64.b64encode(latin1.raw).decode()
    assert (
        ev.encode(latin1)
        == (
            f'{{"type":"RecordParsed","line":2,"byte_start":3,"byte_end":12,"raw":"{b64}",'
            '"record":{"name":"MÜLLER","n":1}}'
        ).encode()
    )
    for event in (text_event, latin1):
        assert ev.decode(ev.encode(event)) == ev.decode(version_1(event)) == event
    with pytest.raises(msgspec.ValidationError):
        ev.decode(b'{"type":"RecordParsed","line":2,"byte_start":3,"byte_end":12,"record":{}}')


def test_graph_browse_still_reads_the_coordinates_of_a_record(tmp_path: Path) -> None:
    """``graph node`` reads line and byte range from RecordParsed payloads itself: from
    the events today's runs write, a node's provenance names its record's place."""
    from journal_loader import run
    from journal_loader.graph import browse
    from journal_loader.storage import open_store
    from tests.support.loaders import PairLoader, write_csv

    rows = [["Acme", "Springfield"], ["Beta", "Shelbyville"]]
    data = write_csv(tmp_path / "pairs.csv", ["name", "city"], rows)
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    assert run(PairLoader, data, db=url).status == "completed"
    store = open_store(url)
    try:
        (beta,) = browse.find_nodes(store, name="Beta")
        (where,) = browse.node(store, beta["id"]).provenance
    finally:
        store.dispose()
    # "name,city\n" is bytes 0-10, "Acme,Springfield\n" 10-27, "Beta,Shelbyville\n" 27-44
    assert (where.record_offset, where.line, where.byte_start, where.byte_end) == (1, 3, 27, 44)


def test_events_import_only_value_types_below_the_journal() -> None:
    """journal (layer 5) may import graph.protocol (layer 4: the answers' value types, no
    storage); graph.protocol never imports the journal (design10's layering)."""
    package = Path(ev.__file__).resolve().parent.parent

    def imports(path: Path) -> set[str]:
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return {m for m in found if m.startswith("journal_loader")}

    assert imports(package / "journal" / "events.py") == {
        "journal_loader.graph.protocol",
        "journal_loader.journal.answers",
    }
    assert imports(package / "journal" / "answers.py") == {"journal_loader.graph.protocol"}
    assert imports(package / "graph" / "protocol.py") == set()
