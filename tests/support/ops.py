"""Helpers for the operations tests (no tests here): small inputs, a loader file the CLI can
import, a recording pushgateway, the CLI as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from journal_loader import ProposeClient, ProposeResult
from journal_loader.errors import FatalError
from tests.support.cli import run_cli_process
from tests.support.loaders import PairLoader, write_csv

CLI = [sys.executable, "-c", "from journal_loader.cli import run_main; run_main()"]

LOADER_PY = """\
from journal_loader import Loader


class PairLoader(Loader):
    name = "pairs"
    source_type = "pairs"

    def parse(self, raw):
        if raw.get("name", "").startswith("#"):
            return self.skip("comment row")
        return dict(raw)

    def validate(self, record):
        problems = super().validate(record)
        if record.get("city") == "BAD":
            problems.append("city BAD is not a city")
        return problems

    def propose(self, record, graph):
        if record.get("city") == "FATAL":
            from journal_loader.errors import FatalError

            raise FatalError("the graph is gone")
        return [graph.propose_fact(("Company", record["name"]), ("City", record["city"]),
                                   "LOCATED_IN")]
"""


def pairs_rows(n: int = 40) -> list[list[str]]:
    """Every 7th record fails validation (city BAD), every 11th is a comment (skipped)."""
    rows = []
    for i in range(n):
        if i % 11 == 10:
            rows.append([f"# comment {i}", "X"])
        elif i % 7 == 6:
            rows.append([f"Company {i}", "BAD"])
        else:
            rows.append([f"Company {i}", f"City {i % 5}"])
    return rows


def expected_counts(n: int = 40) -> dict[str, int]:
    skipped = sum(1 for i in range(n) if i % 11 == 10)
    failed = sum(1 for i in range(n) if i % 11 != 10 and i % 7 == 6)
    return {"succeeded": n - skipped - failed, "failed": failed, "skipped": skipped}


def pairs_csv(path: Path, n: int = 40, *, fatal_at: int | None = None) -> Path:
    rows = pairs_rows(n)
    if fatal_at is not None:
        rows[fatal_at] = [f"Company {fatal_at}", "FATAL"]
    return write_csv(path, ["name", "city"], rows)


def pairs_config(
    folder: Path,
    *,
    n: int = 40,
    name: str = "pairs",
    extra: str = "",
    data: str | None = None,
    fatal_at: int | None = None,
) -> Path:
    """A loader file, a data file and a config in ``folder``; returns the config's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pairs_loader.py").write_text(LOADER_PY)
    data_name = data or f"{name}.csv"
    pairs_csv(folder / data_name, n, fatal_at=fatal_at)
    config = folder / f"{name}.yaml"
    config.write_text(
        f"loader:\n  name: {name}\n  class: pairs_loader.py:PairLoader\n"
        f"source:\n  type: {name}\n  file: {data_name}\n"
        "processing:\n  batch_size: 10\n  max_retries: 0\n" + extra
    )
    return config


class FatalLoader(PairLoader):
    """Stops the run (a FatalError is not a record's problem) at the record named FATAL."""

    def propose(self, record: Mapping[str, Any], graph: ProposeClient) -> list[ProposeResult]:
        if record.get("city") == "FATAL":
            raise FatalError("the graph is gone")
        return super().propose(record, graph)


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The CLI as a process of its own (forked from a server that has imported it:
    tests/support/cli.py), with ``env`` on top of this process's environment."""
    return run_cli_process(args, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        self.url = ""


@contextmanager
def pushgateway() -> Iterator[Recorder]:
    """A stand-in pushgateway on 127.0.0.1: records each request (method, path, body)."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            recorder.requests.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        do_PUT = do_POST = _record

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
