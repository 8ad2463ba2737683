"""Audit commands: ``lineage``, ``verify``, ``export``, ``replay``, and ``status --as-of``.

``register(main)`` adds the commands, and the ``--as-of`` option to the existing ``status``
command (without the option, ``status`` behaves exactly as before).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

import click

from journal_loader.cli.common import db_options, echo_json, fmt, open_db, table
from journal_loader.errors import UsageError

# --- lineage --------------------------------------------------------------------------------


@click.group(
    "lineage",
    epilog="""\b
Examples: why does the graph say this agent represents that company?
  journal-loader lineage relationship 5            # every record that asserted it
  journal-loader lineage relationship 5 --json --check-files
  journal-loader lineage node 3 --limit 10
  journal-loader lineage node 01JD6Q4M8Z3V5X7B9C1E2F3G4H -c loader.yaml
      # a Propose API deployment's id: the journal's answers, and the deployment's own
      # provenance rows when the config names it""",
)
def lineage_group() -> None:
    """From a node, attribute or relationship of the graph to the records that asserted it:
    source file, version, line, bytes, run and time, with the raw input, oldest first."""


_LINEAGE_EXAMPLES = {
    "node": """\b
Examples: which records made node 7 (a company), and are their bytes still in the file?
  journal-loader lineage node 7
  journal-loader lineage node 7 --check-files --json
  journal-loader lineage node 3 --limit 10         # a state: many records, the first 10
  journal-loader lineage node 01JD6Q4M8Z3V5X7B9C1E2F3G4H -c loader.yaml
      # a Propose API deployment's id (the journal's answers naming it)""",
    "attribute": """\b
Examples: where did attribute 10 (a company's effective_date) come from?
  journal-loader lineage attribute 10
  journal-loader lineage attribute 10 --json""",
    "relationship": """\b
Examples: why does the graph say this agent represents that company?
  journal-loader lineage relationship 9
  journal-loader lineage relationship 9 --check-files --json
  journal-loader lineage relationship 01JD6Q4M8Z3V5X7B9C1E2F3G4H -c loader.yaml
      # a Propose API deployment's id: the journal's answers, and the deployment's own
      # provenance rows when the config names it""",
}


def _lineage_command(kind: str) -> click.Command:
    @click.command(
        kind,
        help=f"Every record that asserted {kind} ID, oldest first.",
        epilog=_LINEAGE_EXAMPLES[kind],
    )
    @click.argument("subject_id", metavar="ID")
    @db_options
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.option(
        "--limit",
        type=click.IntRange(min=1),
        help="Show at most N assertions (the total is still counted).",
    )
    @click.option(
        "--check-files",
        is_flag=True,
        help="Read each record's bytes from its source file (if it is still there and "
        "unchanged) and say whether they are the journaled ones.",
    )
    def command(
        subject_id: str,
        db: str | None,
        config_path: str | None,
        as_json: bool,
        limit: int | None,
        check_files: bool,
    ) -> None:
        from journal_loader.audit.lineage import lineage

        store = open_db(db, config_path, read_only=True)
        result = lineage(store, kind, subject_id, limit=limit, check_files=check_files)
        deployment = _deployment_provenance(store, config_path, kind, subject_id)
        if as_json:
            out = result.to_json()
            if deployment is not None:
                out["deployment_provenance"] = deployment
            echo_json(out)
            return
        click.echo(f"{kind} {subject_id}: {result.subject['description']}")
        shown = len(result.assertions)
        more = f", the first {shown} shown" if shown < result.total else ""
        click.echo(f"asserted by {result.total} record(s), oldest first{more}")
        for i, a in enumerate(result.assertions, 1):
            when = "-" if a.recorded_at is None else f"{a.recorded_at:%Y-%m-%d %H:%M:%S} UTC"
            click.echo(
                f"\n{i}. source {a.source_id}: {a.file_name} ({a.source_type}, version "
                f"{a.version}, sha256 {(a.file_hash or '')[:12]})"
            )
            click.echo(
                f"   record {a.record_offset}, line {fmt(a.line)}, bytes "
                f"{fmt(a.byte_start)}-{fmt(a.byte_end)}, run {a.run_id[:8]}, {when}, "
                f"position {fmt(a.position)}"
            )
            answer = ", ".join(str(act.get("action")) for act in a.actions) or "-"
            click.echo(f"   graph: {answer} (fact {a.fact_index}, confidence {a.confidence})")
            if a.replay:
                click.echo(
                    "   replay: proposed again after a crash; the first call's answer was not "
                    "journaled (a match here may be that call's creation)"
                )
            if a.raw is not None:
                text = a.raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
                click.echo(f"   raw:   {text}")
            if a.file_check is not None:
                click.echo(f"   file:  {a.file_check}")
        if deployment is not None:
            click.echo(f"\nthe Propose API's own provenance: {len(deployment)} row(s)")
            for row in deployment:
                click.echo("   " + ", ".join(f"{k} {v}" for k, v in row.items()))

    return command


