"""The YAML config, validated with pydantic.

Shape (every section optional except what a run needs; unknown keys are errors)::

    loader:      {name, class, module}          # or a `facts:` section instead of class
    source:      {type, name, file, format, encoding, delimiter, quotechar,
                  field_size_limit, max_record_bytes, update_frequency}
    database:    {url} or {driver, host, port, name, user, password}
    processing:  {batch_size, checkpoint_interval, max_retries, retry_delay,
                  retry_max_delay, limit}
    validation:  {required_fields: [...], date_fields: {field: format}}
    graph:       {node_types: [...], relationship_types: [...]}
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
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from journal_loader.errors import ConfigError
from journal_loader.secrets import register_secret
from journal_loader.sources.identity import FREQUENCIES

DEFAULT_DB_URL = "sqlite:///journal.db"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TYPE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_ .\-]{0,99}$")


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
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    field_size_limit: int = Field(default=1_048_576, gt=0)
    max_record_bytes: int = Field(default=8_388_608, gt=0)
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
    port: int | None = Field(default=None, gt=0, lt=65536)
    name: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    path: str | None = None

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
    batch_size: int = Field(default=1000, ge=1, le=1_000_000)
    # A checkpoint is every committed batch (the batch is the transaction); an interval is
    # accepted for configs written for older loaders and must be a multiple of batch_size.
    checkpoint_interval: int | None = Field(default=None, ge=1)
    max_retries: int = Field(default=5, ge=0, le=100)
    retry_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=30.0, ge=0)
    limit: int | None = Field(default=None, ge=0)

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
    date_fields: dict[str, str] = {}


class GraphSection(_Section):
    node_types: list[str] | None = None
    relationship_types: list[str] | None = None

    @field_validator("node_types", "relationship_types")
    @classmethod
    def _names(cls, v: list[str] | None) -> list[str] | None:
        for name in v or []:
            if not _TYPE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid type name")
        return v


class LoggingSection(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"
    file: str | None = None  # relative to the config file's directory
    max_size: str = "10MB"  # rotate at this size: 512KB, 10MB, 1GB (x1024), or bytes; 0: never
    retention: int = Field(default=5, ge=0)  # rotated files kept; 0: never rotate
    progress_interval: float = Field(default=30.0, gt=0)  # seconds between progress lines

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

    port: int | None = Field(default=None, ge=0, le=65535)  # serve /metrics during the run
    address: str = "0.0.0.0"  # noqa: S104 - an exporter is scraped from another host
    textfile: str | None = None  # node_exporter textfile; relative to the config file
    pushgateway: str | None = None  # URL; pushed at the end of the run
    job: str = "journal_loader"  # the pushgateway job name
    dlq_every: int = Field(default=10, ge=1)  # query the DLQ depth every N batches

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
    timeout: float = Field(default=60.0, gt=0)


class Config(_Section):
    loader: LoaderSection = LoaderSection()
    source: SourceSection = SourceSection()
    database: DatabaseSection = DatabaseSection()
    processing: ProcessingSection = ProcessingSection()
    validation: ValidationSection = ValidationSection()
    graph: GraphSection = GraphSection()
    logging: LoggingSection = LoggingSection()
    facts: list[dict[str, Any]] | None = None

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
    """Expand ${VAR} / ${VAR:-default} in every string of a parsed YAML document."""
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{path}: environment variable {name} is not set (and no default given; "
                f"write ${{{name}:-default}} to give one)"
            )

        return _VAR.sub(repl, value)
    return value


def _format_pydantic(source: str, error: PydanticValidationError) -> str:
    lines = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and e["type"] not in ("missing",) and "password" not in where:
            shown = repr(e["input"])
            msg += f" (got {shown[:60]})"
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


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


def resolve_database_url(cli_url: str | None, config: Config | None) -> str:
    """--db, then the config's database section, then JOURNAL_LOADER_DB_URL, then journal.db."""
    if cli_url:
        return cli_url
    if config is not None:
        url = config.database.resolved_url()
        if url:
            return url
    return os.environ.get("JOURNAL_LOADER_DB_URL") or DEFAULT_DB_URL
