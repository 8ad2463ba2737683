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
        try:
            while chunk := fileobj.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
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
