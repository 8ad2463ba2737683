"""``dlq list|summary|show|retry|resolve``: the dead-letter queue."""

from __future__ import annotations

import click
import msgspec

from journal_loader.cli.common import db_options, echo_json, open_db, table


@click.group(
    "dlq",
    epilog="""\b
Examples:
  journal-loader dlq summary --source 1          # what went wrong, grouped
  journal-loader dlq list --source 1             # every entry
  journal-loader dlq show 468                    # one entry: raw input, every attempt
  journal-loader dlq retry -c loader.yaml --source 1 --dry-run""",
)
def dlq_group() -> None:
    """The dead-letter queue: records that failed, with their raw input and errors."""


@dlq_group.command(
    "list",
    epilog="""\b
Examples:
  journal-loader dlq list --source 1
  journal-loader dlq list --stage validate --json""",
)
@db_options
@click.option("--source", "source_id", type=int, help="Only this source.")
@click.option("--stage", type=click.Choice(["read", "parse", "validate", "propose"]))
@click.option("--error-type", help="Only this error type (e.g. ValidationError).")
@click.option("--limit", type=click.IntRange(min=1), help="At most N entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_command(
    db: str | None,
    config_path: str | None,
    source_id: int | None,
    stage: str | None,
    error_type: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List DLQ entries (ID is what show, retry and resolve take)."""
    from journal_loader.audit.base import require_source
    from journal_loader.dlq import list_entries

    store = open_db(db, config_path, read_only=True)
    if source_id is not None:
        require_source(store, source_id)
    rows = list_entries(
        store,
        source_id=source_id,
        stage=stage,
        error_type=error_type,
        limit=limit,
    )
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(
            "the dead-letter queue is empty"
            + (" for that filter" if (source_id or stage or error_type) else "")
        )
    else:
        click.echo(
            table(
                ["id", "source", "offset", "line", "stage", "error", "message", "attempts"],
                [
                    [
                        r["id"],
                        r["source_id"],
                        r["record_offset"],
                        r["line_number"],
                        r["stage"],
                        r["error_type"],
                        _clip(r["error_message"], 70),
                        r["attempts"],
                    ]
                    for r in rows
                ],
            )
        )


@dlq_group.command(
    "summary",
    epilog="""\b
Examples:
  journal-loader dlq summary --source 1
  journal-loader dlq summary --json | jq '.[0]'
\b
Numbers become <n> and quoted values '…' (a quoted name after field, column, key or
attribute stays), so "HO Zip '9021'" and "HO Zip 'ABCDE'" are one group.""",
)
@db_options
@click.option("--source", "source_id", type=int, help="Only this source.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def summary_command(
    db: str | None, config_path: str | None, source_id: int | None, as_json: bool
) -> None:
    """The DLQ grouped by what went wrong: stage, error type and message (with its numbers
    and quoted values folded), largest group first, each with its count, one example entry
    and the first and last run that failed it."""
    from journal_loader.audit.base import require_source
    from journal_loader.failures import summarise

    store = open_db(db, config_path, read_only=True)
    if source_id is not None:
        require_source(store, source_id)
    groups = summarise(store, source_id=source_id)
    if as_json:
        echo_json([msgspec.to_builtins(g) for g in groups])
        return
    scope = f"source {source_id}" if source_id is not None else "all sources"
    if not groups:
        click.echo(f"the dead-letter queue is empty ({scope})")
        return
    total = sum(g.count for g in groups)
    click.echo(f"{total} record(s) in the dead-letter queue ({scope}), {len(groups)} group(s):")
    click.echo(
        table(
            [
                "count",
                "stage",
                "error",
                "message",
                "id",
                "source",
                "offset",
                "first run",
                "last run",
            ],
            [
                [
                    g.count,
                    g.stage,
                    g.error_type,
                    _clip(g.pattern, 70),
                    g.example_id,
                    g.example_source_id,
                    g.example_offset,
                    f"{g.first_run_id[:8]} {g.first_failed_at[:10]}",
                    f"{g.last_run_id[:8]} {g.last_failed_at[:10]}",
                ]
                for g in groups
            ],
        )
    )
    click.echo("one example of each: journal-loader dlq show ID")


@dlq_group.command("show", epilog="Example:\n\n  journal-loader dlq show 1234")
@click.argument("entry_id", type=int)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(entry_id: int, db: str | None, config_path: str | None, as_json: bool) -> None:
    """One entry: raw input, parsed record, every attempt with its error."""
    from journal_loader.dlq import show_entry

    e = show_entry(open_db(db, config_path, read_only=True), entry_id)
    if as_json:
        echo_json(e)
        return
    click.echo(
        f"DLQ entry {e['id']}: source {e['source_id']} ({e['file_name']}, version "
        f"{e['source_version']}), record {e['record_offset']}, line {e['line_number']}, "
        f"bytes {e['byte_start']}-{e['byte_end']}"
    )
    click.echo(f"  stage {e['stage']}: {e['error_type']}: {e['error_message']}")
    click.echo(f"  raw input: {(e['raw_input'] or '').rstrip()}")
    click.echo(f"  parsed record: {e['parsed_record']}")
    click.echo(f"  attempts ({len(e['attempts'])}):")
    for a in e["attempts"]:
        click.echo(
            f"    #{a['position']} {a['recorded_at']:%Y-%m-%d %H:%M:%S} run "
            f"{a['run_id'][:8]} {a['stage']}: {a['error_type']}: {a['message']}"
        )


@dlq_group.command(
    "retry",
    epilog="""\b
Examples (the loader comes from the config; the file is not needed):
  journal-loader dlq retry -c loader.yaml --source 1 --dry-run
  journal-loader dlq retry -c loader.yaml --id 1234 --id 1240""",
)
@db_options
@click.option("--source", "source_id", type=int, help="Retry this source's entries.")
@click.option("--id", "entry_ids", type=int, multiple=True, help="Retry this entry (repeatable).")
@click.option("--dry-run", is_flag=True, help="Say what parse and validate say now; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def retry_command(
    ctx: click.Context,
    db: str | None,
    config_path: str | None,
    source_id: int | None,
    entry_ids: tuple[int, ...],
    dry_run: bool,
    as_json: bool,
) -> None:
    """Re-parse (from the journal's raw bytes), validate and propose failed records again
    with the current loader code. Records that succeed leave the DLQ."""
    from journal_loader.api import make_target, run_options
    from journal_loader.audit.base import require_source
    from journal_loader.config import load_config
    from journal_loader.dlq import retry
    from journal_loader.errors import UsageError
    from journal_loader.factory import loader_from_config

    if not config_path:
        raise UsageError("dlq retry needs the loader's config: -c CONFIG")
    if source_id is None and not entry_ids:
        raise UsageError("say what to retry: --source ID and/or --id ID")
    cfg = load_config(config_path)
    store = open_db(db, None, config=cfg)
    if source_id is not None:
        require_source(store, source_id)
    loader = loader_from_config(cfg)
    target = make_target(store, cfg)
    try:
        report = retry(
            store,
            loader,
            target,
            entry_ids=entry_ids,
            source_id=source_id,
            dry_run=dry_run,
            options=run_options(cfg, loader),
        )
    finally:
        target.close()
    if as_json:
        echo_json(
            [
                {
                    "id": o.entry_id,
                    "source_id": o.source_id,
                    "record_offset": o.record_offset,
                    "outcome": o.outcome,
                    "message": o.message,
                }
                for o in report.outcomes
            ]
        )
    else:
        click.echo(
            table(
                ["id", "source", "offset", "outcome", "message"],
                [
                    [o.entry_id, o.source_id, o.record_offset, o.outcome, _clip(o.message, 80)]
                    for o in report.outcomes
                ],
            )
        )
        if not dry_run:
            click.echo(
                f"{report.count('succeeded')} succeeded (left the DLQ), "
                f"{report.count('failed')} failed again, {report.count('skipped')} "
                f"skipped, {report.count('not retried')} not retried"
            )
    if not dry_run and report.count("failed"):
        ctx.exit(1)


@dlq_group.command(
    "resolve",
    epilog="Example:\n\n  journal-loader dlq resolve 1234 --note "
    '"dissolved in 2019; not to be loaded"',
)
@click.argument("entry_id", type=int)
@db_options
@click.option("--note", required=True, help="Why this record is not to be loaded.")
@click.option("--by", "resolved_by", help="Who decided (default: user@host).")
def resolve_command(
    entry_id: int, db: str | None, config_path: str | None, note: str, resolved_by: str | None
) -> None:
    """Decide that a failed record is not to be loaded: journaled with who and why; it
    leaves the DLQ (the source keeps counting it as failed)."""
    from journal_loader.dlq import resolve

    position = resolve(open_db(db, config_path), entry_id, note, resolved_by)
    click.echo(f"DLQ entry {entry_id} resolved (journal position {position})")


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def register(main: click.Group) -> None:
    main.add_command(dlq_group)
