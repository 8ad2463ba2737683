"""``status`` and ``history``: what the projections and the journal say."""

from __future__ import annotations

import base64
import os
from typing import Any

import click
import msgspec

from journal_loader.cli.common import db_options, echo_json, open_db, table
from journal_loader.errors import UnknownIdError, UnknownSourceError


@click.command(
    "status",
    epilog="""\b
Examples:
  journal-loader status
  journal-loader status --json --db postgresql+psycopg://loader@db/graph
  journal-loader status --stalled || page-someone     # exit 1 when a source is stalled""",
)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--stalled", is_flag=True, help="Exit 1 if any source is STALLED or its run DEAD.")
@click.pass_context
def status_command(
    ctx: click.Context, db: str | None, config_path: str | None, as_json: bool, stalled: bool
) -> None:
    """One row per source, from the loader_status view.

    health: RUNNING, STALLED (processing, no event for an hour), DEAD (processing, but no
    process holds its lock: the run died; the next run resumes it), FAILED, PARTIAL, OK.
    A source split into chunks (`submit --split`) and not completed gets one row per
    chunk: its state (pending, running, dead, completed, partial, failed) and records done
    of its records; --json has them as each source's "chunks".
    On PostgreSQL with the worker queue (`submit`, `worker`), the queued, running and
    failed load jobs follow, each with its source.
    """
    store = open_db(db, config_path, read_only=True)
    rows = source_status(store)
    jobs = queue_status(store, rows)
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo(f"no sources in {store.display_url}")
    else:
        click.echo(
            table(
                [
                    "source",
                    "type",
                    "version",
                    "file",
                    "status",
                    "health",
                    "processed",
                    "imported",
                    "failed",
                    "skipped",
                    "dlq",
                    "last event",
                ],
                [
                    [
                        r["source_id"],
                        r["source_type"],
                        r["source_version"],
                        r["file_name"],
                        r["status"],
                        r["health"],
                        r["records_processed"],
                        r["records_imported"],
                        r["records_failed"],
                        r["records_skipped"],
                        r["dlq_depth"],
                        _age(r["last_event_age_seconds"]),
                    ]
                    for r in rows
                ],
            )
        )
    split = [r for r in rows if r.get("chunks") and r["status"] != "completed"]
    if split and not as_json:
        # Only loads still going: a completed split source's chunks are all completed
        # (--json lists them anyway).
        click.echo("")
        click.echo(
            table(
                ["source", "file", "chunk", "state", "records"],
                [
                    [
                        r["source_id"],
                        r["file_name"],
                        c["chunk"],
                        c["state"],
                        f"{c['records_done']:,} / {c['records']:,}",
                    ]
                    for r in split
                    for c in r["chunks"]
                ],
            )
        )
    if jobs and not as_json:
        click.echo("")
        click.echo(
            table(
                ["job", "state", "attempts", "worker", "source", "type", "version", "file"],
                [
                    [
                        j["job_id"],
                        j["state"],
                        j["attempts"],
                        j["worker_id"],
                        j["source_id"],
                        j["source_type"],
                        j["version"],
                        os.path.basename(j["file"] or "-"),
                    ]
                    for j in jobs
                ],
            )
        )
        counts = {s: sum(j["status"] == s for j in jobs) for s in ("todo", "doing", "failed")}
        click.echo(
            f"jobs: {counts['todo']} queued, {counts['doing']} running, {counts['failed']} failed"
        )
    if stalled and any(r["health"] in ("STALLED", "DEAD") for r in rows):
        ctx.exit(1)


def queue_status(store: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker queue's queued, running and failed jobs (PostgreSQL with the queue
    installed), each with its source when it has one; each source row gains ``job`` (its
    latest such job) for --json."""
    from journal_loader.storage.queue_store import supports_job_queue

    if not supports_job_queue(store):
        return []
    from journal_loader.ops.job_queue import queue_jobs, retry_note

    jobs = queue_jobs(store)
    by_identity = {(r["source_type"], r["file_hash"]): r for r in rows}
    for j in jobs:
        source = by_identity.get((j["source_type"], j["sha256"]))
        j["source_id"] = source["source_id"] if source else None
        state = {"todo": "queued", "doing": "running"}.get(j["status"], j["status"])
        note = retry_note(j["scheduled_at"]) if j["status"] == "todo" else ""
        j["state"] = f"{state} ({note})" if note else state
        if source is not None:
            source["job"] = {k: j[k] for k in ("job_id", "status", "attempts", "worker_id")}
    return jobs


def source_status(store: Any) -> list[dict[str, Any]]:
    """The sources' rows; a split source's (``submit --split``) gain ``chunks``: each
    chunk's number, state (pending, running, dead, completed, partial, failed), records done
    and records."""
    from journal_loader.runner.chunks import chunks_now
    from journal_loader.storage.journal_store import source_lock_name
    from journal_loader.storage.ops_store import ops_store

    rows = ops_store(store).source_status()
    for r in rows:
        chunks = chunks_now(store, r["source_id"], r["source_type"], r["file_hash"])
        if chunks is not None:
            r["chunks"] = [
                {
                    "chunk": c.chunk,
                    "state": c.state,
                    "records_done": c.records_done,
                    "records": c.records,
                }
                for c in chunks
            ]
        # A split source's runs hold its chunks' locks, never the source's own: it is DEAD
        # only when no chunk is running (a chunk's run that died shows as a dead chunk).
        # Pinned by tests/test_chunks.py::test_status_shows_each_chunk.
        alive = chunks is not None and any(c.state == "running" for c in chunks)
        if (
            r["status"] == "processing"
            and not alive
            and store.lock_is_free(source_lock_name(r["source_type"], r["file_hash"]))
        ):
            r["health"] = "DEAD"
    return rows


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


@click.command(
    "history",
    epilog="""\b
