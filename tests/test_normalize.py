"""``normalize_name``'s fast path for ASCII text (and ``normalize_value``, the same for an
attribute's value, uncached) equals the general one, character for character (the path is an
optimisation: a name resolves to the same node either way)."""

from __future__ import annotations

import itertools
import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from journal_loader.graph.normalize import normalize_name, normalize_value
from tests.support.properties import example_counts

_DROP = str.maketrans("", "", "'\u2019\u2018\"`\u00b4\u201c\u201d")
_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


def general(name: str) -> str:
    """The definition (and the way every non-ASCII name still goes)."""
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_DROP)
    return _PUNCT.sub(" ", folded).replace("_", " ").strip()


ASCII = "".join(map(chr, range(128)))


def test_examples() -> None:
    assert normalize_name("Acme Widgets, Inc.") == normalize_name("ACME  WIDGETS INC")
    assert normalize_name("O'Reilly's") == "oreillys" == normalize_name('O"Reilly`s')
    assert normalize_name("  2009-02-10 ") == "2009 02 10"
    assert normalize_name("a__b") == "a  b"  # "_" is a word character, then a space
    assert normalize_name("Café") == "café"


def test_every_pair_of_ascii_characters() -> None:
    for a, b in itertools.product(ASCII, repeat=2):
        for name in (a + b, f"x{a}{b}y", f"{a}Z9{b}"):
            assert normalize_name.__wrapped__(name) == general(name), repr(name)
            assert normalize_value(name) == general(name), repr(name)


@example_counts(300, 20_000)
def test_any_text(examples: int) -> None:
    @settings(max_examples=examples, deadline=None)
    @given(st.text(st.sampled_from(ASCII), max_size=30) | st.text(max_size=30))
    def check(name: str) -> None:
        assert normalize_name.__wrapped__(name) == general(name)
        assert normalize_value(name) == general(name)

    check()
