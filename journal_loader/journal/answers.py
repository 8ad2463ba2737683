"""The graph's answers in ``ProposeSucceeded`` version 2: an array per fact, short codes.

``compact`` turns a record's answers (``ProposeResult``) into what version 2 stores in the
payload's ``r``; ``expand`` turns it back into equal answers. Version 1 stored each answer
as its Struct's JSON (about 2.2-2.4 KB per record of the example); this is about a tenth.
Used by ``journal.events`` only (its codec); no database, no other journal module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from journal_loader.graph.protocol import Action, GraphId, ProposeResult

# ``r`` holds one item per fact. A fact the graph answered with the usual three actions (the
# source entity's resolution, the target's, the relationship), no conflicts, and integer
# provenance and attribute ids, is an array:
#
#   [status, confidence, source how, source id, target how, target id,
#    relationship how, relationship id, provenance ids, attribute ids, idempotency key,
#    in doubt]
#
# * status: an index in _STATUS, else the text;
# * confidence: one number when the answer's and both entities' confidences are equal, else
#   [overall, source's, target's]; 1.0 is written 1 (read back as floats);
# * how: an entity action's (action, match_reason) as an index in _ENTITY_HOW, else the pair
#   as an array; the relationship action as an index in _RELATIONSHIP_HOW, else its text;
# * ids: the entity and relationship ids as they are (the same id is the action's and the
#   answer's; lineage's scan of the answers finds an id by its digits). Provenance and
#   attribute ids as runs of consecutive ids: [start, length, start, length, ...], each start
#   relative to where the previous run of the same kind (in this event) ended;
# * trailing items equal to their defaults ([], [], null, false) are left out.
#
# Any other fact (an error, conflicts, other actions, text provenance ids) is stored as the
# full result object, as in version 1. The tables are append-only: an index written once
# keeps its meaning.
_STATUS = ("success", "conflicts", "error")
_ENTITY_HOW: tuple[tuple[str, str | None], ...] = (
    ("entity_created", "new_entity"),
    ("entity_matched", "exact_name_match"),
    ("entity_matched", "external_key"),
    ("entity_matched", "alias_match"),
    ("entity_matched", "fuzzy_match"),
)
_RELATIONSHIP_HOW = (
    "relationship_created",
    "relationship_duplicate",
    "relationship_updated",
    "relationship_conflicted",
)
_STATUS_CODE = {v: i for i, v in enumerate(_STATUS)}
_ENTITY_CODE = {v: i for i, v in enumerate(_ENTITY_HOW)}
_RELATIONSHIP_CODE = {v: i for i, v in enumerate(_RELATIONSHIP_HOW)}


def _runs(ids: Sequence[GraphId], base: int) -> tuple[list[int], int] | None:
    """``ids`` as runs relative to ``base``, and the new base; None if an id is not an int."""
    n = len(ids)
    if not n:
        return [], base
    first, last = ids[0], ids[-1]
    # The usual case, one run, checked in C (the comparison) rather than id by id.
    if (
        type(first) is int
        and type(last) is int
        and last - first == n - 1
        and (n < 3 or ids == list(range(first, last + 1)))
    ):
        return [first - base, n], last + 1
    out: list[int] = []
    start = prev = 0
    for i in ids:
        if type(i) is not int:
            return None
        if out and i == prev + 1:
            out[-1] += 1
        else:
            if out:
                base = start + out[-1]
            out += (i - base, 1)
            start = i
        prev = i
    return out, start + out[-1]


def _unruns(runs: list[int], base: int) -> tuple[list[int], int]:
    ids: list[int] = []
    for k in range(0, len(runs), 2):
        start = base + runs[k]
        base = start + runs[k + 1]
        ids += range(start, base)
    return ids, base


def compact(results: list[ProposeResult]) -> list[Any]:
    """The facts' answers in version 2's ``r`` (see above). On the hot path (one call per
    record): each answer is checked once, the usual single run of ids without a helper."""
    out: list[Any] = []
    append = out.append
    entity_code, status_code, relationship_code = (
        _ENTITY_CODE.get,
        _STATUS_CODE.get,
        _RELATIONSHIP_CODE.get,
    )
    prov_base = attr_base = 0
    for r in results:
        actions = r.actions
        if len(actions) != 3 or r.conflicts:
            append(r)
            continue
        # The usual shape: the entities' roles, none of what only the other kind of action
        # has, and the answer's own ids; read field by field (measured: 15% less than
        # astuple and comparing a tuple of those fields with the shape's).
        sa, ta, ra = actions
        src, tgt, rel_id = sa.entity_id, ta.entity_id, ra.relationship_id
        if (
            sa.role != "source"
            or ta.role != "target"
            or sa.relationship_id is not None
            or ta.relationship_id is not None
            or sa.message is not None
            or ta.message is not None
            or ra.role is not None
            or ra.entity_id is not None
            or ra.confidence is not None
            or ra.match_reason is not None
            or ra.message is not None
            or src != r.source_entity_id
            or tgt != r.target_entity_id
            or rel_id != r.relationship_id
        ):
            append(r)
            continue
        # Each kind's base moves only once the answer is known to be an array: a whole
        # answer (kept as an object) moves neither, and expand must follow the same steps.
        ids = r.provenance_ids
        n = len(ids)
        if not n:
            prov, prov_next = [], prov_base
        elif (
            type(first := ids[0]) is int
            and type(last := ids[-1]) is int
            and last - first == n - 1
            and (n < 3 or ids == list(range(first, last + 1)))
        ):
            prov, prov_next = [first - prov_base, n], last + 1
        else:
            runs = _runs(ids, prov_base)
            if runs is None:
                append(r)
                continue
            prov, prov_next = runs
        aids = r.attribute_ids
        n = len(aids)
        if not n:
            attrs, attr_next = [], attr_base
        elif (
            type(a_first := aids[0]) is int
            and type(a_last := aids[-1]) is int
            and a_last - a_first == n - 1
            and (n < 3 or aids == list(range(a_first, a_last + 1)))
        ):
            attrs, attr_next = [a_first - attr_base, n], a_last + 1
        else:
            runs = _runs(aids, attr_base)
            if runs is None:
                append(r)
                continue
            attrs, attr_next = runs
        prov_base, attr_base = prov_next, attr_next
        conf, s_conf, t_conf = r.overall_confidence, sa.confidence, ta.confidence
        if s_conf is not None and conf == s_conf == t_conf:
            confidence: Any = 1 if conf == 1.0 else conf
        else:
            confidence = [
                1 if conf == 1.0 else conf,
                1 if s_conf == 1.0 else s_conf,
                1 if t_conf == 1.0 else t_conf,
            ]
        s_action, s_reason, t_action, t_reason = (
            sa.action,
            sa.match_reason,
            ta.action,
            ta.match_reason,
        )
        s_how = entity_code((s_action, s_reason))
        t_how = entity_code((t_action, t_reason))
        r_action = ra.action
        item = [
            status_code(r.status, r.status),
            confidence,
            [s_action, s_reason] if s_how is None else s_how,
            src,
            [t_action, t_reason] if t_how is None else t_how,
            tgt,
            relationship_code(r_action, r_action),
            rel_id,
        ]
        key, doubt = r.idempotency_key, r.in_doubt
        if doubt:
            item += (prov, attrs, key, True)
        elif key is not None:
            item += (prov, attrs, key)
        elif attrs:
            item += (prov, attrs)
        elif prov:
            item.append(prov)
        append(item)
    return out


def _confidence(x: Any) -> float | None:
    return None if x is None else float(x)


def expand(items: list[Any]) -> list[ProposeResult]:
    """The answers ``compact`` made ``items`` of (raises msgspec.ValidationError if they are
    not such items)."""
    try:
        return _expand(items)
    except (TypeError, ValueError, IndexError, KeyError) as e:
        raise msgspec.ValidationError(f"not answers of version 2: {e}") from e


def _expand(items: list[Any]) -> list[ProposeResult]:
    results: list[ProposeResult] = []
    prov_base = attr_base = 0
    for item in items:
        if isinstance(item, dict):
            results.append(msgspec.convert(item, ProposeResult))
            continue
        status, conf, s_how, src, t_how, tgt, r_how, rel_id = item[:8]
        prov, prov_base = _unruns(item[8] if len(item) > 8 else [], prov_base)
        attrs, attr_base = _unruns(item[9] if len(item) > 9 else [], attr_base)
        if isinstance(conf, list):
            overall, s_conf, t_conf = float(conf[0]), _confidence(conf[1]), _confidence(conf[2])
        else:
            overall = s_conf = t_conf = float(conf)
        s_action, s_reason = _ENTITY_HOW[s_how] if isinstance(s_how, int) else s_how
        t_action, t_reason = _ENTITY_HOW[t_how] if isinstance(t_how, int) else t_how
        results.append(
            ProposeResult(
                status=_STATUS[status] if isinstance(status, int) else status,
                overall_confidence=overall,
                actions=[
                    Action(
                        action=s_action,
                        role="source",
                        entity_id=src,
                        confidence=s_conf,
                        match_reason=s_reason,
                    ),
                    Action(
                        action=t_action,
                        role="target",
                        entity_id=tgt,
                        confidence=t_conf,
                        match_reason=t_reason,
                    ),
                    Action(
                        action=_RELATIONSHIP_HOW[r_how] if isinstance(r_how, int) else r_how,
                        relationship_id=rel_id,
                    ),
                ],
                provenance_ids=list[GraphId](prov),
                attribute_ids=attrs,
                source_entity_id=src,
                target_entity_id=tgt,
                relationship_id=rel_id,
                idempotency_key=item[10] if len(item) > 10 else None,
                in_doubt=bool(item[11]) if len(item) > 11 else False,
            )
        )
    return results
