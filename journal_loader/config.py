"""The YAML config, validated with pydantic.

Shape (every section optional except what a run needs; unknown keys are errors)::

    loader:      {name, class, module}          # or a `facts:` section instead of class
    source:      {type, name, file, format, encoding, delimiter, quotechar,
                  field_size_limit, max_record_bytes, update_frequency}
    database:    {url} or {driver, host, port, name, user, password}
    processing:  {batch_size, checkpoint_interval, max_retries, retry_delay,
                  retry_max_delay, limit}
    validation:  {required_fields: [...], date_fields: {field: format}}
    graph:       {node_types: [...], relationship_types: [...], fuzzy_matching: {type: ...},
                  opposing_relationships: [[a, b]], conflict_penalty, alias_attribute,
                  propose_api: {url, function, source_name, source_type, connect_timeout}}
    facts:       the no-code loader's mapping (journal_loader/facts.py)
    logging:     {level, format, file, max_size, retention}

``${VAR}`` and ``${VAR:-default}`` are expanded in string values *after* YAML parsing (so an
environment variable cannot inject YAML structure); a variable that is not set and has no
default is an error naming it, never a literal ``${DB_HOST}`` reaching a driver.
Relative paths (``source.file``, a loader file in ``loader.class``) are relative to the
config file's directory. ``database.password`` is a secret: registered for masking, shown as
``***`` by ``config check``.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from journal_loader.errors import ConfigError
from journal_loader.secrets import MASK, mask_url, password_from_url, register_secret, scrub
from journal_loader.sources.identity import FREQUENCIES
from journal_loader.suggest import did_you_mean

DEFAULT_DB_URL = "sqlite:///journal.db"
DB_URL_VARIABLE = "JOURNAL_LOADER_DB_URL"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,99}$")


def _not_a_boolean(value: Any) -> Any:
    # YAML's `true` is a bool, and pydantic's lax ints take it as 1: `max_retries: true`
    # would mean one retry. Numbers in the config are numbers (or numeric strings, which
    # ${VAR} expansion produces), never booleans.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]

# --- declared date formats ----------------------------------------------------------------------

_DATE_TOKENS = (
    ("YYYY", "%Y"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)
_STRPTIME_DIRECTIVES = frozenset("aAbBcdfGHIjmMpSuUVwWxXyYzZ%")
DATE_FORMS = (
    "tokens YYYY, YY, MM, DD, HH, mm, ss between separators (MM/DD/YYYY, YYYY-MM-DD, "
    "DD.MM.YYYY, YYYYMMDD, YYYY-MM-DDTHH:mm:ss) or strptime directives (%d.%m.%Y)"
)


def date_format(declared: str) -> str:
    """A declared date format (``MM/DD/YYYY``, or strptime's ``%m/%d/%Y``) as a strptime
    format; a ValueError naming the unknown token and the accepted forms when it is not one.
    Checked when the config is read: a format no value can match would fail every record."""
    if "%" in declared:
        directives = re.findall(r"%(.?)", declared)
        for d in directives:
            if d not in _STRPTIME_DIRECTIVES:
                raise ValueError(
                    f"unknown directive {'%' + d!r} in {declared!r}; a date format is made of "
                    f"{DATE_FORMS}"
                )
        return declared
    out: list[str] = []
    found = False
    i = 0
    while i < len(declared):
        for token, directive in _DATE_TOKENS:
            if declared.startswith(token, i):
                out.append(directive)
                i += len(token)
                found = True
                break
        else:
            if not declared[i].isalpha():
                out.append(declared[i])
                i += 1
                continue
            j = i + 1  # a run of letters, up to where a token starts
            while (
                j < len(declared)
                and declared[j].isalpha()
                and not any(declared.startswith(t, j) for t, _ in _DATE_TOKENS)
            ):
                j += 1
            word = declared[i:j]
            if word not in ("T", "Z"):  # ISO 8601's separators are literal letters
                raise ValueError(
                    f"unknown token {word!r} in {declared!r}; a date format is made of {DATE_FORMS}"
                )
            out.append(word)
            i = j
    if not found:
        raise ValueError(f"{declared!r} has no date tokens; a date format is made of {DATE_FORMS}")
    return "".join(out)


def _check_date_format(declared: str) -> str:
    date_format(declared)
    return declared


DateFormat = Annotated[str, AfterValidator(_check_date_format)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoaderSection(_Section):
    name: str = "loader"
    class_: str | None = Field(default=None, alias="class")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _IDENTIFIER.match(v):
            raise ValueError("must be an identifier (letters, digits, underscore)")
        return v


class SourceSection(_Section):
    type: str = "default"
    name: str | None = None
    file: str | None = None
    format: Literal["csv", "jsonl"] | None = None
    encoding: str = "utf-8"
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)  # None: by format
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    field_size_limit: Int = Field(default=1_048_576, gt=0)
    max_record_bytes: Int = Field(default=8_388_608, gt=0)
    update_frequency: str = "hash"

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if not _IDENTIFIER.match(v):
            raise ValueError("must be an identifier (letters, digits, underscore)")
        return v

    @field_validator("update_frequency")
    @classmethod
    def _frequency(cls, v: str) -> str:
        if v not in FREQUENCIES:
            raise ValueError(f"must be one of {', '.join(FREQUENCIES)}")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v


class DatabaseSection(_Section):
    url: str | None = None
    driver: Literal["sqlite", "postgresql"] | None = None
    host: str | None = None
    port: Int | None = Field(default=None, gt=0, lt=65536)
    name: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    path: str | None = None
    # PostgreSQL: the schema of journal-loader's own tables (see journal_schema). `schema` in
    # the YAML (BaseModel has a method of that name).
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _schema(cls, v: str | None) -> str | None:
        if v is not None and not _IDENTIFIER.match(v):
            raise ValueError("must be a schema name (letters, digits, underscores)")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> DatabaseSection:
        parts = (self.host, self.port, self.name, self.user, self.password, self.path)
        if self.url and any(p is not None for p in parts):
            raise ValueError("give either url or host/port/name/user/password/path, not both")
        if self.password is not None:
            register_secret(self.password.get_secret_value())
        return self

    def resolved_url(self) -> str | None:
        if self.url:
            return self.url
        if self.path or self.driver == "sqlite":
            return f"sqlite:///{self.path or 'journal.db'}"
        if self.host or self.name or self.driver == "postgresql":
            from sqlalchemy import URL

            return URL.create(
                "postgresql+psycopg",
                username=self.user,
                password=self.password.get_secret_value() if self.password else None,
                host=self.host,
                port=self.port,
                database=self.name,
            ).render_as_string(hide_password=False)
        return None


class ProcessingSection(_Section):
    batch_size: Int = Field(default=1000, ge=1, le=1_000_000)
    # A checkpoint is every committed batch (the batch is the transaction); an interval is
    # accepted for configs written for older loaders and must be a multiple of batch_size.
    checkpoint_interval: Int | None = Field(default=None, ge=1)
    max_retries: Int = Field(default=5, ge=0, le=100)
    retry_delay: Float = Field(default=0.5, ge=0)
    retry_max_delay: Float = Field(default=30.0, ge=0)
    limit: Int | None = Field(default=None, ge=0)
    # Stop a run whose input is plainly wrong (failures counted in this run):
    max_failed_records: Int | None = Field(default=None, ge=0)
    max_failure_rate: Float | None = Field(default=None, ge=0, le=1)
    failure_rate_min_records: Int = Field(default=100, ge=1)
    # Stop a run whose first N records all fail the same way (a broken loader); 0: never.
    fail_fast_records: Int = Field(default=100, ge=0)
    # Stop after this many transient failures in a row (across batches) instead of grinding.
    circuit_breaker: Int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _interval(self) -> ProcessingSection:
        if self.checkpoint_interval is not None and self.checkpoint_interval % self.batch_size:
            raise ValueError(
                "checkpoint_interval must be a multiple of batch_size: every batch is a "
                "checkpoint (one transaction)"
            )
        return self


class ValidationSection(_Section):
    required_fields: list[str] = []
    date_fields: dict[str, DateFormat] = {}


class FuzzyMatching(_Section):
    """Fuzzy matching of one node type's names (pg_trgm's trigram similarity, 0..1)."""

    enabled: bool = True
    threshold: Float = Field(default=0.8, gt=0, le=1)


class ProposeApiSection(_Section):
    """An existing Propose API deployment (a PostgreSQL function) to load into, instead of
    the embedded graph. ``url`` omitted: the function lives in the journal's own database and
    its calls run in the batch's transaction (exactly once); given: another database, reached
    through one connection for the whole run (effectively once, see docs/propose_api.md)."""

    url: str | None = None
    function: str = "propose_fact"
    source_name: str | None = None  # p_source_name; default: source.name, then source.type
    source_type: str | None = None  # p_source_type; default: source.type
    connect_timeout: Int = Field(default=10, gt=0)
    # The search_path the function runs with (its SQL is usually unqualified). Default: the
    # schema `function` is qualified with; else the journal's own path when it finds the
    # function in the journal's schema; else public.
    search_path: str | None = None
    # Does the deployment keep p_provenance_metadata (the idempotency key)? Default: read
    # from the function's source at start-up.
    keeps_idempotency_key: bool | None = None
    # The deployment's lookup table of relationship types; graph.relationship_types are
    # checked against it at start-up (null: no check).
    relationship_type_table: str | None = "relationship_types"
    # Another database only: a table of journal-loader's there, written with each record's
    # calls, so a crash leaves no record in doubt (opt-in: needs CREATE and INSERT there).
    outcome_table: str | None = None

    @field_validator("search_path")
    @classmethod
    def _search_path(cls, v: str | None) -> str | None:
        if v is not None:
            names = [p.strip() for p in v.split(",")]
            if not all(_IDENTIFIER.match(n) for n in names):
                raise ValueError("must be schema names separated by commas")
        return v

    @field_validator("relationship_type_table", "outcome_table")
    @classmethod
    def _type_table(cls, v: str | None) -> str | None:
        if v is not None:
            parts = v.split(".")
            if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
                raise ValueError("must be a table name, optionally schema-qualified")
        return v

    @field_validator("function")
    @classmethod
    def _function(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.match(p) for p in parts):
            raise ValueError("must be a function name, optionally schema-qualified (schema.name)")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            from journal_loader.secrets import password_from_url

            if not v.split(":", 1)[0].lower().startswith("postgres"):
                raise ValueError("the Propose API is a PostgreSQL function: use postgresql://...")
            register_secret(password_from_url(v))
        return v


class GraphSection(_Section):
    node_types: list[str] | None = None
    relationship_types: list[str] | None = None
    # Per node type: `Company: true`, `Company: 0.85` (a threshold) or
    # `Company: {enabled: true, threshold: 0.85}`. Off for every type not named.
    fuzzy_matching: dict[str, FuzzyMatching] = {}
    # Pairs of relationship types that contradict each other between the same two entities.
    opposing_relationships: list[tuple[str, str]] = []
    # A relationship proposed against an opposing one is stored with strength * penalty.
    conflict_penalty: Float = Field(default=0.7, gt=0, le=1)
    alias_attribute: str = "nameAlias"
    propose_api: ProposeApiSection | None = None

    @field_validator("node_types", "relationship_types")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not _TYPE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid type name")
        return v

    @field_validator("fuzzy_matching", mode="before")
    @classmethod
    def _fuzzy_shorthand(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        out: dict[Any, Any] = {}
        for type_name, setting in v.items():
            if isinstance(setting, bool):
                out[type_name] = {"enabled": setting}
            elif isinstance(setting, int | float):
                out[type_name] = {"threshold": setting}
            else:
                out[type_name] = setting
        return out

    @field_validator("alias_attribute")
    @classmethod
    def _alias(cls, v: str) -> str:
        if not _TYPE_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid attribute type name")
        return v

    @model_validator(mode="after")
    def _known_types(self) -> GraphSection:
        for type_name in self.fuzzy_matching:
            if not _TYPE_NAME.match(type_name):
                raise ValueError(f"fuzzy_matching: {type_name!r} is not a valid type name")
            if self.node_types is not None and type_name not in self.node_types:
                raise ValueError(
                    f"fuzzy_matching: {type_name!r} is not one of node_types "
                    f"({', '.join(self.node_types)}){did_you_mean(type_name, self.node_types)}"
                )
        for a, b in self.opposing_relationships:
            if a == b:
                raise ValueError(f"opposing_relationships: {a!r} cannot oppose itself")
            for name in (a, b):
                if not _TYPE_NAME.match(name):
                    raise ValueError(f"opposing_relationships: {name!r} is not a valid type name")
                if self.relationship_types is not None and name not in self.relationship_types:
                    raise ValueError(
                        f"opposing_relationships: {name!r} is not one of relationship_types "
                        f"({', '.join(self.relationship_types)})"
                        + did_you_mean(name, self.relationship_types)
                    )
        return self

    def fuzzy_thresholds(self) -> dict[str, float]:
        """Node type -> threshold, for the types with fuzzy matching on."""
        return {t: f.threshold for t, f in self.fuzzy_matching.items() if f.enabled}


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    file: str | None = None  # relative to the config file's directory
    max_size: str = "10MB"  # rotate at this size: 512KB, 10MB, 1GB (x1024), or bytes; 0: never
    retention: Int = Field(default=5, ge=0)  # rotated files kept; 0: never rotate
    progress_interval: Float = Field(default=30.0, gt=0)  # seconds between progress lines

    @field_validator("max_size")
    @classmethod
    def _size(cls, v: str) -> str:
        cls.size_in_bytes(v)
        return v

    @staticmethod
    def size_in_bytes(value: str) -> int:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError("must be a size like 512KB, 10MB or 1GB (or a number of bytes)")
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper().replace("I", "")])

    @property
    def max_bytes(self) -> int:
        return self.size_in_bytes(self.max_size)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGkmg]?[Ii]?[Bb]?)\s*$")
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2}
_SIZE_UNITS.update({"G": 1024**3, "GB": 1024**3})


class MetricsSection(_Section):
    """Prometheus output of ``run`` (the --metrics-* options override it)."""

    port: Int | None = Field(default=None, ge=0, le=65535)  # serve /metrics during the run
    address: str = "0.0.0.0"  # noqa: S104 - an exporter is scraped from another host
    textfile: str | None = None  # node_exporter textfile; relative to the config file
    pushgateway: str | None = None  # URL; pushed at the end of the run
    job: str = "journal_loader"  # the pushgateway job name
    dlq_every: Int = Field(default=10, ge=1)  # query the DLQ depth every N batches

    @field_validator("pushgateway")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class HooksSection(_Section):
    """Commands run at the end of ``run``, the run's summary JSON on their stdin."""

    on_success: str | None = None
    on_failure: str | None = None
    timeout: Float = Field(default=60.0, gt=0)


