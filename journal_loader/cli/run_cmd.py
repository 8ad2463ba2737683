"""``journal-loader run``: load one file (the CLI face of ``journal_loader.run``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import msgspec

from journal_loader.cli.common import echo_json, fmt
from journal_loader.ops import observer_options

if TYPE_CHECKING:  # the runner is imported when a command runs, not when the CLI starts
    from journal_loader.runner import RunReport


@click.command(
    "run",
    epilog="""\b
Examples:
  journal-loader run examples/business_registry/loader.yaml
  journal-loader run loader.yaml data/registry_20260101.csv --db postgresql+psycopg://loader@db/graph
  journal-loader run loader.yaml --limit 100        # stops 'partial'; the next run continues
\b
Exit codes: 0 completed, partial (--limit) or already processed; 1 failed (rerun resumes);
2 usage or config error; 75 another run holds this source.""",
)
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("file", required=False, type=click.Path(readable=False))
@click.option(
    "--db",
    metavar="URL",
    help="Database URL (default: $JOURNAL_LOADER_DB_URL, the config's, sqlite:///journal.db).",
)
@click.option(
    "--limit", type=click.IntRange(min=0), help="Process at most N records, then stop as 'partial'."
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Records per transaction (default: config, 1000).",
)
@click.option(
    "--start-from",
    type=click.IntRange(min=0),
    help="Skip (and journal as skipped) the records before offset N.",
)
@click.option("--force", is_flag=True, help="Load a completed source again, as a new load.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
# --quiet, --log-format, --log-file, --metrics-*, --pushgateway, --on-success, --on-failure
@observer_options.options
@click.pass_context
def run_command(
    ctx: click.Context,
    /,
    config: str,
    file: str | None,
    db: str | None,
    limit: int | None,
    batch_size: int | None,
    start_from: int | None,
    force: bool,
    as_json: bool,
    **observer_values: object,
) -> None:
    """Load FILE (default: the config's source.file) as described by CONFIG.

    A completed source is not loaded twice; an interrupted one resumes where its last
    committed batch ended.
    """
    from journal_loader.api import run
    from journal_loader.config import load_config

    cfg = load_config(config)
    observers = observer_options.build_observers(cfg, observer_values, db)
    ctx.call_on_close(lambda: observer_options.close_observers(observers, cfg))
    report = run(
        config=cfg,
        file=file,
        db=db,
        limit=limit,
        batch_size=batch_size,
        start_from=start_from,
        force=force,
        observers=[observers],
    )
    if as_json:
        echo_json({**msgspec.to_builtins(report), "exit_code": report.exit_code})
    else:
        click.echo(summary(report))
    ctx.exit(report.exit_code)


def summary(report: RunReport) -> str:
    from journal_loader.runner import RunStatus

    s = report.statistics
    head = f"{report.source_type}: {report.status}"
    if report.source_id is not None:
        head += f" (source {report.source_id}, version {report.version_label}"
        head += f", run {report.run_id[:8]})" if report.run_id else ")"
    lines = [head, f"  file           {report.file}"]
    if report.message:
        lines.append(f"  note           {report.message}")
    lines += [f"  note           {note}" for note in report.notes]
    if report.status == RunStatus.ALREADY_PROCESSED:
        return "\n".join(lines)
    if report.resumed_from:
        lines.append(f"  resumed at     record {fmt(report.resumed_from)}")
    lines += [
        f"  processed      {fmt(s.total_processed)} records in {report.duration_seconds:.2f} s"
        f" ({_rate(report.records_per_second)} records/s)",
        f"  succeeded      {fmt(s.successful)}",
        f"  failed         {fmt(s.failed)}"
        + (f"   (see: journal-loader dlq list --source {report.source_id})" if s.failed else ""),
        *_failure_lines(report),
        f"  skipped        {fmt(s.skipped)}",
        f"  entities       {fmt(s.entities_created)} created, {fmt(s.entities_matched)} matched",
        f"  relationships  {fmt(s.relationships_created)} created, "
        f"{fmt(s.relationships_duplicate)} duplicate, {fmt(s.relationships_updated)} updated",
        f"  conflicts      {fmt(s.conflicts_detected)}",
    ]
    if s.records_replayed:
        lines.append(
            f"  replayed       {fmt(s.records_replayed)} records proposed again after a crash "
            "or retry (their matches may be the first calls' creations)"
        )
    if report.records_in_file is not None:
        lines.append(f"  records in file {fmt(report.records_in_file)}")
    return "\n".join(lines)


def _failure_lines(report: RunReport) -> list[str]:
    """The run's top three kinds of failure (the rest: ``dlq summary``)."""
    groups = report.failure_groups
    lines = [
        f"    {fmt(g.count):>6}  {g.stage} {g.error_type}: {g.pattern}  (e.g. record "
        f"{g.example_offset}, line {g.example_line})"
        for g in groups[:3]
    ]
    if len(groups) > 3:
        lines.append(
            f"    ... and {len(groups) - 3} more kind(s): journal-loader dlq summary "
            f"--source {report.source_id}"
        )
    return lines


def register(main: click.Group) -> None:
    main.add_command(run_command)


def _rate(per_second: float) -> str:
    """Whole records per second (a tenth below 10: a slow target's rate still shows)."""
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:,.1f}"
