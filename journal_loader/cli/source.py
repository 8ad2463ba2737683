"""``journal-loader source``: operations on one source (``abandon``)."""

from __future__ import annotations

import click

from journal_loader.cli.common import db_options, open_db


@click.group("source")
def source_group() -> None:
    """Operations on one source.

    \b
    Example:
      journal-loader source abandon 3 --reason "file replaced by the corrected export"
    """


@source_group.command(
    "abandon",
    epilog="Example:\n\n  journal-loader source abandon 3 --reason "
    '"file replaced by the corrected export"',
)
@click.argument("source_id", type=int)
@db_options
@click.option("--reason", required=True, help="Why the load is not to be finished.")
def abandon_command(source_id: int, db: str | None, config_path: str | None, reason: str) -> None:
    """Retire a source whose load did not finish (killed, failed or partial) and will not be
    finished: journals SourceAbandoned and deletes nothing. Its facts stay in the graph with
    their provenance, its failures in the DLQ; `status` shows it ABANDONED and `status
    --stalled` ignores it. A source a run is loading right now cannot be abandoned (exit 75).
    A run of a new version of the same file does this by itself (see the README)."""
    from journal_loader.abandon import abandon

    done = abandon(open_db(db, config_path), source_id, reason)
    if done.already:
        click.echo(f"source {source_id} ({done.file_name}) was abandoned already")
        return
    click.echo(
        f"source {source_id} ({done.file_name}) abandoned: it was {done.status_before}, "
        f"left at record {done.next_offset:,}"
    )


def register(main: click.Group) -> None:
    main.add_command(source_group)
