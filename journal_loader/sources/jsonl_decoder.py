"""The JSONL decoder: one JSON object per line, with every kind of bad line turned into a
record with an error (see ``readers``)."""

from __future__ import annotations

import json
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
    def __init__(
        self,
        path: str,
        gzipped: bool,
        codec: Codec,
        max_record_bytes: int,
        keep_last: bool = False,
    ) -> None:
        self.path = path
        self.gzipped = gzipped
        self.codec = codec
        self.max_record_bytes = max_record_bytes
        #: a key twice in one object keeps its last value (``duplicate_keys: last``)
        self.keep_last = keep_last

    def records(
        self, lines: Iterator[bytes], offset: int, line: int, start: int, progress: Progress
    ) -> Iterator[RawRecord]:
        decode = msgspec.json.decode
        max_rec = self.max_record_bytes
        text_codec = None if self.codec is UTF8 else self.codec.name
        record = RawRecord
        min_deep = 2 * MAX_JSON_DEPTH  # a line this short cannot nest too deep
        colon = b":"
        check = not self.keep_last
        try:
            for raw in lines:
                n = len(raw)
                end = start + n
                if n <= max_rec:
                    try:
                        obj = decode(raw) if text_codec is None else decode(str(raw, text_codec))
                    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                        obj = None
                    if (
                        type(obj) is dict
                        and (n <= min_deep or not _too_deep(raw, obj))
                        # (a line with no more colons than keys holds no key twice: below)
                        and (
                            not check
                            or (raw.count(colon) == len(obj) and text_codec is None)
                            or not _keys_twice(
                                raw if text_codec is None else str(raw, text_codec), obj
                            )
                        )
                    ):
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
        twice = None if self.keep_last else _key_twice(body)
        if twice is not None:
            return failed(
                "duplicate_key",
                f"the key {json.dumps(twice, ensure_ascii=False)} appears twice in one JSON "
                "object: one of its values would silently replace the other",
            )
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


# --- a key twice in one object ---------------------------------------------------------------
# JSON parsers, msgspec included, keep the last value of a key given twice in one object
# ({"name": "A", "name": "B"} is {"name": "B"}): a record would lose a value with no trace.
# Such a line is a bad record (``duplicate_key``: the DLQ, with its raw bytes), found
# without a second parse of every line:
#
# * every key of the text is followed by one colon outside strings, so the colons of the
#   line are at least its keys, and its keys at least those of the decoded objects. A line
#   with as many colons as its top-level object has keys (the usual flat record whose values
#   hold no colon) therefore holds no key twice: one count, no walk.
# * otherwise the decoded object is written again (msgspec's encoder: compact, and it
#   never escapes a colon) and its colons counted: one per key it kept, plus those inside
#   its strings. Unless a colon is written ``\u003a`` in the line, a string's colons are
#   exactly those of its text (no other escape makes one), so without a key twice the
#   line and the rewrite have as many colons, and a key dropped (with its value) leaves
#   the line more. Exact both ways, in C. (Other escapes do not matter: a file written
#   with Python's json defaults escapes every accented letter, and its lines must not
#   take the slow way; a walk of the objects in Python cost 3.6 us a record there.)
# * a line with ``\u003a`` (or ``\u003A``) is parsed again by the json module, which
#   reports each object's pairs (``_key_twice``).
# A false alarm of the first two would only cost that slower parse (it has the last
# word); tests pin that there is none. Pinned by tests/test_readers.py (cases, and a
# hypothesis property against the json module's pairs on random objects, with and
# without a key twice).

_encode = msgspec.json.encode


def _keys_twice(body: bytes | str, obj: dict[str, Any]) -> bool:
    """Does an object of this line (``obj``, decoded from ``body``) hold a key twice?"""
    if isinstance(body, bytes):
        colons = body.count(b":")
        escaped = b"\\u003a" in body or b"\\u003A" in body
    else:
        colons = body.count(":")
        escaped = "\\u003a" in body or "\\u003A" in body
    if colons == len(obj):
        return False
    if escaped:
        return _key_twice(body) is not None
    return _encode(obj).count(b":") != colons


class _Twice(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs_once(pairs: list[tuple[str, Any]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Twice(key)
        seen.add(key)


def _key_twice(body: bytes | str) -> str | None:
    """The first key given twice in one object of this line of valid JSON, or None (the
    json module's pairs: exact, and slower than msgspec; for the lines that need it)."""
    try:
        json.loads(body, object_pairs_hook=_pairs_once)
    except _Twice as e:
        return e.key
    except ValueError:  # (msgspec took it: nothing for this check to say)
        return None
    return None
