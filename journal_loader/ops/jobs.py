"""``journal-loader jobs run DIR``: every config in a folder, one after the other.

Each ``*.yaml`` / ``*.yml`` file of the folder (not its subfolders; hidden files skipped), in
name order, is run as ``journal-loader run CONFIG --json`` in a child process of its own, so
one job's crash, memory or loader module cannot touch the next. The child's stderr (its log
and progress lines) passes through; its stdout (the JSON report) feeds the summary table.

One failing job does not stop the others. Outcomes and the folder's exit code:

========================  ==========  ===========================================
child exit                 outcome     counts as
========================  ==========  ===========================================
0                          its status  ok (completed, partial, already_processed)
75 (source locked)         skipped     ok: another run is loading that source now
1, 2, killed, timed out    failed      failed
========================  ==========  ===========================================

``jobs run`` exits 1 when any job failed, else 0; 2 when the folder holds no config.

``--workers N`` runs up to N jobs at once (``_run_pool``), with the worker fleet's rule
(journal_loader/ops/fleet.py): one source type at a time, in name order. On SQLite that
means N processes parse, validate and propose side by side while their batches commit one
after the other (SQLite has one writer; a writer waits up to its busy timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from journal_loader.errors import SourceLockedError, UsageError
from journal_loader.secrets import scrub

LOCKED = SourceLockedError.exit_code  # another run holds the source: not a failure


@dataclass(slots=True)
class JobResult:
    config: Path
    exit_code: int
    outcome: str
    seconds: float
    report: dict[str, Any] | None = None
    note: str = ""
    stderr_tail: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.exit_code not in (0, LOCKED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "exit_code": self.exit_code,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            "note": self.note,
            "report": self.report,
        }


def discover(folder: str | os.PathLike[str]) -> list[Path]:
    path = Path(folder)
    if not path.is_dir():
        raise UsageError(f"{path}: not a folder")
    found = sorted(
        p
        for p in path.iterdir()
        if p.suffix in (".yaml", ".yml") and p.is_file() and not p.name.startswith(".")
    )
    if not found:
        raise UsageError(f"{path}: no *.yaml or *.yml config in this folder")
    return found


def run_job(
    config: Path,
    args: Sequence[str] = (),
    *,
    timeout: float | None = None,
    grace: float = 60.0,
    stderr: IO[str] | None = None,
    procs: set[subprocess.Popen[bytes]] | None = None,
) -> JobResult:
    """Run one config in a child process; never raises for the job's own failure."""
    # `python -m journal_loader`: the entry point of the installed `journal-loader` command
    argv = [sys.executable, "-m", "journal_loader", "run", str(config), "--json", *args]
    started = time.monotonic()
    out_sink = stderr if stderr is not None else sys.stderr
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a timeout can stop the job and everything it started
    )
    if procs is not None:  # a pool's jobs, for stopping them all on SIGTERM
        procs.add(proc)
    tail: list[str] = []
    chunks: list[bytes] = []

    def tee() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", errors="replace")
            try:
                out_sink.write(line)
                out_sink.flush()
            except (OSError, ValueError):
                pass
            tail.append(line.rstrip("\n"))
            del tail[:-20]

    def collect() -> None:
        assert proc.stdout is not None
        chunks.append(proc.stdout.read())

    threads = [threading.Thread(target=tee, daemon=True), threading.Thread(target=collect)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _stop(proc, grace)
    except BaseException:  # Ctrl-C: let the job journal its stop, then give up
        _stop(proc, grace)
        raise
    finally:
        for t in threads:
            t.join(timeout=5)
        if procs is not None:
            procs.discard(proc)
    seconds = time.monotonic() - started
    report = _report(b"".join(chunks))
    code = proc.returncode
    note = _note(report, tail)
    if timed_out:
        return JobResult(
            config,
            code if code else 1,
            "failed: timeout",
            seconds,
            report,
            f"stopped after {timeout:g} s",
            tail,
        )
    if code == 0:
        outcome = str((report or {}).get("status") or "completed")
    elif code == LOCKED:
        outcome = "skipped: locked"
    elif code == 2:
        outcome = "failed: config"
    elif code < 0:
        outcome = f"failed: {signal.Signals(-code).name}"
    else:
        outcome = "failed"
    return JobResult(config, code, outcome, seconds, report, note, tail)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM (the run finishes its batch and journals the stop), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _report(stdout: bytes) -> dict[str, Any] | None:
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _note(report: dict[str, Any] | None, tail: list[str]) -> str:
    if report and report.get("message"):
        return scrub(str(report["message"]))
    for line in reversed(tail):
        if line.startswith(("error:", "internal error:")):
            return scrub(line)
    return ""


def run_all(
    folder: str | os.PathLike[str],
    args: Sequence[str] = (),
    *,
    timeout: float | None = None,
    per_job_args: Callable[[Path], Sequence[str]] | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    workers: int = 1,
) -> list[JobResult]:
    configs = discover(folder)
    if workers > 1:
        return _run_pool(configs, args, workers, timeout, per_job_args, on_result)
    results = []
    for config in configs:
        extra = list(per_job_args(config)) if per_job_args is not None else []
        result = run_job(config, [*args, *extra], timeout=timeout)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def source_type_of(config: Path) -> str:
    """The source type a config loads (its loader's, else its own); a config that cannot
    be read gets a key of its own (its job fails and says why)."""
    from journal_loader.api import run_options
    from journal_loader.config import load_config
    from journal_loader.factory import loader_from_config

    try:
        cfg = load_config(config)
        loader = loader_from_config(cfg)
        return run_options(cfg, loader).source_type or loader.source_type_name
    except Exception:
        return f"config:{config}"


def _run_pool(
    configs: list[Path],
    args: Sequence[str],
    workers: int,
    timeout: float | None,
    per_job_args: Callable[[Path], Sequence[str]] | None,
    on_result: Callable[[JobResult], None] | None,
) -> list[JobResult]:
    """Up to ``workers`` jobs at once, each in its own process, with the fleet's rule: the
    configs of one source type run one at a time, in name order (a registry's versions stay
    in order); different types run side by side. SIGTERM or Ctrl-C: every running job
    gets SIGTERM (it finishes its batch and journals the stop), no new job starts."""
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    keys = {c: source_type_of(c) for c in configs}
    pending = list(configs)
    running: dict[Future[JobResult], Path] = {}
    busy: set[str] = set()
    procs: set[subprocess.Popen[bytes]] = set()
    results: dict[Path, JobResult] = {}
    stopping = threading.Event()

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupt)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        while pending or running:
            for config in list(pending):
                if len(running) >= workers or stopping.is_set():
                    break
                if keys[config] in busy:
                    continue
                pending.remove(config)
                busy.add(keys[config])
                extra = list(per_job_args(config)) if per_job_args is not None else []
                future = pool.submit(run_job, config, [*args, *extra], timeout=timeout, procs=procs)
                running[future] = config
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                config = running.pop(future)
                busy.discard(keys[config])
                results[config] = future.result()
                if on_result is not None:
                    on_result(results[config])
    except BaseException:
        stopping.set()
        for proc in list(procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        raise
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return [results[c] for c in configs if c in results]


def exit_code(results: Sequence[JobResult]) -> int:
    return 1 if any(r.failed for r in results) else 0
