"""The reference for version 2 of ``ProposeSucceeded``'s answers: ``compact`` as it was
first written (journal_loader/journal/answers.py). The module's own ``compact`` is rewritten
for speed; tests/test_events.py checks it gives these bytes for any answer."""

from __future__ import annotations

from typing import Any

import msgspec

from journal_loader.graph.protocol import ProposeResult
from journal_loader.journal.answers import (
    _ENTITY_CODE,
    _RELATIONSHIP_CODE,
    _STATUS_CODE,
    _runs,
)

# The fields of a usual answer's actions that are fixed: the entities' roles, and what only
# the other kind of action has (see compact).
_SHAPE = ("source", "target", None, None, None, None, None, None, None, None, None)


def compact_reference(results: list[ProposeResult]) -> list[Any]:
    """``compact`` as version 2 was first written (astuple and a tuple compared with the
    shape): the bytes every journal since holds."""
    out: list[Any] = []
    append = out.append
    astuple = msgspec.structs.astuple
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
        # (action, role, entity_id, relationship_id, confidence, match_reason, message)
        sa, ta, ra = astuple(actions[0]), astuple(actions[1]), astuple(actions[2])
        src, tgt, rel_id = sa[2], ta[2], ra[3]
        fixed = (sa[1], ta[1], sa[3], ta[3], sa[6], ta[6], ra[1], ra[2], ra[4], ra[5], ra[6])
        answer = (r.source_entity_id, r.target_entity_id, r.relationship_id)
        if fixed != _SHAPE or (src, tgt, rel_id) != answer:
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
        conf, s_conf, t_conf = r.overall_confidence, sa[4], ta[4]
        if s_conf is not None and conf == s_conf == t_conf:
            confidence: Any = 1 if conf == 1.0 else conf
        else:
            confidence = [
                1 if conf == 1.0 else conf,
                1 if s_conf == 1.0 else s_conf,
                1 if t_conf == 1.0 else t_conf,
            ]
        s_how = entity_code((sa[0], sa[5]))
        t_how = entity_code((ta[0], ta[5]))
        item = [
            status_code(r.status, r.status),
            confidence,
            [sa[0], sa[5]] if s_how is None else s_how,
            src,
            [ta[0], ta[5]] if t_how is None else t_how,
            tgt,
            relationship_code(ra[0], ra[0]),
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
