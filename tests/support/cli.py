"""The command line as a real process, started in a fraction of the usual time.

A ``journal-loader`` process spends most of a short command importing (SQLAlchemy,
pydantic, psycopg, click: about 0.7 s of CPU), and the default test run starts hundreds of
them. ``run_cli_process`` starts each one as a fork of a server process that has imported
the command line once (tests/support/cli_zygote.py, one per test process). The command
still runs in a process of its own, with the request's working directory, environment,
argv and standard streams, its own exit status, and the interpreter's ending (atexit,
threads, flush); what it does not repeat is the import. So a test of a command's
behaviour is unchanged; a test of import-time or interpreter behaviour starts a real
interpreter itself (test_readonly's Ctrl-C during imports, test_cli_rough_edges' closed
pipes and console script, test_runner's CLI run, the crash tests; .ci/run runs the quick
start and the installed wheel).

Falls back to a plain ``subprocess.run`` when the request changes what the interpreter or
an import reads from the environment (``PYTHON*``, locale, fault injection), when the fork
server cannot start, or everywhere with ``JOURNAL_LOADER_TEST_FORKSERVER=0``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

ZYGOTE = Path(__file__).with_name("cli_zygote.py")
C_CODE = "from journal_loader.cli import run_main; run_main()"
# read by the interpreter at start-up or by journal_loader at import: the server's values
# are the ones its children see, so a request that changes them gets a real interpreter
STARTUP_VARIABLES = ("PYTHON", "LC_", "LANG", "LANGUAGE", "JOURNAL_LOADER_CRASH_AT")

_server: tuple[subprocess.Popen[bytes], str, dict[str, str]] | None = None
_unavailable = False


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(STARTUP_VARIABLES)}


def _start() -> tuple[subprocess.Popen[bytes], str, dict[str, str]] | None:
    global _server, _unavailable
    if _server is not None and _server[0].poll() is None:
        return _server
    if _unavailable or os.environ.get("JOURNAL_LOADER_TEST_FORKSERVER", "1") == "0":
        return None
    if not hasattr(os, "fork") or not hasattr(socket, "AF_UNIX"):
        _unavailable = True
        return None
    folder = tempfile.mkdtemp(prefix="jl_cli_")
    path = os.path.join(folder, "zygote.sock")
    env = dict(os.environ)
    errors = Path(folder) / "zygote.err"
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE.read_text(encoding="utf-8"), path],
            cwd=folder,  # `-c` puts '' (the working directory) first on sys.path
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _unavailable = True
            return None
        time.sleep(0.02)
    if errors.read_bytes():
        # Its imports wrote something (a warning): a real interpreter would print it in
        # every command's stderr, so the fork server must not hide it.
        proc.kill()
        _unavailable = True
        return None
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    atexit.register(proc.kill)  # runs first (last registered)
    _server = (proc, path, _startup_env(env))
    return _server


def _forget(server: tuple[subprocess.Popen[bytes], str, dict[str, str]]) -> None:
    """Drop a server that stopped answering; what it wrote to its stderr is shown (pytest
    prints it with the test's output) so that the cause can be found."""
    global _server
    proc, path = server[0], server[1]
    proc.kill()
    errors = Path(path).with_name("zygote.err")
    with contextlib.suppress(OSError):
        text = errors.read_text(errors="replace")
        if text:
            sys.stderr.write(f"the CLI fork server ended; its stderr:\n{text}\n")
    if _server is server:
        _server = None


class _Replies:
    """The server's JSON lines on one connection (a timeout leaves the buffer intact)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def next(self) -> dict[str, int]:
        while b"\n" not in self.buffer:
            chunk = self.conn.recv(4096)
            if not chunk:
                raise RuntimeError("the CLI fork server closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        reply: dict[str, int] = json.loads(line)
        return reply


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    decoded = data.decode(locale.getpreferredencoding(False))
    return decoded.replace("\r\n", "\n").replace("\r", "\n")


def run_cli_process(
    args: Sequence[str | os.PathLike[str]],
    *,
    module: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    input: str | None = None,
    user_namespace: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -c "from journal_loader.cli import run_main; run_main()" ARGS`` (or, with
    ``module``, ``python -m journal_loader ARGS``), as ``subprocess.run(...,
    capture_output=True, text=True)`` returns it. ``env`` is the whole environment (None:
    this process's); stdin is empty unless ``input`` is given. With ``user_namespace``,
    as ``unshare --user python ...``."""
    argv = [str(a) for a in args]
    cmd = [sys.executable, *(["-m", "journal_loader"] if module else ["-c", C_CODE]), *argv]
    if user_namespace:
        cmd = ["unshare", "--user", *cmd]
    full_env = dict(os.environ if env is None else env)
    server = _start()
    where = os.path.abspath(cwd if cwd is not None else os.getcwd())

    def plain() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd,
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    if server is None or _startup_env(full_env) != server[2] or not os.path.isdir(where):
        return plain()  # (a missing cwd: subprocess.run raises the error it always has)
    _proc, path, _ = server
    with tempfile.TemporaryDirectory(prefix="jl_cli_") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        stdin = None
        if input is not None:
            stdin = Path(folder) / "stdin"
            stdin.write_bytes(input.encode(locale.getpreferredencoding(False)))
        request = {
            "module": module,
            "user_namespace": user_namespace,
            "args": argv,
            "cwd": where,
            "env": full_env,
            "stdin": None if stdin is None else str(stdin),
            "stdout": str(out),
            "stderr": str(err),
        }
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(path)
            except OSError:
                # The server has gone (seen once in CI: "Connection refused", its socket
                # closed while poll() still said it ran). The command has not started: it
                # runs as a plain process, and the next one gets a new server.
                _forget(server)
                return plain()
            conn.sendall(json.dumps(request).encode() + b"\n")
            replies = _Replies(conn)
            pid = replies.next()["pid"]
            conn.settimeout(timeout)
            try:
                status = replies.next()["status"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)  # as subprocess.run does on a timeout
                conn.settimeout(None)
                replies.next()
                raise subprocess.TimeoutExpired(
                    cmd, timeout or 0, _text(out.read_bytes()), _text(err.read_bytes())
                ) from None
        return subprocess.CompletedProcess(
            cmd,
            os.waitstatus_to_exitcode(status),
            _text(out.read_bytes()),
            _text(err.read_bytes()),
        )
