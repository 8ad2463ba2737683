"""The rules every fact must keep, whichever graph it goes to (the embedded graph, a Propose
API deployment): types, names, keys, numbers, dates and attribute values.

A fact that breaks one raises ``ValidationError``: the record fails at stage ``validate`` and
nothing of it is written. The limits are the columns' (``storage.schema``): names and keys up
to ``MAX_NAME_CHARS``, type names ``VARCHAR(100)``, attribute values short enough for a btree
entry; no NUL byte anywhere (PostgreSQL text refuses it, SQLite would keep it).

The common case is checked inline (a str's class, length and NUL byte; a float's class and
range); the helper that says what is wrong runs only for a value that fails.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from journal_loader.errors import ValidationError
from journal_loader.graph.normalize import normalize_name
from journal_loader.graph.protocol import Entity
from journal_loader.suggest import did_you_mean

MAX_NAME_CHARS = 1000
MAX_VALUE_BYTES = 2000  # PostgreSQL's btree entries cap out near 2.7 kB
MAX_TYPE_CHARS = 100  # node_type, rel_type, attr_type: VARCHAR(100)


def check_fact(
    node_types: frozenset[str] | None,
    relationship_types: frozenset[str] | None,
    src: Entity,
    tgt: Entity,
    relationship: str,
    strength: float,
    valid_from: dt.date | None,
    valid_to: dt.date | None,
    confidence: float,
) -> tuple[str, str]:
    """Refuses a fact that breaks a rule (ValidationError: the record fails at stage
    validate); returns the normalised names of its two entities. Shared by every target."""
    if node_types is None:
        _check_type("node type", src.type)
        _check_type("node type", tgt.type)
    elif src.type not in node_types or tgt.type not in node_types:
        unknown = src.type if src.type not in node_types else tgt.type
        raise ValidationError(
            f"unknown node type {unknown!r} (allowed: {', '.join(sorted(node_types))})"
            + did_you_mean(unknown, sorted(node_types))
        )
    if relationship_types is None:
        _check_type("relationship type", relationship)
    elif relationship not in relationship_types:
        raise ValidationError(
            f"unknown relationship type {relationship!r} "
            f"(allowed: {', '.join(sorted(relationship_types))})"
            + did_you_mean(relationship, sorted(relationship_types))
        )
    src_norm, tgt_norm = _checked_norm(src), _checked_norm(tgt)
    if strength.__class__ is not float or not 0.0 <= strength <= 1.0:
        _check_number("relationship strength", strength)
    if confidence.__class__ is not float or not 0.0 <= confidence <= 1.0:
        _check_number("confidence", confidence)
    if valid_from and valid_to and valid_from > valid_to:
        raise ValidationError(f"valid_from {valid_from} is after valid_to {valid_to}")
    return src_norm, tgt_norm


def _checked_norm(e: Entity) -> str:
    """The entity's normalised name, after checking its name and key."""
    name = e.name
    if name.__class__ is not str or len(name) > MAX_NAME_CHARS or "\x00" in name:
        _check_chars("entity name", name, MAX_NAME_CHARS)
    norm = normalize_name(name)
    if not norm:
        raise ValidationError(f"{e.type} entity has an empty name")
    key = e.key
    if key is not None and (key.__class__ is not str or len(key) > MAX_NAME_CHARS or "\x00" in key):
        _check_chars("external key", key, MAX_NAME_CHARS)
    return norm


def _check_type(what: str, value: Any) -> None:
    """A type name the graph can store on both backends (node_type, rel_type and attr_type
    are VARCHAR(100); PostgreSQL text refuses NUL bytes, SQLite would keep them)."""
    if type(value) is not str or not value or len(value) > MAX_TYPE_CHARS or "\x00" in value:
        if isinstance(value, str) and not value:
            raise ValidationError(f"{what} is empty")
        _check_chars(what, value, MAX_TYPE_CHARS)


def has_nul(value: Any) -> bool:
    """A NUL byte anywhere in a JSON-like value (a relationship's metadata)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_nul(v) for v in value)
    return False


def _check_number(what: str, value: Any) -> None:
    """Refuses anything but a number in 0..1 (booleans included)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValidationError(f"{what} {value!r} is outside 0..1")


def _check_chars(what: str, value: str, max_chars: int) -> None:
    if type(value) is str and len(value) <= max_chars and "\x00" not in value:
        return
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be text, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters long (at most {max_chars})")
    if "\x00" in value:
        raise ValidationError(f"{what} contains a NUL byte")


def as_date(what: str, value: Any) -> dt.date | None:
    """A validity date as given (a date, a datetime, ISO text; empty: None)."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValidationError(f"{what} {value!r} is not a date (a date or YYYY-MM-DD)")


def attribute_values(attr_type: str, value: Any) -> list[str]:
    """An attribute's values as the text the graph stores (a list gives several; empty ones
    are dropped)."""
    _check_type("attribute type", attr_type)
    values = value if isinstance(value, list | tuple | set | frozenset) else [value]
    out = []
    for v in values:
        if v is None or v == "":
            continue
        if isinstance(v, bool):
            text = "true" if v else "false"
        elif isinstance(v, dt.date):
            text = v.isoformat()
        else:
            text = str(v)
        if "\x00" in text:
            raise ValidationError(f"attribute {attr_type!r} contains a NUL byte")
        if len(text.encode()) > MAX_VALUE_BYTES:
            raise ValidationError(
                f"attribute {attr_type!r} is {len(text.encode())} bytes long "
                f"(at most {MAX_VALUE_BYTES})"
            )
        out.append(text)
    return out


def queryable(value: Any) -> bool:
    """Text a lookup query can carry (PostgreSQL text refuses NUL bytes)."""
    return type(value) is str and len(value) <= MAX_NAME_CHARS and "\x00" not in value
