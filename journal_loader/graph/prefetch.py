"""A batch's lookups in bulk, and the locks that keep concurrent loaders out of each
other's way (PostgreSQL; ``Prefetcher.prefetch`` says how and why).

The answers go where single lookups would have put them (the caches of ``GraphState``), so a
batch decides the same with or without it, minus the round trips.
"""

from __future__ import annotations

from typing import Any

from journal_loader.errors import ValidationError
from journal_loader.graph.batch import CollectedFact
from journal_loader.graph.checks import attribute_values, queryable
from journal_loader.graph.normalize import normalize_name
from journal_loader.graph.protocol import Entity
from journal_loader.graph.state import Candidate, GraphState
from journal_loader.storage.base import Tx

# (type, normalised name, external key) of an entity: what resolves it
Identity = tuple[str, str, str | None]


class Prefetcher(GraphState):
    """``prefetch``: warm the caches for a batch, and lock what it may create."""

    @property
    def wants_prefetch(self) -> bool:
        return self._db.bulk_lookups  # PostgreSQL: a lookup is a round trip (GraphStore)

    def prefetch(
        self, tx: Tx, entities: list[Entity], facts: list[tuple[Entity, str, Entity]]
    ) -> None:
        """Warm the caches for a batch in a few queries (nodes by name and by key, aliases,
        attributes of the nodes found, relationships between them), and lock what the batch
        may create. What is found goes where a single lookup would have put it, and keys
        found absent are remembered like the names found absent: the answers are the same as
        without it, minus the round trips.

        Concurrency (issue: two loaders of different sources sharing entities on one
        PostgreSQL). Without locks, two batches that both decide "Acme is new" both insert it;
        the second is refused by a unique index at flush (or deadlocks, when each waits for a
        key the other inserted), rolls back and redoes the whole batch, which collides again
        with the other runner's next batch: 9 of 12 runs gave up. So, before it proposes, a
        batch takes transaction-scoped locks on the identities it may create, in one sorted
        order (no deadlock between batches), and only then looks those identities up again:
        a runner that created one has committed before our lock is granted, and READ
        COMMITTED shows its row to the statement after the lock. Two phases:

        1. entities that do not resolve without doubt from committed rows (new names, new
           keys, keyless nodes a keyed entity would adopt): a lock on ``(type, name)`` and
           on ``(type, key)``;
        2. then, for nodes that exist, the relationships and attribute values the batch
           would add to them: a lock on each ``(source, type, target)`` and
           ``(node, attribute, value)``.

        A phase-1 holder waits only for phase-1 locks, a phase-2 holder only for phase-2
        locks (each phase is a lock scope of its own, so their keys never coincide, also when
        a large batch's names share bucket locks: Tx.advisory_xact_lock), and each phase
        takes its locks in one statement in key order, so no cycle can form. Existing
        entities take no lock, so a refresh load does not wait at all.
        What the planning pass did not see (a loader whose ``propose`` is not deterministic)
        is still caught by the unique indexes: a conflict, retried narrowly by the runner.
        Pinned by tests/test_concurrency.py (2 and 4 loaders sharing entities, both
        backends, graph equal to the sequential load).
        """
        idents: dict[Identity, list[dict[str, Any]]] = {}
        ident_of: dict[int, Identity] = {}
        for e in entities:
            if id(e) in ident_of:
                continue
            # values the real pass refuses (a NUL byte, not text, too long) are left out:
            # that record alone fails at validation; here it would fail the batch's query
            if not queryable(e.type) or not queryable(e.name):
                continue
            if e.key is not None and not queryable(e.key):
                continue
            norm = normalize_name(e.name)
            if not norm:
                continue
            ident = (e.type, norm, e.key)
            ident_of[id(e)] = ident
            attributes = idents.setdefault(ident, [])
            if e.attributes:
                attributes.append(e.attributes)
        rels = set()
        for src, rel, tgt in facts:
            s_ident, t_ident = ident_of.get(id(src)), ident_of.get(id(tgt))
            if s_ident is not None and t_ident is not None:
                rels.add((s_ident, rel, t_ident))
        self._prefetch_identities(tx, idents, rels)

    def prefetch_collected(self, tx: Tx, facts: list[CollectedFact]) -> None:
        """``prefetch`` for a batch's collected facts (journal_loader/graph/batch.py): their
        names are normalised and checked already, and each identity is looked at once.
        PostgreSQL only (``GraphStore.bulk_lookups``: on SQLite a lookup is in-process)."""
        if not self._db.bulk_lookups:
            return
        idents: dict[Identity, list[dict[str, Any]]] = {}
        rels = set()
        for f in facts:
            src, tgt = f[0], f[1]
            s_ident = (src.type, f[2], src.key)
            t_ident = (tgt.type, f[3], tgt.key)
            attributes = idents.get(s_ident)
            if attributes is None:
                attributes = idents[s_ident] = []
            if src.attributes:
                attributes.append(src.attributes)
            attributes = idents.get(t_ident)
            if attributes is None:
                attributes = idents[t_ident] = []
            if tgt.attributes:
                attributes.append(tgt.attributes)
            rels.add((s_ident, f[4], t_ident))
        self._prefetch_identities(tx, idents, rels)
        if tx.writes_behind:
            # The ids the batch may take, at most (a node per identity, a relationship per
            # distinct fact, an attribute per value given, a provenance row per subject),
            # fetched now: once the first rows are written behind the resolver, a refill
            # would wait for that write (Tx.write_behind). Usually the committer has topped
            # them up already, while the previous batch's last rows were written
            # (``ids_wanted``): then this reads nothing.
            values = sum(len(a) for given in idents.values() for a in given)
            tx.reserve_ahead(
                {
                    "nodes": len(idents),
                    "relationships": len(rels),
                    "attributes": values,
                    "provenance_records": 3 * len(facts) + values,
                }
            )

    def ids_wanted(self, facts: list[CollectedFact]) -> dict[str, int]:
        """At least the ids ``prefetch_collected`` will reserve ahead for these facts (it
        counts distinct identities and facts; this counts every fact's, in one cheap pass),
        for ``Store.top_up_ids``. Empty where the server hands out no ids."""
        if not self._db.bulk_lookups or not facts:
            return {}
        values = 0
        for f in facts:
            src, tgt = f[0], f[1]
            if src.attributes:
                values += len(src.attributes)
            if tgt.attributes:
                values += len(tgt.attributes)
        n = len(facts)
        return {
            "nodes": 2 * n,
            "relationships": n,
            "attributes": values,
            "provenance_records": 3 * n + values,
        }

    def _prefetch_identities(
        self,
        tx: Tx,
        idents: dict[Identity, list[dict[str, Any]]],
        rels: set[tuple[Identity, str, Identity]],
    ) -> None:
        """The prefetch of a batch's distinct identities (type, normalised name, key), each
        with the attributes given to it, and of its relationships between them."""
        by_name, by_key, absent = self._by_name, self._by_key, self._absent_keys
        # A name's whole entry for the keyless entities; for a name only keyed entities
        # have, its keyless nodes (what Resolver._keyless_candidates reads), and none for a
        # keyed entity whose key is known to exist (it resolves by the key).
        names = {(t, n) for t, n, k in idents if k is None and (t, n) not in by_name}
        keyless_names = {
            (t, n)
            for t, n, k in idents
            if isinstance(k, str) and (t, k) not in by_key and (t, n) not in by_name
        } - names
        keys = {
            (t, k)
            for t, _n, k in idents
            if isinstance(k, str) and (t, k) not in by_key and (t, k) not in absent
        }
        if names or keys or keyless_names:
            self._prefetch_nodes(tx, names, keys, keyless_names)
        # phase 1: lock what may be created, then look it up again
        new_names, new_keyless_names, new_keys = self._unresolved(idents)
        if new_names or new_keyless_names or new_keys:
            tx.advisory_xact_lock(
                "graph-entities",
                [f"name:{t}:{n}" for t, n in new_names | new_keyless_names]
                + [f"key:{t}:{k}" for t, k in new_keys],
            )
            for name in new_names | new_keyless_names:
                self._by_name.pop(name, None)
                self._by_alias.pop(name, None)
                self._keyless_by_name.pop(name, None)
                self._keyless_aliases.pop(name, None)
            for key in new_keys:
                self._by_key.pop(key, None)
                self._absent_keys.discard(key)
            self._prefetch_nodes(tx, new_names, new_keys, new_keyless_names)
        known = {ident: self._known_node(*ident) for ident in idents}
        attrs = self._attrs
        wanted = {known[i] for i, given in idents.items() if given} - {None} - set(attrs)
        if wanted:
            self._prefetch_attributes(tx, sorted(i for i in wanted if i is not None))
        pairs = set()
        for s_ident, _rel, t_ident in rels:
            s_id, t_id = known[s_ident], known[t_ident]
            if s_id is not None and t_id is not None and (s_id, t_id) not in self._pairs:
                pairs.add((s_id, t_id))
        if pairs:
            self._prefetch_relationships(tx, pairs)
        # phase 2: lock what the batch would add to existing nodes, then look it up again
        new_rels: set[tuple[int, str, int]] = set()
        for s_ident, rel, t_ident in rels:
            s_id, t_id = known[s_ident], known[t_ident]
            if s_id is not None and t_id is not None and (s_id, rel, t_id) not in self._rels:
                new_rels.add((s_id, rel, t_id))
        new_attrs: set[tuple[int, str, str]] = set()
        for ident, given in idents.items():
            node_id = known[ident]
            if node_id is None:
                continue
            existing = attrs.get(node_id, {})
            for attributes in given:
                for attr_type, value in attributes.items():
                    try:
                        values = attribute_values(attr_type, value)
                    except ValidationError:
                        continue  # the real pass fails the record
                    new_attrs.update(
                        (node_id, attr_type, v) for v in values if (attr_type, v) not in existing
                    )
        if new_rels or new_attrs:
            tx.advisory_xact_lock(
                "graph-facts",
                [f"rel:{s}:{r}:{t}" for s, r, t in new_rels]
                + [f"attr:{n}:{a}:{v}" for n, a, v in new_attrs],
            )
            self._prefetch_attributes(tx, sorted({n for n, _a, _v in new_attrs}), refresh=True)
            self._prefetch_relationships(tx, {(s, t) for s, _r, t in new_rels}, refresh=True)

    def _unresolved(
        self, idents: dict[Identity, list[dict[str, Any]]]
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[tuple[str, str]]]:
        """The identities a batch may create or change: a keyed entity whose key no committed
        node has (it creates a node, or gives its key to a keyless one), a keyless entity
        that does not match exactly one node by name (it creates one, or is ambiguous).
        (names, the names of the keyed ones alone: their keyless nodes are read again, keys)"""
        names: set[tuple[str, str]] = set()
        keyed_names: set[tuple[str, str]] = set()
        keys: set[tuple[str, str]] = set()
        for node_type, norm, key in idents:
            if isinstance(key, str):
                if (node_type, key) not in self._by_key:
                    keys.add((node_type, key))
                    keyed_names.add((node_type, norm))
            else:
                candidates = self._by_name.get((node_type, norm))
                if candidates is None or len(candidates) != 1:
                    names.add((node_type, norm))
        # a name a keyless entity of the batch also has is read whole (locked all the same)
        whole = keyed_names & {(t, n) for t, n, k in idents if k is None}
        return names | whole, keyed_names - whole, keys

    def _prefetch_attributes(self, tx: Tx, ids: list[int], *, refresh: bool = False) -> None:
        if not ids:
            return
        found: dict[int, dict[tuple[str, str], int]] = {i: {} for i in ids}
        for node_id, attr_id, attr_type, value in self._db.prefetch_attributes(tx, ids):
            found[node_id][(attr_type, value)] = attr_id
        for node_id, attrs in found.items():  # committed rows: no undo needed
            if refresh:
                self._attrs[node_id] = attrs
            else:
                self._attrs.setdefault(node_id, attrs)

    def _prefetch_relationships(
        self, tx: Tx, pairs: set[tuple[int, int]], *, refresh: bool = False
    ) -> None:
        """Every relationship between each pair that this graph can ask about: of the types
        the config names, where it names them (``_pair_types``; committed rows: no undo
        needed)."""
        if not pairs:
            return
        ordered = sorted(pairs)
        types = self._pair_types
        if refresh:
            rels = self._rels
            if types is not None and len(types) * len(pairs) < len(rels):
                # the config names every type: the keys between the pairs, not a walk of
                # the whole cache (up to cache_limit entries, each batch: 4% of a load)
                stale = [k for s, t in pairs for r in types if (k := (s, r, t)) in rels]
            else:
                stale = [k for k in rels if (k[0], k[2]) in pairs]
            for k in stale:
                del rels[k]
        rows = self._db.prefetch_relationships(tx, ordered, types)
        for s_id, t_id, rel_id, rel_type, strength in rows:
            self._rels[(s_id, rel_type, t_id)] = (rel_id, float(strength))
        self._pairs.update(pairs)  # every relationship between them is known now

    def _prefetch_nodes(
        self,
        tx: Tx,
        names: set[tuple[str, str]],
        keys: set[tuple[str, str]],
        keyless_names: set[tuple[str, str]] | None = None,
    ) -> None:
        """Read the entries of ``names`` (every node with the name) into ``_by_name``, the
        nodes with ``keys`` into ``_by_key`` (the others into ``_absent_keys``), and the
        keyless nodes of ``keyless_names`` into the batch's ``_keyless_by_name``."""
        keyless_names = keyless_names or set()
        by_name: dict[tuple[str, str], list[Candidate]] = {n: [] for n in names}
        keyless: dict[tuple[str, str], list[Candidate]] = {n: [] for n in keyless_names}
        found_keys: set[tuple[str, str]] = set()
        name_list, key_list = sorted(names), sorted(keys)
        rows = self._db.prefetch_nodes(tx, name_list, key_list, sorted(keyless_names))
        for node_id, ext_key, node_norm, node_type, block in rows:
            if block == 2:  # a keyless node of a name of keyless_names
                keyless[(node_type, node_norm)].append((node_id, ext_key, node_norm))
                continue
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
                found_keys.add((node_type, ext_key))
            bucket = by_name.get((node_type, node_norm))
            if bucket is not None and all(c[0] != node_id for c in bucket):
                bucket.append((node_id, ext_key, node_norm))
        aliases: dict[tuple[str, str], dict[int, Candidate]] = {n: {} for n in names}
        keyless_aliases: dict[tuple[str, str], dict[int, Candidate]] = {
            n: {} for n in keyless_names
        }
        if self._aliases_exist and (name_list or keyless_names):
            for node_id, ext_key, node_norm, node_type, alias in self._db.prefetch_aliases(
                tx, sorted(names | keyless_names), self.alias_attribute
            ):
                found = aliases.get((node_type, alias))
                if found is not None:
                    found[node_id] = (node_id, ext_key, node_norm)
                elif ext_key is None:  # a keyed entity adopts only a keyless node
                    keyless_aliases[(node_type, alias)][node_id] = (node_id, ext_key, node_norm)
        for name, candidates in keyless.items():  # committed rows: no undo needed
            self._keyless_by_name[name] = tuple(sorted(candidates))
            found = keyless_aliases[name]
            if found:
                self._keyless_aliases[name] = tuple(sorted(found.values()))
        created = self._new_keyed_by_name  # (empty at a batch's start, when this runs)
        for name, candidates in by_name.items():
            if name not in self._by_name:
                if created and name in created:
                    ids = {c[0] for c in candidates}
                    candidates += [c for c in created[name] if c[0] not in ids]
                self._by_name[name] = tuple(sorted(candidates))
                found = aliases[name]
                if found:  # none: no entry (as in Resolver._candidates)
                    self._by_alias.setdefault(name, tuple(sorted(found.values())))
        self._absent_keys.update(keys - found_keys)

    def _known_node(self, node_type: str, norm: str, key: str | None) -> int | None:
        """The committed node an identity resolves to without doubt, if the caches know it."""
        if isinstance(key, str):
            node_id = self._by_key.get((node_type, key))
            if node_id is not None or (node_type, key) not in self._absent_keys:
                return node_id
        candidates = self._by_name.get((node_type, norm))
        if candidates is None and key is not None:
            candidates = self._keyless_by_name.get((node_type, norm))
        if candidates and len(candidates) == 1 and (key is None or candidates[0][1] is None):
            return candidates[0][0]
        return None