class Config(_Section):
    loader: LoaderSection = LoaderSection()
    source: SourceSection = SourceSection()
    database: DatabaseSection = DatabaseSection()
    processing: ProcessingSection = ProcessingSection()
    validation: ValidationSection = ValidationSection()
    graph: GraphSection = GraphSection()
    logging: LoggingSection = LoggingSection()
    # The no-code loader's mapping (journal_loader/facts.py validates it): a list of facts, or
    # a mapping with fields/skip/checks/entities/facts.
    facts: list[dict[str, Any]] | dict[str, Any] | None = None

    # where the config file lives: relative paths are resolved against it
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    config_path: Path | None = Field(default=None, exclude=True)
    # operations (issue 6)
    metrics: MetricsSection = MetricsSection()
    hooks: HooksSection = HooksSection()

    def source_path(self, override: str | None = None) -> str | None:
        if override:
            return override
        if self.source.file is None:
            return None
        path = Path(self.source.file)
        return str(path if path.is_absolute() else self.base_dir / path)


def interpolate(value: Any, path: str = "") -> Any:
    """Expand ${VAR} / ${VAR:-default} in every string of a parsed YAML document.

    Defaults may themselves hold references (``${A:-${B:-x}}``); ``$$`` is a literal ``$``.
    A malformed reference is an error naming the key, never text passed on to a driver.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        return _expand(value, 0, path, inside=False)[0]
    return value


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _expand(s: str, i: int, path: str, *, inside: bool) -> tuple[str, int]:
    """Expand from s[i]; inside a default, stop at its closing brace (returned index)."""
    out: list[str] = []
    while i < len(s):
        c = s[i]
        if inside and c == "}":
            return "".join(out), i
        if c == "$" and s.startswith("$$", i):
            out.append("$")
            i += 2
        elif c == "$" and s.startswith("${", i):
            m = _NAME.match(s, i + 2)
            if m is None:
                shown = _echo_part(s, s[i : i + 12], path)
                raise ConfigError(
                    f"{path}: malformed reference at {shown}: expected "
                    "${NAME} or ${NAME:-default} (write $$ for a literal $)"
                )
            name, j = m.group(0), m.end()
            if s.startswith(":-", j):
                default, j = _expand(s, j + 2, path, inside=True)
            elif j < len(s) and s[j] == "}":
                default = None
            else:
                raise ConfigError(
                    f"{path}: malformed reference ${{{name}...: expected "
                    f"${{{name}}} or ${{{name}:-default}}"
                )
            if j >= len(s) or s[j] != "}":
                raise ConfigError(f"{path}: unterminated reference ${{{name}: missing }}")
            if name in os.environ:
                out.append(os.environ[name])
            elif default is not None:
                out.append(default)
            else:
                raise ConfigError(
                    f"{path}: environment variable {name} is not set (and no default given; "
                    f"write ${{{name}:-default}} to give one)"
                )
            i = j + 1
        else:
            out.append(c)
            i += 1
    if inside:
        raise ConfigError(f"{path}: unterminated default in {_echo_part(s, s, path)}: missing }}")
    return "".join(out), i


def _echo_part(whole: str, part: str, path: str) -> str:
    """``part`` of a value for an error, unless the value is a password or holds one."""
    if _secret_key(path) or password_from_url(whole) is not None:
        return MASK
    return repr(part)


def _format_pydantic(source: str, error: PydanticValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(str(loc[-1]), allowed_keys(Config, loc[:-1]))
        elif "input" in e and e["type"] not in ("missing",) and not _secret_key(where):
            msg += f" (got {echo(e['input'])})"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def _secret_key(key: str) -> bool:
    return any(word in key.lower() for word in ("password", "secret"))


def echo(value: Any, width: int = 60) -> str:
    """A refused value, shown in an error: passwords (under a password key, or in a URL)
    are *** before the text is cut to ``width``, so a cut never saves half a password."""

    def masked(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: MASK if _secret_key(str(k)) else masked(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [masked(x) for x in v]
        if isinstance(v, str):
            return scrub(mask_url(v))
        return v

    shown = repr(masked(value))
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at ``loc`` (a pydantic error location) may have, for "did you
    mean": walks the models' annotations through optionals, unions, lists and dicts."""
    current: Any = model
    for step in loc:
        current = _descend(current, step)
        if current is None:
            return []
    for candidate in _members(current):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return [f.alias or n for n, f in candidate.model_fields.items() if not f.exclude]
    return []


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    return [annotation]


