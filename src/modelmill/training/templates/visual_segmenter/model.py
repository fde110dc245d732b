"""The torch side of the visual-segmenter architectures: building the network (U-Net / FPN on
the Lite0 encoder with segmentation_models_pytorch, SegFormer from its configuration), its last
layer's keys (one row per class), the pixel normalisation, keeping the encoder's batch-norm
statistics, and the scores module that ONNX export traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modelmill.training.compat import ensure_torchvision
from modelmill.training.templates.visual_segmenter.architectures import Architecture
from modelmill.training.weights import WeightsLocation, timm_state_dict

SMP_ENCODER_PREFIX = "tu-"  # segmentation_models_pytorch's name prefix for timm encoders
SMP_HEAD_KEYS = ("segmentation_head.0.weight", "segmentation_head.0.bias")
SEGFORMER_HEAD_KEYS = (
    "segformer.decode_head.classifier.weight",
    "segformer.decode_head.classifier.bias",
)
# SegFormer trains from scratch on ImageNet-normalised pixels, as its papers' models did.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PIXEL_SCALE = 255.0


class SegFormerNet(nn.Module):
    """SegFormer-B0 (transformers' default configuration is MiT-b0) whose logits, a quarter of
    the input's size, are upsampled back to it, as the smp networks answer."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        ensure_torchvision()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        config = SegformerConfig(num_labels=num_classes)
        self.segformer = SegformerForSemanticSegmentation(config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.segformer(pixel_values=images).logits
        return nn.functional.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=False
        )


def create_model(
    architecture: Architecture, num_classes: int, pretrained: WeightsLocation | None
) -> nn.Module:
    """The network with `num_classes` outputs per pixel (background included), its encoder
    from ImageNet weights when given. Seed torch first: fresh layers come from the global
    generator."""
    if architecture.kind == "segformer":
        return SegFormerNet(num_classes)
    ensure_torchvision()
    import segmentation_models_pytorch as smp
    import timm

    assert architecture.encoder is not None
    network = smp.Unet if architecture.kind == "unet" else smp.FPN
    model: Any = network(
        SMP_ENCODER_PREFIX + architecture.encoder.architecture,
        encoder_weights=None,
        classes=num_classes,
    )
    if pretrained is not None:
        full = timm.create_model(architecture.encoder.architecture, pretrained=False)
        state = timm_state_dict(architecture.encoder, pretrained, full)
        # The encoder is timm's features-only model: the classifier and head conv are unused.
        result = model.encoder.model.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise RuntimeError(
                f"the encoder weights lack {len(result.missing_keys)} tensors, e.g. "
                f"{result.missing_keys[:3]}"
            )
    return model


def head_keys(architecture: Architecture) -> tuple[str, ...]:
    """The state-dict keys of the last layer (one row per class, background first)."""
    return SEGFORMER_HEAD_KEYS if architecture.kind == "segformer" else SMP_HEAD_KEYS


def normalisation(architecture: Architecture) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) on [0, 1] pixels the network expects (its encoder weights')."""
    if architecture.encoder is None:
        return IMAGENET_MEAN, IMAGENET_STD
    ensure_torchvision()
    import timm

    config = timm.get_pretrained_cfg(architecture.encoder.model_name)
    assert config is not None, f"timm knows no {architecture.encoder.model_name}"
    return tuple(config.mean), tuple(config.std)


def train_keeping_encoder_statistics(model: nn.Module) -> None:
    """Training mode, except the encoder's batch norms normalise with their stored (ImageNet)
    statistics and do not update them; the decoder's, new, learn theirs."""
    model.train()
    encoder: Any = getattr(model, "encoder", None)
    for module in encoder.modules() if encoder is not None else ():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class PixelScores(nn.Module):
    """RGB pixels 0-255, (N, 3, size, size) float → per-pixel probabilities (N, classes, size,
    size), background first: what the ONNX export takes and gives."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * PIXEL_SCALE)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * PIXEL_SCALE)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std).softmax(dim=1)
