"""``journal-loader config check`` and ``journal-loader jobs run``. (The operations options
of ``run``, --quiet, --log-*, --metrics-*, --pushgateway and --on-*, are ``run``'s own:
``cli/run_cmd.py`` takes them from ``journal_loader.ops.observer_options``.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

if TYPE_CHECKING:
    from journal_loader.config import Config
    from journal_loader.loader import Loader
    from journal_loader.ops.jobs import JobResult

EXAMPLES_CONFIG = """\b
Examples:
  journal-loader config check examples/business_registry/loader.yaml
  journal-loader config check loader.yaml data/registry_20260101.csv   # against this file
  DB_PASSWORD=secret journal-loader config check /etc/journal-loader/registry.yaml
\b
Exit codes: 0 the config is valid; 2 it is not (each problem names its key)."""

EXAMPLES_JOBS = """\b
Examples:
  journal-loader jobs run /etc/journal-loader/daily.d
  journal-loader jobs run jobs.d --quiet --metrics-textfile-dir /var/lib/node_exporter/tc
  journal-loader jobs run jobs.d --workers 2     # one source type at a time, types in parallel
\b
Exit codes: 0 every job ok (a job whose source another run holds counts as skipped, not
failed); 1 one or more jobs failed; 2 no config in the folder."""


@click.group("config", epilog=EXAMPLES_CONFIG)
def config_group() -> None:
    """Validate config files."""


@config_group.command("check", epilog=EXAMPLES_CONFIG)
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--no-loader", is_flag=True, help="Do not import the loader class to check it.")
def config_check(config: str, file: str | None, no_loader: bool) -> None:
    """Validate CONFIG and print it resolved (variables expanded, secrets masked as ***).

    Unknown keys, wrong types, a missing environment variable, a date format no value can
    match and a loader class that cannot be imported are errors; each names the key. With
    FILE (default: the config's source.file, when it is there), the loader also runs on
    the file's first records, writing nothing: a column it reads that the file lacks, a
    required_fields / date_fields entry its records lack, dates not in the declared format
    and node or relationship types the graph: section does not list are errors too.
    """
    from journal_loader.config import load_config, resolve_database
    from journal_loader.errors import ConfigError
    from journal_loader.ops.configcheck import check_against_file, masked, unexpanded
    from journal_loader.secrets import mask_url, scrub

    cfg = load_config(config)
    problems = unexpanded(cfg, config)
    if problems:
        raise ConfigError("\n".join(problems))
    loader_note = "(not imported: --no-loader)"
    loader = None
    if not no_loader:
        loader, loader_note = _check_loader(cfg, config)
    path = cfg.source_path(file)
    if path is None:
        file_note = "-"
    elif not Path(path).is_file():
        if file is not None:
            raise ConfigError(f"{file}: file not found")
        file_note = f"{path} (missing: not checked against a file)"
    elif loader is None:
        file_note = f"{path} (found; not checked: --no-loader)"
    else:
        found = check_against_file(cfg, loader, path)
        for warning in found.warnings:
            click.echo(f"warning: {config}: {scrub(warning)}", err=True)
        if found.problems:
            raise ConfigError("\n".join(f"{config}: {p}" for p in found.problems))
        file_note = f"{path} (found; checked: {found.note})"
    url, origin = resolve_database(None, cfg)
    click.echo(f"# {config}: valid")
    click.echo(f"# database: {scrub(mask_url(url))} (from {origin})")
    click.echo(f"# source file: {scrub(file_note)}")
    click.echo(f"# loader: {scrub(loader_note)}")
    # masked() scrubbed each value already (scrubbing the YAML would mask "password: null")
    click.echo(yaml.safe_dump(masked(cfg), sort_keys=False, allow_unicode=True).rstrip())


def _check_loader(cfg: Config, config: str) -> tuple[Loader, str]:
    from journal_loader.errors import ConfigError
    from journal_loader.factory import loader_from_config

    try:
        loader = loader_from_config(cfg)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"{config}: loader.class: cannot load the loader: {type(e).__name__}: {e}"
        ) from None
    spec = cfg.loader.class_ or "facts:"
    return loader, f"{spec}: {type(loader).__name__} imported (name {loader.name})"


@click.group("jobs", epilog=EXAMPLES_JOBS)
def jobs_group() -> None:
    """Run a folder of configs (for cron and systemd timers)."""


@jobs_group.command("run", epilog=EXAMPLES_JOBS)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option(
    "--db",
    metavar="URL",
    help="Database URL for every job (default: as for run: $JOURNAL_LOADER_DB_URL, each config's).",
)
@click.option("--quiet", "-q", is_flag=True, help="Pass --quiet to every job.")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Every job's log format.")
@click.option(
    "--metrics-textfile-dir",
    type=click.Path(file_okay=False),
    help="Each job writes DIR/journal_loader_<config name>.prom (node_exporter textfiles).",
)
@click.option("--pushgateway", metavar="URL", help="Every job pushes its metrics here.")
@click.option("--on-success", metavar="CMD", help="Passed to every job (see `run --help`).")
@click.option("--on-failure", metavar="CMD", help="Passed to every job (see `run --help`).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    help="Stop a job after this many seconds (SIGTERM, then SIGKILL); it counts as failed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at once (one source type at a time, in name order).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def jobs_run(
    ctx: click.Context,
    folder: str,
    db: str | None,
    quiet: bool,
    log_format: str | None,
    metrics_textfile_dir: str | None,
    pushgateway: str | None,
    on_success: str | None,
    on_failure: str | None,
    timeout: float | None,
    workers: int,
    as_json: bool,
) -> None:
    """Run every *.yaml / *.yml config in FOLDER, in name order, each in its own process.

    A failing job does not stop the others. Ends with a table of what each job did.
    """
    from journal_loader.ops import jobs
    from journal_loader.secrets import password_from_url, register_secret

    args: list[str] = []
    if db:
        register_secret(password_from_url(db))
        args += ["--db", db]
    if quiet:
        args.append("--quiet")
    if log_format:
        args += ["--log-format", log_format]
    if pushgateway:
        args += ["--pushgateway", pushgateway]
    if on_success:
        args += ["--on-success", on_success]
    if on_failure:
        args += ["--on-failure", on_failure]

    def per_job(config: Path) -> list[str]:
        if not metrics_textfile_dir:
            return []
        return [
            "--metrics-textfile",
            str(Path(metrics_textfile_dir) / f"journal_loader_{config.stem}.prom"),
        ]

    results = jobs.run_all(folder, args, timeout=timeout, per_job_args=per_job, workers=workers)
    if as_json:
        from journal_loader.cli.common import echo_json

        echo_json([r.as_dict() for r in results])
    else:
        click.echo(_summary_table(results))
    ctx.exit(jobs.exit_code(results))


def _summary_table(results: Sequence[JobResult]) -> str:
    from journal_loader.cli.common import table
    from journal_loader.ops.jobs import LOCKED

    rows = []
    for r in results:
        stats = (r.report or {}).get("statistics") or {}
        rows.append(
            [
                r.config.name,
                r.outcome,
                r.exit_code,
                stats.get("total_processed", "-") if r.report else "-",
                stats.get("failed", "-") if r.report else "-",
                round(r.seconds, 1),
                r.note[:80],
            ]
        )
    text = table(["job", "outcome", "exit", "records", "failed", "seconds", "note"], rows)
    failed = sum(r.failed for r in results)
    locked = sum(r.exit_code == LOCKED for r in results)
    ok = len(results) - failed - locked
    return f"{text}\n{len(results)} jobs: {ok} ok, {failed} failed, {locked} skipped (locked)"


def register(main: click.Group) -> None:
    main.add_command(config_group)
    main.add_command(jobs_group)
