"""The journal: the append-only, hash-chained log of everything that happened to each source
and each of its records, the source of truth every projection is computed from.

Owns: the event model (``events``: one tagged union, one codec), the hash chain (``chain``),
appending a batch's events in the caller's transaction (``writer``) and the helpers that read
it back. Its SQL belongs in ``storage``'s repositories, which the journal calls.

May import: the base layer, ``storage``, ``sources``, ``config`` and ``graph``'s value types;
never projections, loaders, the runner or anything above (the layers:
tests/test_layering.py).
"""
