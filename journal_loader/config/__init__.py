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

The package: ``sections`` (the models), ``dates`` (declared date formats), ``loading``
(YAML, ``${VAR}``, validation and its messages) and ``database`` (which database a command
uses). Every name is imported from here, ``journal_loader.config``.

May import: the base layer, ``sources`` (the update frequencies) and ``storage`` (a URL's
schema); never the graph, the journal, the runner or anything above (tests/test_layering.py).
"""

from journal_loader.config.database import (
    DB_URL_VARIABLE,
    DEFAULT_DB_URL,
    journal_schema,
    resolve_database,
    resolve_database_url,
)
from journal_loader.config.dates import DATE_FORMS, DateFormat, date_format
from journal_loader.config.loading import (
    allowed_keys,
    config_from_dict,
    echo,
    interpolate,
    load_config,
)
from journal_loader.config.sections import (
    Config,
    DatabaseSection,
    Float,
    FuzzyMatching,
    GraphSection,
    HooksSection,
    Int,
    LoaderSection,
    LoggingSection,
    MetricsSection,
    ProcessingSection,
    ProposeApiSection,
    SourceSection,
    ValidationSection,
)

__all__ = [
    "DATE_FORMS",
    "DB_URL_VARIABLE",
    "DEFAULT_DB_URL",
    "Config",
    "DatabaseSection",
    "DateFormat",
    "Float",
    "FuzzyMatching",
    "GraphSection",
    "HooksSection",
    "Int",
    "LoaderSection",
    "LoggingSection",
    "MetricsSection",
    "ProcessingSection",
    "ProposeApiSection",
    "SourceSection",
    "ValidationSection",
    "allowed_keys",
    "config_from_dict",
    "date_format",
    "echo",
    "interpolate",
    "journal_schema",
    "load_config",
    "resolve_database",
    "resolve_database_url",
]
