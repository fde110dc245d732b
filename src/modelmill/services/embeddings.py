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
    """How many of these contents `embedder_id` has no cached embedding of yet (what a training
    would compute); reads keys only, computes nothing."""
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
    return sum(1 for key in content_keys if key not in cached)


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
            known = self._lookup(tag, [k for k in keys if k])
            missing = [i for i, k in enumerate(keys) if k not in known]
            if missing:
                started = time.perf_counter()
                vectors = embedder.embed([chunk[i].load() for i in missing])
                self.computing_s += time.perf_counter() - started
                self.computed += len(missing)
                fresh = {}
                for i, vector in zip(missing, vectors, strict=True):
                    result[start + i] = vector
                    if keys[i]:
                        fresh[keys[i]] = vector
                self._store(tag, fresh)
            for i, key in enumerate(keys):
                if key in known:
                    result[start + i] = known[key]
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
