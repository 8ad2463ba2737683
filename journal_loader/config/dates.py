"""Declared date formats (``MM/DD/YYYY``, or strptime's ``%m/%d/%Y``), checked when the
config is read: ``validation.date_fields`` and the facts: mapping's dates use them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_DATE_TOKENS = (
    ("YYYY", "%Y"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)
_STRPTIME_DIRECTIVES = frozenset("aAbBcdfGHIjmMpSuUVwWxXyYzZ%")
DATE_FORMS = (
    "tokens YYYY, YY, MM, DD, HH, mm, ss between separators (MM/DD/YYYY, YYYY-MM-DD, "
    "DD.MM.YYYY, YYYYMMDD, YYYY-MM-DDTHH:mm:ss) or strptime directives (%d.%m.%Y)"
)


def date_format(declared: str) -> str:
    """A declared date format (``MM/DD/YYYY``, or strptime's ``%m/%d/%Y``) as a strptime
    format; a ValueError naming the unknown token and the accepted forms when it is not one.
    Checked when the config is read: a format no value can match would fail every record."""
    if "%" in declared:
        directives = re.findall(r"%(.?)", declared)
        for d in directives:
            if d not in _STRPTIME_DIRECTIVES:
                raise ValueError(
                    f"unknown directive {'%' + d!r} in {declared!r}; a date format is made of "
                    f"{DATE_FORMS}"
                )
        return declared
    out: list[str] = []
    found = False
    i = 0
    while i < len(declared):
        for token, directive in _DATE_TOKENS:
            if declared.startswith(token, i):
                out.append(directive)
                i += len(token)
                found = True
                break
        else:
            if not declared[i].isalpha():
                out.append(declared[i])
                i += 1
                continue
            j = i + 1  # a run of letters, up to where a token starts
            while (
                j < len(declared)
                and declared[j].isalpha()
                and not any(declared.startswith(t, j) for t, _ in _DATE_TOKENS)
            ):
                j += 1
            word = declared[i:j]
            if word not in ("T", "Z"):  # ISO 8601's separators are literal letters
                raise ValueError(
                    f"unknown token {word!r} in {declared!r}; a date format is made of {DATE_FORMS}"
                )
            out.append(word)
            i = j
    if not found:
        raise ValueError(f"{declared!r} has no date tokens; a date format is made of {DATE_FORMS}")
    return "".join(out)


def _check_date_format(declared: str) -> str:
    date_format(declared)
    return declared


DateFormat = Annotated[str, AfterValidator(_check_date_format)]
