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

``safe_mode``: each record's writes go to the database inside its own savepoint at
``finish_record`` (so a database error fails that record only); the runner uses it to redo a
batch whose bulk flush hit an error caused by one record's values.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from journal_loader.graph.protocol import ProposeClient, ProposeResult
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

    @property
    @abstractmethod
    def client(self) -> ProposeClient: ...

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

    def flush(self, tx: Tx) -> None:  # noqa: B027
        pass

    def after_commit(self) -> None:  # noqa: B027
        pass

    def after_rollback(self) -> None:  # noqa: B027
        pass

    def close(self) -> None:  # noqa: B027
        pass


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
