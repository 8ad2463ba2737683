"""The loader API: one small class per registry.

    class BusinessRegistryLoader(Loader):
        name = "business_registry"
        source_type = "business_registry"

        def parse(self, raw):            # raw: {column: value} for CSV, the object for JSONL
            if not raw["Legal Name"]:
                return self.skip("no legal name")
            return {"name": raw["Legal Name"].strip(), ...}

        def validate(self, record):      # -> list of problems; [] when fine
            return super().validate(record) + ([] if ok else ["bad zip"])

        def propose(self, record, graph):
            return [graph.propose_fact(("Company", record["name"]), ("City", ...), "LOCATED_IN")]

``parse`` returns the record, or ``None`` / ``self.skip(reason)`` to skip it; raising fails
the record (stage ``parse``). ``validate`` runs the config's rules (``required_fields``,
``date_fields``) in the base class. ``propose`` calls ``graph.propose_fact`` per fact; an
``error`` answer or an exception fails the record (stage ``propose``) and undoes its facts.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, NoReturn

from journal_loader.config import Config, ValidationSection, date_format
from journal_loader.errors import ConfigError, SkipRecord
from journal_loader.graph.protocol import ProposeClient, ProposeResult
from journal_loader.suggest import did_you_mean


def strptime_format(declared: str) -> str:
    """'MM/DD/YYYY' -> '%m/%d/%Y'; a format that already has % directives is kept; a
    ValueError (naming the unknown token and the accepted forms) for anything else."""
    return date_format(declared)


_FIELDS = {"%Y": r"(?P<Y>\d{4})", "%m": r"(?P<m>\d{1,2})", "%d": r"(?P<d>\d{1,2})"}


@lru_cache(maxsize=64)
def _numeric_date_pattern(fmt: str) -> re.Pattern[str] | None:
    """A regex for formats made only of %Y, %m, %d and literal separators (MM/DD/YYYY...):
    checking those with a regex and date() is ~10x cheaper than strptime (15 us)."""
    parts = re.split(r"(%[A-Za-z%])", fmt)
    if {p for p in parts if p.startswith("%")} != {"%Y", "%m", "%d"}:
        return None
    return re.compile("".join(_FIELDS.get(p, re.escape(p)) for p in parts) + r"\Z")


def parse_date(value: str, fmt: str) -> dt.date | None:
    """The date in ``value`` in format ``fmt`` (strptime's), or None if it is not one."""
    pattern = _numeric_date_pattern(fmt)
    if pattern is not None:
        m = pattern.match(value)
        if m is None:
            return None
        try:
            return dt.date(int(m["Y"]), int(m["m"]), int(m["d"]))
        except ValueError:
            return None
    try:
        return dt.datetime.strptime(value, fmt).date()
    except ValueError:
        return None


def is_date(value: str, fmt: str) -> bool:
    return parse_date(value, fmt) is not None


class Loader:
    """Subclass it; override ``parse``, ``validate`` (optional) and ``propose``."""

    name: ClassVar[str] = "loader"
    source_type: ClassVar[str] = ""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config or Config()

    # --- the three steps ---
    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        return dict(raw)

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        return self.config_rules_errors(record)

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        raise NotImplementedError(f"{type(self).__name__}.propose is not written")

    # --- helpers for subclasses ---
    def skip(self, reason: str) -> NoReturn:
        """``return self.skip("no legal name")`` in ``parse`` skips the record with a reason."""
        raise SkipRecord(reason)

    @cached_property
    def _rules(self) -> tuple[list[str], list[tuple[str, str, str]]]:
        v: ValidationSection = self.config.validation
        dates = [(f, declared, strptime_format(declared)) for f, declared in v.date_fields.items()]
        return list(v.required_fields), dates

    def config_rules_errors(self, record: Mapping[str, Any]) -> list[str]:
        required, dates = self._rules
        errors: list[str] = []
        for f in required:
            value = record.get(f)
            if value is None or (isinstance(value, str) and not value.strip()):
                errors.append(f"required field {f!r} is missing or empty")
        for f, declared, fmt in dates:
            value = record.get(f)
            if value is None or value == "" or isinstance(value, dt.date):
                continue
            if not is_date(str(value).strip(), fmt):
                errors.append(f"field {f!r}: {value!r} is not a date in the format {declared}")
        return errors

    @property
    def source_type_name(self) -> str:
        return self.source_type or self.config.source.type or self.name


def load_loader_class(spec: str, base_dir: Path) -> type[Loader]:
    """``path/to/file.py:ClassName`` (relative to the config) or ``package.module:ClassName``."""
    if ":" not in spec:
        raise ConfigError(
            f"loader.class {spec!r}: expected 'file.py:ClassName' or 'module:ClassName'"
        )
    target, _, class_name = spec.rpartition(":")
    where = target
    if not re.match(r"^[A-Za-z_]\w*$", class_name):
        raise ConfigError(f"loader.class {spec!r}: {class_name!r} is not a class name")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_absolute():
            path = base_dir / path
        if not path.is_file():
            raise ConfigError(f"loader.class {spec!r}: file {path} not found")
        where = path.name
        module_name = f"journal_loader_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(module_name)
        if module is None:
            spec_obj = importlib.util.spec_from_file_location(module_name, path)
            if spec_obj is None or spec_obj.loader is None:
                raise ConfigError(f"loader.class {spec!r}: cannot import {path}")
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[module_name] = module
            try:
                spec_obj.loader.exec_module(module)
            except Exception as e:
                del sys.modules[module_name]
                raise ConfigError(f"loader.class {spec!r}: importing {path} failed: {e!r}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ConfigError(f"loader.class {spec!r}: cannot import {target}: {e}") from e
    cls = getattr(module, class_name, None)
    if cls is None:
        found = _loader_classes(module)
        raise ConfigError(
            f"loader.class {spec!r}: class {class_name} not found in {where} (Loader classes "
            f"in that file: {', '.join(found) or 'none'}){did_you_mean(class_name, found)}"
        )
    if not (isinstance(cls, type) and issubclass(cls, Loader)):
        raise ConfigError(
            f"loader.class {spec!r}: {class_name} is not a journal_loader.Loader subclass"
        )
    return cls


def _loader_classes(module: ModuleType) -> list[str]:
    """The Loader subclasses a module defines (not those it imports)."""
    return sorted(
        name
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Loader)
        and value is not Loader
        and value.__module__ == module.__name__
    )
