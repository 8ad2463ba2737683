"""``ReaderOptions``: how to read a source file, with the one copy of the defaults.

The config's ``source:`` section, ``RunOptions.reader``, ``open_reader`` and the DLQ's
re-parser all take their defaults from here. A run journals the options it read with in
``RunStarted.reader`` (a plain mapping, so journals written before this class decode as they
are); :meth:`ReaderOptions.journaled` and :meth:`ReaderOptions.from_journal` are the two sides
of that boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

import msgspec

from journal_loader.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderOptions:
    # csv, tsv, jsonl (ndjson, json); None: from the file name
    format: str | None = None
    encoding: str = "utf-8"
    # None: a tab for TSV, a comma otherwise
    delimiter: str | None = None
    quotechar: str = '"'
    field_size_limit: int = 1_048_576
    max_record_bytes: int = 8_388_608
    # JSONL, a key twice in one object: "error" (the record goes to the DLQ as
    # duplicate_key) or "last" (the last value is kept, as JSON parsers do)
    duplicate_keys: str = "error"

    def __post_init__(self) -> None:
        if self.duplicate_keys not in DUPLICATE_KEYS:
            raise ConfigError(
                f"duplicate_keys must be one of {', '.join(DUPLICATE_KEYS)}, "
                f"not {self.duplicate_keys!r}"
            )
        for label, value in (
            ("field_size_limit", self.field_size_limit),
            ("max_record_bytes", self.max_record_bytes),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, not {value!r}")

    def journaled(self, *, format: str, gzipped: bool) -> dict[str, object]:
        """``RunStarted.reader``: these options with the format the reader found (csv or
        jsonl) and whether the file was gzipped. The keys and their order are the journal's:
        an event's bytes feed its source's hash chain. ``duplicate_keys`` is journaled only
        when it is not the default, so a run with the default journals the bytes it always
        did (a mapping without it reads back as the default: ``from_journal``)."""
        journaled: dict[str, object] = {
            "format": format,
            "gzipped": gzipped,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "quotechar": self.quotechar,
            "field_size_limit": self.field_size_limit,
            "max_record_bytes": self.max_record_bytes,
        }
        if self.duplicate_keys != "error":
            journaled["duplicate_keys"] = self.duplicate_keys
        return journaled

    @classmethod
    def from_journal(cls, recorded: Mapping[str, object]) -> ReaderOptions:
        """The options a ``RunStarted.reader`` mapping records; a key it lacks (an older
        journal) takes the default, and keys that are not options (``gzipped``) are
        ignored. A value of the wrong type raises ``msgspec.ValidationError``."""
        return msgspec.convert(recorded, cls)


class ReaderOverrides(TypedDict, total=False):
    """``open_reader``'s keyword arguments: options given one by one."""

    format: str | None
    encoding: str
    delimiter: str | None
    quotechar: str
    field_size_limit: int
    max_record_bytes: int
    duplicate_keys: str


DUPLICATE_KEYS = ("error", "last")
DEFAULT_READER_OPTIONS = ReaderOptions()
