"""Loaders without code: a ``facts:`` section in the YAML config maps columns to facts.

A config with ``facts:`` and no ``loader.class`` runs ``FactsLoader`` (``loader_from_config``).
The short form is a list of facts over the row's columns (README: "Loaders without code");
the long form is a mapping (examples/business_registry/facts.yaml is the whole example)::

    facts:
      fields:    {name: value, ...}     # the record, computed from the row (else: the row)
      skip:      [{when: condition, reason: "..."}]        # RecordSkipped
      checks:    [{field, matches | date, when, message}]  # problems: the record fails
      entities:  {name: entity, ...}    # entities the facts refer to by name
      facts:     [fact, ...]

**Values.** A bare string names a field of the record (a column when there is no
``fields:``; in ``fields:`` itself, always a column); a string with ``{...}`` is a template
(``"{HO City}, {HO State}"``); a number or boolean is itself. As a mapping, a value is one
of ``{field: x}``, ``{column: "Raw Column"}``, ``{template: "..."}``,
``{join: [values], sep: ", "}`` (the non-empty ones), ``{value: literal}``; with modifiers
``upper``, ``lower``, ``default`` (for an empty value), ``date`` (a format such as
``MM/DD/YYYY``: the value becomes an ISO date), and ``matches: regex`` with
``then``/``else`` (the value becomes ``then`` when the regex is found in it, else ``else``).
Text from the row is trimmed and its runs of whitespace collapsed (``raw: true`` keeps it).

**Entities**: ``{type, name, key, attributes: {type: value}}``; ``type`` is a type name or a
value (``{field: agent, matches: "(?i)\\b(INC|LLC)\\b", then: Company, else: Person}``); an
empty key is no key. **Facts**: ``{source, target, relationship, when, strength,
confidence, valid_from, valid_to, metadata}``; ``source``/``target`` are an entity or the
name of one in ``entities:``; a fact whose ``when`` does not hold is not proposed.
**Conditions**: ``{present: [fields]}`` (all non-empty), ``{empty: [fields]}`` (all empty),
``{equals: {field: value}}``, ``{matches: {field: regex}}``, ``{not: condition}``; every
key given must hold.

Everything is checked when the config is loaded (unknown fields, entities, node and
relationship types, regexes, templates): a ``ConfigError`` names the place. Columns are
checked against the first row (``allow_missing_columns: true`` for JSONL with optional
keys). Templates and messages only substitute names (``{name}``, ``{value!r}``): no
attribute access, no format specs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from journal_loader.config import Config, allowed_keys
from journal_loader.errors import ConfigError, ValidationError
from journal_loader.graph.protocol import Entity, ProposeClient, ProposeResult
from journal_loader.loader import Loader, strptime_format
from journal_loader.suggest import closest, did_you_mean

Getter = Callable[[Mapping[str, Any]], Any]
Predicate = Callable[[Mapping[str, Any]], bool]


# --- the schema ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ValueSpec(_Model):
    field: str | None = None
    column: str | None = None
    template: str | None = None
    join: list[ValueLike] | None = None
    value: str | int | float | bool | None = None
    sep: str = " "
    upper: bool = False
    lower: bool = False
    raw: bool = False
    default: str | None = None
    date: str | None = None
    matches: str | None = None
    then: str | None = None
    else_: str | None = Field(default=None, alias="else")

    @model_validator(mode="after")
    def _one_source(self) -> ValueSpec:
        given = [
            k
            for k in ("field", "column", "template", "join", "value")
            if k in self.model_fields_set
        ]
        if len(given) != 1:
            raise ValueError(
                "a value is exactly one of field, column, template, join or value"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if (self.then is not None or self.else_ is not None) and self.matches is None:
            raise ValueError("then/else need matches")
        return self


ValueLike = Union[str, int, float, bool, ValueSpec]  # noqa: UP007 - a recursive alias


class Condition(_Model):
    present: str | list[str] | None = None
    empty: str | list[str] | None = None
    equals: dict[str, str | int | float | bool] | None = None
    matches: dict[str, str] | None = None
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _something(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("a condition needs present, empty, equals, matches or not")
        return self


class EntitySpec(_Model):
    type: str | ValueSpec
    name: ValueLike
    key: ValueLike | None = None
    attributes: dict[str, ValueLike] = {}


class FactSpec(_Model):
    source: str | EntitySpec
    target: str | EntitySpec
    relationship: str
    when: Condition | None = None
    strength: ValueLike = 1.0
    confidence: ValueLike = 0.9
    valid_from: ValueLike | None = None
    valid_to: ValueLike | None = None
    metadata: dict[str, ValueLike] | None = None


class SkipRule(_Model):
    when: Condition
    reason: str


class Check(_Model):
    field: str
    matches: str | None = None
    date: str | None = None
    when: Condition | None = None
    message: str | None = None

    @model_validator(mode="after")
    def _what(self) -> Check:
        if (self.matches is None) == (self.date is None):
            raise ValueError("a check is either matches (a regex) or date (a format)")
        return self


class FactsSection(_Model):
    fields: dict[str, ValueLike] | None = None
    skip: list[SkipRule] = []
    checks: list[Check] = []
    entities: dict[str, EntitySpec] = {}
    facts: list[FactSpec] = Field(min_length=1)
    allow_missing_columns: bool = False


ValueSpec.model_rebuild()
Condition.model_rebuild()


def parse_facts_section(raw: Any) -> FactsSection:
    data = {"facts": raw} if isinstance(raw, list) else raw
    try:
        return FactsSection.model_validate(data)
    except PydanticValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc if not str(p).startswith("function-"))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key" + did_you_mean(
                    str(loc[-1]), allowed_keys(FactsSection, loc[:-1])
                )
            lines.append(f"facts.{where}: {msg}")
        raise ConfigError("\n".join(lines)) from None


# --- compiling ---------------------------------------------------------------------------------


_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}!]+)(![rs])?\}|[{}]")


class _Placeholder(NamedTuple):
    name: str
    as_repr: bool  # {name!r}


class _Template:
    """``"{a}, {b}"`` with names only: ``{{``/``}}`` are braces; ``{name!r}`` its repr."""

    def __init__(self, text: str, where: str) -> None:
        self.parts: list[str | _Placeholder] = []
        last = 0
        for m in _PLACEHOLDER.finditer(text):
            self.parts.append(text[last : m.start()])
            token = m.group(0)
            if token in ("{{", "}}"):
                self.parts.append(token[0])
            elif m.group(1) is None:
                raise ConfigError(f"{where}: unbalanced brace in {text!r} (write {{{{ or }}}})")
            else:
                self.parts.append(_Placeholder(m.group(1).strip(), m.group(2) == "!r"))
            last = m.end()
        self.parts.append(text[last:])

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts if isinstance(p, _Placeholder)]

    def render(self, lookup: Callable[[str], Any]) -> str:
        out = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
            else:
                v = lookup(p.name)
                out.append(repr(v) if p.as_repr else _as_str(v))
        return "".join(out)


def _as_str(value: Any) -> str:
    """A value as template text: None is empty, a date is ISO."""
    if value is None:
        return ""
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value == "")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split())
    return value


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"{where}: invalid regular expression {pattern!r}: {e}") from None


class _Compiler:
    """Turns the validated section into getters, checking every reference on the way."""

    def __init__(self, section: FactsSection, config: Config) -> None:
        self.section = section
        self.config = config
        self.fields = list(section.fields) if section.fields is not None else None
        self.columns: set[str] = set()
        self.node_types = set(config.graph.node_types) if config.graph.node_types else None
        rel_types = config.graph.relationship_types
        self.relationship_types = set(rel_types) if rel_types else None

    # references
    def _column(self, name: str, raw: bool = False) -> Getter:
        self.columns.add(name)
        if raw:
            return lambda row: row.get(name)
        return lambda row: _clean(row.get(name))

    def _field(self, name: str, where: str) -> Getter:
        if self.fields is None:  # no fields: names are the row's columns
            return self._column(name)
        if name not in self.fields:
            raise ConfigError(
                f"{where}: unknown field {name!r} (fields: {', '.join(self.fields)}; "
                "a raw column is {column: ...})" + did_you_mean(name, self.fields)
            )
        return lambda record: record.get(name)

    # values
    def value(self, spec: ValueLike | None, where: str, *, in_fields: bool = False) -> Getter:
        if spec is None:
            return lambda _r: None
        if isinstance(spec, bool | int | float):
            literal: Any = spec
            return lambda _r: literal
        if isinstance(spec, str):
            if "{" in spec or "}" in spec:
                return self._template(spec, where, in_fields)
            return self._column(spec) if in_fields else self._field(spec, where)
        return self._spec(spec, where, in_fields)

    def _template(self, text: str, where: str, in_fields: bool) -> Getter:
        template = _Template(text, where)
        getters = {
            n: (self._column(n) if in_fields else self._field(n, where)) for n in template.names
        }
        return lambda r: template.render(lambda n: getters[n](r))

    def _spec(self, spec: ValueSpec, where: str, in_fields: bool) -> Getter:
        base: Getter
        if spec.field is not None:
            if in_fields:
                raise ConfigError(
                    f"{where}: fields are computed from the row's columns: use "
                    f"{{column: {spec.field}}} (or the bare column name)"
                )
            base = self._field(spec.field, where)
        elif spec.column is not None:
            base = self._column(spec.column, raw=spec.raw)
        elif spec.template is not None:
            base = self._template(spec.template, where, in_fields)
        elif spec.join is not None:
            parts = [self.value(p, f"{where}.join[{i}]", in_fields=in_fields) for i, p in
                     enumerate(spec.join)]  # fmt: skip
            sep = spec.sep
            base = lambda r: sep.join(t for g in parts if (t := _as_str(g(r))))  # noqa: E731
        else:
            literal = spec.value
            base = lambda _r: literal  # noqa: E731
        steps: list[Callable[[Any], Any]] = []
        if spec.upper:
            steps.append(lambda v: v.upper() if isinstance(v, str) else v)
        if spec.lower:
            steps.append(lambda v: v.lower() if isinstance(v, str) else v)
        if spec.default is not None:
            default = spec.default
            steps.append(lambda v: default if _empty(v) else v)
        if spec.date is not None:
            fmt, declared = _date_format(spec.date, f"{where}.date"), spec.date
            steps.append(lambda v: _to_iso_date(v, fmt, declared, where))
        if spec.matches is not None:
            rx = _regex(spec.matches, where)
            then, other = spec.then, spec.else_
            if then is not None or other is not None:
                steps.append(lambda v: then if rx.search(_as_str(v)) else other)
            else:
                steps.append(lambda v: v if rx.search(_as_str(v)) else "")
        if not steps:
            return base

        def apply(r: Mapping[str, Any]) -> Any:
            v = base(r)
            for step in steps:
                v = step(v)
            return v

        return apply

    # conditions
    def condition(self, cond: Condition | None, where: str) -> Predicate | None:
        if cond is None:
            return None
        tests: list[Predicate] = []
        if cond.present is not None:
            names = [cond.present] if isinstance(cond.present, str) else cond.present
            gs = [self._field(n, f"{where}.present") for n in names]
            tests.append(lambda r: all(not _empty(g(r)) for g in gs))
        if cond.empty is not None:
            names = [cond.empty] if isinstance(cond.empty, str) else cond.empty
            ge = [self._field(n, f"{where}.empty") for n in names]
            tests.append(lambda r: all(_empty(g(r)) for g in ge))
        if cond.equals is not None:
            pairs = [(self._field(n, f"{where}.equals"), v) for n, v in cond.equals.items()]
            tests.append(lambda r: all(g(r) == v for g, v in pairs))
        if cond.matches is not None:
            rxs = [(self._field(n, f"{where}.matches"), _regex(p, f"{where}.matches.{n}"))
                   for n, p in cond.matches.items()]  # fmt: skip
            tests.append(lambda r: all(rx.search(_as_str(g(r))) for g, rx in rxs))
        if cond.not_ is not None:
            inner = self.condition(cond.not_, f"{where}.not")
            assert inner is not None
            tests.append(lambda r: not inner(r))
        return lambda r: all(t(r) for t in tests)

    # entities and facts
    def entity(self, spec: str | EntitySpec, where: str) -> Callable[[Mapping[str, Any]], Entity]:
        if isinstance(spec, str):
            named = self.section.entities.get(spec)
            if named is None:
                known = ", ".join(self.section.entities) or "none"
                raise ConfigError(
                    f"{where}: unknown entity {spec!r} (entities: {known})"
                    + did_you_mean(spec, self.section.entities)
                )
            return self.entity(named, f"facts.entities.{spec}")
        if isinstance(spec.type, str):
            self._check_type(spec.type, f"{where}.type")
            type_name: str = spec.type
            get_type: Getter = lambda _r: type_name  # noqa: E731
        else:
            for t in (spec.type.then, spec.type.else_):
                if t is not None:
                    self._check_type(t, f"{where}.type")
            get_type = self.value(spec.type, f"{where}.type")
        get_name = self.value(spec.name, f"{where}.name")
        get_key = self.value(spec.key, f"{where}.key")
        attrs = [(a, self.value(v, f"{where}.attributes.{a}")) for a, v in spec.attributes.items()]

        def build(r: Mapping[str, Any]) -> Entity:
            key = get_key(r)
            return Entity(
                type=_as_str(get_type(r)),
                name=_as_str(get_name(r)),
                key=None if _empty(key) else _as_str(key),
                attributes={a: g(r) for a, g in attrs},
            )

        return build

    def _check_type(self, name: str, where: str) -> None:
        if self.node_types is not None and name not in self.node_types:
            raise ConfigError(
                f"{where}: {name!r} is not one of graph.node_types "
                f"({', '.join(sorted(self.node_types))}){did_you_mean(name, self.node_types)}"
            )


def _date_format(declared: str, where: str) -> str:
    try:
        return strptime_format(declared)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _to_iso_date(value: Any, fmt: str, declared: str, where: str) -> Any:
    if _empty(value) or isinstance(value, dt.date):
        return value.isoformat() if isinstance(value, dt.date) else value
    try:
        return dt.datetime.strptime(str(value).strip(), fmt).date().isoformat()
    except ValueError:
        raise ValidationError(
            f"{where}: {value!r} is not a date in the format {declared}"
        ) from None


def _number(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{what} {value!r} is not a number") from None


class _CompiledFact:
    def __init__(self, c: _Compiler, spec: FactSpec, where: str) -> None:
        if c.relationship_types is not None and spec.relationship not in c.relationship_types:
            raise ConfigError(
                f"{where}.relationship: {spec.relationship!r} is not one of "
                f"graph.relationship_types ({', '.join(sorted(c.relationship_types))})"
                + did_you_mean(spec.relationship, c.relationship_types)
            )
        self.relationship = spec.relationship
        self.when = c.condition(spec.when, f"{where}.when")
        self.source = c.entity(spec.source, f"{where}.source")
        self.target = c.entity(spec.target, f"{where}.target")
        self.strength = c.value(spec.strength, f"{where}.strength")
        self.confidence = c.value(spec.confidence, f"{where}.confidence")
        self.valid_from = c.value(spec.valid_from, f"{where}.valid_from")
        self.valid_to = c.value(spec.valid_to, f"{where}.valid_to")
        self.metadata = (
            None
            if spec.metadata is None
            else [(k, c.value(v, f"{where}.metadata.{k}")) for k, v in spec.metadata.items()]
        )

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> ProposeResult | None:
        if self.when is not None and not self.when(record):
            return None
        valid_from, valid_to = self.valid_from(record), self.valid_to(record)
        return graph.propose_fact(
            self.source(record),
            self.target(record),
            self.relationship,
            strength=_number(self.strength(record), "strength"),
            confidence=_number(self.confidence(record), "confidence"),
            valid_from=None if _empty(valid_from) else valid_from,
            valid_to=None if _empty(valid_to) else valid_to,
            metadata=None if self.metadata is None else {k: g(record) for k, g in self.metadata},
        )


class FactsLoader(Loader):
    """The loader a ``facts:`` section describes (see the module docstring)."""

    name = "facts"

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if not cfg.facts:
            raise ConfigError("FactsLoader needs a facts: section in the config")
        section = parse_facts_section(cfg.facts)
        c = _Compiler(section, cfg)
        self.name = cfg.loader.name  # type: ignore[misc]
        self.source_type = cfg.source.type  # type: ignore[misc]
        self._fields = (
            None
            if section.fields is None
            else [
                (n, c.value(v, f"facts.fields.{n}", in_fields=True))
                for n, v in section.fields.items()
            ]
        )
        self._skips: list[tuple[Predicate, str]] = []
        for i, rule in enumerate(section.skip):
            pred = c.condition(rule.when, f"facts.skip[{i}].when")
            assert pred is not None
            self._skips.append((pred, rule.reason))
        self._checks = [self._check(c, check, f"facts.checks[{i}]")
                        for i, check in enumerate(section.checks)]  # fmt: skip
        self._facts = [_CompiledFact(c, f, f"facts.facts[{i}]") for i, f in
                       enumerate(section.facts)]  # fmt: skip
        self._columns = sorted(c.columns)
        self._allow_missing = section.allow_missing_columns
        self._columns_checked = False

    @staticmethod
    def _check(c: _Compiler, check: Check, where: str) -> Callable[[Mapping[str, Any]], str | None]:
        get = c._field(check.field, f"{where}.field")
        when = c.condition(check.when, f"{where}.when")
        message = _Template(
            check.message
            or (
                f"{check.field} {{value!r}} does not match {check.matches}"
                if check.matches is not None
                else f"{check.field} {{value!r}} is not a date in the format {check.date}"
            ),
            f"{where}.message",
        )
        for name in message.names:
            if name not in ("value", "field"):
                raise ConfigError(f"{where}.message: only {{value}} and {{field}} can be used")
        rx = _regex(check.matches, f"{where}.matches") if check.matches is not None else None
        fmt = _date_format(check.date, f"{where}.date") if check.date is not None else None

        def run(record: Mapping[str, Any]) -> str | None:
            value = get(record)
            if _empty(value) or (when is not None and not when(record)):
                return None
            if rx is not None and rx.search(_as_str(value)):
                return None
            if fmt is not None:
                try:
                    dt.datetime.strptime(_as_str(value).strip(), fmt)
                    return None
                except ValueError:
                    pass
            names = {"value": value, "field": check.field}
            return message.render(lambda n: names[n])

        return run

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self._columns_checked:
            self._check_columns(raw)
        if self._fields is None:
            record = {k: _clean(v) for k, v in raw.items()}
        else:
            record = {name: get(raw) for name, get in self._fields}
        for pred, reason in self._skips:
            if pred(record):
                return self.skip(reason)
        return record

    def _check_columns(self, raw: Mapping[str, Any]) -> None:
        self._columns_checked = True
        if self._allow_missing:
            return
        missing = [c for c in self._columns if c not in raw]
        if missing:
            named = []
            for m in missing:
                match = closest(m, raw)
                named.append(f"{m!r}" + (f" (did you mean {match!r}?)" if match else ""))
            raise ConfigError(
                f"facts: the input has no column {', '.join(named)} "
                f"(its columns: {', '.join(repr(k) for k in raw)}); fix the mapping, or set "
                "facts.allow_missing_columns for optional keys"
            )

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        problems = super().validate(record)
        for check in self._checks:
            problem = check(record)
            if problem:
                problems.append(problem)
        return problems

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        results = []
        for f in self._facts:
            result = f.propose(record, graph)
            if result is not None:
                results.append(result)
        return results
