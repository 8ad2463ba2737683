"""The config's sections, as pydantic models: ``Config`` and one model per section (the
shape is in the package docstring). Unknown keys are errors; every model is frozen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from journal_loader.config.dates import DateFormat
from journal_loader.secrets import register_secret
from journal_loader.sources.identity import FREQUENCIES, UpdateFrequency
from journal_loader.sources.options import DEFAULT_READER_OPTIONS as _READER
from journal_loader.sources.options import ReaderOptions
from journal_loader.suggest import did_you_mean

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,99}$")


def _not_a_boolean(value: object) -> object:
    # YAML's `true` is a bool, and pydantic's lax ints take it as 1: `max_retries: true`
    # would mean one retry. Numbers in the config are numbers (or numeric strings, which
    # ${VAR} expansion produces), never booleans.
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(_not_a_boolean)]
Float = Annotated[float, BeforeValidator(_not_a_boolean)]


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
    # The reader's options (their defaults are ReaderOptions'; reader_options() below).
    format: Literal["csv", "jsonl"] | None = None
    encoding: str = _READER.encoding
    delimiter: str | None = Field(default=_READER.delimiter, min_length=1, max_length=1)
    quotechar: str = Field(default=_READER.quotechar, min_length=1, max_length=1)
    field_size_limit: Int = Field(default=_READER.field_size_limit, gt=0)
    max_record_bytes: Int = Field(default=_READER.max_record_bytes, gt=0)
    duplicate_keys: Literal["error", "last"] = "error"  # (ReaderOptions.duplicate_keys)
    update_frequency: str = UpdateFrequency.HASH.value

    def reader_options(self) -> ReaderOptions:
        """How a run (or ``config check``) reads this source's file."""
        return ReaderOptions(
            format=self.format,
            encoding=self.encoding,
            delimiter=self.delimiter,
            quotechar=self.quotechar,
            field_size_limit=self.field_size_limit,
            max_record_bytes=self.max_record_bytes,
            duplicate_keys=self.duplicate_keys,
        )

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
    def _fuzzy_shorthand(cls, v: object) -> object:
        if not isinstance(v, dict):
            return v
        out: dict[object, object] = {}
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
