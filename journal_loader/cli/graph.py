"""``graph stats|node|neighbours``: what a load built, read-only (journal_loader/graph/browse.py
holds the queries)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from journal_loader.cli.common import db_options, echo_json, fmt, open_db, table

if TYPE_CHECKING:
    from journal_loader.config import Config
    from journal_loader.storage import Store

SCOPE = """\b
They read the embedded graph (the nodes, attributes, relationships and provenance tables in
the journal's database), on SQLite and PostgreSQL. A config whose graph.propose_api loads
into an existing Propose API database keeps its graph in that deployment's own tables,
which these commands do not read: query them there."""


@click.group(
    "graph",
    epilog=f"""\b
Examples:
  journal-loader graph stats
  journal-loader graph node --name "INCORP SERVICES, INC." --type Company
  journal-loader graph neighbours 7 --depth 2 --json

{SCOPE}""",
)
def graph_group() -> None:
    """Look at the graph a load built: counts, one node, its neighbours (read-only)."""


def _store_and_config(db: str | None, config_path: str | None) -> tuple[Store, Config | None]:
    from journal_loader.config import load_config
    from journal_loader.errors import UsageError

    cfg = load_config(config_path) if config_path else None
    if cfg is not None and cfg.graph.propose_api is not None:
        raise UsageError(
            f"{config_path}: graph.propose_api: this loader's graph is an existing Propose API "
            "database; `journal-loader graph` reads the embedded graph only (query that "
            "database's tables directly)"
        )
    return open_db(db, config_path, read_only=True), cfg


@graph_group.command(
    "stats",
    epilog="""\b
Examples:
  journal-loader graph stats
  journal-loader graph stats -c loader.yaml --json   # conflicts: the config's opposing types""",
)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats_command(db: str | None, config_path: str | None, as_json: bool) -> None:
    """Nodes and relationships per type, attributes per type, provenance rows, and conflicts
    (pairs of nodes holding two relationships the config declares opposing: give it with -c;
    the graph does not store which types oppose)."""
    from journal_loader.graph.browse import stats

    store, cfg = _store_and_config(db, config_path)
    result = stats(store, None if cfg is None else cfg.graph.opposing_relationships)
    if as_json:
        echo_json(result.to_json())
        return
    click.echo(f"graph in {store.display_url}")
    rows: list[tuple[str, str, str]] = []
    for title, counts in (
        ("nodes", result.nodes),
        ("relationships", result.relationships),
        ("attributes", result.attributes),
    ):
        rows.append((title, fmt(sum(counts.values())), ""))
        rows += [(f"  {name}", fmt(n), "") for name, n in counts.items()]
    rows.append(("provenance", fmt(sum(result.provenance.values())), "rows"))
    if result.conflicts is None:
        rows.append(("conflicts", "-", "give the loader's config (-c) to count them"))
    else:
        rows.append(("conflicts", fmt(sum(result.conflicts.values())), "node pairs"))
        rows += [(f"  {a} / {b}", fmt(n), "") for (a, b), n in result.conflicts.items()]
    width = max(len(label) for label, _, _ in rows)
    digits = max(len(n) for _, n, _ in rows)
    for label, n, note in rows:
        click.echo(f"{label:<{width}}  {n:>{digits}}  {note}".rstrip())


