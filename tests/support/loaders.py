"""Tiny loaders for tests, and CSV input for them."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from journal_loader import Loader, ProposeClient, ProposeResult


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode())
    return path


class PairLoader(Loader):
    """A tiny loader: columns name, city -> (Company name) LOCATED_IN (City city)."""

    name = "pairs"
    source_type = "pairs"

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any] | None:
        if raw.get("name", "").startswith("#"):
            return self.skip("comment row")
        return dict(raw)

    def validate(self, record: Mapping[str, Any]) -> list[str]:
        problems = super().validate(record)
        if record.get("city") == "BAD":
            problems.append("city BAD is not a city")
        return problems

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        return [
            graph.propose_fact(("Company", record["name"]), ("City", record["city"]), "LOCATED_IN")
        ]


class NullLoader(Loader):
    """Journals every record, proposes nothing: the journal's own overhead."""

    name = "null"
    source_type = "null"

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        return []
