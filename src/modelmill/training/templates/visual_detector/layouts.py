"""The detector layouts the visual-detector templates ship: which torchvision head sits on the
EfficientNet-Lite0 features, through which neck, how wide, with anchors of which sizes, plus
the estimate coefficients. Light: no torch at import (the registry lists templates).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

REFERENCE_IMAGE_SIZE = 320  # estimate coefficients are per image at this size


@dataclass(frozen=True)
class Layout:
    """`head`: retinanet (focal loss, anchors × classes rows), ssdlite (SSD boxes, depthwise
    heads, a background class), faster_rcnn (RPN + RoIAlign box head, a background row);
    `neck`: fpn (P3-P7 or P3-P5 + pool) or dilated (YOLOF's one-level encoder);
    `anchor_fractions`: per level, the anchor side as a share of the image side.
    `estimate`: seconds ≈ A · images · epochs · (image_size / 320)² + B per device kind."""

    head: Literal["retinanet", "ssdlite", "faster_rcnn"]
    neck: Literal["fpn", "dilated"]
    channels: int
    anchor_fractions: tuple[float, ...]
    estimate: Mapping[str, tuple[float, float]]


# CPU coefficients from issue 11's step times on Lite0-FPN (2 images of 320 px on one thread:
# RetinaNet 1.5 s, Faster R-CNN 2.9-3.4 s: half of that per image); SSDLite and YOLOF on the
# same backbone took 0.69× and 0.64× RetinaNet's time in `bench/detector.py heads`. CUDA ones
# are rough guesses until the estimator calibrates them.
RETINANET = Layout(
    "retinanet", "fpn", 64, (0.05, 0.1, 0.2, 0.4, 0.8), {"cpu": (0.75, 10.0), "cuda": (0.01, 30.0)}
)
SSDLITE = Layout(
    "ssdlite", "fpn", 64, (0.1, 0.2, 0.4, 0.6, 0.9), {"cpu": (0.5, 10.0), "cuda": (0.005, 30.0)}
)
FASTER_RCNN = Layout(
    "faster_rcnn", "fpn", 128, (0.05, 0.1, 0.2, 0.4), {"cpu": (1.6, 15.0), "cuda": (0.02, 30.0)}
)
# YOLOF: one stride-32 level, anchors from a tenth to the whole image.
YOLOF = Layout(
    "retinanet", "dilated", 128, (0.1, 0.2, 0.4, 0.8), {"cpu": (0.5, 10.0), "cuda": (0.01, 30.0)}
)
