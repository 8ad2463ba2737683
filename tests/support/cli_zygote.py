"""The fork server behind tests.support.cli (run as ``python -c <this file's text> SOCKET``).

It imports the command line once, then forks one child per request; each child sets up the
request's working directory, environment, argv and standard streams, runs the command as
``python -c "...run_main()"`` or ``python -m journal_loader`` would, and ends like an
interpreter does (SystemExit handled, non-daemon threads joined, atexit run, streams
flushed). It imports nothing from tests/ (it runs outside the test process), and it
writes nothing to its own stdout, so a child's streams start empty.
"""

import contextlib
import json
import os
import selectors
import signal
import socket
import sys

PRELOAD = (
    # what every command imports, then what `run` and the read commands import lazily
    "journal_loader.cli",
    "journal_loader.api",
    "journal_loader.runner",
    "journal_loader.projections",
    "journal_loader.graph.embedded",
    "journal_loader.storage.migrate",
    "alembic.command",
    "sqlalchemy.dialects.sqlite.pysqlite",
    "sqlalchemy.dialects.postgresql.psycopg",
    "yaml",
    "prometheus_client",
)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        # a module renamed by a refactor: the children import what they need themselves
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def _exit_code(code: object) -> int:
    """What the interpreter makes of SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):  # as the interpreter: nowhere to report it
        sys.stderr.write(f"{code}\n")
    return 1


def _finish(code: int) -> None:
    """The interpreter's shutdown, in its order, then the exit."""
    import atexit
    import threading

    threading._shutdown()  # type: ignore[attr-defined]  # join non-daemon threads
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
    except Exception:
        # as the interpreter: "Exception ignored ..." and exit status 120
        with contextlib.suppress(Exception):
            sys.stderr.write("Exception ignored on flushing sys.stdout\n")
        code = 120
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


def _unshare_user() -> None:
    """As `unshare --user` before it runs the command: a user namespace of its own, where
    root has no capability over the files outside it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        message = os.strerror(ctypes.get_errno())
        os.write(2, f"unshare: unshare failed: {message}\n".encode())
        os._exit(1)


def _child(request: dict, closing: list, fds: list) -> None:
    """Become the command's process (never returns: a child must not go back to serving)."""
    try:
        _become(request, closing, fds)
    except BaseException:
        import traceback

        with contextlib.suppress(BaseException):
            traceback.print_exc()
            sys.stderr.flush()
    os._exit(1)


def _become(request: dict, closing: list, fds: list) -> None:
    signal.set_wakeup_fd(-1)
    for thing in closing:
        thing.close()
    for fd in fds:
        os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import time

    time.tzset()  # TZ as the request has it (a fresh process reads it at its first use)
    for fd, path, flags in (
        (0, request["stdin"] or os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    if request["user_namespace"]:
        _unshare_user()
    import random

    random.seed()  # a fresh process draws its own seed
    try:
        if request["module"]:
            import runpy

            sys.argv = ["-m", *request["args"]]
            sys.path[0] = os.getcwd()
            sys.modules.pop("journal_loader.__main__", None)  # runpy runs it afresh
            runpy.run_module("journal_loader", run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *request["args"]]
            from journal_loader.cli import run_main

            run_main()
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as the interpreter: die of SIGINT
        os.kill(os.getpid(), signal.SIGINT)
        code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    _finish(code)


def serve(path: str) -> None:
    _preload()
    parent = os.getppid()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    pending: dict[socket.socket, bytes] = {}
    children: dict[int, socket.socket] = {}
    while os.getppid() == parent:  # the test process is gone: so are we
        for key, _ in selector.select(timeout=1.0):
            if key.data == "accept":
                conn, _ = listener.accept()
                pending[conn] = b""
                selector.register(conn, selectors.EVENT_READ, "request")
            elif key.data == "wake":
                os.read(wake_r, 4096)
                while children:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    conn = children.pop(pid, None)
                    if conn is not None:
                        with contextlib.suppress(OSError):  # the test gave up on it
                            conn.sendall(json.dumps({"status": status}).encode() + b"\n")
                        conn.close()
            else:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                chunk = conn.recv(1 << 16)
                pending[conn] += chunk
                if not chunk or b"\n" not in pending[conn]:
                    if not chunk:
                        selector.unregister(conn)
                        del pending[conn]
                        conn.close()
                    continue
                selector.unregister(conn)
                request = json.loads(pending.pop(conn))
                pid = os.fork()
                if pid == 0:
                    closing = [selector, listener, *pending, *children.values(), conn]
                    _child(request, closing, [wake_r, wake_w])
                children[pid] = conn
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


if __name__ == "__main__":
    serve(sys.argv[1])
