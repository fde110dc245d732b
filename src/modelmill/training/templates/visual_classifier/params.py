"""Hyperparameters of the visual-classifier templates, named as Clarifai names them; each class's
fields, defaults, ranges and descriptions are what ListModelTypes answers for that template.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from modelmill.training.finetune.fields import (
    OUTPUT_CONFIG,
    FlipDirection,
    MixedPrecision,
    PretrainedWeights,
    batch_size_field,
    flip_direction_field,
    flip_probability_field,
    image_size_field,
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


class VisualClassifierParams(BaseModel):
    """The fast EfficientNet-Lite0 template's defaults; the others override a few of them."""

    image_size: int = image_size_field(128)
    batch_size: int = batch_size_field(32)
    num_epochs: int = num_epochs_field(15)
    per_item_lrate: float = per_item_lrate_field(3.125e-05)
    weight_decay: float = weight_decay_field(0.01)
    momentum: float = momentum_field()
    pretrained_weights: PretrainedWeights = pretrained_weights_field(
        "Start from ImageNet-1k weights (found in the weights folder, a local "
        "cache, a package, or downloaded when online) or from random weights (None)."
    )
    freeze_batchnorm: bool = Field(
        True,
        description="When starting from trained weights, keep their batch-norm statistics "
        "while fine-tuning (scale and shift still learn): steadier with small batches and "
        "datasets. Training from random weights always updates them.",
    )
    flip_probability: float = flip_probability_field(
        "Chance that a training image is flipped (augmentation)."
    )
    flip_direction: FlipDirection = flip_direction_field()
    warmup_epochs: float = warmup_epochs_field(1.0)
    early_stopping_patience: int = patience_field(5)
    validation_fraction: float = validation_fraction_field(0.2)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()
    concepts_mutually_exclusive: bool = Field(
        False,
        description="Each image has exactly one of the concepts (softmax); otherwise any "
        "number of them (one sigmoid each). Inputs labelled 0 for a concept are negatives.",
        json_schema_extra=OUTPUT_CONFIG,
    )


class ResNet50Params(VisualClassifierParams):
    """Clarifai's MMClassification_ResNet_50_RSB_A1 public defaults."""

    image_size: int = image_size_field(224)
    batch_size: int = batch_size_field(64)
    num_epochs: int = num_epochs_field(60)
    per_item_lrate: float = per_item_lrate_field(1.953125e-05)
    warmup_epochs: float = warmup_epochs_field(5.0)
    early_stopping_patience: int = patience_field(10)


class EfficientNetParams(VisualClassifierParams):
    image_size: int = image_size_field(224)
    batch_size: int = batch_size_field(32)
    num_epochs: int = num_epochs_field(30)
    per_item_lrate: float = per_item_lrate_field(1.5625e-05)
    warmup_epochs: float = warmup_epochs_field(2.0)
    early_stopping_patience: int = patience_field(8)
