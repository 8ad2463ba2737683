""" "Did you mean ...?" for a misspelt name: config keys, columns, types, commands, classes."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice most like ``word`` (difflib's ratio, at least 0.6), else None. Case is
    ignored for the comparison, so ``licence no`` finds ``Licence No``."""
    options = [c for c in choices if isinstance(c, str) and c != word]
    if not options:
        return None
    by_folded: dict[str, str] = {}
    for c in options:
        by_folded.setdefault(c.casefold(), c)
    match = difflib.get_close_matches(word.casefold(), list(by_folded), n=1, cutoff=0.6)
    return by_folded[match[0]] if match else None


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` to append to a message, or ``""`` when nothing is close."""
    match = closest(word, choices)
    return f"; did you mean {match!r}?" if match is not None else ""
