"""Entity resolution in the embedded graph, and the answers it gives (the ``entity_*``
actions; ``AmbiguousMatchError`` naming the candidates).

The order (journal_loader/graph/embedded.py lists the rules): external key, exact normalised
name, alias, fuzzy name for the types that have it, else a new node. Answers come from the
caches of ``GraphState``; a miss costs one query (``GraphStore.find_nodes``: the name, the
key and, once the graph has aliases, the aliases at once; for an entity with a key,
``find_keyless_nodes``: its key and the keyless nodes of its name, the only ones it can
match by name, see ``_keyless_candidates``). Fuzzy candidates come from pg_trgm
where it is ready, else from an in-process trigram index of the type's names
(``journal_loader.graph.fuzzy``); either way the score that decides is computed here.
"""

from __future__ import annotations

from typing import NoReturn

from journal_loader.errors import AmbiguousMatchError
from journal_loader.graph.fuzzy import (
    PG_THRESHOLD_SLACK,
    best_matches,
    fuzzy_key,
    trigram_similarity,
    trigrams,
)
from journal_loader.graph.protocol import Action, Entity
from journal_loader.graph.state import _MISSING, Candidate, Candidates, GraphState
from journal_loader.storage.base import Tx

ALIAS_CONFIDENCE = 0.9


