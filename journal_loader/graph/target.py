"""The runner-facing side of a graph: transaction and record boundaries.

The runner drives a target like this, for every batch (one transaction)::

    target.begin_batch(tx, safe_mode=False)
    for each record:
        target.begin_record(source_id, offset, run_id)
        loader.propose(record, target.client)       # -> client.propose_fact(...) per fact
        results = target.record_results()
        target.finish_record()   or   target.abort_record()   # record-level atomicity
    target.flush(tx)                                  # pending writes, before the journal's
    COMMIT -> target.after_commit()   |   ROLLBACK -> target.after_rollback()

A target that resolves batches (``wants_batch``: the embedded graph) is driven instead by
``collector()`` (the loader's ``propose`` of every record of the batch, collected first),
``prefetch`` of what was collected, then ``propose_collected`` per record in order
(journal_loader/graph/batch.py).

``safe_mode``: each record's writes go to the database inside its own savepoint at
``finish_record`` (so a database error fails that record only); the runner uses it to redo a
batch whose bulk flush hit an error caused by one record's values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from journal_loader.graph.batch import CollectedFact, FactCollector
from journal_loader.graph.protocol import Entity, ProposeClient, ProposeResult, as_entity
from journal_loader.storage.base import Tx


class GraphTarget(ABC):
    @property
    def transactional(self) -> bool:
        """True when the target writes in the journal's transaction (the embedded graph, a
        Propose API in the journal's own database); False for one elsewhere, which the
        runner drives in two phases (journal_loader/runner.py, Runner._batch_two_phase)."""
        return True

    #: Set by the runner before it proposes a record again after a crash (remote targets).
    in_doubt: bool = False
    #: Set by the runner for a batch's attempt (remote targets): ProposeAttempted's token.
    attempt: str | None = None

    @property
    @abstractmethod
    def client(self) -> ProposeClient: ...

    def prepare(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called once before a run registers its source: inspect the target (a deployment's
        search_path, what it keeps, its types). A ConfigError stops the run before it
        journals anything."""

    def begin_batch(self, tx: Tx, *, safe_mode: bool = False) -> None:  # noqa: B027
        pass

    @abstractmethod
    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None: ...

    @abstractmethod
    def record_results(self) -> list[ProposeResult]: ...

    @abstractmethod
    def finish_record(self) -> None: ...

    @abstractmethod
    def abort_record(self) -> None: ...

    @property
    def wants_prefetch(self) -> bool:
        """True when lookups cost a round trip each: the runner then shows the target a
        batch's entities before proposing it (``prefetch``), so it can look them up in one."""
        return False

    def prefetch(  # noqa: B027 - optional hook, a no-op by default
        self, tx: Tx, entities: list[Entity], facts: list[tuple[Entity, str, Entity]]
    ) -> None:
        """Look up, in bulk, what the batch's facts will ask about (a cache warm-up: what it
        finds must not change any answer, only save round trips)."""

    @property
    def wants_batch(self) -> bool:
        """True when the target resolves a batch's collected facts itself
        (``collector`` / ``propose_collected``; journal_loader/graph/batch.py): the runner
        then runs the loader's ``propose`` for the whole batch before the graph answers."""
        return False

    def collector(self) -> FactCollector:
        raise NotImplementedError(f"{type(self).__name__} does not resolve batches")

    def prefetch_collected(self, tx: Tx, facts: list[CollectedFact]) -> None:  # noqa: B027
        """``prefetch`` for a batch's collected facts (``wants_batch`` targets)."""

    def ids_wanted(self, facts: list[CollectedFact]) -> dict[str, int]:
        """The ids per table that ``prefetch_collected`` of these facts will reserve, at
        least (``Store.top_up_ids``); none by default."""
        return {}

    def propose_collected(
        self, source_id: int, record_offset: int, run_id: str, facts: list[CollectedFact]
    ) -> list[ProposeResult]:
        """One record's collected facts, resolved (``wants_batch`` targets)."""
        raise NotImplementedError(f"{type(self).__name__} does not resolve batches")

    @property
    def keeps_outcomes(self) -> bool:
        """True when the target stores each record's answers with its effects, under the
        runner's attempt token (``stored_outcomes`` can then tell what committed)."""
        return False

    def stored_outcomes(
        self, source_id: int, attempts: dict[int, set[str]]
    ) -> dict[int, list[ProposeResult]] | None:
        """For records in doubt (offset -> the tokens of their attempts): the answers an
        attempt committed on the target, for those that reached it. None: the target cannot
        tell (every record in doubt is proposed again); {} for an offset: it never reached."""
        return None

    def flush(self, tx: Tx) -> None:  # noqa: B027
        pass

    def take_flush(self, tx: Tx) -> Callable[[], None] | None:
        """What ``flush`` would write, as a write for the caller to run (in a write behind:
        ``Tx.write_behind``); the target's buffers start empty. None: nothing left to write
        (here: ``flush`` has written it, at once)."""
        self.flush(tx)
        return None

    def after_commit(self) -> None:  # noqa: B027
        pass

    def after_rollback(self) -> None:  # noqa: B027
        pass

    def close(self) -> None:  # noqa: B027
        pass


class FactRecorder(ProposeClient):
    """What a loader would propose, without proposing it: the runner's planning pass for
    targets that look a batch up in bulk (``GraphTarget.prefetch``). Its answers are
    placeholders; nothing a loader does with them is kept."""

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self.facts: list[tuple[Entity, str, Entity]] = []

    def propose_fact(self, source_entity, target_entity, relationship, **kwargs):  # type: ignore[no-untyped-def]
        src = as_entity(source_entity, kwargs.get("source_attributes"))
        tgt = as_entity(target_entity, kwargs.get("target_attributes"))
        self.entities += (src, tgt)
        self.facts.append((src, relationship, tgt))
        return ProposeResult(status="success")


class RecordingTarget(GraphTarget, ProposeClient):
    """Keeps what a loader proposes without writing anything: for loaders that only journal
    (and to measure the journal's own overhead)."""

    def __init__(self) -> None:
        self._results: list[ProposeResult] = []

    @property
    def client(self) -> ProposeClient:
        return self

    def begin_record(self, source_id: int, record_offset: int, run_id: str) -> None:
        self._results = []

    def record_results(self) -> list[ProposeResult]:
        return self._results

    def finish_record(self) -> None:
        self._results = []

    def abort_record(self) -> None:
        self._results = []

    def propose_fact(self, source_entity, target_entity, relationship, **kwargs):  # type: ignore[no-untyped-def]
        result = ProposeResult(status="success", overall_confidence=1.0)
        self._results.append(result)
        return result
