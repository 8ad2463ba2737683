"""The Propose API's fuzzy matching: nodes.fuzzy_key, and pg_trgm when the server has it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

* ``nodes.fuzzy_key``: the name folded to ``[a-z0-9 ]`` words (NULL for names with letters
  that do not fold to ASCII), computed by journal-loader for every node it writes, and here
  for the nodes already there. Fuzzy scores are computed in Python on these keys, the same
  on both backends (journal_loader/graph/fuzzy.py explains why).
* PostgreSQL: ``CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public``, inside a savepoint:
  without the privilege (or the contrib package) the migration goes on and fuzzy matching
  finds its candidates in process. The extension goes to ``public`` because an extension
  exists once per database: installed into journal-loader's own schema it would vanish with
  that schema. Its GIN index over ``fuzzy_key`` is not built here (it is optional, so it is
  not part of the declared schema): the embedded graph builds it, concurrently, the first
  time a run turns fuzzy matching on.

Migrations are frozen: ``fuzzy_key`` below is a copy of the function as it was written with
this migration, not an import.
"""

from __future__ import annotations

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

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


def _fuzzy_key(norm_name: str) -> str | None:
    folded: list[str] = []
    for ch in unicodedata.normalize("NFKD", norm_name):
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


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("nodes", sa.Column("fuzzy_key", sa.Text, nullable=True))

    # norm_name is already normalize_name(name): folding it is the whole of fuzzy_key(name).
    nodes = sa.table(
        "nodes", sa.column("id", sa.BigInteger), sa.column("norm_name"), sa.column("fuzzy_key")
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(nodes.c.id, nodes.c.norm_name)
            .where(nodes.c.id > last)
            .order_by(nodes.c.id)
            .limit(10_000)
        ).all()
        if not rows:
            break
        updates = [{"node_id": r[0], "key": k} for r in rows if (k := _fuzzy_key(r[1])) is not None]
        if updates:
            bind.execute(
                nodes.update()
                .where(nodes.c.id == sa.bindparam("node_id"))
                .values(fuzzy_key=sa.bindparam("key")),
                updates,
            )
        last = rows[-1][0]

    if bind.dialect.name == "postgresql":
        available = bind.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
        ).first()
        installed = bind.execute(
            sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
        ).first()
        if available and not installed:
            savepoint = bind.begin_nested()
            try:
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
            except sa.exc.DBAPIError:
                # No privilege, no public schema, or another migration installing it at the
                # same moment: fuzzy matching works without it.
                savepoint.rollback()
            else:
                savepoint.commit()


def downgrade() -> None:
    raise NotImplementedError("journal-loader migrations are forward-only")
