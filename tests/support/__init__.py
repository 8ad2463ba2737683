"""Helpers for the tests (no tests here; fixtures stay in tests/conftest.py).

- example: the shipped example's paths, the registry generator, configs with their own type
- loaders: tiny loaders (PairLoader, NullLoader) and CSV input for them
- snapshots: databases compared by content (graph, sources, DLQ, journal, whole schema)
- readme: README sections and their code blocks
- pg: a fresh PostgreSQL schema per test
- licences: a loader a test can break (fail fast, config check)
- audit, graph, ops, propose_client: helpers of those test families
"""
