"""The patch features the anomaly templates fit: EfficientNet-Lite0 (its ImageNet weights ship
with modelmill) cut after its stride-16 stage, with stride 4, 8 and 16 feature maps averaged
over each position's 3×3 neighbourhood (PatchCore's locally aware features) and brought to one
stride-8 grid. The module takes RGB pixels 0-255 and is what the ONNX export traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from modelmill.training.contract import Example
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_classifier.model import create_model, normalisation
from modelmill.training.weights import WeightsLocation

BACKBONE = EFFICIENTNET_LITE0
# Lite0's blocks: [1] ends at stride 4 (24 channels), [2] at stride 8 (40), [4] at stride 16
# (112). PatchCore takes the middle stages: generic enough, still local.
STAGES = {"stride4": 1, "stride8": 2, "stride16": 4}
STAGE_CHANNELS = {"stride4": 24, "stride8": 40, "stride16": 112}
STAGE_STRIDES = {"stride4": 4, "stride8": 8, "stride16": 16}
GRID_STRIDE = 8
NEIGHBOURHOOD = 3  # locally aware features: the mean over each position's 3×3 patch
PIXEL_SCALE = 255.0


class PatchFeatures(nn.Module):
    """(N, 3, S, S) RGB 0-255 → (N, C, S/8, S/8) patch features of the chosen `stages`."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: Any, stages: Sequence[str], mean, std) -> None:
        super().__init__()
        self.stem = nn.Sequential(backbone.conv_stem, backbone.bn1)
        last = max(STAGES[s] for s in stages)
        self.blocks = nn.ModuleList(backbone.blocks[: last + 1])
        self.stages = tuple(stages)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * PIXEL_SCALE)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * PIXEL_SCALE)

    @property
    def channels(self) -> int:
        return sum(STAGE_CHANNELS[s] for s in self.stages)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem((images - self.mean) / self.std)
        wanted = {STAGES[s] for s in self.stages}
        maps = {}
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in wanted:
                maps[index] = x
        grid = (images.shape[-2] // GRID_STRIDE, images.shape[-1] // GRID_STRIDE)
        pad = NEIGHBOURHOOD // 2
        aligned = []
        for stage in self.stages:
            local = nn.functional.avg_pool2d(maps[STAGES[stage]], NEIGHBOURHOOD, 1, pad)
            if STAGE_STRIDES[stage] != GRID_STRIDE:
                local = nn.functional.interpolate(
                    local, size=grid, mode="bilinear", align_corners=False
                )
            aligned.append(local)
        return torch.cat(aligned, dim=1)


def build_extractor(stages: Sequence[str], pretrained: WeightsLocation | None) -> PatchFeatures:
    """The extractor with ImageNet weights (random ones only when `pretrained` is None: the
    state dict of a trained version then replaces them)."""
    model = create_model(BACKBONE, 1000, pretrained)
    mean, std = normalisation(BACKBONE)
    return PatchFeatures(model, stages, mean, std).eval()


def square_resized(image: Image.Image, size: int) -> np.ndarray:
    """The whole image squeezed to (size, size, 3) uint8: heatmaps then cover all of it."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.uint8)


def image_batches(
    examples: Sequence[Example], size: int, batch_size: int
) -> Any:  # Iterator[tuple[list[tuple[int, int]], torch.Tensor]]
    """Batches of (original (width, height) per image, float pixels (B, 3, size, size))."""
    for start in range(0, len(examples), batch_size):
        images = [examples[i].load() for i in range(start, min(len(examples), start + batch_size))]
        sizes = [image.size for image in images]
        pixels = np.stack([square_resized(image, size) for image in images])
        yield sizes, torch.from_numpy(pixels).permute(0, 3, 1, 2).float()


def extract(
    extractor: PatchFeatures, examples: Sequence[Example], size: int, batch_size: int, device: str
) -> Any:  # Iterator[tuple[list[tuple[int, int]], torch.Tensor]]
    """(original sizes, features (B, C, h, w)) per batch, under no_grad."""
    with torch.no_grad():
        for sizes, pixels in image_batches(examples, size, batch_size):
            yield sizes, extractor(pixels.to(device))