@graph_group.command(
    "node",
    epilog="""\b
Examples:
  journal-loader graph node 7
  journal-loader graph node --name "incorp services inc"      # names match as the graph does
  journal-loader graph node --name AURORA,IL --type City --json
  journal-loader graph node --key C1000452 --type Company""",
)
@click.argument("node_id", metavar="[ID]", type=int, required=False)
@click.option("--name", help="Find the node by name (case, spacing, punctuation folded).")
@click.option("--key", help="Find the node by its external key.")
@click.option("--type", "node_type", help="Only nodes of this type (with --name or --key).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Relationships each way and provenance rows shown (totals are counted).",
)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def node_command(
    node_id: int | None,
    name: str | None,
    key: str | None,
    node_type: str | None,
    limit: int,
    db: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """One node: its attributes, relationships in and out, and provenance (the records that
    asserted it: source, record offset, line and bytes, as `history` shows them)."""
    from journal_loader.errors import UsageError
    from journal_loader.graph.browse import GraphLookupError, describe, find_nodes, node

    store, cfg = _store_and_config(db, config_path)
    if node_id is None:
        alias = cfg.graph.alias_attribute if cfg is not None else "nameAlias"
        found = find_nodes(store, name=name, key=key, node_type=node_type, alias_attribute=alias)
        what = f"name {name!r}" if name is not None else f"key {key!r}"
        what += f" of type {node_type}" if node_type else ""
        if not found:
            hint = (
                " (a name matches whole, with case, spacing and punctuation folded)"
                if name is not None
                else ""
            )
            raise GraphLookupError(f"no node with {what} in {store.display_url}{hint}")
        if len(found) > 1:
            listed = "; ".join(f"{n['id']} {describe(n)}" for n in found[:10])
            more = f"; and {len(found) - 10} more" if len(found) > 10 else ""
            raise UsageError(
                f"{len(found)} nodes have {what}: {listed}{more}; give the ID (or --type)"
            )
        node_id = int(found[0]["id"])
    elif name is not None or key is not None:
        raise UsageError("give a node ID, or --name / --key, not both")
    view = node(store, node_id, limit=limit)
    if as_json:
        echo_json(view.to_json())
        return
    n = view.node
    click.echo(f"node {n['id']}: {describe(n)}")
    created, updated = (str(n[k])[:19].replace("T", " ") for k in ("created_at", "updated_at"))
    click.echo(f"  created {created}, updated {updated}")
    click.echo(f"\nattributes ({len(view.attributes)}):")
    if view.attributes:
        click.echo(
            table(
                ["id", "type", "value", "records", "first source", "offset"],
                [
                    [
                        a["id"],
                        a["attr_type"],
                        _clip(a["value"], 60),
                        a["assertions"],
                        a["first_source_id"],
                        a["first_record_offset"],
                    ]
                    for a in view.attributes
                ],
            )
        )
    for title, counts, shown, end in (
        ("out", view.out_counts, view.relationships_out, "target"),
        ("in", view.in_counts, view.relationships_in, "source"),
    ):
        total = sum(counts.values())
        per_type = ", ".join(f"{t} {fmt(c)}" for t, c in counts.items())
        more = f"; the first {len(shown)} shown" if len(shown) < total else ""
        click.echo(f"\nrelationships {title} ({fmt(total)}{': ' + per_type if per_type else ''}"
                   f"{more}):")  # fmt: skip
        if shown:
            click.echo(
                table(
                    ["id", "type", "to" if end == "target" else "from", "node", "strength"],
                    [
                        [
                            r["id"],
                            r["rel_type"],
                            str(r[end]["id"]),
                            _clip(describe(r[end]), 60),
                            r["strength"],
                        ]
                        for r in shown
                    ],
                )
            )
    more = (
        f"; the first {len(view.provenance)} shown"
        if len(view.provenance) < view.provenance_total
        else ""
    )
    click.echo(f"\nprovenance ({fmt(view.provenance_total)} record(s), oldest first{more}):")
    if view.provenance:
        click.echo(
            table(
                ["source", "file", "offset", "line", "bytes", "fact", "confidence", "run"],
                [
                    [
                        p.source_id,
                        p.file_name,
                        p.record_offset,
                        p.line,
                        "-" if p.byte_start is None else f"{p.byte_start}-{p.byte_end}",
                        p.fact_index,
                        p.confidence,
                        p.run_id[:8],
                    ]
                    for p in view.provenance
                ],
            )
        )
        click.echo("each record: journal-loader history SOURCE OFFSET")


@graph_group.command(
    "neighbours",
    epilog="""\b
Examples:
  journal-loader graph neighbours 7
  journal-loader graph neighbours 7 --depth 2 --limit 50 --json""",
)
@click.argument("node_id", metavar="ID", type=int)
@click.option(
    "--depth",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Relationships away from the node.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Show at most N nodes (the nearest first).",
)
@db_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def neighbours_command(
    node_id: int,
    depth: int,
    limit: int,
    db: str | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """The nodes within --depth relationships of node ID, in either direction, breadth
    first, each with the relationship that reached it."""
    from journal_loader.graph.browse import describe, neighbours

    store, _cfg = _store_and_config(db, config_path)
    result = neighbours(store, node_id, depth=depth, limit=limit)
    if as_json:
        echo_json(result.to_json())
        return
    more = f" (the first {limit}; more are in reach: raise --limit)" if result.truncated else ""
    click.echo(
        f"node {node_id}: {describe(result.node)}: {len(result.neighbours)} node(s) within "
        f"depth {depth}{more}"
    )
    if result.neighbours:
        click.echo(
            table(
                ["depth", "id", "type", "name", "key", "via"],
                [
                    [
                        n.depth,
                        n.node["id"],
                        n.node["type"],
                        _clip(n.node["name"], 50),
                        n.node["key"],
                        f"{n.via['source_id']} -{n.via['rel_type']}-> {n.via['target_id']} "
                        f"(relationship {n.via['relationship_id']})",
                    ]
                    for n in result.neighbours
                ],
            )
        )


def _clip(value: Any, width: int) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def register(main: click.Group) -> None:
    main.add_command(graph_group)
