"""Issue 9, item 5: read-only copies, a lock reached through a symlink, Ctrl-C at start-up.

* `status`, `verify`, `dlq list`, `history` (and the other read commands) work on a SQLite
  file that cannot be written, in a folder that cannot be written, WAL-mode or not, and
  write nothing there (no -wal, no -shm, no lock folder);
* a second run reaching the same SQLite file through a symlink meets the first run's lock
  (exit 75), because the lock is taken beside the file's real path;
* Ctrl-C while the command is still importing exits 130 without a traceback.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import run_cli_process
from tests.support.ops import pairs_config, run_cli

# Root writes read-only files anyway; in a user namespace of its own (`unshare --user`) it
# has no capability over the files outside it, so read-only means read-only again.
AS_USER = ["unshare", "--user"] if os.geteuid() == 0 else []


def _ro_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JOURNAL_LOADER_DB_URL": ""}
    return run_cli_process(args, cwd=cwd, env=env, timeout=120, user_namespace=bool(AS_USER))


def _needs_read_only() -> None:
    if AS_USER and _ro_cli("--version").returncode != 0:
        pytest.skip("running as root without `unshare --user`: read-only files are writable")


READ_COMMANDS = [
    ["status"],
    ["verify"],
    ["dlq", "list", "--source", "1"],
    ["history", "1", "6"],
    ["export"],
    ["lineage", "node", "1"],
    ["status", "--as-of", "5"],
    ["dlq", "summary"],
    ["graph", "stats"],
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ro")
    config = pairs_config(folder)
    done = run_cli("run", config, "--db", f"sqlite:///{folder / 'journal.db'}", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder


def _answers(db: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for args in READ_COMMANDS:
        done = _ro_cli(*args, "--db", f"sqlite:///{db}", cwd=db.parent)
        assert "Traceback" not in done.stderr
        # what moves on by itself: ages (status) and timings (verify); and where it is
        text = re.sub(r"\d+[smhd] ago|in \d+\.\d+ s", "~", done.stdout.replace(str(db), "DB"))
        out[" ".join(args)] = (done.returncode, text)
    return out


@pytest.fixture(scope="module")
def reference(loaded: Path) -> dict[str, tuple[int, str]]:
    answers = _answers(loaded / "journal.db")
    assert all(code == 0 for code, _ in answers.values()), answers
    return answers


def _copy(src: Path, folder: Path, *, wal: bool) -> Path:
    folder.mkdir()
    db = folder / "journal.db"
    with sqlite3.connect(src) as a, sqlite3.connect(db) as b:
        a.backup(b)
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA journal_mode = {'WAL' if wal else 'DELETE'}")
    conn.close()
    assert sorted(p.name for p in folder.iterdir()) == ["journal.db"]
    return db


@pytest.fixture
def readonly() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for path in made:  # let pytest clean up
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


@pytest.mark.parametrize(
    ("what", "wal"),
    # a read-only WAL file in the default run; every combination in the slow run (and CI)
    [("file", True)]
    + [
        pytest.param(w, m, marks=pytest.mark.slow)
        for w, m in [
            ("file", False),
            ("folder", True),
            ("folder", False),
            ("both", True),
            ("both", False),
        ]
    ],
    ids=lambda v: {True: "wal", False: "rollback-journal"}.get(v, v) if isinstance(v, bool) else v,
)
def test_read_commands_on_a_read_only_copy(
    loaded: Path,
    reference: dict[str, tuple[int, str]],
    tmp_path: Path,
    readonly: list[Path],
    wal: bool,
    what: str,
) -> None:
    _needs_read_only()
    db = _copy(loaded / "journal.db", tmp_path / "copy", wal=wal)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    if what in ("file", "both"):
        db.chmod(0o444)
        readonly.append(db)
    if what in ("folder", "both"):
        db.parent.chmod(0o555)
        readonly.append(db.parent)
    got = _answers(db)
    for command, (code, out) in got.items():
        assert code == 0, (command, out)
        assert out == reference[command][1], command
    assert sorted(p.name for p in db.parent.iterdir()) == ["journal.db"]  # no WAL, no locks
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_a_read_only_copy_with_its_wal_is_read_with_the_wal(
    loaded: Path, tmp_path: Path, readonly: list[Path]
) -> None:
    """A copy taken with its -wal and -shm (the last batches not yet checkpointed): the read
    commands see what the WAL holds too."""
    _needs_read_only()
    db = _copy(loaded / "journal.db", tmp_path / "copy", wal=True)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("UPDATE sources SET source_name = 'only in the wal'")
    writer.commit()
    holder = sqlite3.connect(db)  # keeps the WAL from being checkpointed at close
    holder.execute("SELECT 1 FROM sources").fetchall()
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        (snapshot / name).write_bytes((db.parent / name).read_bytes())
    holder.close()
    writer.close()
    for path in snapshot.iterdir():
        path.chmod(0o444)
        readonly.append(path)
    snapshot.chmod(0o555)
    readonly.append(snapshot)
    done = _ro_cli("status", "--json", "--db", f"sqlite:///{snapshot / 'journal.db'}")
    assert done.returncode == 0, done.stderr
    assert "only in the wal" in done.stdout
    listed = _ro_cli("dlq", "list", "--db", f"sqlite:///{snapshot / 'journal.db'}")
    assert listed.returncode == 0, listed.stderr
    assert sorted(p.name for p in snapshot.iterdir()) == [
        "journal.db",
        "journal.db-shm",
        "journal.db-wal",
    ]


def test_a_run_through_a_symlink_meets_the_lock(tmp_path: Path) -> None:
    from journal_loader.sources.identity import open_source
    from journal_loader.storage import open_store

    config = pairs_config(tmp_path / "cfg")
    real = tmp_path / "real"
    real.mkdir()
    store = open_store(f"sqlite:///{real / 'journal.db'}")
    link = tmp_path / "link"
    link.mkdir()
    (link / "journal.db").symlink_to(real / "journal.db")
    src = open_source(str(tmp_path / "cfg" / "pairs.csv"))
    lock = store.lock_source(f"pairs:{src.sha256}", {"run_id": "the-first-run"})
    src.close()
    try:
        done = run_cli("run", config, "--db", f"sqlite:///{link / 'journal.db'}", cwd=tmp_path)
        assert done.returncode == 75, done.stdout + done.stderr
        assert "the-first-run" in done.stderr
        linked_dir = tmp_path / "linked-dir"
        linked_dir.symlink_to(real)
        again = run_cli("run", config, "--db", f"sqlite:///{linked_dir / 'journal.db'}")
        assert again.returncode == 75, again.stdout + again.stderr
    finally:
        lock.release()
        store.dispose()
    assert not (link / "journal.db.locks").exists()


# The child pauses inside the import of one of the CLI's heavy modules and says so on stdout;
# only then does the test send SIGINT. An earlier version watched `python -X importtime`'s
# output for the module instead, but the pipe buffers 64 KB: on a busy machine the child
# finished importing (and ran `status`, exit 2) before the test read the line, a flake.
#
# The child first gives SIGINT Python's usual handler: a process started in the background by
# a shell without job control (`cmd &` in a script, as `nohup .ci/run &` starts the suite)
# inherits SIGINT ignored, as POSIX wants for background jobs, and then a Ctrl-C is
# rightly ignored; the test is about a Ctrl-C at a terminal.
_PAUSE_IN_IMPORT = """
import faulthandler, signal
signal.signal(signal.SIGINT, signal.default_int_handler)
faulthandler.register(signal.SIGUSR1)  # the test's diagnosis if the child outlives its SIGINT
import importlib.abc, sys, time
MARKER = sys.argv[1]
class PauseAtMarker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == MARKER:
            sys.meta_path.remove(self)
            cli_importing = "journal_loader.cli" in sys.modules
            print(f"importing {name} cli_importing={cli_importing}", flush=True)
            time.sleep(60)
        return None