Example: what happened to line 4712 (record offset 4711) of source 1?
  journal-loader history 1 4711""",
)
@click.argument("source_id", type=int)
@click.argument("offset", type=int)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history_command(
    source_id: int, offset: int, db: str | None, config_path: str | None, as_json: bool
) -> None:
    """Every event of one record (SOURCE_ID, OFFSET: 0-based record index), in order:
    what was read (raw bytes), what the loader made of it, what the graph answered (one line
    per fact; --json has every field of every event)."""
    from journal_loader.journal.queries import record_events
    from journal_loader.storage.ops_store import ops_store

    store = open_db(db, config_path, read_only=True)
    with store.transaction() as tx:
        src = ops_store(store).source_row(source_id, tx)
        if src is None:
            raise UnknownSourceError(f"no source {source_id} in {store.display_url}")
        events = record_events(tx, source_id, offset)
    if not events:
        raise UnknownIdError(
            f"source {source_id} ({src['file_name']}) has no events for record {offset}"
        )
    if as_json:
        echo_json(
            {
                "source": src,
                "record_offset": offset,
                "events": [
                    {
                        "position": e.position,
                        "event_type": e.event_type,
                        "run_id": e.run_id,
                        "recorded_at": e.recorded_at,
                        "hash": e.hash.hex(),
                        "event": msgspec.to_builtins(e.event),
                    }
                    for e in events
                ],
            }
        )
        return
    click.echo(
        f"source {source_id}: {src['file_name']} ({src['source_type']}, version "
        f"{src['source_version']}, sha256 {src['file_hash'][:12]}), record {offset}"
    )
    for e in events:
        ev = msgspec.to_builtins(e.event)
        ev.pop("type", None)
        click.echo(
            f"\n#{e.position}  {e.recorded_at:%Y-%m-%d %H:%M:%S}  run {e.run_id[:8]}  "
            f"{e.event_type}"
        )
        for line in _event_lines(ev):
            click.echo(f"    {line}".rstrip())


def _event_lines(ev: dict[str, Any]) -> list[str]:
    """An event's payload for people: scalars as ``key: value``, the raw bytes as text, a
    record one field a line, the graph's answer one line per fact (``--json`` has it all)."""
    lines: list[str] = []
    for key, value in ev.items():
        if key == "raw" and isinstance(value, str):
            raw = base64.b64decode(value).decode("utf-8", "backslashreplace").rstrip("\r\n")
            lines.append(f"raw: {raw}")
        elif key == "results" and isinstance(value, list):
            statuses: dict[str, int] = {}
            for result in value:
                statuses[str(result.get("status"))] = statuses.get(str(result.get("status")), 0) + 1
            counted = ", ".join(f"{n} {status}" for status, n in statuses.items())
            lines.append(f"graph: {len(value)} fact(s){': ' + counted if counted else ''}")
            lines += [f"  {_fact_line(i, result)}" for i, result in enumerate(value)]
        elif isinstance(value, dict) and value:
            lines.append(f"{key}:")
            lines += [f"  {k}: {_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {_scalar(value)}")
    return lines


def _fact_line(index: int, result: dict[str, Any]) -> str:
    """``fact 3: success (confidence 1): source entity 10 matched (exact_name_match, 1);
    target entity 7 matched (external_key, 1); relationship 9 created``"""
    parts = []
    for action in result.get("actions", []):
        kind = str(action.get("action", ""))
        if kind.startswith("entity_"):
            how = ", ".join(
                str(x)
                for x in (action.get("match_reason"), _number(action.get("confidence")))
                if x is not None
            )
            parts.append(
                f"{action.get('role') or 'an'} entity {action.get('entity_id')} {kind[7:]}"
                + (f" ({how})" if how else "")
            )
        elif kind.startswith("relationship_"):
            parts.append(f"relationship {action.get('relationship_id')} {kind[13:]}")
        elif kind == "error":
            parts.append(f"error: {action.get('message')}")
        else:
            parts.append(kind)
    conflicts = result.get("conflicts") or []
    if conflicts:
        parts.append(
            "conflicts with "
            + ", ".join(
                f"{c.get('relationship_type')} {c.get('relationship_id')}" for c in conflicts
            )
        )
    head = f"fact {index}: {result.get('status')}"
    confidence = _number(result.get("overall_confidence"))
    if confidence is not None:
        head += f" (confidence {confidence})"
    if result.get("in_doubt"):
        head += " (in doubt: proposed again after a crash)"
    return head + (": " + "; ".join(parts) if parts else "")


def _number(value: Any) -> str | None:
    return None if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def register(main: click.Group) -> None:
    main.add_command(status_command)
    main.add_command(history_command)
