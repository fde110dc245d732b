"""The embedding cache computes each content once, duplicates in one dataset included, and the
estimate's count of what a training would embed agrees with what the training then computes.
Real text embedder (all-MiniLM-L6-v2 from its package), real SQLite database.

Run: `.venv/bin/pytest tests/services/test_embedding_cache.py -q`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from modelmill.services import Env
from modelmill.services.embeddings import EmbeddingCache, count_missing
from modelmill.services.examples import content_key
from modelmill.settings import Settings
from modelmill.training.contract import Example

EMBEDDER = "all-minilm-l6-v2"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    opened = Env.open(Settings(data_dir=tmp_path, embed_on_upload=False))
    yield opened
    opened.db.dispose()


def text(input_id: str, raw: str) -> Example:
    return Example(input_id, "text", functools.partial(str, raw))


def test_a_content_held_twice_is_embedded_once_and_counted_once(env: Env) -> None:
    raws = {"a": "the oven is hot", "b": "the match went to penalties", "c": "the oven is hot"}
    examples = [text(i, raw) for i, raw in raws.items()]
    keys = {i: content_key({"text": raw}) for i, raw in raws.items()}
    assert count_missing(env, list(keys.values()), EMBEDDER) == 2

    cache = EmbeddingCache(env, keys)
    vectors = cache(examples, EMBEDDER)

    assert cache.computed == 2
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[1])
    assert count_missing(env, list(keys.values()), EMBEDDER) == 0
    again = EmbeddingCache(env, keys)
    np.testing.assert_array_equal(again(examples, EMBEDDER), vectors)
    assert again.computed == 0


def test_inputs_without_a_content_key_are_each_embedded_and_not_stored(env: Env) -> None:
    examples = [text("a", "rain tomorrow"), text("b", "rain tomorrow"), text("c", "sunny")]
    cache = EmbeddingCache(env, {"c": content_key({"text": "sunny"})})

    vectors = cache(examples, EMBEDDER)

    assert cache.computed == 3 and vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert count_missing(env, [content_key({"text": "rain tomorrow"})], EMBEDDER) == 1