sys.meta_path.insert(0, PauseAtMarker())
sys.argv = ["journal-loader", "status"]
from journal_loader.__main__ import main
main()
"""


def test_ctrl_c_while_importing_exits_130_quietly(tmp_path: Path) -> None:
    """SIGINT while the CLI is still importing its modules (the first second of a command)."""
    for marker in ("sqlalchemy.sql", "click", "pydantic"):
        child = subprocess.Popen(
            [sys.executable, "-c", _PAUSE_IN_IMPORT, marker],
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None and child.stderr is not None
        said = child.stdout.readline()
        # The pause happened inside `import journal_loader.cli`, not later in the command.
        assert said.strip() == f"importing {marker} cli_importing=True", said
        child.send_signal(signal.SIGINT)
        try:
            _, rest = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # Seen once in CI (the marker click), not reproduced: the child still ran 30 s
            # after its SIGINT. Fail with what it was doing and its signal state, to find out.
            status = Path(f"/proc/{child.pid}/status").read_text()
            signals = [line for line in status.splitlines() if line.startswith("Sig")]
            child.send_signal(signal.SIGUSR1)
            time.sleep(2)
            child.kill()
            _, stack = child.communicate(timeout=30)
            pytest.fail(f"{marker}: still running 30 s after SIGINT; {signals}\n{stack}")
        assert child.returncode == 130, (marker, rest)
        assert rest.strip() == "interrupted", rest
        assert "journal.db" not in os.listdir(tmp_path)
