"""What ``journal-loader config check`` shows and refuses beyond the schema itself."""

from __future__ import annotations

from typing import Any

from journal_loader.config import Config
from journal_loader.secrets import MASK, mask_url, scrub

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
