"""``journal-loader submit`` and ``journal-loader worker``: a fleet of workers on one
PostgreSQL (journal_loader/ops/fleet.py)."""

from __future__ import annotations

import click

from journal_loader.cli.common import db_options, echo_json, table

EXAMPLES_SUBMIT = """\b
Examples:
  journal-loader submit examples/business_registry/loader.yaml incoming/2026-Q1/
  journal-loader submit loader.yaml a.csv b.csv --db postgresql+psycopg://loader@db/graph
  journal-loader submit loader.yaml big.csv --split 8   # one job per chunk, run side by side
\b
One job per file. The files of one source type run one at a time, in version order (then
name); different source types run in parallel. A file still waiting in the queue is not
queued twice. --split N / --chunk-records K: one reading pass plans the file's chunks
(once: submitted again, only the chunks not completed are queued); gzip files stay one
chunk. Exit codes: 0 queued; 2 usage or config error (SQLite has no queue: use
`jobs run DIR --workers N`)."""

EXAMPLES_WORKER = """\b
Examples:
  journal-loader worker --concurrency 2 --db postgresql+psycopg://loader@db/graph
  journal-loader worker --until-empty            # drain the queue, then exit
\b
SIGTERM or Ctrl-C: no new job; running jobs stop after their current batch and are queued
again at once. Jobs left running by a worker silent for --stalled-timeout seconds (killed,
or cut off) are queued again by any worker and resume from their last checkpoint. Exit codes:
0 stopped; 2 usage or config error; 3 this worker found one of its jobs delivered to another
worker (it was unresponsive for too long) and stopped without touching it."""


@click.command("submit", epilog=EXAMPLES_SUBMIT)
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--db",
    metavar="URL",
    help="The queue's and journal's database (default: $JOURNAL_LOADER_DB_URL, the config's).",
)
@click.option(
    "--split",
    type=click.IntRange(min=1, max=100_000),
    help="Split each file into about N chunks of equal size, one job each (not gzip).",
)
@click.option(
    "--chunk-records",
    type=click.IntRange(min=1),
    help="Split each file into chunks of K records, one job each (not gzip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
def submit_command(
    config: str,
    files: tuple[str, ...],
    db: str | None,
    split: int | None,
    chunk_records: int | None,
    as_json: bool,
) -> None:
    """Queue one load job per FILE (or per file of a folder) for the workers.

    A job carries CONFIG's path and the file's path, never a password: each worker runs it
    against its own database (which holds the queue) with the config it finds at that path.
    """
    from journal_loader.config import load_config, resolve_database_url
    from journal_loader.ops import fleet

    url = resolve_database_url(db, load_config(config))
    done = fleet.submit(config, files, url, split=split, chunk_records=chunk_records)
    if as_json:
        echo_json(
            [
                {
                    "file": s.file,
                    "source_type": s.source_type,
                    "version": s.version,
                    "sha256": s.sha256,
                    "job_id": s.job_id,
                    "outcome": s.outcome,
                    "chunk": s.chunk,
                    "note": s.note,
                }
                for s in done
            ]
        )
        return
    click.echo(
        table(
            ["job", "outcome", "type", "version", "chunk", "file"],
            [[s.job_id, s.outcome, s.source_type, s.version, s.chunk, s.file] for s in done],
        )
    )
    for s in done:
        if s.note:
            click.echo(f"{s.file}: not split ({s.note}): one job")
    queued = sum(s.outcome == "queued" for s in done)
    completed = sum(s.outcome == "completed" for s in done)
    click.echo(
        f"{queued} queued, {len(done) - queued - completed} already queued"
        + (f", {completed} chunks already completed" if completed else "")
    )


@click.command("worker", epilog=EXAMPLES_WORKER)
@db_options
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs at a time in this process (threads; for more CPU run a worker per core).",
)
@click.option("--name", help="This worker's name in logs and metrics (default: host-pid).")
@click.option(
    "--stalled-timeout",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds without a worker's heartbeat before its running jobs are queued again.",
)
@click.option(
    "--max-failures",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Failed runs (exit 1) of a job before it is left failed.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds before a failed job's first retry (doubling after each failure).",
)
@click.option("--until-empty", is_flag=True, help="Exit once nothing is queued or running.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), help="Serve /metrics.")
@click.option("--metrics-textfile", type=click.Path(dir_okay=False), help="node_exporter file.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def worker_command(
    ctx: click.Context,
    db: str | None,
    config_path: str | None,
    concurrency: int,
    name: str | None,
    stalled_timeout: float,
    max_failures: int,
    retry_delay: float,
    until_empty: bool,
    metrics_port: int | None,
    metrics_textfile: str | None,
    log_format: str,
    log_level: str,
) -> None:
    """Run queued load jobs (see `submit`) until stopped."""
    from journal_loader.config import load_config, resolve_database_url
    from journal_loader.ops import fleet
    from journal_loader.ops.logs import LogSetup
    from journal_loader.secrets import password_from_url, register_secret

    url = resolve_database_url(db, load_config(config_path) if config_path else None)
    register_secret(password_from_url(url))
    fleet.require_postgres(url)
    options = fleet.WorkerOptions(
        concurrency=concurrency,
        name=name or fleet.default_name(),
        stalled_timeout=stalled_timeout,
        max_failures=max_failures,
        retry_delay=retry_delay,
        until_empty=until_empty,
        metrics_port=metrics_port,
        metrics_textfile=metrics_textfile,
    )
    logs = LogSetup(loader=f"worker {options.name}", level=log_level.upper(), fmt=log_format)
    try:
        code = fleet.run_worker(url, options)
    finally:
        logs.close()
    ctx.exit(code)


def register(main: click.Group) -> None:
    main.add_command(submit_command)
    main.add_command(worker_command)
