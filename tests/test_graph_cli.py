"""``journal-loader graph stats|node|neighbours`` on both backends: the counts are the tables'
``count(*)``, a node's provenance points at the records ``history`` shows, the neighbours
are the graph's; and the README's "Look at the graph" section, run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import text

from journal_loader import Loader, ProposeClient, ProposeResult, run
from journal_loader.cli import main
from journal_loader.storage import open_store
from tests.support.example import EXAMPLE_DATA, REPO, LoadedExample
from tests.support.loaders import write_csv
from tests.support.readme import readme_section

BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```\n", re.DOTALL | re.MULTILINE)


@pytest.fixture
def example(example_journal: LoadedExample) -> str:
    """The shipped example, loaded once per backend (shared: these tests only read it)."""
    return example_journal.url


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _json(*args: str) -> Any:
    done = _cli(*args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def _sql(url: str, sql: str, **params: Any) -> list[Any]:
    store = open_store(url)
    try:
        with store.read() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        store.dispose()


def test_stats_counts_are_select_count_per_type(example: str) -> None:
    stats = _json("graph", "stats", "--db", example)
    for table, column, key in (
        ("nodes", "node_type", "nodes"),
        ("relationships", "rel_type", "relationships"),
        ("attributes", "attr_type", "attributes"),
    ):
        by_type = stats[key]["by_type"]
        types = [r[0] for r in _sql(example, f"SELECT DISTINCT {column} FROM {table}")]
        assert sorted(by_type) == sorted(types) and len(types) >= 5
        for t in types:
            (count,) = _sql(example, f"SELECT count(*) FROM {table} WHERE {column} = :t", t=t)
            assert by_type[t] == count[0], (table, t)
        assert stats[key]["total"] == _sql(example, f"SELECT count(*) FROM {table}")[0][0]
    assert stats["nodes"]["by_type"]["Company"] == 2964
    assert stats["provenance"]["total"] == _sql(example, "SELECT count(*) FROM provenance")[0][0]
    assert stats["conflicts"] is None  # no config: which types oppose is not in the graph
    shown = _cli("graph", "stats", "--db", example).stdout
    assert re.search(r"^  Company +2,964$", shown, re.M)
    assert re.search(r"^conflicts +- +give the loader's config", shown, re.M)


class CounselLoader(Loader):
    """firm, client, role -> (Firm) -role-> (Company)."""

    name = "counsel"
    source_type = "counsel"

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        return [
            graph.propose_fact(("Firm", record["firm"]), ("Company", record["client"]),
                               record["role"])
        ]  # fmt: skip


def test_stats_counts_the_conflicts_the_config_declares(db_url: str, tmp_path: Path) -> None:
    data = write_csv(
        tmp_path / "counsel.csv",
        ["firm", "client", "role"],
        [
            ["Smith LLP", "Acme", "Legal_Counsel"],
            ["Smith LLP", "Acme", "Opposing_Counsel"],  # a conflict
            ["Jones LLP", "Acme", "Opposing_Counsel"],
            ["Jones LLP", "Beta", "Opposing_Counsel"],
            ["Jones LLP", "Beta", "Legal_Counsel"],  # another
            ["Brown LLP", "Beta", "Legal_Counsel"],
        ],
    )
    config = {
        "loader": {"name": "counsel", "class": "tests.test_graph_cli:CounselLoader"},
        "source": {"type": "counsel", "file": str(data)},
        "database": {"url": db_url},
        "graph": {
            "node_types": ["Firm", "Company"],
            "relationship_types": ["Legal_Counsel", "Opposing_Counsel"],
            "opposing_relationships": [["Legal_Counsel", "Opposing_Counsel"]],
        },
    }
    path = tmp_path / "counsel.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run(config=path)
    assert report.statistics.conflicts_detected == 2
    stats = _json("graph", "stats", "-c", str(path))
    assert stats["conflicts"] == {
        "total": 2,
        "by_pair": [
            {"relationship_type": "Legal_Counsel", "opposing_type": "Opposing_Counsel",
             "node_pairs": 2}
        ],
    }  # fmt: skip
    assert stats["relationships"]["by_type"] == {"Legal_Counsel": 3, "Opposing_Counsel": 3}
    shown = _cli("graph", "stats", "-c", str(path)).stdout
    assert re.search(r"^conflicts +2  node pairs$", shown, re.M)

    # a config that loads into a Propose API database is not read
    config["graph"] = {"propose_api": {"function": "propose_fact"}}
    other = tmp_path / "propose_api.yaml"
    other.write_text(yaml.safe_dump(config))
    refused = _cli("graph", "stats", "-c", str(other))
    assert refused.exit_code == 2
    assert "graph.propose_api" in refused.output and "embedded graph only" in refused.output


def test_node_provenance_points_at_the_records_history_shows(example: str) -> None:
    node = _json("graph", "node", "--key", "C1000452", "--type", "Company", "--db", example)
    assert (node["type"], node["name"], node["key"]) == (
        "Company", "FLORES HOME SERVICES 4 LLC", "C1000452"
    )  # fmt: skip
    assert {a["attr_type"]: a["value"] for a in node["attributes"]} == {
        "corp_number": "C1000452",
        "corporation_type": "Foreign Limited Liability Company",
        "effective_date": "1973-12-13",
    }
    assert node["relationships_in"]["by_type"] == {"REGISTERED_AGENT_OF": 1}
    (agent,) = node["relationships_in"]["shown"]
    assert agent["source"]["name"] == "INCORP SERVICES, INC."
    assert node["relationships_out"]["by_type"] == {"HEADQUARTERED_AT": 1, "LOCATED_IN": 1}

    # the agent: asserted by many records; each shown provenance is the record history shows
    hub = _json("graph", "node", str(agent["source"]["id"]), "--limit", "200", "--db", example)
    total = _sql(
        example,
        "SELECT count(*) FROM provenance WHERE subject_kind = 'node' AND subject_id = :i",
        i=agent["source"]["id"],
    )[0][0]
    assert hub["provenance"]["total"] == total == len(hub["provenance"]["shown"]) == 120
    assert hub["relationships_out"]["total"] == sum(hub["relationships_out"]["by_type"].values())
    # all 122 shown: fewer than --limit 200
    assert (len(hub["relationships_out"]["shown"]), hub["relationships_out"]["total"]) == (122, 122)
    checked = [*node["provenance"]["shown"], *hub["provenance"]["shown"][::20]]
    assert node["provenance"]["shown"][0]["record_offset"] == 1
    for p in checked:
        history = _json("history", str(p["source_id"]), str(p["record_offset"]), "--db", example)
        (parsed,) = [e for e in history["events"] if e["event_type"] == "RecordParsed"]
        assert (p["line"], p["byte_start"], p["byte_end"]) == (
            parsed["event"]["line"],
            parsed["event"]["byte_start"],
            parsed["event"]["byte_end"],
        )
        assert p["run_id"] == parsed["run_id"]
        assert p["file_name"] == history["source"]["file_name"] == EXAMPLE_DATA.name
        # and those bytes of the file are the record that named the agent
        raw = EXAMPLE_DATA.read_bytes()[p["byte_start"] : p["byte_end"]].decode()
        if p is not node["provenance"]["shown"][0]:
            assert "incorp services, inc." in raw.lower()  # names match folded
        else:
            assert raw.startswith("C1000452,")


def test_node_by_name_as_the_graph_matches_names(example: str) -> None:
    by_name = _json("graph", "node", "--name", "incorp  services inc", "--db", example)
    assert by_name["name"] == "INCORP SERVICES, INC." and by_name["type"] == "Company"
    # two companies (two corp numbers) with one name: ambiguous, the candidates listed
    keys = sorted(
        r[0]
        for r in _sql(
            example, "SELECT external_key FROM nodes WHERE norm_name = '50 off outlet llc'"
        )
    )
    assert len(keys) == 2
    ambiguous = _cli("graph", "node", "--name", "50% Off Outlet, LLC", "--db", example)
    assert ambiguous.exit_code == 2 and "2 nodes have name" in ambiguous.output
    assert all(f"[{k}]" in ambiguous.output for k in keys) and "give the ID" in ambiguous.output
    assert _json("graph", "node", "--name", "IL", "--type", "State", "--db", example)["type"] == (
        "State"
    )
    missing = _cli("graph", "node", "--name", "no such company", "--db", example)
    assert missing.exit_code == 2 and "no node with name 'no such company'" in missing.output
    unknown = _cli("graph", "node", "999999999", "--db", example)
    assert unknown.exit_code == 2 and "no node 999999999" in unknown.output
    both = _cli("graph", "node", "7", "--name", "x", "--db", example)
    assert both.exit_code == 2


def test_neighbours_are_the_graphs(example: str) -> None:
    start = _json("graph", "node", "--key", "C1000452", "--type", "Company", "--db", example)
    edges = _sql(example, "SELECT id, source_node_id, rel_type, target_node_id FROM relationships")
    adjacent: dict[int, set[int]] = {}
    for _id, s, _t, t in edges:
        adjacent.setdefault(int(s), set()).add(int(t))
        adjacent.setdefault(int(t), set()).add(int(s))
    level1 = adjacent[start["id"]]
    level2 = set().union(*(adjacent[n] for n in level1)) - level1 - {start["id"]}

    one = _json("graph", "neighbours", str(start["id"]), "--db", example)
    assert {n["id"] for n in one["neighbours"]} == level1 and not one["truncated"]
    by_id = {int(e[0]): e for e in edges}
    for n in one["neighbours"]:
        rel = by_id[n["via"]["relationship_id"]]
        assert (rel[1], rel[2], rel[3]) == (
            n["via"]["source_id"], n["via"]["rel_type"], n["via"]["target_id"]
        )  # fmt: skip
        assert start["id"] in (rel[1], rel[3]) and n["id"] in (rel[1], rel[3])

    two = _json("graph", "neighbours", str(start["id"]), "--depth", "2", "--limit", "100000",
                "--db", example)  # fmt: skip
    got = [(n["depth"], n["id"]) for n in two["neighbours"]]
    assert {i for d, i in got if d == 1} == level1 and {i for d, i in got if d == 2} == level2
    assert [d for d, _ in got] == sorted(d for d, _ in got) and not two["truncated"]

    few = _json("graph", "neighbours", str(start["id"]), "--depth", "2", "--limit", "5",
                "--db", example)  # fmt: skip
    assert len(few["neighbours"]) == 5 and few["truncated"]
    assert {n["id"] for n in few["neighbours"]} >= level1


# --- the README -----------------------------------------------------------------------------


def _mask(text: str) -> list[str]:
    text = re.sub(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?", "<time>", text)
    text = re.sub(r"\b[0-9a-f]{8}$", "<run>", text, flags=re.M)
    return [line.rstrip() for line in text.splitlines()]


def test_the_readme_section_prints_what_it_says(tmp_path: Path) -> None:
    doc = readme_section("Look at the graph")
    cwd = tmp_path
    (cwd / "examples").symlink_to(REPO / "examples")
    (cwd / "bin").mkdir()
    if shutil.which("sqlite3") is None:  # the sqlite3 shell, as far as the docs use it
        shim = cwd / "bin" / "sqlite3"
        shim.write_text(
            f"#!{sys.executable}\nimport sqlite3, sys\n"
            "for row in sqlite3.connect(sys.argv[1]).execute(sys.argv[2]):\n"
            "    print('|'.join(str(v) for v in row))\n"
        )
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{cwd / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("JOURNAL_LOADER_DB_URL", None)
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(doc)]
    compared = 0
    for i, (kind, body) in enumerate(blocks):
        if kind != "bash":
            continue
        done = subprocess.run(["bash", "-c", body], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, (body, done.stderr)
        if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
            printed = _mask(done.stdout)
            at = 0
            for line in (x for x in _mask(blocks[i + 1][1]) if x):
                assert line in printed[at:], f"{body}\nexpected:\n{line}\nprinted:\n{done.stdout}"
                at = printed.index(line, at) + 1
            compared += 1
    assert compared == 5