class Resolver(GraphState):
    """Which node an entity is: found, adopted (it gets the entity's key) or created."""

    def _candidates(self, tx: Tx, node_type: str, norm: str, key: str | None) -> Candidates:
        """Nodes of the type with this name (and, cached alongside, the nodes with it as an
        alias); also loads the keyed node into the key cache. One query."""
        cached = self._by_name.get((node_type, norm))
        if cached is not None and (
            key is None or (node_type, key) in self._by_key or (node_type, key) in self._absent_keys
        ):
            return cached
        rows = self._db.find_nodes(
            tx, node_type, norm, key, self.alias_attribute if self._aliases_exist else None
        )
        by_name: list[Candidate] = []
        by_alias: dict[int, Candidate] = {}
        for node_id, ext_key, node_norm, via_alias in rows:
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
            if via_alias:
                by_alias[node_id] = (node_id, ext_key, node_norm)
            elif node_norm == norm:
                by_name.append((node_id, ext_key, node_norm))
        if cached is None:
            # Nodes created in this batch are in the cache already (the rows are committed
            # ones, and whatever of the batch is written), except the keyed nodes created
            # where no entry of their name was cached (_create_node): they are added here.
            # A row read and also in it is one candidate.
            created = self._new_keyed_by_name.get((node_type, norm))
            if created:
                ids = {c[0] for c in by_name}
                by_name += [c for c in created if c[0] not in ids]
            candidates = tuple(sorted(by_name))
            self._by_name[(node_type, norm)] = candidates
            if by_alias:  # none is what a missing entry says too (readers use .get(k, ())):
                # an empty tuple per name cost an insert each, and as many entries of
                # cache_limit as the names themselves
                self._by_alias.setdefault((node_type, norm), tuple(sorted(by_alias.values())))
            return candidates
        return cached

    def _keyless(self, candidate: Candidate) -> bool:
        return candidate[1] is None and candidate[0] not in self._key_of

    def _keyless_candidates(
        self, tx: Tx, node_type: str, norm: str, key: str
    ) -> tuple[Candidates, Candidates]:
        """For an entity with a key that ``_by_key`` does not hold: look the key up (the
        node found goes into ``_by_key``), and return what the entity may match by name and
        by alias if the key is nobody's: (names, aliases), of which ``_resolve`` keeps the
        keyless ones.

        Why not ``_candidates``: its entry of a name holds every node with it, keyed or not,
        as an entity without a key needs it. An entity with a key matches only a node
        without one, so it does not read the keyed nodes of its name, whose number grows
        with the graph where names repeat: at a million rows of the example, 15.6 companies
        a name and a lookup 6x slower than a name-only type's, the largest part of what
        made the load slower as the graph grew (bench/HISTORY.md, issue 11). Where the
        cache holds the name's entry (complete, the open batch's nodes included), it is
        used, and only the key is looked up. Otherwise the database's keyless nodes are
        the whole answer: a keyless node the open batch created or took an alias for has
        its name's entry in the cache (``_create_node``, ``_add_alias`` read it first).
        The answers are those of ``_candidates`` filtered by ``_keyless``: pinned by
        tests/test_graph_keyless_lookup.py."""
        name = (node_type, norm)
        cached = self._by_name.get(name)
        # else what the batch's prefetch read for the name (PostgreSQL), its keyless nodes
        keyless = self._keyless_by_name.get(name) if cached is None else None
        if cached is not None or keyless is not None:
            if (node_type, key) not in self._absent_keys:  # (the prefetch looked it up)
                for node_id, ext_key, _norm, _via in self._db.find_keyless_nodes(
                    tx, node_type, norm, key, None
                ):
                    if ext_key is not None:
                        self._by_key.setdefault((node_type, ext_key), node_id)
            if cached is not None:
                return cached, self._by_alias.get(name, ())
            return keyless, self._keyless_aliases.get(name, ())  # type: ignore[return-value]
        alias_type = self.alias_attribute if self._aliases_exist else None
        names: list[Candidate] = []
        aliases: dict[int, Candidate] = {}
        for node_id, ext_key, node_norm, via_alias in self._db.find_keyless_nodes(
            tx, node_type, norm, key, alias_type
        ):
            if ext_key is not None:
                self._by_key.setdefault((node_type, ext_key), node_id)
            elif via_alias:
                aliases[node_id] = (node_id, ext_key, node_norm)
            elif node_norm == norm:
                names.append((node_id, ext_key, node_norm))
        return tuple(sorted(names)), tuple(sorted(aliases.values()))

    def _resolve(
        self, tx: Tx, e: Entity, norm: str, role: str
    ) -> tuple[int, Action, str | None, str]:
        """(node id, action, the node's external key and normalised name as far as known)."""
        node_type = e.type
        key = e.key
        aliases: Candidates | None = None
        if key is not None:
            node_id = self._by_key.get((node_type, key))
            if node_id is None:
                names, aliases = self._keyless_candidates(tx, node_type, norm, key)
                node_id = self._by_key.get((node_type, key))
            if node_id is not None:  # (the action built here: no call per entity)
                action = Action(
                    action="entity_matched",
                    role=role,
                    entity_id=node_id,
                    confidence=1.0,
                    match_reason="external_key",
                )
                return node_id, action, key, norm
        else:
            names = self._candidates(tx, node_type, norm, key)

        # exact normalised name (with a key: only a node that has none)
        if key is None and len(names) == 1:  # the common case, first
            found = names[0]
            node_id = found[0]
            action = Action(
                action="entity_matched",
                role=role,
                entity_id=node_id,
                confidence=1.0,
                match_reason="exact_name_match",
            )
            return node_id, action, found[1], found[2]
        eligible = (
            names if key is None or not names else tuple(c for c in names if self._keyless(c))
        )
        if eligible:
            found = self._one(e, eligible, "exact_name_match")
            return self._adopt(e, found, 1.0, "exact_name_match", role)

        # alias (the nameAlias attributes)
        if aliases is None:
            aliases = self._by_alias.get((node_type, norm), ())
        if key is not None and aliases:
            aliases = tuple(c for c in aliases if self._keyless(c))
        if aliases:
            found = self._one(e, aliases, "alias_match")
            return self._adopt(e, found, ALIAS_CONFIDENCE, "alias_match", role)

        # fuzzy, for the types that have it
        threshold = self.fuzzy.get(node_type)
        if threshold is not None:
            fuzzy = self._fuzzy(tx, e, threshold)
            if fuzzy is not None:
                found, score = fuzzy
                return self._adopt(e, found, round(score, 6), "fuzzy_match", role)

        node_id = self._create_node(tx, e, norm, names)
        action = Action(
            action="entity_created",
            role=role,
            entity_id=node_id,
            confidence=1.0,
            match_reason="new_entity",
        )
        return node_id, action, key, norm

    def _one(self, e: Entity, candidates: Candidates, reason: str) -> Candidate:
        unique = {c[0]: c for c in candidates}
        if len(unique) > 1:
            _ambiguous(e, [(*c, None) for c in sorted(unique.values())], reason)
        return next(iter(unique.values()))

    def _adopt(
        self, e: Entity, found: Candidate, confidence: float, reason: str, role: str
    ) -> tuple[int, Action, str | None, str]:
        """A node matched by name, alias or fuzzily. For an entity with a key, the node had
        none (only keyless nodes match a keyed entity that way): it gets the key."""
        node_id = found[0]
        node_key = found[1] if found[1] is not None else self._key_of.get(node_id)
        if e.key is not None:
            self._undo.set(self._by_key, (e.type, e.key), node_id)
            self._undo.set(self._key_of, node_id, e.key)
            self._buf.key_updates.append(
                {"id": node_id, "external_key": e.key, "updated_at": self._stamp}
            )
            node_key = e.key
        return node_id, _matched(role, node_id, confidence, reason), node_key, found[2]

    def _create_node(self, tx: Tx, e: Entity, norm: str, candidates: Candidates) -> int:
        node_id = tx.next_id("nodes")
        key = fuzzy_key(e.name, norm)
        self._buf.nodes.append(
            (node_id, e.type, e.name, norm, e.key, self._stamp, self._stamp, key)
        )
        # _UndoLog.set, inline (four per new node)
        undo = self._undo.entries
        new_nodes, by_name, attrs = self._new_nodes, self._by_name, self._attrs
        undo += (new_nodes, node_id, new_nodes.get(node_id, _MISSING))
        new_nodes[node_id] = True
        name_key = (e.type, norm)
        node = (node_id, e.key, norm)
        if e.key is None or name_key in by_name:
            # the name's entry: every node with it (a keyless entity's candidates are that
            # entry; a keyed one's are the keyless part, so the entry itself is extended)
            known = candidates if e.key is None else by_name[name_key]
            undo += (by_name, name_key, by_name.get(name_key, _MISSING))
            by_name[name_key] = tuple(sorted((*known, node)))
        else:
            # No entry of the name, and a keyed entity's candidates are not one: the node
            # waits here until its batch commits, for an entry read before then
            # (_candidates adds it); committed, the database has it.
            created = self._new_keyed_by_name
            self._undo.set(created, name_key, (*created.get(name_key, ()), node))
        if e.key is not None:
            self._undo.set(self._by_key, (e.type, e.key), node_id)
        undo += (attrs, node_id, attrs.get(node_id, _MISSING))
        attrs[node_id] = {}
        index = self._fuzzy_index.get(e.type)
        if index is not None and key is not None:
            index.add(node_id, key, (e.key, norm))
            self._fuzzy_pending.append((e.type, node_id))
        return node_id

    # --- fuzzy -----------------------------------------------------------------------------
    def _fuzzy(self, tx: Tx, e: Entity, threshold: float) -> tuple[Candidate, float] | None:
        key = fuzzy_key(e.name)
        if key is None:
            return None  # letters outside Latin script: exact and alias matching only
        index = self._fuzzy_index[e.type]
        scored: dict[int, tuple[float, str | None, str]] = {}
        if self._pg_trgm:
            if not self._pg_threshold_set:
                limit = max(0.0, min(self.fuzzy.values()) - PG_THRESHOLD_SLACK)
                self._db.set_trgm_threshold(tx, limit)
                self._pg_threshold_set = True
            query = trigrams(key)
            for node_id, ext_key, node_norm, node_key in self._db.fuzzy_candidates(tx, e.type, key):
                score = trigram_similarity(query, trigrams(node_key))
                if score >= threshold:
                    scored[node_id] = (score, ext_key, node_norm)
        else:
            self._refresh_fuzzy(tx, e.type)
        for node_id, score in index.candidates(key, threshold):
            ext_key, node_norm = index.payload(node_id)
            scored[node_id] = (score, ext_key, node_norm)
        if e.key is not None:
            scored = {i: s for i, s in scored.items() if s[1] is None and i not in self._key_of}
        if not scored:
            return None
        ranked = best_matches((i, s[0]) for i, s in scored.items())
        if len(ranked) > 1:
            _ambiguous(
                e,
                [(i, scored[i][1], scored[i][2], score) for i, score in ranked],
                "fuzzy_match",
                threshold,
            )
        node_id, score = ranked[0]
        return (node_id, scored[node_id][1], scored[node_id][2]), score

    def _refresh_fuzzy(self, tx: Tx, node_type: str) -> None:
        """Without pg_trgm: load the type's committed names not in the index yet (once per
        batch). On SQLite ids grow in commit order (one writer at a time), so "after the
        highest id loaded" is exactly what others committed since; on PostgreSQL without
        pg_trgm a concurrent runner's node can be missed (a near-duplicate node, never a
        wrong merge: docs/propose_api.md)."""
        if node_type in self._fuzzy_refreshed:
            return
        index = self._fuzzy_index[node_type]
        after = self._fuzzy_loaded.get(node_type, 0)
        rows = self._db.load_fuzzy(tx, node_type, after)
        for node_id, ext_key, node_norm, node_key in rows:
            if node_id not in self._new_nodes:  # safe mode writes our rows early
                index.add(node_id, node_key, (ext_key, node_norm))
            after = max(after, node_id)
        self._fuzzy_loaded[node_type] = after
        self._fuzzy_refreshed.add(node_type)

    def _drop_pending_fuzzy(self, mark: int) -> None:
        pending = self._fuzzy_pending
        while len(pending) > mark:
            type_name, node_id = pending.pop()
            self._fuzzy_index[type_name].remove(node_id)


def _matched(role: str, node_id: int, confidence: float, reason: str) -> Action:
    return Action(
        action="entity_matched",
        role=role,
        entity_id=node_id,
        confidence=confidence,
        match_reason=reason,
    )


def _ambiguous(
    e: Entity,
    candidates: list[tuple[int, str | None, str, float | None]],
    reason: str,
    threshold: float | None = None,
) -> NoReturn:
    how = {
        "exact_name_match": "by exact name",
        "alias_match": "by alias",
        "fuzzy_match": f"fuzzily (similarity >= {threshold})",
    }[reason]
    shown = []
    for node_id, ext_key, norm, score in candidates[:10]:
        text = f"{node_id} {norm!r}"
        if ext_key is not None:
            text += f" key {ext_key!r}"
        if score is not None:
            text += f" {score:.3f}"
        shown.append(text)
    more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
    raise AmbiguousMatchError(
        f"{e.type} {e.name!r} matches {len(candidates)} entities {how}: "
        f"{'; '.join(shown)}{more}; not merged: give an external key to say which",
        details={
            "match_reason": reason,
            "candidates": [
                {"id": i, "name": n, "external_key": k, **({"score": s} if s is not None else {})}
                for i, k, n, s in candidates
            ],
        },
    )
