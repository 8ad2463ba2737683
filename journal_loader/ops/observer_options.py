"""The operations options of ``journal-loader run`` and the observers they build.

The CLI's ``run`` (cli/run_cmd.py) asks for them by name: ``options`` adds --quiet, --log-*,
--metrics-*, --pushgateway and --on-* to the command, ``build_observers`` turns their values
and the config into one ``ObserverGroup`` (logs first, so every later line carries the run's
ids, then progress, metrics and hooks), and ``close_observers`` releases it when the command
ends. Options override the config (``logging``, ``metrics``, ``hooks`` sections); relative
paths in the config are relative to the config file, on the command line to the current
directory. Nothing here knows the command line's own modules: ops never imports cli.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from click.exceptions import Exit

from journal_loader.config import Config, resolve_database_url
from journal_loader.ops.hooks import HooksObserver
from journal_loader.ops.logs import LogSetup
from journal_loader.ops.metrics import MetricsObserver, StoreDlqProbe
from journal_loader.ops.observers import ObserverGroup
from journal_loader.ops.progress import ProgressObserver
from journal_loader.secrets import scrub

F = TypeVar("F", bound=Callable[..., Any])


def options(fn: F) -> F:
    """The command's options that choose its observers; their values go to
    ``build_observers``."""
    decorators = [
        click.option(
            "--quiet",
            "-q",
            is_flag=True,
            help="No progress and no log below ERROR: only the summary.",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            help="Log lines as text or JSON lines (default: the config's logging.format).",
        ),
        click.option(
            "--log-file",
            type=click.Path(dir_okay=False),
            help="Also log to this file, rotated at logging.max_size, keeping logging.retention.",
        ),
        click.option(
            "--metrics-port",
            type=click.IntRange(0, 65535),
            help="Serve Prometheus /metrics on this port while the run lasts (0: any free port).",
        ),
        click.option(
            "--metrics-textfile",
            type=click.Path(dir_okay=False),
            help="Write metrics to this node_exporter textfile (atomically, every batch).",
        ),
        click.option(
            "--pushgateway",
            metavar="URL",
            help="Push metrics to this Prometheus pushgateway at the end of the run.",
        ),
        click.option(
            "--on-success",
            metavar="CMD",
            help="Run CMD when the run exits 0, with the summary JSON on its stdin.",
        ),
        click.option(
            "--on-failure",
            metavar="CMD",
            help="Run CMD when the run fails (exit 1), with the summary JSON on its stdin.",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _config_path(config: Config, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    return path if path.is_absolute() else config.base_dir / path


def build_observers(config: Config, extra: Mapping[str, Any], db: str | None) -> ObserverGroup:
    """The run's observers from the config and the values of ``options`` (``db``: the
    command's --db, for the metrics' DLQ probe). Close them with ``close_observers``."""
    quiet = bool(extra.get("quiet"))
    loader = config.loader.name
    lc = config.logging
    log_file = Path(extra["log_file"]) if extra.get("log_file") else _config_path(config, lc.file)
    logs = LogSetup(
        loader=loader,
        level=lc.level,
        fmt=extra.get("log_format") or lc.format,
        file=log_file,
        max_bytes=lc.max_bytes,
        retention=lc.retention,
        console_level="ERROR" if quiet else None,
    )
    group = ObserverGroup([logs])
    try:
        if not quiet:
            progress = ProgressObserver(loader=loader, interval=lc.progress_interval)
            if progress.tty:
                logs.console.around_emit = progress.around_emit
            group.members.append(progress)
        mc = config.metrics
        port = extra.get("metrics_port")
        port = mc.port if port is None else port
        textfile = (
            Path(extra["metrics_textfile"])
            if extra.get("metrics_textfile")
            else _config_path(config, mc.textfile)
        )
        pushgateway = extra.get("pushgateway") or mc.pushgateway
        if port is not None or textfile is not None or pushgateway:
            group.members.append(
                MetricsObserver(
                    loader,
                    port=port,
                    address=mc.address,
                    textfile=textfile,
                    pushgateway=pushgateway,
                    job=mc.job,
                    dlq_probe=StoreDlqProbe(resolve_database_url(db, config)),
                    dlq_every=mc.dlq_every,
                )
            )
        hc = config.hooks
        on_success = extra.get("on_success") or hc.on_success
        on_failure = extra.get("on_failure") or hc.on_failure
        if on_success or on_failure:
            group.members.append(
                HooksObserver(
                    loader=loader,
                    on_success=on_success,
                    on_failure=on_failure,
                    timeout=hc.timeout,
                )
            )
    except BaseException:
        group.close()
        raise
    return group


def close_observers(group: ObserverGroup, config: Config) -> None:
    """At the command's end: the CLI calls it when the command's context closes. A run that
    failed before the runner started (database down, file missing, schema too new) never
    reached ``on_finish``: give the observers a failed report now, so the failure hook still
    runs and the metrics still say so. The error is still on its way out here (the context
    closes in its ``__exit__``), so observers see its exit code."""
    error = sys.exc_info()[1]
    if not group.finished and isinstance(error, Exception) and not isinstance(error, Exit):
        from journal_loader.runner import RunReport, RunStatus

        group.on_finish(
            RunReport(
                status=RunStatus.FAILED,
                message=scrub(str(error) or type(error).__name__),
                source_type=config.source.type,
                file=config.source_path() or "",
            )
        )
    group.close()