def _descend(annotation: Any, step: Any) -> Any:
    if isinstance(step, str) and step.startswith("function-"):
        # a validated union member: 'function-after[_one_source(), ValueSpec]'
        m = re.search(r"(\w+)\]$", step)
        step = m.group(1) if m else step
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if not isinstance(step, str):
                continue
            if step == candidate.__name__:  # pydantic names the union member it tried
                return candidate
            for name, f in candidate.model_fields.items():
                if step in (name, f.alias):
                    return f.annotation
            continue
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin is dict and len(args) == 2 and isinstance(step, str):
            return args[1]
        if origin is list and args and isinstance(step, int):
            return args[0]
        if origin is tuple and args and isinstance(step, int) and step < len(args):
            return args[step]
    return None


def load_config(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the config must be a mapping of sections, got {type(data).__name__}"
        )
    return config_from_dict(data, base_dir=p.resolve().parent, source=str(p), config_path=p)


def config_from_dict(
    data: dict[str, Any],
    *,
    base_dir: Path | None = None,
    source: str = "config",
    config_path: Path | None = None,
) -> Config:
    data = interpolate(data)
    try:
        return Config.model_validate(
            {**data, "base_dir": base_dir or Path.cwd(), "config_path": config_path}
        )
    except PydanticValidationError as e:
        raise ConfigError(_format_pydantic(source, e)) from None


