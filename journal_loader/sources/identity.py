"""What makes a source a source: its type and the SHA-256 of its content.

The version label (2025-Q4, 2025-10, 2025-10-01, or a hash prefix) is a label for people,
taken from a date in the file name or else the file's modification time; it is not an
identity: two different files with the same label are two sources and both load.

The file is opened once: the same descriptor is hashed and then read, so the records loaded
are the bytes that were hashed even if someone replaces the file by name meanwhile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import stat
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from journal_loader.errors import SourceChangedError, SourceFileError


class UpdateFrequency(StrEnum):
    """How often a source's publisher issues a new version: what a version label says."""

    QUARTERLY = "quarterly"  # 2026-Q1
    MONTHLY = "monthly"  # 2026-01
    WEEKLY = "weekly"  # 2026-W01 (ISO week)
    DAILY = "daily"  # 2026-01-05
    YEARLY = "yearly"  # 2026
    HASH = "hash"  # the content's hash: no calendar


FREQUENCIES = tuple(UpdateFrequency)  # in the order messages list them
_DATE_IN_NAME = re.compile(
    r"(?<!\d)((?:19|20)\d{2})[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])(?!\d)"
)
_CHUNK = 1 << 20
_HASH_BUFFER = 4 << 20


@dataclass(slots=True)
class SourceFile:
    path: str
    file_name: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    version_label: str
    fileobj: BinaryIO

    @property
    def mtime_iso(self) -> str:
        return dt.datetime.fromtimestamp(self.mtime_ns / 1e9, dt.UTC).isoformat()

    def check_unchanged(self) -> None:
        """Raise SourceChangedError if the open file grew, shrank or was rewritten."""
        st = os.fstat(self.fileobj.fileno())
        if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
            what = (
                f"size {self.size} -> {st.st_size}"
                if st.st_size != self.size
                else "modification time changed"
            )
            raise SourceChangedError(
                self.path,
                f"the file changed while it was being loaded ({what}); the records already "
                "committed are kept; rerun to load the new content as a new source",
            )

    def close(self) -> None:
        self.fileobj.close()


def date_from_name(file_name: str) -> dt.date | None:
    for m in _DATE_IN_NAME.finditer(file_name):
        try:
            return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            continue
    return None


def version_label(file_name: str, mtime: dt.datetime, frequency: str, file_hash: str) -> str:
    if frequency not in FREQUENCIES:
        raise ValueError(f"update_frequency must be one of {', '.join(FREQUENCIES)}")
    if frequency == UpdateFrequency.HASH:
        return file_hash[:12]
    day = date_from_name(file_name) or mtime.date()
    if frequency == UpdateFrequency.QUARTERLY:
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    if frequency == UpdateFrequency.MONTHLY:
        return f"{day.year}-{day.month:02d}"
    if frequency == UpdateFrequency.WEEKLY:
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if frequency == UpdateFrequency.YEARLY:
        return str(day.year)
    return day.isoformat()  # daily


def open_source(
    path: str | os.PathLike[str], *, update_frequency: str = UpdateFrequency.HASH.value
) -> SourceFile:
    """Open, stat and hash the file; the returned SourceFile keeps it open for reading."""
    text_path = os.fspath(path)
    try:
        fd = os.open(text_path, os.O_RDONLY)
    except FileNotFoundError:
        raise SourceFileError(text_path, "no such file") from None
    except IsADirectoryError:
        raise SourceFileError(text_path, "is a directory, not a file") from None
    except PermissionError:
        raise SourceFileError(text_path, "permission denied (the file is not readable)") from None
    except OSError as e:
        raise SourceFileError(text_path, f"cannot open: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # Linux opens a directory read-only without complaint
        os.close(fd)
        what = "is a directory, not a file" if stat.S_ISDIR(st.st_mode) else "is not a regular file"
        raise SourceFileError(text_path, what)
    fileobj = os.fdopen(fd, "rb", buffering=_CHUNK)
    try:
        digest = hashlib.sha256()
        size = 0
        # One reused buffer of a few MiB: read and update each release the GIL for the whole
        # buffer, so hashing in SourceAhead's thread waits for the GIL a dozen times for a
        # 40 MB file, not forty (a wait can last the 5 ms switch interval).
        buffer = bytearray(_HASH_BUFFER)
        view = memoryview(buffer)
        try:
            while n := os.readv(fd, [buffer]):
                digest.update(view[:n])
                size += n
        except OSError as e:
            raise SourceFileError(text_path, f"read error: {e.strerror}") from None
        if size != st.st_size:
            raise SourceChangedError(text_path, "the file changed while it was being hashed")
        fileobj.seek(0)
        file_hash = digest.hexdigest()
        mtime = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, dt.UTC)
        name = Path(text_path).name
        return SourceFile(
            path=text_path,
            file_name=name,
            size=size,
            mtime_ns=st.st_mtime_ns,
            inode=st.st_ino,
            sha256=file_hash,
            version_label=version_label(name, mtime, update_frequency, file_hash),
            fileobj=fileobj,
        )
    except BaseException:
        fileobj.close()
        raise


class SourceAhead:
    """``open_source`` started in a thread, so that hashing the file overlaps opening the
    database: ``run()`` starts it first and the runner takes the result when it needs the
    source's identity (for its lock). Hashing is most of a resumed run's start-up (issue 11:
    26 of 51 ms at 90% of 200,000 rows on PostgreSQL, beside 10 ms opening the store), and
    hashlib releases the GIL for large updates, as the driver does while it connects.

    Why a daemon thread, and why ``abandon``: an interrupted run (Ctrl-C, or an error opening
    the database) must neither wait for the hash nor leak the descriptor. ``result`` blocks
    in ``Thread.join``, which Ctrl-C interrupts; the thread is a daemon, so the process can
    exit before it finishes; ``abandon`` (the caller's ``finally``) has the thread close the
    file once it is done if nobody took it. Errors (no such file, the file changed while it
    was hashed) are raised by ``result``, in the caller's thread, where they were raised
    before: after the store opened. Pinned by tests/test_source_ahead.py."""

    def __init__(self, path: str | os.PathLike[str], *, update_frequency: str) -> None:
        self._path, self._frequency = path, update_frequency
        self._source: SourceFile | None = None
        self._error: BaseException | None = None
        self._taken = False
        self._abandoned = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._open, name="journal-loader hash", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        try:
            source = open_source(self._path, update_frequency=self._frequency)
        except BaseException as e:  # handed to the caller's thread by result()
            self._error = e
            return
        with self._lock:
            if self._abandoned:
                source.close()
            else:
                self._source = source

    def result(self) -> SourceFile:
        """The opened, hashed source (once); the thread's error if it failed."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        with self._lock:
            assert self._source is not None and not self._taken, "result() is taken once"
            self._taken = True
            return self._source

    def abandon(self) -> None:
        """Close the source if nobody took it (now, or when the thread finishes)."""
        with self._lock:
            self._abandoned = True
            if self._source is not None and not self._taken:
                self._source.close()
                self._source = None
