"""A batch for a target outside the journal's transaction (a Propose API in another
database): its effects commit on the target before the batch can commit here.

Effectively once, in three steps: (A) journal ``ProposeAttempted`` for the records about to
be proposed, and commit; (B) propose them; (C) journal their outcomes and the checkpoint,
and commit. A crash between A and C leaves the records attempted but without outcome: the
next run reads the batch again (the checkpoint did not move), finds them in doubt
(``InDoubt``), proposes them again with the target told so, and the target's deduplication
answers ``duplicate`` for what it had already applied: the success it was. Outcomes are
journaled only in C, so each record still ends with exactly one terminal event. A retried
attempt of this batch (same process) marks in doubt only the records that may have reached
the target (``InDoubt.reached``: those whose remote transaction got to its commit); the
others were rolled back or never sent. A target that keeps its outcomes
(``stored_outcomes``: a Propose API client with an outcome table) says exactly which
in-doubt records committed, also after a crash: their answers are read back
(``ProposeSucceeded.recovered``), the rest is proposed as new.

Pinned by tests/test_propose_client_crash.py and tests/test_propose_client_deployment.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from journal_loader import faults
from journal_loader.graph.protocol import ProposeResult
from journal_loader.journal.events import ProposeAttempted
from journal_loader.journal.writer import PendingEvent
from journal_loader.sources.readers import RawRecord, ResumePoint

if TYPE_CHECKING:
    from journal_loader.runner.committer import BatchCommitter, BatchResult


@dataclass(slots=True)
class InDoubt:
    """What a run knows of records attempted on the target without a journaled outcome."""

    offsets: set[int] = field(default_factory=set)
    attempts: dict[int, set[str]] = field(default_factory=dict)  # their attempts' tokens
    reached: set[int] = field(default_factory=set)  # this attempt's, may have committed there

    @classmethod
    def of(cls, attempts: dict[int, set[str]]) -> InDoubt:
        """From the journal (``queries.in_doubt``) at the start of a run."""
        return cls(set(attempts), attempts)


def two_phase_batch(
    c: BatchCommitter, batch: list[RawRecord], position: ResumePoint | None
) -> BatchResult:
    """The batch in three steps (see the module docstring); ``position`` as in
    ``BatchCommitter.commit``."""
    from journal_loader.runner.committer import BatchResult

    state = c.in_doubt
    target = c.target
    result = BatchResult()
    prepared = [(rec, parsed) for rec in batch if (parsed := c.prepare(rec, result)) is not None]
    doubtful = {rec.offset for rec, _ in prepared if rec.offset in state.offsets}
    recovered: dict[int, list[ProposeResult]] = {}
    if doubtful:
        stored = target.stored_outcomes(
            c.source_id, {o: state.attempts.get(o, set()) for o in doubtful}
        )
        if stored is not None:
            # The target keeps its outcomes with the attempt's token, in the transaction of
            # the record's calls: what reached it is read back (its answers exactly), the
            # rest is known never to have committed there: not in doubt.
            # (An attempt made while the target kept no outcomes, "", stays in doubt.)
            recovered = {o: stored[o] for o in doubtful if o in stored}
            doubtful = {
                o for o in doubtful if o not in recovered and "" in state.attempts.get(o, {""})
            }
    to_propose = [(rec, parsed) for rec, parsed in prepared if rec.offset not in recovered]
    attempt = uuid.uuid4().hex if target.keeps_outcomes else ""
    state.reached = set()
    attempted = False
    try:
        if to_propose:
            with c.store.transaction() as tx:  # (A)
                c.lease.check(tx)
                target.begin_batch(tx)
                c.append(
                    tx,
                    [
                        PendingEvent.of(
                            rec.offset,
                            ProposeAttempted(
                                key=f"{c.file_hash}:{rec.offset}",
                                in_doubt=rec.offset in doubtful,
                                attempt=attempt,
                            ),
                        )
                        for rec, _ in to_propose
                    ],
                )
            c.writer.confirm()
            state.offsets.update(rec.offset for rec, _ in to_propose)
            for rec, _ in to_propose:
                state.attempts.setdefault(rec.offset, set()).add(attempt)
            attempted = True
        target.attempt = attempt or None
        for rec, parsed in prepared:  # (B)
            answers = recovered.get(rec.offset)
            if answers is not None:
                c.recovered(rec, answers, result)
            else:
                c.propose_record(rec, parsed, result, in_doubt=rec.offset in doubtful)
        with c.store.transaction() as tx:  # (C)
            c.lease.check(tx)
            if position is not None:
                result.events.append(PendingEvent.of(None, c.checkpoint(position, result)))
            c.append(tx, result.events)
            faults.point("before_commit")
            c.lease.check_lock()
    except BaseException:
        c.writer.discard()
        target.after_rollback()
        if attempted:
            # In this process we know which records reached the deployment: a record whose
            # calls were rolled back (or never made) is not in doubt on a retry, unless an
            # earlier attempt may have committed it. (After a crash only the journal is
            # left, and every attempted record is in doubt.)
            state.offsets.difference_update(
                rec.offset
                for rec, _ in to_propose
                if rec.offset not in state.reached and rec.offset not in doubtful
            )
        raise
    c.writer.confirm()
    target.after_commit()
    state.offsets.difference_update(rec.offset for rec in batch)
    for rec in batch:
        state.attempts.pop(rec.offset, None)
    faults.point("after_commit")
    return result
