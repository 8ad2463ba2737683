"""Reading a config: YAML, ``${VAR}`` expansion, validation into ``Config``, and error
messages that name the key, suggest the key meant, and never show a secret."""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from journal_loader.config.sections import Config
from journal_loader.errors import ConfigError
from journal_loader.secrets import MASK, mask_url, password_from_url, scrub
from journal_loader.suggest import did_you_mean


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
