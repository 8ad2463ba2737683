"""The worker fleet (journal_loader/ops/fleet.py): procrastinate jobs in the journal's
PostgreSQL, run by `journal-loader worker` processes.

Real processes and a real PostgreSQL; each test has its own schema, and procrastinate's
tables live in it too. Registry files are small generated ones (bench/generate_registry.py)
that share registered agents, cities, states and addresses. Short heartbeat timeouts
(``--stalled-timeout``) keep the reaper's tests quick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from journal_loader.runner import STOP_REQUESTED as STOP_REASON
from tests.support.cli import run_cli_process
from tests.support.example import registry, typed_config
from tests.support.pg import drop_pg_schema, make_pg_schema
from tests.support.snapshots import content_state

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
STALLED = "2"  # seconds: the heartbeat timeout of a worker that must reap a dead one
# ... and of every other worker. Why not 2 for all: heartbeats are then 0.5 s apart, and
# on a loaded CI machine a live worker a second or two late to beat had its job
# re-delivered by the other worker's reaper, failing tests that expect one attempt.
NOT_REAPING = "60"


# --- helpers ---------------------------------------------------------------------------------
class Schema:
    def __init__(self) -> None:
        self.url, self.name = make_pg_schema()

    def libpq(self) -> str:
        return make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.libpq(), autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def jobs(self) -> list[tuple[Any, ...]]:
        return self.rows(
            "SELECT id, status::text, attempts, worker_id, args->>'file' FROM procrastinate_jobs ORDER BY id"
        )


@pytest.fixture
def schemas() -> Iterator[Callable[[], Schema]]:
    made: list[Schema] = []

    def new() -> Schema:
        s = Schema()
        made.append(s)
        return s

    yield new
    for s in made:
        drop_pg_schema(s.name)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNAL_LOADER_CRASH")}
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli_process(args, module=True, env=env or _env(), cwd=REPO, timeout=300)


class Worker:
    def __init__(
        self,
        db: str,
        log: Path,
        *args: str,
        env: dict[str, str] | None = None,
        stalled: str = NOT_REAPING,
        module: str = "journal_loader",
    ):
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                module,
                "worker",
                "--db",
                db,
                "--stalled-timeout",
                stalled,
                "--retry-delay",
                "0",
                *args,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env or _env(),
            cwd=REPO,
        )

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            os.kill(w.proc.pid, signal.SIGCONT)
        w.kill()


PAUSED = "tests.support.paused_worker"


class Pause:
    """A worker started with ``module=PAUSED`` and ``env=pause.env`` pauses its run right
    after the first batch commit until ``release`` (tests/support/paused_worker.py)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.env = _env(JOURNAL_LOADER_TEST_PAUSE=str(base))

    def wait_paused(self) -> None:
        paused = Path(str(self.base) + ".paused")
        wait_for("the run's first batch commit", paused.exists)

    def release(self) -> None:
        Path(str(self.base) + ".go").touch()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def run_sequentially(db: str, loads: list[tuple[Path, Path]]) -> None:
    for config, data in loads:
        r = cli("run", str(config), str(data), "--db", db, "--quiet")
        assert r.returncode == 0, r.stdout + r.stderr


def submit(db: str, config: Path, *files: Path) -> str:
    r = cli("submit", str(config), *map(str, files), "--db", db)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def run_ids_by_source(s: Schema) -> dict[str, list[tuple[int, int, str]]]:
    """file name -> [(RunStarted position, RunFinished position or 0, run_id)]."""
    rows = s.rows(
        "SELECT src.file_name, j.run_id, j.event_type, j.position FROM journal j "
        "JOIN sources src ON src.source_id = j.source_id "
        "WHERE j.event_type IN ('RunStarted', 'RunFinished') ORDER BY j.position"
    )
    out: dict[str, dict[str, list[int]]] = {}
    for name, run_id, kind, position in rows:
        run = out.setdefault(name, {}).setdefault(run_id, [0, 0])
        run[0 if kind == "RunStarted" else 1] = position
    return {name: sorted((p[0], p[1], r) for r, p in runs.items()) for name, runs in out.items()}


