"""Hyperparameters of the visual-embedder templates; each class's fields, defaults, ranges and
descriptions are what ListModelTypes answers for that template. Light (no torch).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from modelmill.training.finetune.fields import (
    MixedPrecision,
    PretrainedWeights,
    batch_size_field,
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


class EmbedderParams(BaseModel):
    """What both metric-learning templates share."""

    image_size: int = image_size_field(128)
    batch_size: int = batch_size_field(32)
    num_epochs: int = num_epochs_field(15)
    per_item_lrate: float = per_item_lrate_field(3.125e-05)
    weight_decay: float = weight_decay_field(0.01, "Decoupled weight decay (AdamW) on weights.")
    momentum: float = momentum_field("AdamW's first-moment decay (beta1).")
    embedding_size: int = Field(
        128,
        ge=8,
        le=2048,
        description="Length of the embedding vectors (a linear layer on the backbone's pooled "
        "features, L2-normalised).",
        json_schema_extra={"step": 8},
    )
    pretrained_weights: PretrainedWeights = pretrained_weights_field(
        "Start the backbone from its ImageNet-1k weights (shipped with modelmill) "
        "or from random weights (None)."
    )
    flip_probability: float = flip_probability_field(
        "Chance that a training image is flipped horizontally (augmentation)."
    )
    unseen_concepts_fraction: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Share of the concepts (at least one when above 0, with three or more "
        "concepts) whose images are kept out of training entirely, to measure retrieval on "
        "concepts the embedder never saw. 0 trains on every concept.",
        json_schema_extra={"step": 0.05},
    )
    warmup_epochs: float = warmup_epochs_field(1.0)
    early_stopping_patience: int = patience_field(5)
    validation_fraction: float = validation_fraction_field(0.2)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()


class AngularMarginParams(EmbedderParams):
    """ArcFace: an additive angular margin on the angle to each concept's centre."""

    margin: float = Field(
        28.6,
        ge=0.0,
        le=90.0,
        description="Angular margin in degrees added to the angle between an embedding and "
        "its concept's centre (ArcFace's m; 28.6° = 0.5 rad).",
    )
    scale: float = Field(
        64.0,
        gt=0.0,
        le=256.0,
        description="Scale of the cosine logits (ArcFace's s): higher sharpens the softmax.",
    )


class MultiSimilarityParams(EmbedderParams):
    """Multi-similarity loss on the pairs a multi-similarity miner picks in each batch."""

    alpha: float = Field(2.0, gt=0.0, le=100.0, description="Weight of positive pairs.")
    beta: float = Field(50.0, gt=0.0, le=100.0, description="Weight of negative pairs.")
    margin: float = Field(
        0.5,
        ge=-1.0,
        le=1.0,
        description="The similarity the loss pulls positives above and pushes negatives "
        "below (the loss's base).",
    )
    miner_epsilon: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="The miner keeps negatives closer than the farthest positive plus this, "
        "and positives farther than the closest negative minus this.",
    )
