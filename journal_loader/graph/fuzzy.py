"""Fuzzy name matching: one scoring function on every backend.

The score is pg_trgm's ``similarity()``, computed in Python: the set of trigrams of each
name (every word padded with two spaces in front and one behind, as pg_trgm does), and
``|common| / |union|``. The embedded graph always scores in Python, on SQLite and on
PostgreSQL alike, so the same names get the same score (and the same decision) on both.

Why not let PostgreSQL score, and why not a ready-made library for SQLite?

* A library's ratios (rapidfuzz's ``ratio``, ``token_set_ratio``...) are edit-distance
  measures: a different number from pg_trgm's trigram overlap for almost every pair, so a
  0.8 threshold would decide differently on the two backends.
* pg_trgm's own result depends on the database: its word characters and lower-casing follow
  the database's locale (with ``LC_CTYPE=C`` every non-ASCII letter is a word separator:
  "Núñez" has the words "n" and "ez"), and trigrams of multibyte characters are hashed to
  three bytes. Python cannot reproduce that for every locale.

So names are first reduced to a **fuzzy key** made only of ``[a-z0-9 ]``: the normalised
name (``normalize_name``) with accents folded ("Núñez" -> "nunez", "Ørsted" -> "orsted").
On such keys pg_trgm tokenises exactly like this module in every locale, and its
similarity equals :func:`similarity` (up to float4 rounding); ``tests/test_graph_fuzzy.py``
checks it against a live pg_trgm. PostgreSQL's trigram index (``ix_nodes_fuzzy_key_trgm``,
GIN over ``nodes.fuzzy_key``, built when pg_trgm is available) is therefore used only to
*find* candidates, with a threshold a little below the configured one (a superset of what
can match); the candidates are then scored here. Without pg_trgm (SQLite, or PostgreSQL
without the extension) candidates come from an in-process trigram index
(:class:`TrigramIndex`), probed through the rarest trigrams of the name (prefix filtering:
a name that shares fewer than ``ceil(t * n)`` of the ``n`` trigrams of the query cannot
reach similarity ``t``).

A name with letters that do not fold to ASCII (Cyrillic, Greek, CJK...) has no fuzzy key:
it is matched by external key, exact name or alias only, never fuzzily. Dropping those
letters instead would make "北京 Trading" and "上海 Trading" identical.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

from journal_loader.graph.normalize import normalize_name

# Latin letters that NFKD does not decompose into an ASCII letter and a combining mark.
_FOLD = {
    "ß": "ss",
    "ẞ": "ss",
    "æ": "ae",
    "œ": "oe",
    "ø": "o",
    "đ": "d",
    "ð": "d",
    "þ": "th",
    "ł": "l",
    "\u0131": "i",  # dotless i
    "ħ": "h",
    "ŋ": "n",
    "ŧ": "t",
    "ĸ": "k",
    "\u017f": "s",  # long s
}

# Candidates are fetched from pg_trgm with this much slack below the threshold, so float4
# rounding can never drop a name that the Python score accepts.
PG_THRESHOLD_SLACK = 1e-3


def fuzzy_key(name: str, norm: str | None = None) -> str | None:
    """The name as ``[a-z0-9 ]`` words, accents folded; None when it has non-Latin letters.

    ``norm``: ``normalize_name(name)`` when the caller has it already."""
    if norm is None:
        norm = normalize_name(name)
    if norm.isascii():  # already [a-z0-9 ] (normalize_name folds case and punctuation)
        return " ".join(norm.split()) or None
    folded: list[str] = []
    for ch in unicodedata.normalize("NFKD", norm):
        if ch < "\x80":
            folded.append(ch)
        elif unicodedata.combining(ch):
            continue
        else:
            ascii_form = _FOLD.get(ch)
            if ascii_form is not None:
                folded.append(ascii_form)
            elif ch.isalnum():
                return None
            else:
                folded.append(" ")
    key = " ".join("".join(folded).split())
    return key or None


def trigrams(key: str) -> frozenset[str]:
    """pg_trgm's trigrams of a fuzzy key: each word padded as ``"  word "``."""
    out: set[str] = set()
    for word in key.split():
        padded = f"  {word} "
        out.update(padded[i : i + 3] for i in range(len(padded) - 2))
    return frozenset(out)


def trigram_similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity of two names (0..1), the same on every backend."""
    key_a, key_b = fuzzy_key(a), fuzzy_key(b)
    if key_a is None or key_b is None:
        return 1.0 if key_a == key_b and normalize_name(a) == normalize_name(b) else 0.0
    return trigram_similarity(trigrams(key_a), trigrams(key_b))


def min_common(query_size: int, threshold: float) -> int:
    """Fewest trigrams a name must share with a query of ``query_size`` trigrams to reach
    ``threshold``: |A u B| >= |A|, so c / |A u B| >= t needs c >= t * |A|."""
    return max(1, math.ceil(threshold * query_size - 1e-9))


class TrigramIndex:
    """Names of one node type by trigram, in process; candidates by prefix filtering.

    Entries are node ids with their fuzzy key and a payload (what the caller needs to know
    about a candidate). ``remove`` exists for undo: a record that fails, or a batch that
    rolls back, takes its new names out again.
    """

    __slots__ = ("_entries", "_postings")

    def __init__(self) -> None:
        self._postings: dict[str, set[int]] = {}
        self._entries: dict[int, tuple[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def add(self, node_id: int, key: str, payload: Any = None) -> bool:
        if node_id in self._entries:
            return False
        self._entries[node_id] = (key, payload)
        postings = self._postings
        for trigram in trigrams(key):
            ids = postings.get(trigram)
            if ids is None:
                postings[trigram] = {node_id}
            else:
                ids.add(node_id)
        return True

    def remove(self, node_id: int) -> None:
        entry = self._entries.pop(node_id, None)
        if entry is None:
            return
        for trigram in trigrams(entry[0]):
            ids = self._postings.get(trigram)
            if ids is not None:
                ids.discard(node_id)
                if not ids:
                    del self._postings[trigram]

    def clear(self) -> None:
        self._entries.clear()
        self._postings.clear()

    def payload(self, node_id: int) -> Any:
        return self._entries[node_id][1]

    def candidates(self, key: str, threshold: float) -> Iterator[tuple[int, float]]:
        """(node id, score) for every indexed name scoring >= threshold against ``key``."""
        query = trigrams(key)
        if not query:
            return
        postings = self._postings
        # Any name with >= k common trigrams shares one of the (n - k + 1) rarest ones.
        ranked = sorted(query, key=lambda t: len(postings.get(t, ())))
        probe = ranked[: len(query) - min_common(len(query), threshold) + 1]
        seen: set[int] = set()
        for trigram in probe:
            seen.update(postings.get(trigram, ()))
        entries = self._entries
        for node_id in seen:
            score = trigram_similarity(query, trigrams(entries[node_id][0]))
            if score >= threshold:
                yield node_id, score


def best_matches(
    scored: Iterable[tuple[int, float]],
) -> list[tuple[int, float]]:
    """Scored candidates, best first (ties by id, so the order is the same everywhere)."""
    return sorted(scored, key=lambda c: (-c[1], c[0]))