# --- the queue's schema ----------------------------------------------------------------------
def test_db_upgrade_installs_the_queue_once_and_sqlite_has_none(
    schemas: Callable[[], Schema], tmp_path: Path
) -> None:
    s = schemas()
    first = cli("db", "upgrade", "--db", s.url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "schema empty -> " in first.stdout and "job queue installed" in first.stdout
    again = cli("db", "upgrade", "--db", s.url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "job queue present" in again.stdout
    assert s.rows(
        "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename LIKE 'procrastinate%%'",
        (s.name,),
    ) == [(4,)]
    sqlite = f"sqlite:///{tmp_path / 'j.db'}"
    assert cli("db", "upgrade", "--db", sqlite).returncode == 0
    config = typed_config(tmp_path / "cfg", "registry_a")
    for args in (["submit", str(config), str(config), "--db", sqlite], ["worker", "--db", sqlite]):
        r = cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "jobs run DIR --workers N" in r.stderr and "Traceback" not in r.stderr


# --- 4 sources sharing entities, 2 workers -------------------------------------------------------
@pytest.mark.slow
def test_two_workers_load_four_sources_like_a_sequential_load(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    """Two registries (source types) with two quarters each: the types load in parallel,
    each type's quarters in version order; the graph equals loading the four files one after
    the other."""
    a = typed_config(tmp_path / "cfg", "registry_a")
    b = typed_config(tmp_path / "cfg", "registry_b")
    data = tmp_path / "data"
    a1 = registry(data / "a" / "business_registry_20250101.csv", 800, 101)
    a2 = registry(data / "a" / "business_registry_20250401.csv", 800, 202)
    b1 = registry(data / "b" / "business_registry_20250101.csv", 800, 303)
    b2 = registry(data / "b" / "business_registry_20250401.csv", 800, 404)

    reference = schemas()
    run_sequentially(reference.url, [(a, a1), (a, a2), (b, b1), (b, b2)])

    s = schemas()
    assert cli("db", "upgrade", "--db", s.url).returncode == 0
    for i in range(2):
        workers.append(Worker(s.url, tmp_path / f"w{i}.log", "--name", f"w{i}"))
    # Both idle before the jobs come (a worker's start-up is slow on a busy machine).
    wait_for(
        "both workers", lambda: s.rows("SELECT count(*) FROM procrastinate_workers")[0][0] == 2
    )
    # The types must be seen running at once, whatever the machine's speed. Without a gate,
    # an 800-row quarter loads in under half a second on a fast machine, so registry_a's two
    # jobs could end before the second `submit` process had even queued registry_b's
    # (a failure seen once in a parallel run of the slow suite; a `time.sleep(3)` between
    # the two submits made it fail every time). So the journal is locked until one job of
    # each type is running and both runs wait at their first journal write: they then go
    # on together. A fleet that ran one job at a time (a lock shared by
    # the types) never gets there: wait_for fails.
    with psycopg.connect(s.libpq()) as gate:
        gate.execute("LOCK TABLE journal IN EXCLUSIVE MODE")  # reads go on, writes wait
        out = submit(s.url, a, a2, a1)  # named out of order: submit queues by version
        assert out.index("20250101") < out.index("20250401")
        submit(s.url, b, data / "b")
        wait_for(
            "a job of each type running at once",
            lambda: sorted(j[4].split("/")[-2] for j in s.jobs() if j[1] == "doing") == ["a", "b"],
        )
        wait_for(  # both runs at their first journal write, waiting for the gate
            "two runs waiting to write",
            lambda: (
                s.rows(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE relation = 'journal'::regclass AND NOT granted"
                )[0][0]
                == 2
            ),
        )
    wait_for("four jobs done", lambda: all(j[1] != "todo" and j[1] != "doing" for j in s.jobs()))
    for w in workers:
        os.kill(w.proc.pid, signal.SIGTERM)
        assert w.wait() == 0, w.text()
    logs = "".join(w.text() for w in workers)
    assert "giving up" not in logs and "Traceback" not in logs
    jobs = s.jobs()
    assert [j[1] for j in jobs] == ["succeeded"] * 4, jobs
    assert all(j[2] == 1 for j in jobs), jobs  # one delivery each, no retry
    state = content_state(s.url)
    expected = content_state(reference.url)
    for part in expected:
        assert state[part] == expected[part], f"{part} differs from the sequential load"
    assert {row[2] for row in state["terminal_events_per_record"]} == {1}
    assert {row[1] for row in state["sources"]} == {"completed"}
    # Version order within a type; both workers worked; the two types overlapped in time.
    runs = s.rows(
        "SELECT src.source_type, src.source_version, "
        "min(j.position) FILTER (WHERE j.event_type = 'RunStarted'), "
        "max(j.position) FILTER (WHERE j.event_type = 'RunFinished') "
        "FROM journal j JOIN sources src ON src.source_id = j.source_id "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    )
    by = {(t, v): (start, end) for t, v, start, end in runs}
    for t in ("registry_a", "registry_b"):
        assert by[(t, "2025-Q1")][1] < by[(t, "2025-Q2")][0], runs
    assert all(f"w{i}" in logs for i in range(2))
    spans = {
        t: (by[(t, "2025-Q1")][0], by[(t, "2025-Q2")][1]) for t in ("registry_a", "registry_b")
    }
    assert (
        spans["registry_a"][0] < spans["registry_b"][1]
        and spans["registry_b"][0] < spans["registry_a"][1]
    )


# --- kill -9 of a worker; the reaper re-delivers ------------------------------------------------
@pytest.mark.parametrize(
    ("crash_at", "resumed_at"),
    [pytest.param("before_commit:1", 0, marks=pytest.mark.slow), ("after_commit:1", 100)],
)
def test_killed_worker_job_is_reaped_and_resumes_to_a_clean_result(
    schemas: Callable[[], Schema],
    workers: list[Worker],
    tmp_path: Path,
    crash_at: str,
    resumed_at: int,
) -> None:
    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", 600, 505)
    clean = schemas()
    run_sequentially(clean.url, [(config, data)])

    s = schemas()
    submit(s.url, config, data)
    a = Worker(s.url, tmp_path / "a.log", env=_env(JOURNAL_LOADER_CRASH_AT=crash_at))
    workers.append(a)
    assert a.wait() == -signal.SIGKILL, a.text()
    assert [j[1] for j in s.jobs()] == ["doing"]  # left behind by the dead worker
    b = Worker(s.url, tmp_path / "b.log", "--until-empty", stalled=STALLED)
    workers.append(b)
    assert b.wait() == 0, b.text()
    assert "queued again" in b.text()  # the reaper's line
    jobs = s.jobs()
    assert [(j[1], j[2]) for j in jobs] == [("succeeded", 2)], jobs
    runs = s.rows(
        "SELECT payload::json->>'mode', (payload::json->>'resume_offset')::int FROM journal "
        "WHERE event_type = 'RunStarted' ORDER BY position"
    )
    assert [r[0] for r in runs] == ["new", "resume"]
    assert (runs[1][1] or 0) == resumed_at
    assert s.rows("SELECT count(*) FROM journal WHERE event_type = 'RunAbandoned'") == [(1,)]
    state, expected = content_state(s.url), content_state(clean.url)
    for part in expected:
        assert state[part] == expected[part], f"{part} differs from a clean run"


# --- the same source queued twice ----------------------------------------------------------------
@pytest.mark.slow
def test_the_same_source_queued_twice_has_one_terminal_outcome_per_record(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", 1500, 606)
    s = schemas()
    assert "1 queued" in submit(s.url, config, data)
    assert "already queued" in submit(s.url, config, data)  # still waiting: refused
    # The first job's run pauses after its first batch (the second copy is queued while it
    # runs: a 1,500-row load could otherwise end first, and both --until-empty workers stop)
    pause = Pause(tmp_path / "first")
    for i in range(2):
        workers.append(
            Worker(s.url, tmp_path / f"w{i}.log", "--until-empty", env=pause.env, module=PAUSED)
        )
    pause.wait_paused()
    assert s.jobs()[0][1] == "doing"
    assert "1 queued" in submit(s.url, config, data)  # the first one runs: a second copy
    pause.release()
    for w in workers:
        assert w.wait() == 0, w.text()
    jobs = s.jobs()
    assert [j[1] for j in jobs] == ["succeeded", "succeeded"], jobs
    logs = "".join(w.text() for w in workers)
    assert "'status': 'already_processed'" in logs
    state = content_state(s.url)
    assert len(state["sources"]) == 1 and state["sources"][0][1] == "completed"
    assert {row[2] for row in state["terminal_events_per_record"]} == {1}
    assert len(state["terminal_events_per_record"]) == 1500


# --- a stale worker --------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_stale_worker_writes_nothing_after_another_took_over(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    """SIGSTOP worker A mid-load; its heartbeat stops, B's reaper re-delivers the job, B
    waits for the source's lock; A's lock connection is terminated (A cut off); B takes
    over and completes; SIGCONT A: A writes nothing (stale lease) and exits without
    touching the job."""
    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", 3000, 707)
    clean = schemas()
    run_sequentially(clean.url, [(config, data)])
    s = schemas()
    submit(s.url, config, data)
    pause = Pause(tmp_path / "a")
    a = Worker(s.url, tmp_path / "a.log", "--name", "A", env=pause.env, module=PAUSED)
    workers.append(a)
    pause.wait_paused()  # A's first checkpoint committed, A waiting right after it
    run_a = s.rows("SELECT run_id FROM journal WHERE event_type = 'BatchCommitted' LIMIT 1")[0][0]
    os.kill(a.proc.pid, signal.SIGSTOP)
    pause.release()  # (A goes on only once it is continued, below)
    before = s.rows("SELECT count(*), max(position) FROM journal WHERE run_id = %s", (run_a,))[0]
    b = Worker(s.url, tmp_path / "b.log", "--name", "B", "--until-empty", stalled=STALLED)
    workers.append(b)
    wait_for("B to wait for A's lock", lambda: "waiting for it" in b.text(), timeout=60)
    lock_pids = s.rows(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        (f"journal-loader run {run_a}",),
    )
    assert len(lock_pids) == 1
    s.rows("SELECT pg_terminate_backend(%s)", (lock_pids[0][0],))
    # B takes the lock; if A was stopped inside a batch, B waits for that transaction
    # (it must not resume from a checkpoint the batch could still move).
    wait_for(
        "B to take the lock",
        lambda: s.rows(
            "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'journal-loader run %%' "
            "AND application_name <> %s",
            (f"journal-loader run {run_a}",),
        ),
        timeout=30,
    )
    time.sleep(0.5)
    os.kill(a.proc.pid, signal.SIGCONT)
    assert a.wait(60) == 3, a.text()  # fleet.STALE_EXIT: it found its job delivered again
    assert "delivered again" in a.text()
    assert b.wait() == 0, b.text()
    after = s.rows("SELECT count(*), max(position) FROM journal WHERE run_id = %s", (run_a,))[0]
    assert after == before  # A wrote nothing after it was stopped
    jobs = s.jobs()
    assert [j[1] for j in jobs] == ["succeeded"], jobs  # finished by B; A left it alone
    assert "ended with status: Success" in b.text()
    state, expected = content_state(s.url), content_state(clean.url)
    for part in expected:
        assert state[part] == expected[part], f"{part} differs from a clean run"


# --- SIGTERM ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_ends_the_job_after_its_batch_and_another_worker_resumes_it(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", 3000, 808)
    clean = schemas()
    run_sequentially(clean.url, [(config, data)])
    s = schemas()
    submit(s.url, config, data)
    pause = Pause(tmp_path / "a")
    a = Worker(s.url, tmp_path / "a.log", "--name", "A", env=pause.env, module=PAUSED)
    workers.append(a)
    pause.wait_paused()  # A's first checkpoint committed, A waiting right after it
    os.kill(a.proc.pid, signal.SIGTERM)
    pause.release()
    assert a.wait(60) == 0, a.text()
    finished = s.rows(
        "SELECT payload::json->>'status', payload::json->>'reason' FROM journal "
        "WHERE event_type = 'RunFinished'"
    )
    assert finished == [("failed", STOP_REASON)], finished
    # The stop came after a committed batch: the last event before RunFinished is one.
    last_two = s.rows("SELECT event_type FROM journal ORDER BY position DESC LIMIT 2")
    assert [r[0] for r in last_two] == ["RunFinished", "BatchCommitted"]
    stopped_at = s.rows(
        "SELECT (payload::json->>'next_offset')::int FROM journal "
        "WHERE event_type = 'BatchCommitted' ORDER BY position DESC LIMIT 1"
    )[0][0]
    assert 0 < stopped_at < 3000
    jobs = s.jobs()
    assert [(j[1], j[2]) for j in jobs] == [("todo", 1)], jobs  # queued again at once
    status = cli("status", "--db", s.url)
    assert status.returncode == 0, status.stderr
    assert "1 queued, 0 running, 0 failed" in status.stdout
    b = Worker(s.url, tmp_path / "b.log", "--until-empty", "--name", "B")
    workers.append(b)
    assert b.wait() == 0, b.text()
    assert [j[1] for j in s.jobs()] == ["succeeded"]
    resumed = s.rows(
        "SELECT (payload::json->>'resume_offset')::int FROM journal "
        "WHERE event_type = 'RunStarted' ORDER BY position"
    )
    assert [r[0] or 0 for r in resumed] == [0, stopped_at]
    state, expected = content_state(s.url), content_state(clean.url)
    for part in expected:
        assert state[part] == expected[part], f"{part} differs from a clean run"


# --- retries: a lock held elsewhere costs none; failed runs are bounded ---------------------------
@pytest.mark.slow
def test_a_locked_source_waits_without_a_retry_and_failed_runs_are_bounded(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    from journal_loader.sources.identity import open_source
    from journal_loader.storage.base import lock_key

    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", 300, 909)
    s = schemas()
    submit(s.url, config, data)
    src = open_source(data)
    sha256 = src.sha256
    src.close()
    key = lock_key(f"test.{s.name}:registry_a:{sha256}")
    with psycopg.connect(s.libpq(), autocommit=True) as holder:  # a run outside the queue
        holder.execute("SELECT set_config('application_name', 'journal-loader run by hand', false)")
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        w = Worker(s.url, tmp_path / "w.log", "--until-empty")
        workers.append(w)
        wait_for("the job to wait for the lock", lambda: "waiting for it" in w.text(), 60)
        time.sleep(3)  # longer than a retry would wait: still the same delivery
        assert [(j[1], j[2]) for j in s.jobs()] == [("doing", 0)]
    assert w.wait() == 0, w.text()
    assert [(j[1], j[2]) for j in s.jobs()] == [("succeeded", 1)]  # one delivery
    assert s.rows("SELECT count(*) FROM journal WHERE event_type = 'RunStarted'") == [(1,)]

    # A run that fails (more failed records than allowed): retried until --max-failures,
    # each retry resuming where the last one stopped.
    strict = typed_config(tmp_path / "strict", "registry_b")
    strict.write_text(  # every record fails validation: every run stops at its first batch
        strict.read_text()
        .replace("  retry_delay: 0.05\n", "  retry_delay: 0.05\n  max_failed_records: 0\n")
        .replace("corporation_type]", "corporation_type, no_such_field]")
    )
    bad = registry(tmp_path / "b" / "business_registry_20250101.csv", 300, 910)
    s2 = schemas()
    submit(s2.url, strict, bad)
    w2 = Worker(s2.url, tmp_path / "w2.log", "--until-empty", "--max-failures", "2")
    workers.append(w2)
    assert w2.wait() == 0, w2.text()
    jobs = s2.jobs()
    assert [(j[1], j[2]) for j in jobs] == [("failed", 2)], jobs
    finished = s2.rows(
        "SELECT payload::json->>'status' FROM journal WHERE event_type = 'RunFinished'"
    )
    assert finished == [("failed",), ("failed",)]


# --- the README section -------------------------------------------------------------------------
def test_readme_running_on_many_machines_runs(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path
) -> None:
    """The section's shell examples, against a fresh schema: `export` names the database
    (replaced by the test's), the worker runs with --until-empty (the documented one runs
    until stopped), the systemd lines name shipped units; the metrics named exist."""
    import re
    import shlex

    from journal_loader.ops.fleet import WorkerMetrics
    from tests.support.readme import readme_section

    text = readme_section("Running on many machines")
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    lines = [line.strip() for b in blocks for line in b.splitlines() if line.strip()]
    s = schemas()
    env = _env(JOURNAL_LOADER_DB_URL=s.url)
    ran = []
    for line in lines:
        argv = shlex.split(line)
        if argv[0] == "export":
            assert argv[1].startswith("JOURNAL_LOADER_DB_URL=postgresql")
        elif argv[0] == "journal-loader":
            if argv[1] == "worker":
                argv += ["--until-empty", "--stalled-timeout", STALLED]
            r = cli(*argv[1:], env=env)
            assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
            ran.append((argv[1], r.stdout + r.stderr))
        elif argv[:2] == ["sudo", "install"]:
            assert all((REPO / p).is_file() for p in argv if p.startswith("deploy/"))
        elif "systemctl" in argv[:2]:
            for unit in re.findall(r"(journal-loader-worker)@\w+\.service", line):
                assert (REPO / "deploy" / "systemd" / f"{unit}@.service").is_file()
        else:
            pytest.fail(f"an example the test does not know how to check: {line}")
    assert [c for c, _ in ran] == ["db", "submit", "worker", "status"]
    assert "1 queued" in ran[1][1]
    assert "completed" in ran[3][1] and "jobs:" not in ran[3][1]  # nothing left in the queue
    assert [j[1] for j in s.jobs()] == ["succeeded"]
    metrics = WorkerMetrics("w")
    exposed = {f.name for f in metrics.registry.collect()}
    documented = set(re.findall(r"`(journal_loader_worker_[a-z_]+)", text))
    assert {d.removesuffix("_total") for d in documented} == exposed


# --- one big file, split: chunks on two workers ---------------------------------------------------
def _chunk_records(textfile: Path) -> dict[str, float]:
    """chunk -> records, from a worker's metrics textfile."""
    import re

    found = re.findall(
        r'^journal_loader_worker_chunk_records_total\{chunk="(\d+)",worker="[^"]*"\} (\S+)$',
        textfile.read_text() if textfile.exists() else "",
        re.M,
    )
    return {chunk: float(value) for chunk, value in found}


@pytest.mark.slow
@pytest.mark.parametrize("kill", [False, True], ids=["two_workers", "one_killed_mid_chunk"])
def test_a_file_split_in_8_on_two_workers_equals_a_sequential_run(
    schemas: Callable[[], Schema], workers: list[Worker], tmp_path: Path, kill: bool
) -> None:
    """One registry file (shared entities across records), `submit --split 8`, two worker
    processes: the result equals a sequential `run` of the file, every record has one
    terminal outcome, the source's one hash chain verifies. Killed: worker A is SIGKILLed
    after its first checkpoint inside a chunk; B's reaper queues the chunk again after
    --stalled-timeout and its rerun resumes at the chunk's checkpoint (one RunAbandoned)."""
    rows = 3000
    config = typed_config(tmp_path / "cfg", "registry_a")
    data = registry(tmp_path / "business_registry_20250101.csv", rows, 707)
    reference = schemas()
    run_sequentially(reference.url, [(config, data)])

    s = schemas()
    assert cli("db", "upgrade", "--db", s.url).returncode == 0
    crash = _env(JOURNAL_LOADER_CRASH_AT="after_commit:1") if kill else None
    textfiles = [tmp_path / f"w{i}.prom" for i in range(2)]
    for i in range(2):
        args = ["--name", f"w{i}", "--metrics-textfile", str(textfiles[i])]
        # with ``kill``, w1 is the one that reaps the chunk w0 leaves behind
        stalled = STALLED if kill and i == 1 else NOT_REAPING
        env = crash if i == 0 else None
        workers.append(Worker(s.url, tmp_path / f"w{i}.log", *args, env=env, stalled=stalled))
    wait_for(
        "both workers", lambda: s.rows("SELECT count(*) FROM procrastinate_workers")[0][0] == 2
    )
    planned = cli("submit", str(config), str(data), "--split", "8", "--db", s.url)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "8 queued" in planned.stdout, planned.stdout
    if kill:
        assert workers[0].wait() == -signal.SIGKILL, workers[0].text()
    wait_for(
        "eight chunks done",
        lambda: all(j[1] == "succeeded" for j in s.jobs()),
        timeout=300,
    )
    for w in workers[1:] if kill else workers:
        os.kill(w.proc.pid, signal.SIGTERM)
        assert w.wait() == 0, w.text()
    logs = "".join(w.text() for w in workers)
    assert "Traceback" not in logs and "giving up" not in logs, logs

    state, expected = content_state(s.url), content_state(reference.url)
    for part in expected:
        assert state[part] == expected[part], f"{part} differs from the sequential run"
    assert {row[2] for row in state["terminal_events_per_record"]} == {1}
    assert len(state["terminal_events_per_record"]) == rows
    assert [row[1] for row in state["sources"]] == ["completed"]
    verified = cli("verify", "--db", s.url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    chunk_runs = s.rows(
        "SELECT payload::json->>'chunk', payload::json->>'mode' FROM journal "
        "WHERE event_type = 'RunStarted' ORDER BY position"
    )
    abandoned = s.rows("SELECT count(*) FROM journal WHERE event_type = 'RunAbandoned'")[0][0]
    attempts = sorted(j[2] for j in s.jobs())
    if kill:
        # the killed chunk ran twice, its second run resumed it; the others ran once
        assert abandoned == 1 and attempts == [1] * 7 + [2], (abandoned, attempts)
        assert len(chunk_runs) == 9 and [m for _c, m in chunk_runs].count("resume") == 1
        assert "queued again" in workers[1].text()  # B's reaper
    else:
        assert abandoned == 0 and attempts == [1] * 8
        assert sorted(int(c) for c, _m in chunk_runs) == list(range(8))
        assert all(f"w{i}" in logs for i in range(2))
        # the workers' per-chunk metrics: every record of every chunk counted once
        counted = [_chunk_records(f) for f in textfiles]
        assert sum(sum(c.values()) for c in counted) == rows, counted
        assert sorted(k for c in counted for k in c if c[k]) == sorted(map(str, range(8)))
