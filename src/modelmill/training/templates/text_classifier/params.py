"""Hyperparameters of the text-classifier templates: a plain full fine-tune with Clarifai-style
fields, and Clarifai's HuggingFace_AdvancedConfig (model/tokenizer/trainer/peft config dicts).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelmill.training.finetune.fields import (
    OUTPUT_CONFIG,
    TRAINER_CONFIG_DESCRIPTION,
    MixedPrecision,
    batch_size_field,
    mixed_precision_field,
    momentum_field,
    num_epochs_field,
    patience_field,
    seed_field,
    validation_fraction_field,
    warmup_epochs_field,
    weight_decay_field,
)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
GPT_NEO_125M = "EleutherAI/gpt-neo-125m"
EXCLUSIVE_DESCRIPTION = (
    "Each text has exactly one of the concepts (softmax); otherwise any number of them (one "
    "sigmoid each). Inputs labelled 0 for a concept are negatives."
)


class FineTuneParams(BaseModel):
    """Full fine-tune of a BERT-style encoder with a new classification layer."""

    base_model: str = Field(
        MINILM,
        description="Encoder to fine-tune: a Hugging Face hub id or a folder on the server "
        "(found in the weights folder, the local Hugging Face cache, a package, or downloaded "
        "when online). The default ships with modelmill.",
    )
    max_length: int = Field(
        128,
        ge=8,
        le=512,
        description="Longest text in tokens; longer texts are truncated.",
        json_schema_extra={"step": 8},
    )
    batch_size: int = batch_size_field(32, "Texts per training step.")
    num_epochs: int = num_epochs_field(5, "Passes over the training inputs.")
    per_item_lrate: float = Field(
        3.125e-06,
        ge=0.0,
        le=0.001,
        description="Learning rate per text in a batch: the learning rate is batch_size × "
        "per_item_lrate.",
    )
    weight_decay: float = weight_decay_field(0.01, "Decoupled weight decay (AdamW) on weights.")
    momentum: float = momentum_field("AdamW's first-moment decay (beta1).")
    warmup_epochs: float = warmup_epochs_field(0.5)
    early_stopping_patience: int = patience_field(2)
    validation_fraction: float = validation_fraction_field(0.2)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()
    concepts_mutually_exclusive: bool = Field(
        False, description=EXCLUSIVE_DESCRIPTION, json_schema_extra=OUTPUT_CONFIG
    )


def _advanced_model_config(base: str) -> dict[str, Any]:
    return {
        "pretrained_model_name_or_path": base,
        "problem_type": "multi_label_classification",
        "torch_dtype": "torch.float32",
    }


class AdvancedParams(BaseModel):
    """Clarifai's HuggingFace_AdvancedConfig: the four dicts go to transformers and peft."""

    # `model_config` is pydantic's own settings slot, so the field has another Python name.
    model_config = ConfigDict(populate_by_name=True)

    model_config_: dict[str, Any] = Field(
        default_factory=lambda: _advanced_model_config(MINILM),
        alias="model_config",
        description="For AutoModelForSequenceClassification: pretrained_model_name_or_path (hub "
        "id or server folder), problem_type (multi_label_classification or "
        "single_label_classification), torch_dtype, revision, and dropout settings "
        "(e.g. hidden_dropout_prob). Remote code is never run.",
    )
    tokenizer_config: dict[str, Any] = Field(
        default_factory=lambda: {"max_length": 128},
        description="max_length (tokens; longer texts are truncated); pretrained_model_name_or_"
        "path when the tokenizer is not the model's. Batches are padded to their longest text.",
    )
    trainer_config: dict[str, Any] = Field(
        default_factory=lambda: {
            "num_train_epochs": 5,
            "per_device_train_batch_size": 16,
            "learning_rate": 5e-05,
            "weight_decay": 0.01,
            "warmup_ratio": 0.1,
            "seed": 0,
            "validation_split": 0.2,
            "early_stopping_patience": 2,
        },
        description=TRAINER_CONFIG_DESCRIPTION,
    )
    peft_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Empty: full fine-tune. Otherwise a peft LoraConfig: peft_type LORA, r, "
        "lora_alpha, lora_dropout, target_modules (default: peft's choice for the "
        "architecture), bias. The classification layer is always trained in full.",
    )
    concepts_mutually_exclusive: bool = Field(
        False, description=EXCLUSIVE_DESCRIPTION, json_schema_extra=OUTPUT_CONFIG
    )


class GPTNeoLoraParams(AdvancedParams):
    """Clarifai's HF_GPTNeo_125m_lora: GPT-Neo 125M with LoRA adapters."""

    model_config_: dict[str, Any] = Field(
        default_factory=lambda: _advanced_model_config(GPT_NEO_125M),
        alias="model_config",
        description=AdvancedParams.model_fields["model_config_"].description,
    )
    trainer_config: dict[str, Any] = Field(
        default_factory=lambda: {
            "num_train_epochs": 3,
            "per_device_train_batch_size": 16,
            "learning_rate": 2e-04,
            "weight_decay": 0.0,
            "warmup_ratio": 0.1,
            "seed": 0,
            "validation_split": 0.2,
            "early_stopping_patience": 2,
        },
        description=AdvancedParams.model_fields["trainer_config"].description,
    )
    peft_config: dict[str, Any] = Field(
        default_factory=lambda: {
            "peft_type": "LORA",
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
        },
        description=AdvancedParams.model_fields["peft_config"].description,
    )
