"""The torch side of the visual-classifier backbones: building the model (ImageNet-1k or random),
its output layer, batch-norm handling while fine-tuning, and the scores module ONNX export traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelmill.training.compat import ensure_torchvision
from modelmill.training.finetune.outputs import scores_from_logits
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.weights import WeightsLocation, timm_state_dict

IMAGENET_CLASSES = 1000


def normalisation(backbone: Backbone) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) on [0, 1] pixels that the pretrained weights expect."""
    ensure_torchvision()
    import timm

    config = timm.get_pretrained_cfg(backbone.weights.model_name)
    assert config is not None, f"timm knows no {backbone.weights.model_name}"
    return tuple(config.mean), tuple(config.std)


def create_model(
    backbone: Backbone, num_classes: int, pretrained: WeightsLocation | None
) -> nn.Module:
    """The backbone with a fresh `num_classes` output layer, from ImageNet weights when given.

    Seed torch first: the new layer's initialisation comes from the global generator.
    """
    ensure_torchvision()
    import timm

    if pretrained is None:
        return timm.create_model(backbone.architecture, pretrained=False, num_classes=num_classes)
    model: Any = timm.create_model(
        backbone.architecture, pretrained=False, num_classes=IMAGENET_CLASSES
    )
    model.load_state_dict(timm_state_dict(backbone.weights, pretrained, model))
    model.reset_classifier(num_classes)
    return model


def head_keys(model: Any) -> tuple[str, ...]:
    """The state-dict keys of the output layer (one row per concept)."""
    name = model.pretrained_cfg["classifier"]
    return tuple(f"{name}.{part}" for part in ("weight", "bias"))


def train_keeping_batchnorm_statistics(model: nn.Module) -> None:
    """Training mode, except that batch-norm layers normalise with their stored (pretrained)
    statistics and do not update them; their scale and shift still learn. With small batches
    and datasets, batch statistics are noisy and make training and inference disagree (Keras'
    transfer-learning guide recommends the same)."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class ImageScores(nn.Module):
    """RGB pixels 0-255, (N, 3, size, size) float → concept scores: normalisation, the model,
    then softmax or sigmoid; what the ONNX export takes and gives."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, model: nn.Module, mean: Sequence[float], std: Sequence[float], exclusive: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.exclusive = exclusive
        pixel_scale = 255.0
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * pixel_scale)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * pixel_scale)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return scores_from_logits(self.model((images - self.mean) / self.std), self.exclusive)
