"""The Propose API's request and answer, mapped to journal-loader's values (no I/O).

* The request: an entity's attributes as the ``[{"type", "value"}]`` the function takes, and
  numbers as ``numeric(3,2)``.
* The answer: a ``propose_api_response`` row to ``ProposeResult``. Anything but a clear
  success or conflict is an error (never a success by default); ids stay as the deployment
  gives them (integers, or text such as ULIDs); action and conflict keys are read under the
  names deployments use.
* A ``conflicts`` answer that applied nothing is the record's failure: ``not_applied`` names
  the side and the candidates of an ambiguous match, as the embedded graph does.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import msgspec

from journal_loader.errors import AmbiguousMatchError, JournalLoaderError, ProposeAnswerError
from journal_loader.graph.checks import attribute_values
from journal_loader.graph.protocol import (
    STATUS_CONFLICTS,
    STATUS_ERROR,
    STATUS_SUCCESS,
    Action,
    Conflict,
    Entity,
    GraphId,
    ProposeResult,
)

KNOWN_STATUSES = (STATUS_SUCCESS, STATUS_CONFLICTS, STATUS_ERROR)
APPLIED_ACTIONS = frozenset(
    {
        "relationship_created",
        "relationship_duplicate",
        "relationship_updated",
        "relationship_conflicted",
    }
)
_TWO_PLACES = Decimal("0.01")


def applied(result: ProposeResult) -> bool:
    """A ``conflicts`` answer was applied only when it stored (or found) the relationship; an
    ambiguous match, for one, answers with no actions at all."""
    if result.status != STATUS_CONFLICTS:
        return True
    return any(a.action in APPLIED_ACTIONS for a in result.actions)


def not_applied(
    src: Entity, tgt: Entity, relationship: str, result: ProposeResult
) -> JournalLoaderError | AmbiguousMatchError | ProposeAnswerError:
    """The record's failure for an answer that applied nothing: an ambiguous match names the
    side(s) and the candidates, as the embedded graph does."""
    answer = _answer_json(result)
    for c in result.conflicts:
        if c.type != "ambiguous_entities":
            continue
        sides = [
            (side, entity, alternatives)
            for side, entity, alternatives in (
                ("source", src, c.source_alternatives),
                ("target", tgt, c.target_alternatives),
            )
            if alternatives
        ]
        parts = []
        for _side, entity, alternatives in sides:
            shown = "; ".join(_candidate_label(a) for a in alternatives[:10])
            more = f" and {len(alternatives) - 10} more" if len(alternatives) > 10 else ""
            parts.append(
                f"{entity.type} {entity.name!r} matches {len(alternatives)} "
                f"{'entity' if len(alternatives) == 1 else 'entities'} of the Propose API "
                f"ambiguously: {shown}{more}"
            )
        side = "both" if len(sides) == 2 else (sides[0][0] if sides else "unknown")
        message = "; ".join(parts) or f"ambiguous entities in {src.name!r} -> {tgt.name!r}"
        return AmbiguousMatchError(
            f"{message}; not merged: nothing of this record was applied",
            details={
                "side": side,
                "candidates": [a for _s, _e, alts in sides for a in alts],
                "source_alternatives": c.source_alternatives,
                "target_alternatives": c.target_alternatives,
                "fact": {
                    "source": [src.type, src.name],
                    "relationship": relationship,
                    "target": [tgt.type, tgt.name],
                },
                "answer": answer,
            },
        )
    return ProposeAnswerError(
        f"the Propose API answered {result.status} without applying "
        f"{src.type} {src.name!r} -{relationship}-> {tgt.type} {tgt.name!r}: "
        f"{_conflicts_summary(result)}",
        details={"answer": answer},
    )


def _candidate_label(raw: dict[str, Any]) -> str:
    text = f"{raw.get('id', raw.get('entity_id', raw.get('node_id', '?')))} {raw.get('name')!r}"
    score = raw.get("similarity", raw.get("score", raw.get("confidence")))
    return f"{text} {score}" if score is not None else text


def _conflicts_summary(result: ProposeResult) -> str:
    return "; ".join(c.type or c.relationship_type or "conflict" for c in result.conflicts) or (
        "no actions"
    )


def _answer_json(result: ProposeResult) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(result)
    return out


# --- the answer --------------------------------------------------------------------------


def parse_response(row: Any) -> ProposeResult:
    """A ``propose_api_response`` row -> ProposeResult; anything but a clear success or
    conflict is an error (never a success by default)."""
    if row is None:
        return error_result("the Propose API returned no row")
    status, overall, actions_json, conflicts_json, provenance_json = row
    actions = [_action(a) for a in _as_list(actions_json)]
    status_text = str(status).strip().lower() if status is not None else ""
    if status_text not in KNOWN_STATUSES:
        message = f"the Propose API answered status {status!r}"
        detail = next((a.message for a in actions if a.message), None)
        return error_result(f"{message}: {detail}" if detail else message, actions)
    if status_text == STATUS_ERROR and not any(a.action == "error" for a in actions):
        actions.append(Action(action="error", message="the Propose API answered error"))
    result = ProposeResult(
        status=status_text,
        overall_confidence=_float(overall) or 0.0,
        actions=actions,
        conflicts=[_conflict(c) for c in _as_list(conflicts_json)],
        provenance_ids=[i for i in (_id(p) for p in _as_list(provenance_json)) if i is not None],
    )
    entities = [a for a in actions if a.action.startswith("entity_")]
    if len(entities) == 2 and not any(a.role for a in entities):
        # the deployment lists the source's resolution, then the target's, without saying so
        entities[0].role, entities[1].role = "source", "target"
    by_role = {a.role: a.entity_id for a in entities if a.role}
    result.source_entity_id = by_role.get(
        "source", entities[0].entity_id if len(entities) > 0 else None
    )
    result.target_entity_id = by_role.get(
        "target", entities[1].entity_id if len(entities) > 1 else None
    )
    for a in actions:
        if a.action.startswith("relationship_") and a.relationship_id is not None:
            result.relationship_id = a.relationship_id
            break
    return result


def _action(raw: Any) -> Action:
    if not isinstance(raw, dict):
        return Action(action=str(raw))
    action = str(raw.get("action") or "unknown")
    relationship_id = _id(raw.get("relationship_id"))
    entity_id = _id(raw.get("entity_id"))
    if relationship_id is None and action.startswith("relationship_"):
        relationship_id, entity_id = entity_id, None
    message = raw.get("message")
    role = raw.get("role")
    reason = raw.get("match_reason")
    return Action(
        action=action,
        role=str(role) if role is not None else None,
        entity_id=entity_id,
        relationship_id=relationship_id,
        confidence=_float(raw.get("confidence")),
        match_reason=str(reason) if reason is not None else None,
        message=str(message) if message is not None else None,
    )


_CONFLICT_KEYS = {
    "type",
    "relationship_id",
    "id",
    "relationship_type",
    "existing_relationship_id",
    "existing_relationship_type",
    "opposing_relationship_id",
    "opposing_relationship_type",
    "source_entity_id",
    "target_entity_id",
    "source_alternatives",
    "target_alternatives",
}


def _conflict(raw: Any) -> Conflict:
    """A conflict as the deployment gave it: the relationship it opposes (under whichever of
    the usual names), the candidates of an ambiguous match, and any other key in ``detail``."""
    c = raw if isinstance(raw, dict) else {"value": raw}
    opposed_id = next(
        (
            i
            for k in ("existing_relationship_id", "opposing_relationship_id", "relationship_id",
                      "id")
            if (i := _id(c.get(k))) is not None
        ),
        0,
    )  # fmt: skip
    opposed_type = next(
        (
            str(t)
            for k in ("existing_relationship_type", "opposing_relationship_type",
                      "relationship_type")
            if (t := c.get(k))
        ),
        "",
    )  # fmt: skip
    kind = c.get("type")
    return Conflict(
        relationship_id=opposed_id,
        # an older shape put the kind where the type goes: keep it readable there
        relationship_type=opposed_type or (str(kind) if kind and opposed_id == 0 else ""),
        source_entity_id=_id(c.get("source_entity_id")) or 0,
        target_entity_id=_id(c.get("target_entity_id")) or 0,
        type=str(kind) if kind is not None else None,
        source_alternatives=_alternatives(c.get("source_alternatives")),
        target_alternatives=_alternatives(c.get("target_alternatives")),
        detail={k: v for k, v in c.items() if k not in _CONFLICT_KEYS},
    )


def _alternatives(value: Any) -> list[dict[str, Any]]:
    return [a if isinstance(a, dict) else {"id": a} for a in _as_list(value)]


def error_result(message: str, actions: list[Action] | None = None) -> ProposeResult:
    return ProposeResult(
        status=STATUS_ERROR,
        actions=[*(actions or []), Action(action="error", message=message)],
    )


def attributes_json(e: Entity) -> list[dict[str, str]]:
    return [
        {"type": attr_type, "value": text}
        for attr_type, value in e.attributes.items()
        for text in attribute_values(attr_type, value)
    ]


def numeric(value: float) -> Decimal:
    return Decimal(str(value)).quantize(_TWO_PLACES, rounding=ROUND_HALF_UP)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _id(value: Any) -> GraphId | None:
    """An id as the deployment gave it: an integer stays one (also written as canonical
    decimal text), any other text (a ULID, a UUID, "007") stays the text it is."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if re.fullmatch(r"-?(0|[1-9][0-9]{0,17})", text):
            return int(text)
        return text
    if isinstance(value, float | Decimal) and value == int(value):
        return int(value)
    return str(value)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
