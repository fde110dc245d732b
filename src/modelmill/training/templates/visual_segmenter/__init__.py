"""visual-segmenter templates: U-Net (recommended) and FPN decoders on the EfficientNet-Lite0
encoder with its ImageNet weights (segmentation_models_pytorch), and SegFormer trained from
scratch (transformers), predicting a mask per concept.
"""

from modelmill.training.templates.visual_segmenter.architectures import FPN, SEGFORMER, UNET
from modelmill.training.templates.visual_segmenter.params import (
    SegFormerParams,
    VisualSegmenterParams,
)
from modelmill.training.templates.visual_segmenter.template import VisualSegmenter

UNET_SEGMENTER = VisualSegmenter(
    "Unet_EfficientNet_Lite0",
    UNET,
    VisualSegmenterParams,
    "U-Net decoder on the EfficientNet-Lite0 encoder, which starts from its ImageNet-1k "
    "weights (shipped with modelmill): the quickest way to a good segmenter, on CPU too.",
    recommended=True,
)
FPN_SEGMENTER = VisualSegmenter(
    "FPN_EfficientNet_Lite0",
    FPN,
    VisualSegmenterParams,
    "Feature Pyramid Network decoder on the EfficientNet-Lite0 encoder (ImageNet-1k weights, "
    "shipped with modelmill): lighter than the U-Net, masks at a quarter of the resolution "
    "upsampled.",
)
SEGFORMER_SEGMENTER = VisualSegmenter(
    "SegFormer_B0",
    SEGFORMER,
    SegFormerParams,
    "SegFormer-B0 (Mix Transformer encoder, all-MLP decoder) built from its configuration and "
    "trained from scratch: no pretrained SegFormer weights can be had offline, so it needs "
    "more data and epochs than the Lite0 templates.",
    aliases=("MMSegmentation_SegFormer",),
)

__all__ = ["FPN_SEGMENTER", "SEGFORMER_SEGMENTER", "UNET_SEGMENTER", "VisualSegmenter"]
