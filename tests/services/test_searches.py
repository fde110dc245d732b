"""The ranking step of similarity search: numpy and a kept faiss index agree, several ranks are
averaged, and kept indexes are dropped least recently used first."""

from __future__ import annotations

import numpy as np
import pytest

from modelmill.services import searches
from modelmill.services.searches import VectorIndex, VectorIndexCache, nearest


def unit_vectors(count: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_numpy_and_a_one_off_faiss_index_agree() -> None:
    vectors = unit_vectors(3000)
    query = vectors[17] + 0.1 * unit_vectors(1, seed=1)[0]
    query /= np.linalg.norm(query)
    brute = nearest(vectors, query, 25, use_faiss=False)
    indexed = nearest(vectors, query, 25, use_faiss=True)
    assert brute[0][0] == 17
    assert list(brute[0]) == list(indexed[0])
    assert np.allclose(brute[1], indexed[1], atol=1e-5)


def test_a_kept_faiss_index_ranks_like_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = {f"k{i}": v for i, v in enumerate(unit_vectors(500))}
    small = VectorIndex(vectors)
    monkeypatch.setattr(searches, "FAISS_MIN_VECTORS", 100)
    large = VectorIndex(vectors)
    assert small.faiss_index is None and large.faiss_index is not None
    query = unit_vectors(1, seed=5)
    assert list(small.best(query, 10)) == list(large.best(query, 10))
    assert small.best(query, 10) == pytest.approx(large.best(query, 10), abs=1e-5)


def test_several_queries_score_the_mean_cosine() -> None:
    vectors = {"a": np.array([1, 0], np.float32), "b": np.array([0, 1], np.float32)}
    queries = np.array([[1, 0], [0.6, 0.8]], np.float32)
    best = VectorIndex(vectors).best(queries, 2)
    assert list(best) == ["a", "b"]
    assert best == pytest.approx({"a": 0.8, "b": 0.4})


def test_kept_indexes_drop_the_least_recently_used() -> None:
    cache = VectorIndexCache(size=2)
    index = VectorIndex({"a": np.array([1, 0], np.float32)})
    cache.put("one", index)
    cache.put("two", index)
    assert cache.get("one") is index  # now "two" is the least recently used
    cache.put("three", index)
    assert cache.get("two") is None and cache.get("one") is index and cache.get("three") is index
