"""visual-classifier templates: deep fine-tuning of timm backbones (ResNet-50, EfficientNet-B0 and
the fast, recommended EfficientNet-Lite0) on labelled images.
"""

from modelmill.training.templates.visual_classifier.backbones import (
    EFFICIENTNET_B0,
    EFFICIENTNET_LITE0,
    RESNET50,
)
from modelmill.training.templates.visual_classifier.params import (
    EfficientNetParams,
    ResNet50Params,
    VisualClassifierParams,
)
from modelmill.training.templates.visual_classifier.template import VisualClassifier

EFFICIENTNET_LITE0_CLASSIFIER = VisualClassifier(
    "EfficientNet_Lite0_Fast",
    EFFICIENTNET_LITE0,
    VisualClassifierParams,
    "Fast deep fine-tuning of EfficientNet-Lite0 from its ImageNet-1k weights (shipped with "
    "modelmill): the quickest way to a fine-tuned classifier, on CPU too.",
    recommended=True,
)
RESNET50_CLASSIFIER = VisualClassifier(
    "MMClassification_ResNet_50_RSB_A1",
    RESNET50,
    ResNet50Params,
    "ResNet-50 (timm's RSB-A1 ImageNet-1k weights) fine-tuned end to end; best on a GPU.",
    aliases=("MMClassification_ResNet_50",),
)
EFFICIENTNET_B0_CLASSIFIER = VisualClassifier(
    "MMClassification_EfficientNet",
    EFFICIENTNET_B0,
    EfficientNetParams,
    "EfficientNet-B0 (timm's ImageNet-1k weights) fine-tuned end to end.",
)

__all__ = [
    "EFFICIENTNET_B0_CLASSIFIER",
    "EFFICIENTNET_LITE0_CLASSIFIER",
    "RESNET50_CLASSIFIER",
    "VisualClassifier",
    "VisualClassifierParams",
]
