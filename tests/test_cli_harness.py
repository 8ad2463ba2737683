"""The tests' command-line harness (tests/support/cli.py): a command run through the fork
server behaves as a real process, and a server that stopped answering does not fail the
test that asked it (seen once in CI: its socket refused the connection)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import tests.support.cli as cli


def test_a_server_that_refuses_the_connection_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_LOADER_TEST_FORKSERVER", raising=False)
    first = cli.run_cli_process(["--version"])
    assert first.returncode == 0 and "journal-loader" in first.stdout
    server = cli._server
    if server is None:
        pytest.skip("the fork server cannot start here (plain processes are used)")
    dead = tmp_path / "dead.sock"  # a socket file nobody listens on: connect() is refused
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(dead))
    listener.close()
    monkeypatch.setattr(cli, "_server", (server[0], str(dead), server[2]))
    fallback = cli.run_cli_process(["--version"])
    assert fallback.returncode == 0 and fallback.stdout == first.stdout
    assert cli._server is None  # forgotten: the next command starts a new server
    again = cli.run_cli_process(["--version"])
    assert again.returncode == 0 and again.stdout == first.stdout
    assert cli._server is not None and cli._server[1] != str(dead)