def _deployment_provenance(
    store: Any, config_path: str | None, kind: str, subject_id: str
) -> list[dict[str, Any]] | None:
    """With a config that names a Propose API deployment: its own provenance rows of the
    subject, where it has a provenance table to read (None otherwise)."""
    if not config_path:
        return None
    from journal_loader.config import load_config
    from journal_loader.graph.postgres_client import PostgresProposeClient

    config = load_config(config_path)
    if config.graph.propose_api is None or not store.is_server:
        return None
    with PostgresProposeClient.from_config(store, config) as client:
        return client.deployment_provenance(kind, subject_id)


for _kind in ("node", "relationship", "attribute"):
    lineage_group.add_command(_lineage_command(_kind))


# --- verify ---------------------------------------------------------------------------------


@click.command(
    "verify",
    epilog="""\b
Examples:
  journal-loader verify                                  # every chain; exit 1 on any break
  journal-loader verify --source 3
  journal-loader verify --export-heads heads-2026-01-31.json   # keep it outside the database
  journal-loader verify --against heads-2026-01-31.json        # tail deletions, rewrites
\b
Exit codes: 0 intact; 1 a break (the first broken position is printed); 2 usage.""",
)
@db_options
@click.option("--source", "source_id", type=int, help="Verify one source's chain only.")
@click.option(
    "--export-heads",
    "export_path",
    type=click.Path(dir_okay=False),
    help="After a successful verification, write the chain heads (source, position, hash).",
)
@click.option(
    "--against",
    "against_path",
    type=click.Path(dir_okay=False),
    help="Also check the journal still holds the heads in this file, unchanged.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def verify_command(
    ctx: click.Context,
    db: str | None,
    config_path: str | None,
    source_id: int | None,
    export_path: str | None,
    against_path: str | None,
    as_json: bool,
) -> None:
    """Recompute the journal's hash chains and report the first broken position.

    Each event's hash covers the previous hash of its source and the event's canonical
    bytes: an edited event breaks its own hash, a deleted one the next event's prev_hash.
    Deleting a source's last events leaves a valid shorter chain: keep the heads from
    --export-heads outside the database and check them with --against.
    """
    from journal_loader.audit.verify import read_heads, verify, write_heads

    against = read_heads(against_path) if against_path else None
    store = open_db(db, config_path, read_only=True)
    report = verify(store, source_id=source_id, against=against)
    if report.ok and export_path:
        write_heads(export_path, report)
    if as_json:
        echo_json(
            {
                **report.to_json(),
                **({"heads_written": export_path} if report.ok and export_path else {}),
            }
        )
    else:
        scope = f"source {source_id}" if source_id is not None else f"{len(report.heads)} source(s)"
        if report.ok:
            click.echo(
                f"journal intact: {fmt(report.events)} events, {scope}, chains verified in "
                f"{report.seconds:.2f} s"
                + (f"; {report.heads_checked} exported head(s) present" if against else "")
            )
            if export_path:
                click.echo(f"heads of {len(report.heads)} source(s) written to {export_path}")
        else:
            first = report.first_break
            assert first is not None
            click.echo(
                f"journal BROKEN: first broken position {first.position} (source "
                f"{first.source_id}); {report.total_breaks} break(s) in {fmt(report.events)} "
                f"events, {scope}",
                err=True,
            )
            for b in sorted(report.breaks, key=lambda b: b.position):
                click.echo(f"  {b.kind}: {b.message}", err=True)
            if report.total_breaks > len(report.breaks):
                click.echo(f"  ... and {report.total_breaks - len(report.breaks)} more", err=True)
            if export_path:
                click.echo(f"heads NOT written to {export_path}: the journal is broken", err=True)
    if not report.ok:
        ctx.exit(1)


# --- export ---------------------------------------------------------------------------------


@click.command(
    "export",
    epilog="""\b
Examples:
  journal-loader export --format jsonl > journal.jsonl
  journal-loader export --source 3 --from 120000 --format jsonl -o source3.jsonl
\b
One JSON object per line: the envelope (position, source_id, record_offset, event_type,
schema_version, run_id, recorded_at), prev_hash and hash (hex), and payload: the stored JSON
text, as a string, so each hash can be recomputed from the export alone.""",
)
@db_options
@click.option("--source", "source_id", type=int, help="Only this source's events.")
@click.option(
    "--from",
    "from_position",
    type=click.IntRange(min=0),
    default=0,
    help="Start at this journal position (inclusive).",
)
@click.option(
    "--format", "fmt_name", type=click.Choice(["jsonl"]), default="jsonl", show_default=True
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write here instead of stdout.",
)
def export_command(
    db: str | None,
    config_path: str | None,
    source_id: int | None,
    from_position: int,
    fmt_name: str,
    output: str,
) -> None:
    """Stream the journal's events with their hashes (constant memory)."""
    from journal_loader.audit.export import export_events

    store = open_db(db, config_path, read_only=True)
    if output == "-":
        try:
            export_events(
                store, sys.stdout.buffer, source_id=source_id, from_position=from_position
            )
        except BrokenPipeError:  # `export | head`: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return
    with open(output, "wb") as f:
        n = export_events(store, f, source_id=source_id, from_position=from_position)
    click.echo(f"{fmt(n)} events written to {output}", err=True)


