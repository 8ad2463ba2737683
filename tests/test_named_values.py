"""The named values Python compares statuses with are the strings the database holds: every
status the projections write and every health the status view computes is a member, so a
value added on one side only fails here, not in a comparison that silently never matches."""

from __future__ import annotations

import json
import re
from pathlib import Path

from click.testing import CliRunner

from journal_loader import run
from journal_loader.cli import main
from journal_loader.runner import RunStatus
from journal_loader.sources.status import SourceHealth, SourceStatus
from journal_loader.storage.schema import DECLARED_DDL
from tests.support.loaders import PairLoader, write_csv

REPO = Path(__file__).resolve().parent.parent


def test_the_projections_write_only_source_statuses() -> None:
    written: set[str] = set()
    for sql in sorted((REPO / "projections").glob("sources*.sql")):
        text = sql.read_text(encoding="utf-8")
        written |= set(re.findall(r"status = '([a-z_]+)'", text))
        written |= set(re.findall(r"THEN '([a-z_]+)'", text))
    assert written == {"registered", "processing", "abandoned"}  # the rest: RunFinished's
    assert written <= set(SourceStatus)
    # the statuses a run ends with (RunFinished.status) are source statuses too
    ended = {RunStatus.COMPLETED, RunStatus.PARTIAL, RunStatus.FAILED}
    assert ended <= set(SourceStatus)


def test_the_status_view_computes_only_source_healths() -> None:
    for dialect, statements in DECLARED_DDL.items():
        view = next(s for s in statements if "CREATE VIEW loader_status" in s)
        healths = set(re.findall(r"(?:THEN|ELSE) '([A-Z]+)'", view))
        assert healths == {"STALLED", "RUNNING", "FAILED", "PARTIAL", "ABANDONED", "OK"}, dialect
        compared = set(re.findall(r"s\.status = '([a-z_]+)'", view))
        assert compared == {"processing", "failed", "partial", "abandoned"}, dialect
        assert healths <= set(SourceHealth) and compared <= set(SourceStatus)


def test_what_status_prints_parses_as_named_values(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'journal.db'}"
    rows = [[f"Company {i}", f"City {i}"] for i in range(6)]
    done = run(PairLoader, write_csv(tmp_path / "a.csv", ["name", "city"], rows), db=db)
    part = run(
        PairLoader, write_csv(tmp_path / "b.csv", ["name", "city"], rows[:4]), db=db, limit=2
    )
    assert (done.status, part.status) == (RunStatus.COMPLETED, RunStatus.PARTIAL)
    result = CliRunner().invoke(main, ["status", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    shown = [
        (SourceStatus(r["status"]), SourceHealth(r["health"])) for r in json.loads(result.output)
    ]
    assert shown == [
        (SourceStatus.COMPLETED, SourceHealth.OK),
        (SourceStatus.PARTIAL, SourceHealth.PARTIAL),
    ]
