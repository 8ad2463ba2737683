"""``--on-success CMD`` / ``--on-failure CMD``: a command run at the end of a run.

The command gets the run's summary as JSON on its stdin (``summary_json``: the run report,
plus ``loader``, ``exit_code``, ``hostname`` and ``finished_at``; every string scrubbed of
secrets) and these environment variables: ``JOURNAL_LOADER_STATUS``,
``JOURNAL_LOADER_EXIT_CODE``, ``JOURNAL_LOADER_LOADER``, ``JOURNAL_LOADER_SOURCE_ID``,
``JOURNAL_LOADER_RUN_ID``.

Which one runs: ``on_success`` when the run exits 0 (completed, partial by --limit, already
processed: the JSON's ``status`` tells which), ``on_failure`` when it exits 1. Neither runs
when the source was locked by another run (exit 75): that run is the one that reports.

How the command is started: without a shell when the string is a plain command line (split
like a shell would, quotes respected: ``mail -s "loader failed" ops@example.com``); with
``/bin/sh -c`` only when it uses shell syntax (a pipe, redirection, ``;``, ``&&``, ``$``,
backquotes, globs, ``~``, ``VAR=value`` prefixes). The command runs in a session of its own;
after ``timeout`` seconds (default 60) it gets SIGTERM, 5 seconds later SIGKILL. Its output
goes to the log (scrubbed), not to stdout. A hook that fails or times out is logged as an
error and does not change the run's exit code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from journal_loader.errors import SourceLockedError
from journal_loader.ops.observers import exit_code_of, pending_error
from journal_loader.secrets import scrub

if TYPE_CHECKING:
    from journal_loader.runner.observers import RunInfo
    from journal_loader.runner.options import RunReport

log = logging.getLogger("journal_loader.hooks")

_SHELL_SYNTAX = re.compile(r"[|&;<>()$`*?\[\]{}~\n#]|^\s*[A-Za-z_][A-Za-z0-9_]*=")


def needs_shell(command: str) -> bool:
    """True when the command uses syntax only a shell understands."""
    return bool(_SHELL_SYNTAX.search(command))


def argv_for(command: str) -> list[str]:
    if needs_shell(command):
        return ["/bin/sh", "-c", command]
    try:
        argv = shlex.split(command)
    except ValueError:  # unbalanced quotes: let the shell say what is wrong
        return ["/bin/sh", "-c", command]
    if not argv:
        raise ValueError("the hook command is empty")
    return argv


@dataclass(slots=True)
class HookResult:
    command: str
    returncode: int | None
    timed_out: bool
    output: str
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and not self.error


def run_hook(
    command: str,
    payload: bytes,
    *,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    grace: float = 5.0,
) -> HookResult:
    """Run one hook command with ``payload`` on its stdin; never raises for the command's
    own failure (the result says what happened)."""
    try:
        argv = argv_for(command)
    except ValueError as e:
        return HookResult(command, None, False, "", str(e))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    except OSError as e:
        return HookResult(command, None, False, "", f"cannot start it: {e.strerror or e}")
    try:
        out, _ = proc.communicate(payload, timeout=timeout)
        return HookResult(command, proc.returncode, False, _decoded(out))
    except subprocess.TimeoutExpired:
        _kill_group(proc, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            out, _ = proc.communicate()
        return HookResult(command, proc.returncode, True, _decoded(out))


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the session we started: the command and its children


def _decoded(data: bytes | None) -> str:
    return (data or b"")[-65536:].decode("utf-8", errors="replace")


def summary(report: RunReport | None, *, loader: str, exit_code: int) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(report) if report is not None else {}
    data.update(
        loader=loader,
        exit_code=exit_code,
        hostname=socket.gethostname(),
        finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return _scrubbed(data)  # type: ignore[no-any-return]


def summary_json(report: RunReport | None, *, loader: str, exit_code: int) -> bytes:
    return json.dumps(
        summary(report, loader=loader, exit_code=exit_code), ensure_ascii=False
    ).encode()


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


class HooksObserver:
    """A RunObserver that runs the matching hook in ``on_finish``."""

    def __init__(
        self,
        *,
        loader: str,
        on_success: str | None = None,
        on_failure: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.loader = loader
        self.on_success = on_success
        self.on_failure = on_failure
        self.timeout = timeout
        self.results: list[HookResult] = []

    def on_start(self, info: RunInfo) -> None:
        if info.get("loader"):
            self.loader = str(info["loader"])

    def on_finish(self, report: RunReport) -> None:
        code = exit_code_of(report)
        if code == 0:
            command, which = self.on_success, "on-success"
        elif code == SourceLockedError.exit_code:
            return
        else:
            command, which = self.on_failure, "on-failure"
        if not command:
            return
        data = summary(report, loader=self.loader, exit_code=code)
        error = pending_error(report)
        if error:  # the run is ending with an error the report was not told about
            from journal_loader.runner.options import RunStatus

            data["status"] = RunStatus.FAILED
            data["message"] = data.get("message") or error
        env = {
            "JOURNAL_LOADER_STATUS": str(data.get("status", "")),
            "JOURNAL_LOADER_EXIT_CODE": str(code),
            "JOURNAL_LOADER_LOADER": self.loader,
            "JOURNAL_LOADER_SOURCE_ID": str(data.get("source_id") or ""),
            "JOURNAL_LOADER_RUN_ID": str(data.get("run_id") or ""),
        }
        payload = json.dumps(data, ensure_ascii=False).encode()
        result = run_hook(command, payload, timeout=self.timeout, env=env)
        self.results.append(result)
        for line in result.output.splitlines()[-50:]:
            log.info("%s hook: %s", which, line)
        if result.error:
            log.error("%s hook %r: %s", which, command, result.error)
        elif result.timed_out:
            log.error("%s hook %r timed out after %.0f s (killed)", which, command, self.timeout)
        elif result.returncode != 0:
            log.error("%s hook %r exited with %s", which, command, result.returncode)
        else:
            log.info("%s hook %r ran", which, command)
