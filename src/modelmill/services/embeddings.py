"""Embeddings from base embedding models, cached per (content, embedder version): never twice."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from modelmill.services import Env
from modelmill.store.tables import Embedding
from modelmill.training.contract import Example
from modelmill.training.embedders import cache_key, get_embedder

BATCH = 256  # examples embedded and stored per round; bounds memory for large datasets


def _insert(env: Env):  # type: ignore[no-untyped-def]
    dialect = postgresql if env.db.engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(Embedding)


def count_missing(env: Env, content_keys: Sequence[str], embedder_id: str) -> int:
    """How many distinct contents of these `embedder_id` has no cached embedding of yet (what a
    training computes: each once); reads keys only, computes nothing."""
    tag = cache_key(get_embedder(embedder_id))
    unique = sorted(set(content_keys))
    cached: set[str] = set()
    with env.db.session() as session:
        for start in range(0, len(unique), BATCH):
            cached.update(
                session.scalars(
                    select(Embedding.content_key).where(
                        Embedding.embedder == tag,
                        Embedding.content_key.in_(unique[start : start + BATCH]),
                    )
                )
            )
    return len(unique) - len(cached)


class EmbeddingCache:
    """`cache(examples, embedder_id)` → an (n, dim) float32 array, computing only what is missing.

    `keys` maps an input id to its content key; examples without one are embedded uncached.
    `computed` and `computing_s` count what was not cached and the time computing it took.
    """

    def __init__(self, env: Env, keys: dict[str, str]) -> None:
        self.env = env
        self.keys = keys
        self.computed = 0
        self.computing_s = 0.0

    def __call__(self, examples: Sequence[Example], embedder_id: str) -> np.ndarray:
        embedder = get_embedder(embedder_id)
        tag = cache_key(embedder)
        result = np.zeros((len(examples), embedder.dim), dtype=np.float32)
        for start in range(0, len(examples), BATCH):
            chunk = examples[start : start + BATCH]
            keys = [self.keys.get(e.input_id) for e in chunk]
            # by content key, or by row for an input without one (embedded, never stored)
            found: dict[str | int, np.ndarray] = dict(self._lookup(tag, [k for k in keys if k]))
            ids: list[str | int] = [key or i for i, key in enumerate(keys)]
            # one computation per missing content (a dataset may hold the same image twice)
            first: dict[str | int, int] = {}
            for i, id_ in enumerate(ids):
                if id_ not in found:
                    first.setdefault(id_, i)
            if first:
                started = time.perf_counter()
                vectors = embedder.embed([chunk[i].load() for i in first.values()])
                self.computing_s += time.perf_counter() - started
                self.computed += len(first)
                computed = dict(zip(first, vectors, strict=True))
                self._store(tag, {k: v for k, v in computed.items() if isinstance(k, str)})
                found.update(computed)
            for i, id_ in enumerate(ids):
                result[start + i] = found[id_]
        return result

    def stored(self, embedder_id: str) -> dict[str, np.ndarray]:
        """The vectors already cached for `keys`' inputs, by input id; computes nothing."""
        embedder = get_embedder(embedder_id)
        tag = cache_key(embedder)
        by_key: dict[str, np.ndarray] = {}
        unique = sorted(set(self.keys.values()))
        for start in range(0, len(unique), BATCH):
            by_key.update(self._lookup(tag, unique[start : start + BATCH]))
        return {i: by_key[k] for i, k in self.keys.items() if k in by_key}

    def _lookup(self, tag: str, keys: list[str]) -> dict[str, np.ndarray]:
        if not keys:
            return {}
        with self.env.db.session() as session:
            rows = session.execute(
                select(Embedding.content_key, Embedding.vector).where(
                    tuple_(Embedding.content_key, Embedding.embedder).in_([(k, tag) for k in keys])
                )
            )
            return {key: np.frombuffer(vector, dtype=np.float32) for key, vector in rows}

    def _store(self, tag: str, vectors: dict[str, np.ndarray]) -> None:
        if not vectors:
            return
        rows = [
            {"content_key": key, "embedder": tag, "vector": np.asarray(v, np.float32).tobytes()}
            for key, v in vectors.items()
        ]
        with self.env.db.session() as session:
            # A concurrent job may have stored the same embedding: keep the first.
            session.execute(_insert(self.env).values(rows).on_conflict_do_nothing())
