"""A batch's facts, collected before any is resolved (issue 11, item 1).

The runner runs the loader's ``propose`` for every record of a batch against a
``FactCollector`` first. The collector checks each fact as ``propose_fact`` would (arguments,
types, names, numbers, dates: everything that does not depend on the graph), keeps it, and
answers with a placeholder. The graph then looks the whole batch up at once on PostgreSQL
(``Prefetcher.prefetch_collected``: a few queries, not a round trip per cache miss) and
resolves the records in their order (``EmbeddedGraph.propose_collected``): a record's later
fact still sees what an earlier one created, and the answers are those ``propose_fact``
gives, from the same code.

Nothing changes for a loader, because every case the collector cannot stand for goes the way
it always went: the record is proposed again, alone and in its place, through ``propose_fact``
(``BatchCommitter``). Those cases are

* a loader that reads an answer inside ``propose`` (the placeholder raises ``AnswerNeeded``
  at the first attribute read): that record, and every later one of the run;
* a ``propose`` that raises: its own error, or the collector's check of a fact;
* a fact the graph refuses at resolution (an ambiguous match, a value the database refuses
  in safe mode): the record's changes are undone first.

So a loader that catches a graph error and proposes something else still does; and the
record fails, when it fails, with the error it always failed with.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, NoReturn

from journal_loader.graph.checks import as_date, check_fact
from journal_loader.graph.protocol import (
    Entity,
    EntityLike,
    ProposeClient,
    ProposeResult,
    as_entity,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# (source, target, source's normalised name, target's, relationship, strength, valid_from,
#  valid_to, metadata, confidence): a fact as propose_fact has checked it
CollectedFact = tuple[
    Entity,
    Entity,
    str,
    str,
    str,
    float,
    "dt.date | None",
    "dt.date | None",
    "dict[str, Any] | None",
    float,
]


class AnswerNeeded(BaseException):
    """A loader read an answer inside ``propose`` while its facts were being collected: the
    record is proposed again through ``propose_fact``, which answers at once. A
    BaseException, so that a loader's ``except Exception`` cannot swallow it."""


class _Pending(ProposeResult):
    """What ``FactCollector.propose_fact`` returns: an answer not given yet. Reading any of
    its attributes raises ``AnswerNeeded``."""

    def __getattribute__(self, name: str) -> NoReturn:
        raise AnswerNeeded(name)


_PENDING = _Pending(status="pending")


class FactCollector(ProposeClient):
    """Collects the facts of a batch's records (``collect`` per record), checked as
    ``propose_fact`` checks them; ``collected`` (every record's) is what the prefetch looks
    up."""

    def __init__(
        self, node_types: frozenset[str] | None, relationship_types: frozenset[str] | None
    ) -> None:
        self._node_types = node_types
        self._relationship_types = relationship_types
        self._facts: list[CollectedFact] = []
        self.collected: list[CollectedFact] = []
        self.answers_read = False

    def collect(
        self, propose: Callable[[Mapping[str, Any], ProposeClient], Any], record: Mapping[str, Any]
    ) -> list[CollectedFact] | None:
        """The record's facts; None when it must be proposed through ``propose_fact``
        instead (its ``propose`` raised, or read an answer: ``answers_read`` then says so)."""
        facts: list[CollectedFact] = []
        self._facts = facts
        try:
            propose(record, self)
        except AnswerNeeded:
            self.answers_read = True
        except Exception:  # noqa: S110 - proposed again, it raises where it always did
            pass
        else:
            self.collected += facts
            return facts
        return None

    def propose_fact(
        self,
        source_entity: EntityLike,
        target_entity: EntityLike,
        relationship: str,
        *,
        source_attributes: dict[str, Any] | None = None,
        target_attributes: dict[str, Any] | None = None,
        strength: float = 1.0,
        valid_from: dt.date | None = None,
        valid_to: dt.date | None = None,
        metadata: dict[str, Any] | None = None,
        confidence: float = 0.9,
    ) -> ProposeResult:
        # the same steps, in the same order, as EmbeddedGraph.propose_fact before it resolves
        src = as_entity(source_entity, source_attributes)
        tgt = as_entity(target_entity, target_attributes)
        if valid_from is not None or valid_to is not None:
            valid_from = as_date("valid_from", valid_from)
            valid_to = as_date("valid_to", valid_to)
        src_norm, tgt_norm = check_fact(
            self._node_types,
            self._relationship_types,
            src,
            tgt,
            relationship,
            strength,
            valid_from,
            valid_to,
            confidence,
        )
        self._facts.append(
            (
                src,
                tgt,
                src_norm,
                tgt_norm,
                relationship,
                strength,
                valid_from,
                valid_to,
                metadata,
                confidence,
            )
        )
        return _PENDING
