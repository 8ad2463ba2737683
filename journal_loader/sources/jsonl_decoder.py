"""The JSONL decoder: one JSON object per line, with every kind of bad line turned into a
record with an error (see ``readers``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, cast

import msgspec

from journal_loader.sources.encoding import UTF8, Codec, encoding_problem, nul_problem
from journal_loader.sources.records import (
    READ_ERRORS,
    Progress,
    RawRecord,
    read_error,
    where_prefix,
)

MAX_JSON_DEPTH = 64
"""JSONL objects nested deeper than this (the top-level object is level 1) are refused."""

_MSGSPEC_BYTE = re.compile(r"\(byte (\d+)\)")


class JsonlDecoder:
    def __init__(self, path: str, gzipped: bool, codec: Codec, max_record_bytes: int) -> None:
        self.path = path
        self.gzipped = gzipped
        self.codec = codec
        self.max_record_bytes = max_record_bytes

    def records(
        self, lines: Iterator[bytes], offset: int, line: int, start: int, progress: Progress
    ) -> Iterator[RawRecord]:
        decode = msgspec.json.decode
        max_rec = self.max_record_bytes
        text_codec = None if self.codec is UTF8 else self.codec.name
        record = RawRecord
        min_deep = 2 * MAX_JSON_DEPTH  # a line this short cannot nest too deep
        try:
            for raw in lines:
                n = len(raw)
                end = start + n
                if n <= max_rec:
                    try:
                        obj = decode(raw) if text_codec is None else decode(str(raw, text_codec))
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        obj = None
                    if type(obj) is dict and (n <= min_deep or not _too_deep(raw, obj)):
                        rec = record(offset, line, start, end, raw, obj)
                        offset += 1
                        line += 1
                        start = end
                        progress.next = (offset, line, start)
                        yield rec
                        continue
                checked = self._check(raw, offset, line, start, end)
                line += 1
                start = end
                if checked is None:  # a blank line: not a record
                    continue
                offset += 1
                progress.next = (offset, line, start)
                yield checked
        except READ_ERRORS as e:
            raise read_error(self.path, self.gzipped, e, line, start) from e
        progress.next = (offset, line, start)

    def _check(self, raw: bytes, offset: int, line: int, start: int, end: int) -> RawRecord | None:
        """The slow path: find what is wrong with a line (possibly nothing: a BOM, a blank)."""
        codec = self.codec

        def failed(kind: str, problem: str) -> RawRecord:
            return RawRecord(
                offset, line, start, end, raw, None, where_prefix(line, start) + problem, kind
            )

        if end - start > self.max_record_bytes:
            return failed(
                "record_too_large",
                f"the record is {end - start} bytes long, over max_record_bytes "
                f"({self.max_record_bytes})",
            )
        skip = len(codec.bom) if start == 0 and raw.startswith(codec.bom) else 0
        problem = encoding_problem(raw, skip, start, codec)
        if problem is not None:
            return failed("invalid_encoding", problem)
        text = raw[skip:].decode(codec.name)
        if not text.strip(" \t\r\n"):
            return None
        problem = nul_problem(raw, skip, start, codec)
        if problem is not None:
            return failed("nul_byte", problem)
        body: bytes | str = raw[skip:] if codec is UTF8 else text
        try:
            obj = msgspec.json.decode(body)
        except RecursionError:
            return failed("too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        except msgspec.DecodeError as e:
            return failed("invalid_json", self._json_problem(e, body, start + skip))
        if type(obj) is not dict:
            return failed("not_an_object", f"expected a JSON object {{...}}, got {_kind(obj)}")
        if _depth_over(obj, MAX_JSON_DEPTH):
            return failed("too_deep", f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
        return RawRecord(offset, line, start, end, raw, obj)

    @staticmethod
    def _json_problem(exc: msgspec.DecodeError, body: bytes | str, base: int) -> str:
        message = str(exc)
        m = _MSGSPEC_BYTE.search(message)
        if m is None or not isinstance(body, bytes):
            return f"invalid JSON: {message}"
        k = int(m.group(1))
        here = body[k:].lstrip(b"-")
        if here.startswith((b"NaN", b"Infinity")):
            return (
                f"invalid JSON: NaN and Infinity are not JSON values (at byte {base + k}); "
                "write them as null or a string"
            )
        return f"invalid JSON: {_MSGSPEC_BYTE.sub(f'(at byte {base + k})', message)}"


def _kind(obj: object) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if isinstance(obj, int | float):
        return "a number"
    return "null" if obj is None else type(obj).__name__


def _too_deep(raw: bytes, obj: dict[str, Any]) -> bool:
    return raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _depth_over(obj, MAX_JSON_DEPTH)


def _depth_over(obj: object, limit: int) -> bool:
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else cast(list[object], item)
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False