# --- replay ---------------------------------------------------------------------------------


@click.command(
    "replay",
    epilog="""\b
Examples: the projections as they stood at position 120000, or at a time, for SQL:
  journal-loader replay --until 120000 --into sqlite:///audit-120000.db
  journal-loader replay --until 2026-01-31T12:00:00Z \\
      --into 'postgresql+psycopg://auditor@db/graph?options=-csearch_path%3Daudit'
\b
A time without a zone is UTC; a date alone is 00:00 UTC that day.""",
)
@db_options
@click.option(
    "--until",
    "until",
    required=True,
    metavar="TIME|POSITION",
    help="The moment: a journal position, or an ISO 8601 time.",
)
@click.option(
    "--into",
    "into_url",
    required=True,
    metavar="URL",
    help="The database (or schema) to write into; migrated first; its journal must be empty.",
)
def replay_command(db: str | None, config_path: str | None, until: str, into_url: str) -> None:
    """Write the projections (sources, failed_records) as of a moment into another database,
    computed from the journal up to that moment."""
    from journal_loader.audit.asof import replay
    from journal_loader.audit.cut import parse_cut

    cut = parse_cut(until)
    store = open_db(db, config_path, read_only=True)
    report = replay(store, cut, into_url)
    counts = ", ".join(f"{name} {fmt(n)} rows" for name, n in report.rows.items())
    click.echo(
        f"{report.into}: projections as of {_moment(report.position, report.time)}: {counts}"
    )


def _moment(position: int | None, time: dt.datetime | None) -> str:
    if position is None:
        return "the start (no events yet)"
    return f"position {position}" + (f" ({time:%Y-%m-%d %H:%M:%S} UTC)" if time else "")


# --- status --as-of -------------------------------------------------------------------------

_AS_OF_HELP = (
    "The sources and DLQ as they stood at a past moment (a journal position, or an ISO 8601 "
    "time; UTC without a zone), computed from the journal up to then."
)
_AS_OF_EPILOG = """
  journal-loader status --as-of 120000               # as of a journal position
  journal-loader status --as-of 2026-01-31T12:00:00Z  # as of a time"""


def _add_as_of(main: click.Group) -> None:
    command = main.commands.get("status")
    if command is None or command.callback is None:
        return
    if any(p.name == "as_of" for p in command.params):
        return  # registered already
    command.params.append(
        click.Option(["--as-of", "as_of"], metavar="TIME|POSITION", help=_AS_OF_HELP)
    )
    original = command.callback

    def callback(*args: Any, as_of: str | None = None, **kwargs: Any) -> Any:
        if as_of is None:
            return original(*args, **kwargs)
        return _status_as_of(as_of, **kwargs)

    command.callback = callback
    if command.epilog and "--as-of" not in command.epilog:
        command.epilog = command.epilog.rstrip() + _AS_OF_EPILOG


def _status_as_of(
    as_of: str, db: str | None, config_path: str | None, as_json: bool, stalled: bool
) -> None:
    from journal_loader.audit.asof import status_at
    from journal_loader.audit.cut import parse_cut

    if stalled:
        raise UsageError("--stalled asks about now; it cannot be combined with --as-of")
    cut = parse_cut(as_of)
    store = open_db(db, config_path, read_only=True)
    result = status_at(store, cut)
    position, time, rows = result.position, result.time, result.rows
    if as_json:
        echo_json(
            {
                "as_of": {"cut": cut.describe(), "position": position, "time": time},
                "sources": rows,
            }
        )
        return
    click.echo(f"as of {_moment(position, time)}, from the journal:")
    if not rows:
        click.echo(f"no sources in {store.display_url} then")
        return
    click.echo(
        table(
            [header for header, _ in _STATUS_COLUMNS] + ["last event"],
            [
                [r[key] for _, key in _STATUS_COLUMNS]
                + [f"#{r['last_position']} {r['last_event_at']:%Y-%m-%d %H:%M:%S}"]
                for r in rows
            ],
        )
    )


_STATUS_COLUMNS = [
    ("source", "source_id"),
    ("type", "source_type"),
    ("version", "source_version"),
    ("file", "file_name"),
    ("status", "status"),
    ("health", "health"),
    ("processed", "records_processed"),
    ("imported", "records_imported"),
    ("failed", "records_failed"),
    ("skipped", "records_skipped"),
    ("dlq", "dlq_depth"),
]


def register(main: click.Group) -> None:
    main.add_command(lineage_group)
    main.add_command(verify_command)
    main.add_command(export_command)
    main.add_command(replay_command)
    _add_as_of(main)
