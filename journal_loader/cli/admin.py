"""``projections rebuild`` and ``db upgrade``."""

from __future__ import annotations

import click

from journal_loader.cli.common import db_options, fmt, open_db


@click.group(
    "projections",
    epilog="""\b
Example:
  journal-loader projections rebuild --check""",
)
def projections_group() -> None:
    """The projections (sources, failed_records) derived from the journal."""


@projections_group.command(
    "rebuild",
    epilog="""\b
Examples:
  journal-loader projections rebuild --check    # exit 1 if rebuilt != live
  journal-loader projections rebuild            # replace them from the journal""",
)
@db_options
@click.option(
    "--check", is_flag=True, help="Rebuild into scratch tables and compare; change nothing."
)
@click.pass_context
def rebuild_command(
    ctx: click.Context, db: str | None, config_path: str | None, check: bool
) -> None:
    """Rebuild the projections from the journal with set-based SQL."""
    import time

    from journal_loader.projections import rebuild

    store = open_db(db, config_path)
    started = time.monotonic()
    report = rebuild(store, check=check)
    took = time.monotonic() - started
    counts = ", ".join(f"{name} {fmt(n)} rows" for name, n in report.rows.items())
    if not check:
        click.echo(f"rebuilt from the journal in {took:.2f} s: {counts}")
        return
    if report.ok:
        click.echo(f"projections match the journal ({counts}; checked in {took:.2f} s)")
        return
    click.echo(
        f"projections differ from the journal ({len(report.differences)} rows shown):", err=True
    )
    for d in report.differences:
        click.echo(f"  {d.projection} [{d.side}]: {d.row}", err=True)
    ctx.exit(1)


@click.group(
    "db",
    epilog="""\b
Example:
  journal-loader db upgrade --db postgresql+psycopg://owner@db/graph""",
)
def db_group() -> None:
    """The database schema."""


@db_group.command(
    "upgrade",
    epilog="Example:\n\n  journal-loader db upgrade --db postgresql+psycopg://loader@db/graph",
)
@db_options
def upgrade_command(db: str | None, config_path: str | None) -> None:
    """Apply the migrations (also done automatically on first use; on an empty database,
    create the schema); on PostgreSQL, also install the job queue's tables (procrastinate's
    schema) for `submit` and `worker`."""
    store = open_db(db, config_path, upgrade=False, check=False, create=True)
    before = store.current_revision()
    store.ensure_schema(upgrade=True)  # refuses a schema newer than this journal-loader
    after = store.current_revision()
    click.echo(
        f"{store.display_url}: schema {before or 'empty'} -> {after}"
        if before != after
        else f"{store.display_url}: schema up to date ({after})"
    )
    from journal_loader.storage.queue_store import supports_job_queue

    if supports_job_queue(store):
        from journal_loader.ops.job_queue import install_queue

        click.echo(f"{store.display_url}: {install_queue(store)}")


def register(main: click.Group) -> None:
    main.add_command(projections_group)
    main.add_command(db_group)
