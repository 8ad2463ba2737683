"""The README, read by the tests that check it: its sections and their code blocks."""

from __future__ import annotations

import re
import shlex

from tests.support.example import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def readme_section(title: str) -> str:
    """One ``## title`` section of the README, heading included (docs are checked by tests)."""
    m = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", README, re.M | re.S)
    assert m, f"README.md has no section {title!r}"
    return m.group(0)


def section(title: str) -> str:
    """One ``## title`` section of the README, without its heading."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert m, f"README has no section {title!r}"
    return m.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(text: str) -> list[list[str]]:
    """journal-loader command lines of the sh blocks (comments dropped)."""
    out = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and re.match(r"^(\.venv/bin/)?journal-loader$", words[0]):
                out.append(words[1:])
    return out
