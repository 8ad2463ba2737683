"""What ``journal-loader config check`` shows and refuses beyond the schema itself."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from journal_loader.config import Config
from journal_loader.secrets import MASK, mask_url, scrub

if TYPE_CHECKING:
    from journal_loader.graph.target import FactRecorder
    from journal_loader.loader import Loader

_SECRET_KEYS = ("password",)


def masked(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain data: secrets as ***, URLs without their password."""
    data: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True, exclude_none=False)

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if key in _SECRET_KEYS and value is not None:
            return MASK
        if isinstance(value, str):
            return scrub(mask_url(value))
        return value

    result: dict[str, Any] = walk(data)
    return result


def unexpanded(cfg: Config, source: str = "config") -> list[str]:
    """Key paths whose resolved value still holds ``${``: a reference the interpolation could
    not expand (a nested ``${A:-${B}}``, a malformed ``${1X}``). It must not reach a driver."""
    problems: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, str) and "${" in value:
            shown = MASK if path.endswith("password") else repr(scrub(value))[:60]
            problems.append(
                f"{source}: {path}: unexpanded variable reference in {shown}: write "
                "${NAME} or ${NAME:-default} (a default cannot hold another ${...})"
            )

    data = cfg.model_dump(mode="python", by_alias=True)
    if cfg.database.password is not None:
        data.setdefault("database", {})["password"] = cfg.database.password.get_secret_value()
    walk(data, "")
    return problems


SAMPLE_RECORDS = 20  # records of the file that `config check` runs the loader on


class FileCheck:
    """What ``check_against_file`` found: problems (errors), warnings, and what it read."""

    def __init__(self, note: str, problems: list[str] | None = None) -> None:
        self.note = note
        self.problems = problems or []
        self.warnings: list[str] = []


def check_against_file(cfg: Config, loader: Loader, path: str) -> FileCheck:
    """Problems the config and its loader would have with the file at ``path``, found by
    reading its header and running the loader's ``parse`` (and a planning pass of
    ``propose``) on its first records, writing nothing. Errors are what would fail every
    record of a run: a column the loader or the facts: mapping reads that the file does not
    have, a required_fields entry the loader's records do not have, a date format the
    values are not in, a node or relationship type the graph: section does not list. A
    date_fields entry the records do not have is a warning: the rule never applies (a
    field the loader sets only sometimes is legitimate)."""
    from journal_loader.errors import ConfigError, JournalLoaderError, SkipRecord, error_type_of
    from journal_loader.graph.target import FactRecorder
    from journal_loader.runner import Stage, describe_error
    from journal_loader.sources.readers import open_reader

    try:
        reader = open_reader(path, cfg.source.reader_options())
    except JournalLoaderError as e:
        return FileCheck("unreadable", [str(e)])
    raws: list[dict[str, Any]] = []
    with reader:
        try:
            for rec in reader:
                if rec.data is not None:
                    raws.append(rec.data)
                if len(raws) >= SAMPLE_RECORDS:
                    break
        except JournalLoaderError as e:
            return FileCheck("unreadable", [str(e)])
        header = reader.header
    columns = list(header) if header is not None else list(raws[0]) if raws else []
    note = f"{len(raws)} record(s) read, {len(columns)} column(s)"
    if not raws:
        return FileCheck(note + " (no records to check the loader on)")

    parsed: list[dict[str, Any]] = []
    failures: list[str] = []
    for raw in raws:
        try:
            record = loader.parse(raw)
        except SkipRecord:
            continue
        except ConfigError as e:  # the facts: mapping names a column the file lacks
            return FileCheck(note, [f"{path}: {e}"])
        except KeyError as e:
            message = describe_error(e, raw, Stage.PARSE)
            if message.startswith("no column"):
                problem = f"{path}: the loader reads a column the file does not have: {message}"
                return FileCheck(note, [problem])
            failures.append(f"{type(e).__name__}: {message}")
            continue
        except Exception as e:
            failures.append(f"{error_type_of(e)}: {describe_error(e, raw, Stage.PARSE)}")
            continue
        if record is not None:
            parsed.append(record)
    if failures and not parsed and len(set(failures)) == 1:
        return FileCheck(
            note,
            [
                f"{path}: the loader's parse fails on each of the first {len(failures)} "
                f"records: {failures[0]}"
            ],
        )
    check = FileCheck(note)
    _check_records(cfg, loader, parsed, FactRecorder(), check)
    return check


def _check_records(
    cfg: Config,
    loader: Loader,
    parsed: list[dict[str, Any]],
    recorder: FactRecorder,
    check: FileCheck,
) -> None:
    from journal_loader.loader import parse_date, strptime_format
    from journal_loader.suggest import did_you_mean

    problems = check.problems
    if not parsed:
        return
    fields = list(dict.fromkeys(k for record in parsed for k in record))
    listed = ", ".join(fields)
    rules = cfg.validation
    for name in rules.required_fields:
        if name not in fields:
            problems.append(
                f"validation.required_fields: {name!r} is not a field of the loader's records "
                f"(fields: {listed}){did_you_mean(name, fields)}"
            )
    for name, declared in rules.date_fields.items():
        if name not in fields:
            check.warnings.append(
                f"validation.date_fields: {name!r} is not a field of the loader's first "
                f"records (fields: {listed}){did_you_mean(name, fields)}; the rule never "
                "applies to them"
            )
            continue
        fmt = strptime_format(declared)
        values = [
            str(v).strip()
            for r in parsed
            if (v := r.get(name)) not in (None, "") and not isinstance(v, dt.date)
        ]
        if values and not any(parse_date(v, fmt) is not None for v in values):
            problems.append(
                f"validation.date_fields.{name}: none of the {len(values)} value(s) in the "
                f"first records is a date in the format {declared} (e.g. {values[0]!r}); "
                "every record would fail"
            )
    node_types, rel_types = cfg.graph.node_types, cfg.graph.relationship_types
    for record in parsed:
        try:
            if not loader.validate(record):  # a record that fails validate is not proposed
                loader.propose(record, recorder)
        except Exception:  # noqa: S112 - a record's own problem; the run reports those
            continue
    seen: set[str] = set()
    for src, relationship, tgt in recorder.facts:
        for kind, name, allowed in (
            ("node", src.type, node_types),
            ("node", tgt.type, node_types),
            ("relationship", relationship, rel_types),
        ):
            if allowed is not None and name not in allowed and name not in seen:
                seen.add(name)
                problems.append(
                    f"graph.{kind}_types: the loader proposes {kind} type {name!r}, which is "
                    f"not one of {', '.join(allowed)}{did_you_mean(name, allowed)}; every "
                    "record with it would fail"
                )
