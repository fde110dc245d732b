"""What the fine-tuning templates share before any training starts: Params fields (warmup,
early stopping, split, seed; the image templates' sizes, batches, flips and starting weights)
described the same way everywhere, and the loop's settings.
Light on purpose (no torch): the API process imports it to answer ListModelTypes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import Field
from pydantic.json_schema import JsonDict

OUTPUT_CONFIG: JsonDict = {
    "path": "output_info.output_config"
}  # Params fields shared with inference
MAX_SEED = 2**31 - 1


def warmup_epochs_field(default: float) -> float:
    return Field(  # type: ignore[no-any-return]
        default,
        ge=0.0,
        le=100.0,
        description="Epochs over which the learning rate rises linearly from zero to its peak; "
        "it then follows a cosine down to zero at the last epoch.",
        json_schema_extra={"step": 0.5},
    )


def patience_field(default: int, monitor: str = "a lower validation loss") -> int:
    """`monitor`: what counts as better, e.g. "a higher validation mIoU"."""
    return Field(  # type: ignore[no-any-return]
        default,
        ge=0,
        le=1000,
        description=f"Early stopping: end training after this many epochs without {monitor} "
        "(0 = never stop early). The best epoch's weights are kept either way.",
        json_schema_extra={"step": 1},
    )


def validation_fraction_field(default: float) -> float:
    return Field(  # type: ignore[no-any-return]
        default,
        ge=0.0,
        le=0.5,
        description="Share of the inputs held out (stratified by concept) to pick the best "
        "epoch, stop early and evaluate the version; 0 trains on everything and skips those.",
        json_schema_extra={"step": 0.05},
    )


def weight_decay_field(
    default: float,
    description: str = "Decoupled weight decay (AdamW) on weights; not on biases and norms.",
) -> float:
    return Field(default, ge=0.0, le=1.0, description=description)  # type: ignore[no-any-return]


def momentum_field(
    description: str = "Momentum of the optimizer (AdamW's first-moment decay, beta1).",
) -> float:
    return Field(0.9, ge=0.0, le=0.999, description=description)  # type: ignore[no-any-return]


def seed_field() -> int:
    return Field(  # type: ignore[no-any-return]
        0,
        ge=0,
        le=MAX_SEED,
        description="Random seed of the split, shuffling, augmentation and the new head: the "
        "same seed and data give the same model on the same hardware.",
    )


CENTRE_CROPPED = (
    "Side in pixels that images are resized to (shorter side, then a centre crop). Training "
    "time grows with its square."
)


def image_size_field(default: int, description: str = CENTRE_CROPPED, largest: int = 1024) -> int:
    """`description`: how images become squares of this side."""
    return Field(  # type: ignore[no-any-return]
        default, ge=32, le=largest, description=description, json_schema_extra={"step": 32}
    )


def batch_size_field(default: int, description: str = "Images per training step.") -> int:
    return Field(  # type: ignore[no-any-return]
        default, ge=1, le=1024, description=description, json_schema_extra={"step": 1}
    )


def num_epochs_field(
    default: int,
    description: str = "Passes over the training inputs (fewer when early stopping ends training).",
) -> int:
    return Field(  # type: ignore[no-any-return]
        default, ge=1, le=1000, description=description, json_schema_extra={"step": 1}
    )


def per_item_lrate_field(default: float) -> float:
    return Field(  # type: ignore[no-any-return]
        default,
        ge=0.0,
        le=0.01,
        description="Learning rate per image in a batch: the learning rate is batch_size × "
        "per_item_lrate, so changing the batch size keeps training comparable.",
    )


def flip_probability_field(description: str) -> float:
    """`description`: which way the flip goes and what moves with the image."""
    return Field(  # type: ignore[no-any-return]
        0.5, ge=0.0, le=1.0, description=description, json_schema_extra={"step": 0.05}
    )


FlipDirection = Literal["horizontal", "vertical"]


def flip_direction_field() -> FlipDirection:
    return Field(  # type: ignore[no-any-return]
        "horizontal", description="Direction of the augmentation flip."
    )


PretrainedWeights = Literal["ImageNet-1k", "None"]


def pretrained_weights_field(description: str) -> PretrainedWeights:
    """ImageNet-1k by default; `description` says which part starts from them."""
    return Field("ImageNet-1k", description=description)  # type: ignore[no-any-return]


# The trainer_config of the HuggingFace_AdvancedConfig templates (text classifier and generator)
TRAINER_CONFIG_DESCRIPTION = (
    "TrainingArguments names: num_train_epochs, per_device_train_batch_size, learning_rate, "
    "weight_decay, warmup_ratio or warmup_steps, adam_beta1, seed; plus validation_split and "
    "early_stopping_patience. Logging/saving options are accepted and ignored (modelmill "
    "checkpoints every epoch)."
)

MixedPrecision = Literal["auto", "bf16", "fp16", "off"]


def mixed_precision_field() -> MixedPrecision:
    return Field(  # type: ignore[no-any-return]
        "auto",
        description="Mixed precision on a GPU: auto trains in bfloat16 where the GPU has it "
        "(Ampere and newer), else in float16 with loss scaling; bf16 or fp16 ask for one; off "
        "trains in float32. A CPU always trains in float32.",
    )


@dataclass(frozen=True)
class LoopSettings:
    """The hyperparameters of the shared training loop (finetune/loop.py)."""

    num_epochs: int
    learning_rate: float
    weight_decay: float
    beta1: float  # AdamW's first-moment decay: what "momentum" means for this optimizer
    warmup_epochs: float
    patience: int  # epochs without a better validation loss before stopping; 0 = never stop early
    seed: int
    exclusive: bool  # softmax over concepts (True) or one sigmoid per concept
    mixed_precision: MixedPrecision = "off"

    @classmethod
    def of(cls, params: LoopParams, exclusive: bool) -> LoopSettings:
        """The settings of a template whose Params use the shared names; the learning rate
        is per_item_lrate × batch_size, so it follows the batch."""
        return cls(
            num_epochs=params.num_epochs,
            learning_rate=params.batch_size * params.per_item_lrate,
            weight_decay=params.weight_decay,
            beta1=params.momentum,
            warmup_epochs=params.warmup_epochs,
            patience=params.early_stopping_patience,
            seed=params.seed,
            exclusive=exclusive,
            mixed_precision=params.mixed_precision,
        )

    @classmethod
    def of_trainer_config(cls, trainer: Mapping[str, Any], exclusive: bool) -> LoopSettings:
        """The settings a Hugging Face trainer_config names (HuggingFace_AdvancedConfig
        templates); its warmup_ratio is a share of the epochs."""
        epochs = int(trainer["num_train_epochs"])
        return cls(
            num_epochs=epochs,
            learning_rate=float(trainer["learning_rate"]),
            weight_decay=float(trainer["weight_decay"]),
            beta1=float(trainer["adam_beta1"]),
            warmup_epochs=float(trainer["warmup_ratio"]) * epochs,
            patience=int(trainer["early_stopping_patience"]),
            seed=int(trainer["seed"]),
            exclusive=exclusive,
            mixed_precision="bf16"
            if trainer.get("bf16")
            else "fp16"
            if trainer.get("fp16")
            else "auto",
        )


class LoopParams(Protocol):
    """Params fields a template names as the visual and MiniLM text classifiers do."""

    num_epochs: int
    batch_size: int
    per_item_lrate: float
    weight_decay: float
    momentum: float
    warmup_epochs: float
    early_stopping_patience: int
    seed: int
    mixed_precision: MixedPrecision
