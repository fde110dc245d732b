"""visual-embedder templates: metric learning on EfficientNet-Lite0 with pytorch-metric-learning
(ArcFace, or a multi-similarity loss with its miner); embeddings L2-normalised.
"""

from modelmill.training.templates.visual_embedder.params import (
    AngularMarginParams,
    MultiSimilarityParams,
)
from modelmill.training.templates.visual_embedder.template import VisualEmbedder

ANGULAR_MARGIN_EMBEDDER = VisualEmbedder(
    "Lite0_AngularMargin",
    "arcface",
    AngularMarginParams,
    "EfficientNet-Lite0 (ImageNet-1k weights shipped with modelmill; Clarifai's template of "
    "this name uses a ResNet, whose weights are not to be had offline) fine-tuned with an "
    "additive angular margin loss (ArcFace) on the images' concepts: L2-normalised embeddings "
    "for visual search.",
    aliases=("Clarifai_ResNet_AngularMargin",),
)
MULTI_SIMILARITY_EMBEDDER = VisualEmbedder(
    "Lite0_MultiSimilarity",
    "multi_similarity",
    MultiSimilarityParams,
    "EfficientNet-Lite0 fine-tuned with a multi-similarity loss on the pairs a multi-"
    "similarity miner picks in class-balanced batches: no per-concept centres, so it suits "
    "many concepts with few images each. Recommended: it retrieved best in bench/embedder.py.",
    recommended=True,
)

__all__ = ["ANGULAR_MARGIN_EMBEDDER", "MULTI_SIMILARITY_EMBEDDER", "VisualEmbedder"]
