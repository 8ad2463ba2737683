"""A loader for licence files that a test can break (a wrong column or node type): the
fail-fast tests and the config-check tests run it."""

from __future__ import annotations

from pathlib import Path

from tests.support.loaders import write_csv

HEADER = ["Licensee", "Licence No", "City", "State"]

BROKEN = """\
from journal_loader import Loader


class LicenceLoader(Loader):
    name = "licences"
    source_type = "licences"

    def parse(self, raw):
        return {"licensee": raw["Licensee"], "number": raw[COLUMN], "city": raw["City"]}

    def propose(self, record, graph):
        return [graph.propose_fact(("Company", record["licensee"]), (NODE, record["city"]),
                                   "LOCATED_IN")]
"""


def licences_csv(path: Path, n: int) -> Path:
    rows = [[f"Dental {i}", f"L-{i}", f"City {i % 9}", "IL"] for i in range(n)]
    return write_csv(path, HEADER, rows)


def licences_config(folder: Path, *, column: str, node: str = "City", extra: str = "") -> Path:
    (folder / "licence_loader.py").write_text(
        BROKEN.replace("COLUMN", repr(column)).replace("NODE", repr(node))
    )
    config = folder / "licences.yaml"
    config.write_text(
        "loader:\n  name: licences\n  class: licence_loader.py:LicenceLoader\n"
        "source:\n  type: licences\n  file: licences_20260101.csv\n"
        "graph:\n  node_types: [Company, City]\n  relationship_types: [LOCATED_IN]\n" + extra
    )
    return config
