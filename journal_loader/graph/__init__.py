"""The knowledge graph a loader proposes facts to.

Owns: ``protocol`` (what a loader talks to: ``ProposeClient``, ``ProposeResult``, ``Entity``,
plain value types), ``target`` (the runner-facing side: transaction and record boundaries),
the embedded graph (``embedded``, in the journal's own database, with its own SQL: the one
place outside ``storage`` that may hold SQL), the client of an existing Propose API
deployment (``postgres_client``), read-only views (``browse``) and name matching
(``normalize``, ``fuzzy``).

May import: the base layer, ``storage``, ``sources`` and ``config``; never the journal,
projections, loaders, runner or anything above (the layers: tests/test_layering.py).
"""
