"""Telling a file's format (CSV or JSONL, gzipped or not) and its text encoding, and
describing bytes that do not decode (see ``readers``)."""

from __future__ import annotations

import codecs
import os
from dataclasses import dataclass
from typing import Literal

from journal_loader.errors import ConfigError

_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
_FORMAT_NAMES = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl"}
_GZIP_MAGIC = b"\x1f\x8b"

RecordFormat = Literal["csv", "jsonl"]  # what a reader reads a file as (TSV is CSV)


def detect_format(path: str, configured: str | None = None) -> tuple[RecordFormat, bool]:
    """Return ``(format, gzipped)`` for ``path``: format ``'csv'`` or ``'jsonl'``.

    The format is ``configured`` when given (``csv``, ``tsv``, ``jsonl``, ``ndjson``, ``json``;
    case-insensitive), else taken from the extension: ``.csv``/``.tsv``/``.txt`` are CSV,
    ``.jsonl``/``.ndjson``/``.json`` are JSONL, after removing a trailing ``.gz``. The file is
    gzipped when its first two bytes are the gzip magic ``1f 8b`` (when the file cannot be read,
    when its name ends in ``.gz``). Raises ConfigError when the format cannot be told.
    """
    head: bytes | None
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        head = None
    fmt, gzipped, _tsv = detect(path, configured, head)
    return fmt, gzipped


def detect(
    path: str, configured: str | None, head: bytes | None
) -> tuple[RecordFormat, bool, bool]:
    """-> (format, gzipped, tab-separated)."""
    name = os.path.basename(path).lower()
    named_gz = name.endswith(".gz")
    if named_gz:
        name = name[:-3]
    gzipped = named_gz if head is None else head.startswith(_GZIP_MAGIC)
    if configured is not None:
        kind = _FORMAT_NAMES.get(configured.strip().lower())
        if kind is None:
            raise ConfigError(f"{path}: unknown format {configured!r}; use csv, tsv or jsonl")
    else:
        ext = os.path.splitext(name)[1]
        kind = _EXTENSIONS.get(ext)
        if kind is None:
            what = f"extension {ext!r}" if ext else "no extension"
            raise ConfigError(
                f"{path}: cannot tell the format from the file name ({what}); "
                "set the format to csv, tsv or jsonl"
            )
    return ("jsonl" if kind == "jsonl" else "csv"), gzipped, kind == "tsv"


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # codec that decodes one line (BOM-less, fixed byte order)
    display: str  # for messages
    unit: int  # 1: ASCII-compatible, lines split on bytes; 2 or 4: UTF-16 / UTF-32
    cr: bytes
    lf: bytes
    bom: bytes  # removed when the stream starts with it


UTF8 = Codec("utf-8", "UTF-8", 1, b"\r", b"\n", codecs.BOM_UTF8)


def resolve_codec(encoding: str, head: bytes) -> Codec:
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r}") from None
    if name in ("utf-8", "utf-8-sig"):
        return UTF8
    if name == "utf-16":  # byte order from the BOM, little-endian without one
        name = "utf-16-be" if head.startswith(codecs.BOM_UTF16_BE) else "utf-16-le"
    elif name == "utf-32":
        name = "utf-32-be" if head.startswith(codecs.BOM_UTF32_BE) else "utf-32-le"
    if name in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        return Codec(
            name,
            name.upper(),
            2 if name.startswith("utf-16") else 4,
            "\r".encode(name),
            "\n".encode(name),
            "\ufeff".encode(name),
        )
    probe = '\r\n,;|\t"az'
    try:
        compatible = probe.encode(name) == probe.encode("ascii") and (
            probe.encode("ascii").decode(name) == probe
        )
    except (UnicodeError, LookupError):  # LookupError: not a text encoding (base64, rot13...)
        compatible = False
    if not compatible:
        raise ConfigError(
            f"encoding {encoding!r} is not supported: use an ASCII-compatible encoding "
            "(utf-8, latin-1, cp1252...) or utf-16 / utf-32"
        )
    return Codec(name, name, 1, b"\r", b"\n", codecs.BOM_UTF8)


def looks_wide(sample: bytes) -> str | None:
    """Describe why ``sample`` (the file's first bytes) looks UTF-16/UTF-32, or None."""
    for bom, what in (
        (codecs.BOM_UTF32_LE, "UTF-32 (it starts with the byte-order mark FF FE 00 00)"),
        (codecs.BOM_UTF32_BE, "UTF-32 (it starts with the byte-order mark 00 00 FE FF)"),
        (codecs.BOM_UTF16_LE, "UTF-16 (it starts with the byte-order mark FF FE)"),
        (codecs.BOM_UTF16_BE, "UTF-16 (it starts with the byte-order mark FE FF)"),
    ):
        if sample.startswith(bom):
            return what
    first = sample.split(b"\n", 1)[0]

    def nuls(part: bytes) -> float:
        return part.count(0) / len(part) if part else 0.0

    if len(first) >= 6 and min(nuls(first[i::4]) for i in (1, 2, 3)) > 0.9 > nuls(first[::4]):
        return "UTF-32 (the first line has three NUL bytes out of four)"
    if len(first) >= 6 and min(nuls(first[i::4]) for i in (0, 1, 2)) > 0.9 > nuls(first[3::4]):
        return "UTF-32 (the first line has three NUL bytes out of four)"
    if len(first) >= 4 and (
        (nuls(first[1::2]) > 0.5 and nuls(first[::2]) < 0.1)
        or (nuls(first[::2]) > 0.5 and nuls(first[1::2]) < 0.1)
    ):
        return "UTF-16 (the first line has NUL bytes every other byte)"
    return None


def encoding_problem(raw: bytes, skip: int, start: int, codec: Codec) -> str | None:
    """Message for the first undecodable bytes of ``raw[skip:]``, or None if it decodes."""
    try:
        raw[skip:].decode(codec.name)
    except UnicodeDecodeError as e:
        bad = raw[skip + e.start : skip + e.end]
        at = start + skip + e.start
        shown = " ".join(f"0x{b:02x}" for b in bad)
        noun = "byte" if len(bad) == 1 else "bytes"
        return f"invalid {codec.display} {noun} {shown} at byte {at} ({e.reason})"
    return None


def nul_problem(raw: bytes, skip: int, start: int, codec: Codec) -> str | None:
    if codec.unit == 1:
        i = raw.find(0, skip)
        return None if i < 0 else f"NUL byte (0x00) at byte {start + i}"
    text = raw[skip:].decode(codec.name, "replace")
    i = text.find("\x00")
    if i < 0:
        return None
    return f"NUL character at byte {start + skip + len(text[:i].encode(codec.name))}"
