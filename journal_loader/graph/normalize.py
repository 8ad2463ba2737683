"""Name normalisation for entity resolution: case, whitespace and punctuation folded.

"Acme Widgets, Inc." and "ACME  WIDGETS INC" are the same name; "O'Reilly's" and "OReillys"
too (apostrophes and quotes vanish, other punctuation becomes a space). Unicode is NFKC-
normalised and case-folded; accents are kept ("Café" is not "Cafe").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_DROP = str.maketrans("", "", "'\u2019\u2018\"`\u00b4\u201c\u201d")
_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


@lru_cache(maxsize=1 << 18)  # registry names repeat (cities, states, agents): ~25 calls/record
def normalize_name(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold().translate(_DROP)
    return _PUNCT.sub(" ", folded).replace("_", " ").strip()
