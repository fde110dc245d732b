"""Hyperparameters of the visual-segmenter templates, named as Clarifai names them; each class's
fields, defaults, ranges and descriptions are what ListModelTypes answers for that template.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from modelmill.training.finetune.fields import (
    FlipDirection,
    MixedPrecision,
    PretrainedWeights,
    batch_size_field,
    flip_direction_field,
    flip_probability_field,
    mixed_precision_field,
    momentum_field,
    num_epochs_field,
    patience_field,
    per_item_lrate_field,
    pretrained_weights_field,
    seed_field,
    validation_fraction_field,
    warmup_epochs_field,
    weight_decay_field,
)

SIZE_STEP = 32  # the encoders downsample by 32: image sides must be multiples of it
MIOU = "a higher validation mIoU"  # what early stopping waits for


def image_size_field(default: int) -> int:
    return Field(  # type: ignore[no-any-return]
        default,
        ge=SIZE_STEP,
        le=1024,
        multiple_of=SIZE_STEP,
        description="Side in pixels that images (and their masks) are resized to, without "
        "cropping, a multiple of 32; predicted masks are scaled back to each input's size. "
        "Training time grows with its square.",
        json_schema_extra={"step": SIZE_STEP},
    )


class VisualSegmenterParams(BaseModel):
    """The Lite0 templates' (U-Net, FPN) defaults; SegFormer overrides a few of them."""

    image_size: int = image_size_field(320)
    batch_size: int = batch_size_field(4)
    num_epochs: int = num_epochs_field(30)
    per_item_lrate: float = per_item_lrate_field(2.5e-04)
    weight_decay: float = weight_decay_field(0.01)
    momentum: float = momentum_field()
    pretrained_weights: PretrainedWeights = pretrained_weights_field(
        "Start the encoder from ImageNet-1k weights (found in the weights folder, a "
        "local cache, the package modelmill ships, or downloaded when online) or from random "
        "weights (None). The decoder always starts from random weights."
    )
    freeze_batchnorm: bool = Field(
        True,
        description="When the encoder starts from trained weights, keep its batch-norm "
        "statistics while fine-tuning (scale and shift still learn): steadier with small "
        "batches. The decoder's batch norms always learn their statistics.",
    )
    flip_probability: float = flip_probability_field(
        "Chance that a training image is flipped with its mask (augmentation)."
    )
    flip_direction: FlipDirection = flip_direction_field()
    warmup_epochs: float = warmup_epochs_field(1.0)
    early_stopping_patience: int = patience_field(5, MIOU)
    validation_fraction: float = validation_fraction_field(0.2)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()
    min_value: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Predictions return only the regions whose mean confidence (over the "
        "region's pixels) is at least this value.",
        json_schema_extra={"path": "output_info.params", "step": 0.01},
    )


class SegFormerParams(VisualSegmenterParams):
    """SegFormer from scratch: smaller images, more epochs, no pretrained weights to pick."""

    image_size: int = image_size_field(256)
    num_epochs: int = num_epochs_field(60)
    per_item_lrate: float = per_item_lrate_field(1.5e-04)
    warmup_epochs: float = warmup_epochs_field(2.0)
    early_stopping_patience: int = patience_field(10, MIOU)
    pretrained_weights: Literal["None"] = Field(
        "None",
        description="SegFormer trains from random weights: no pretrained SegFormer weights "
        "ship with modelmill, and a server without internet cannot fetch them.",
    )
    freeze_batchnorm: bool = Field(
        False,
        description="Unused by SegFormer: trained from scratch, its batch-norm statistics "
        "always learn; listed so every segmenter takes the same settings.",
    )
