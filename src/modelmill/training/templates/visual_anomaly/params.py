"""Hyperparameters of the visual-anomaly-heatmap templates; each class's fields, defaults,
ranges and descriptions are what ListModelTypes answers for that template. Light (no torch).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from modelmill.training.finetune.fields import image_size_field, seed_field

INFERENCE = {"path": "output_info.params"}  # per-request settings


def _image_size(default: int) -> int:
    return image_size_field(
        default,
        "Side in pixels that images are resized to (the whole image, squeezed to "
        "a square, so the heatmap covers all of it). Time and memory grow with its square.",
        largest=512,
    )


def _holdout() -> float:
    return Field(  # type: ignore[no-any-return]
        0.2,
        ge=0.0,
        le=0.5,
        description="Share of the normal images held out of the fit: with the anomalous "
        "inputs, they calibrate the threshold and evaluate the version. 0 fits every normal "
        "image and calibrates on the fitted ones (their scores are optimistic).",
        json_schema_extra={"step": 0.05},
    )


def _threshold() -> float:
    return Field(  # type: ignore[no-any-return]
        0.5,
        gt=0.0,
        lt=1.0,
        description="Anomaly score at which an image counts as anomalous. Scores are "
        "calibrated so that the threshold chosen in training is 0.5; a lower value flags more "
        "images. Predictions are rescaled so that this value reads 0.5 (heatmaps too).",
        json_schema_extra={**INFERENCE, "step": 0.01},
    )


class PatchCoreParams(BaseModel):
    """PatchCore: a memory bank of locally aware patch features, searched for the nearest one."""

    image_size: int = _image_size(224)
    coreset_fraction: float = Field(
        0.01,
        gt=0.0,
        le=1.0,
        description="Share of the normal images' patch features kept in the memory bank, "
        "chosen by greedy coreset selection (each pick is the patch farthest from those kept).",
        json_schema_extra={"step": 0.01},
    )
    max_bank_size: int = Field(
        20000,
        ge=1,
        le=1_000_000,
        description="Most patch features in the memory bank, whatever the coreset fraction: "
        "caps selection time and memory on large datasets.",
        json_schema_extra={"step": 1000},
    )
    holdout_fraction: float = _holdout()
    seed: int = seed_field()
    threshold: float = _threshold()


class PaDiMParams(BaseModel):
    """PaDiM: a Gaussian of patch features per image position."""

    image_size: int = _image_size(224)
    feature_dims: int = Field(
        100,
        ge=1,
        le=176,
        description="Feature channels kept (a random subset, as PaDiM does) for each "
        "position's Gaussian: memory grows with its square.",
        json_schema_extra={"step": 1},
    )
    covariance_regularisation: float = Field(
        0.01,
        gt=0.0,
        le=10.0,
        description="Added to the diagonal of each covariance so that it inverts with few images.",
    )
    holdout_fraction: float = _holdout()
    seed: int = seed_field()
    threshold: float = _threshold()
