"""The generic negatives shipped with the embedding-classifier template."""

from __future__ import annotations

import numpy as np
import pytest

from modelmill.training.embedders import default_embedder
from modelmill.training.templates.embedding_classifier.negatives import (
    image_corpus,
    load_negatives,
    negatives_path,
    text_corpus,
)

MAX_FILE_BYTES = 3_000_000


@pytest.mark.parametrize("kind", ["text", "image"])
def test_built_in_embedders_ship_small_unit_length_negatives(kind):
    embedder = default_embedder(kind)
    assert negatives_path(embedder.id).stat().st_size <= MAX_FILE_BYTES
    negatives = load_negatives(embedder.id, embedder.version)
    assert negatives is not None and negatives.dtype == np.float32
    assert negatives.shape[1] == embedder.dim and len(negatives) >= 500
    np.testing.assert_allclose(np.linalg.norm(negatives, axis=1), 1.0, atol=1e-2)


def test_negatives_of_another_embedder_version_are_not_used():
    assert load_negatives("all-minilm-l6-v2", "some-other-version") is None
    assert load_negatives("no-such-embedder", "v") is None


def test_corpora_are_deterministic_prose_and_photo_views():
    sentences = text_corpus(50)
    assert sentences == text_corpus(50) and len(set(sentences)) == 50
    assert all(s[0].isupper() and " " in s for s in sentences)
    views = image_corpus(4)
    assert [v.size for v in views] == [views[0].size] * 4
    assert np.asarray(views[0]).tobytes() == np.asarray(image_corpus(1)[0]).tobytes()
