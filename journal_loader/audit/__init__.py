"""Auditing the journal: lineage, history as of any moment, chain verification, export.

* ``lineage``: from a node, attribute or relationship of the graph back to every record (file,
  line, bytes, run, time) that asserted it, through ``provenance`` and the journal.
* ``asof``: the projections (``sources``, the DLQ ``failed_records``) as they stood at a past
  position or time, computed from the journal cut at that moment with the same set-based SQL
  as ``projections rebuild``; ``replay`` writes them into another database.
* ``verify``: recompute every source's hash chain (streamed), report the first break; export
  the chain heads to keep outside the database, and check the journal still contains them.
* ``export``: the events with their envelope and hashes, as JSON lines, streamed.

May import: every layer below it (the runner's level and down: ``runner``, ``dlq``,
``failures``, ``abandon``, loaders, projections, journal, graph, config, sources, storage,
the base layer); never ``api``, ``ops`` or ``cli`` (the layers: tests/test_layering.py).
"""

from __future__ import annotations

from journal_loader.audit.base import AuditError
from journal_loader.audit.cut import Cut, parse_cut

__all__ = ["AuditError", "Cut", "parse_cut"]