def resolve_database(cli_url: str | None, config: Config | None) -> tuple[str, str]:
    """The database a command uses, and where that choice came from. One rule for every
    command: ``--db``, then ``$JOURNAL_LOADER_DB_URL``, then the config's ``database:``, then
    ``./journal.db`` (a per-invocation choice beats a per-shell one, which beats the file).
    On PostgreSQL with the config's schema for journal-loader's tables (``journal_schema``)."""
    url, where = _pick_database(cli_url, config)
    if config is not None:
        from journal_loader.storage import with_schema

        url = with_schema(url, journal_schema(config))
    return url, where


def _pick_database(cli_url: str | None, config: Config | None) -> tuple[str, str]:
    if cli_url:
        return cli_url, "--db"
    env = os.environ.get(DB_URL_VARIABLE)
    if env:
        return env, f"${DB_URL_VARIABLE}"
    if config is not None:
        url = config.database.resolved_url()
        if url:
            where = f" of {config.config_path}" if config.config_path else ""
            return url, f"the database section{where}"
    return DEFAULT_DB_URL, "the default"


def resolve_database_url(cli_url: str | None, config: Config | None) -> str:
    """--db, then JOURNAL_LOADER_DB_URL, then the config's database section, then journal.db."""
    return resolve_database(cli_url, config)[0]


def journal_schema(config: Config) -> str | None:
    """Where journal-loader's own tables go on PostgreSQL, after a search_path the URL sets
    itself (which always wins): ``database.schema``; else, for a Propose API in the journal's
    own database, ``journal_loader`` (the deployment's public tables have journal-loader's
    names); else None: the server's default search_path, as before."""
    if config.database.schema_:
        return config.database.schema_
    section = config.graph.propose_api
    if section is not None and section.url is None:
        from journal_loader.storage import DEFAULT_OWN_SCHEMA

        return DEFAULT_OWN_SCHEMA
    return None
