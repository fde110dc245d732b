"""The architectures of the visual-segmenter templates: which network, which pretrained encoder
weights (if any) and training-time coefficients. Light: no torch at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.weights import TimmWeights

REFERENCE_IMAGE_SIZE = 320  # estimate coefficients are per image at this size
Kind = Literal["unet", "fpn", "segformer"]


@dataclass(frozen=True)
class Architecture:
    """A segmentation network: `encoder` weights for the smp ones (timm names), none for
    SegFormer (from config). seconds ≈ A · images · epochs · (image_size / 320)² + B."""

    kind: Kind
    encoder: TimmWeights | None
    estimate: Mapping[str, tuple[float, float]]

    @property
    def description(self) -> str:
        encoder = self.encoder.architecture if self.encoder is not None else "mit-b0"
        return f"{self.kind} on {encoder}"


# CPU coefficients from the measurements on the 2-core VM (one thread, 2 × 320 px per
# step: U-Net 1.7–2.3 s, SegFormer-B0 1.4–1.8 s; FPN measured in bench/segmenter.py), CUDA
# ones rough guesses until calibration.
UNET = Architecture("unet", EFFICIENTNET_LITE0.weights, {"cpu": (1.0, 10.0), "cuda": (0.01, 20.0)})
FPN = Architecture("fpn", EFFICIENTNET_LITE0.weights, {"cpu": (0.8, 10.0), "cuda": (0.008, 20.0)})
SEGFORMER = Architecture("segformer", None, {"cpu": (0.8, 10.0), "cuda": (0.008, 20.0)})
