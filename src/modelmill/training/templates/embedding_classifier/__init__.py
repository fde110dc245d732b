"""The transfer-learning template: a light classifier head on a frozen base embedding model."""

from modelmill.training.templates.embedding_classifier.template import (
    EMBEDDING_CLASSIFIER,
    EmbeddingClassifier,
    Params,
)

__all__ = ["EMBEDDING_CLASSIFIER", "EmbeddingClassifier", "Params"]
