"""Hyperparameters of the visual-detector templates, named as Clarifai names them (image_size,
batch_size, num_epochs, per_item_lrate, pretrained_weights, frozen_stages, min_samples_per_epoch,
keep_aspect_ratio, random_resize_lower/upper) plus the shared fine-tuning fields, and the
inference settings (output_info.params) a prediction request may change.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic.json_schema import JsonDict

from modelmill.training.finetune.fields import (
    MixedPrecision,
    PretrainedWeights,
    batch_size_field,
    flip_probability_field,
    image_size_field,
    mixed_precision_field,
    momentum_field,
    num_epochs_field,
    per_item_lrate_field,
    pretrained_weights_field,
    seed_field,
    validation_fraction_field,
    warmup_epochs_field,
    weight_decay_field,
)

INFERENCE: JsonDict = {"path": "output_info.params"}
MAX_FROZEN_STAGES = 7  # Lite0 has a stem and seven stages


def detector_image_size_field(default: int) -> int:
    return image_size_field(
        default,
        "Side in pixels of the square images the detector sees: each image is "
        "resized to fit (letterboxed when keep_aspect_ratio) and its boxes move with it. "
        "Anchor sizes follow it. Training time grows with its square.",
    )


class VisualDetectorParams(BaseModel):
    """The fast template's defaults; the others override a few of them."""

    image_size: int = detector_image_size_field(320)
    batch_size: int = batch_size_field(8)
    num_epochs: int = num_epochs_field(30)
    # AdamW at 2e-4 for a batch of 8: 4e-3 left RetinaNet's loss flat on the sample shapes
    # (bench/RESULTS.md, visual detector); detection fine-tuning with AdamW uses 1e-4 to 2e-4.
    per_item_lrate: float = per_item_lrate_field(2.5e-5)
    min_samples_per_epoch: int = Field(
        64,
        ge=0,
        le=100_000,
        description="Fewest images an epoch goes through: a small dataset is repeated "
        "(reshuffled, re-augmented) until an epoch has at least this many; 0 = one pass.",
        json_schema_extra={"step": 1},
    )
    pretrained_weights: PretrainedWeights = pretrained_weights_field(
        "Start the EfficientNet-Lite0 backbone from its ImageNet-1k weights "
        "(shipped with modelmill) or from random weights (None). The detection heads always "
        "start fresh: no COCO-trained detector weights are used."
    )
    frozen_stages: int = Field(
        1,
        ge=-1,
        le=MAX_FROZEN_STAGES,
        description="Backbone stages whose weights stay as pretrained: -1 none, 0 the stem, "
        "n the stem and the first n stages. Freezing more trains faster and overfits less.",
        json_schema_extra={"step": 1},
    )
    keep_aspect_ratio: bool = Field(
        True,
        description="Resize images to fit the square keeping their shape (padding the rest); "
        "otherwise stretch them to the square.",
    )
    random_resize_lower: float = Field(
        0.8,
        ge=0.1,
        le=1.0,
        description="Augmentation: each training image is scaled by a random factor between "
        "random_resize_lower and random_resize_upper (then cropped or padded to the square; "
        "boxes follow). 1 and 1 turn it off.",
        json_schema_extra={"step": 0.05},
    )
    random_resize_upper: float = Field(
        1.2,
        ge=1.0,
        le=3.0,
        description="Upper bound of the random resize factor (see random_resize_lower).",
        json_schema_extra={"step": 0.05},
    )
    flip_probability: float = flip_probability_field(
        "Chance that a training image is mirrored left to right (boxes follow)."
    )
    weight_decay: float = weight_decay_field(1e-4)
    momentum: float = momentum_field()
    warmup_epochs: float = warmup_epochs_field(1.0)
    early_stopping_patience: int = Field(
        8,
        ge=0,
        le=1000,
        description="Early stopping: end training after this many epochs without a higher "
        "validation mAP@[.5:.95] (0 = never stop early). The best epoch's weights are kept.",
        json_schema_extra={"step": 1},
    )
    validation_fraction: float = validation_fraction_field(0.2)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()
    detection_threshold: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Predictions: boxes scoring below this are left out (a request's "
        "min_value sets it too).",
        json_schema_extra={**INFERENCE, "step": 0.05},
    )
    max_detections: int = Field(
        100,
        ge=1,
        le=1000,
        description="Predictions: at most this many boxes per image, highest scores first.",
        json_schema_extra={**INFERENCE, "step": 1},
    )
    nms_iou: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Predictions: of two boxes of a concept overlapping by more than this "
        "intersection over union, only the higher-scoring one is kept.",
        json_schema_extra={**INFERENCE, "step": 0.05},
    )


class SSDParams(VisualDetectorParams):
    batch_size: int = batch_size_field(16)
    per_item_lrate: float = per_item_lrate_field(1.25e-5)


class FasterRCNNParams(VisualDetectorParams):
    """Clarifai's MMDetection_FasterRCNN trains at larger sizes; Faster R-CNN is slower per
    image, so fewer images per batch."""

    image_size: int = detector_image_size_field(512)
    batch_size: int = batch_size_field(4)
    per_item_lrate: float = per_item_lrate_field(2.5e-5)
    num_epochs: int = num_epochs_field(24)


class YoloFParams(VisualDetectorParams):
    image_size: int = detector_image_size_field(416)
