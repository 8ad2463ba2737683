"""Physical lines of a byte stream, terminators included (LF, CRLF, CR), byte-exact: for
ASCII-compatible encodings on bytes, for UTF-16/UTF-32 on code units (see ``readers``)."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterator
from itertools import chain

from journal_loader.sources.encoding import Codec

BLOCK = 1 << 18  # bytes read at once
_LINE_END = re.compile(rb"\r\n|\r|\n")


def byte_lines(read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Physical lines of an ASCII-compatible byte stream, terminators (LF, CRLF, CR) included.

    The stream is read in blocks and split with ``bytes.splitlines`` (which splits on exactly
    LF, CRLF and CR), so there is no per-line Python code here.
    """
    return chain.from_iterable(_byte_line_blocks(read))


def _byte_line_blocks(read: Callable[[int], bytes]) -> Iterator[list[bytes]]:
    parts: list[bytes] = []  # an unfinished line: no line end, except maybe a final CR
    size = 1 << 14  # small first blocks: reading just a header must not read much more
    while True:
        block = read(size)
        size = min(size * 2, BLOCK)
        if not block:
            if parts:
                yield [b"".join(parts)]
            return
        if parts:
            if parts[-1][-1] == 13:  # a CR ended the last block: is it CR LF?
                if block[0] == 10:
                    parts.append(b"\n")
                    block = block[1:]
                yield [b"".join(parts)]
                parts.clear()
            else:
                m = _LINE_END.search(block)
                if m is None or (m.end() == len(block) and block[-1] == 13):
                    parts.append(block)
                    continue
                parts.append(block[: m.end()])
                yield [b"".join(parts)]
                parts.clear()
                block = block[m.end() :]
            if not block:
                continue
        lines = block.splitlines(keepends=True)
        if lines[-1][-1] != 10:  # unfinished, or a CR that an LF may follow
            parts.append(lines.pop())
        yield lines


def wide_lines(read: Callable[[int], bytes], codec: Codec) -> Iterator[bytes]:
    """Physical lines of a UTF-16/UTF-32 byte stream (terminators matched on code units)."""
    cr, lf = re.escape(codec.cr), re.escape(codec.lf)
    unit = b"." * codec.unit
    line_re = re.compile(
        b"(?:(?!"
        + cr
        + b"|"
        + lf
        + b")"
        + unit
        + b")*(?:"
        + cr
        + lf
        + b"|"
        + cr
        + b"|"
        + lf
        + b")",
        re.DOTALL,
    )
    buf = b""
    pos = 0
    eof = False
    while True:
        m = line_re.match(buf, pos)
        if m is not None:
            end = m.end()
            # A line ending in CR may be the first half of CR LF: it is only complete once a
            # whole code unit follows it (or the data ends).
            if eof or buf[end - len(codec.cr) : end] != codec.cr or len(buf) - end >= len(codec.lf):
                yield m.group()
                pos = end
                continue
        if eof:
            if pos < len(buf):
                yield buf[pos:]
            return
        data = read(BLOCK)
        eof = not data
        buf = buf[pos:] + data
        pos = 0


def drain(pushback: deque[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    while pushback:
        yield pushback.popleft()
    # Not `yield from`: closing this generator must not close `rest`.
    for item in rest:  # noqa: UP028
        yield item
