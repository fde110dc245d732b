"""Every text-to-text Params shape resolved into one `GenerationSettings`: the base model, the
sequence length, packing, chat template, loop settings, validation split and LoRA; unknown or
unsafe config keys are refused with MODEL_TRAINING_INVALID_PARAMS. Light: no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.templates.text_classifier.config import (
    DROPOUT_SUFFIXES,
    FLOAT32_NAMES,
    TOKENIZER_IGNORED,
    TRAINER_DEFAULTS,
    TRAINER_IGNORED,
    TRAINER_KEYS,
    _check_keys,
    _lora,
    invalid,
)
from modelmill.training.templates.text_generator.params import (
    AdvancedParams,
    CausalParams,
    LoraParams,
)

MODEL_KEYS = {"pretrained_model_name_or_path", "torch_dtype", "revision"}
TOKENIZER_KEYS = {
    "max_length",
    "model_max_length",
    "pretrained_model_name_or_path",
    "packing",
    "chat_template",
}
LM_TASK_TYPES = ("CAUSAL_LM", "SEQ_2_SEQ_LM")  # which one applies follows the model's config


@dataclass(frozen=True)
class GenerationSettings:
    base_model: str
    tokenizer: str  # usually the base model
    max_length: int
    batch_size: int
    validation_fraction: float
    loop: LoopSettings
    lora: Mapping[str, Any] | None  # peft LoraConfig arguments; None = full fine-tune
    packing: bool
    chat_template: bool
    config_overrides: Mapping[str, Any]  # dropout settings for the model's config
    revision: str | None = None
    warmup_steps: int | None = None  # when given (trainer_config), instead of warmup epochs


def _lm_lora(peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
    """peft_config as LoraConfig arguments; the task type follows the model, so it is only
    checked here."""
    if not peft_config:
        return None
    task = str(peft_config.get("task_type", LM_TASK_TYPES[0])).upper()
    if task not in LM_TASK_TYPES:
        raise invalid(
            f"peft_config.task_type must be {' or '.join(LM_TASK_TYPES)} for a text "
            f"generator, not {task!r}."
        )
    return _lora({k: v for k, v in peft_config.items() if k != "task_type"})


def _advanced(params: AdvancedParams) -> GenerationSettings:
    model, tokenizer = params.model_config_, params.tokenizer_config
    trainer = {**TRAINER_DEFAULTS, **params.trainer_config}
    _check_keys("model_config", model, MODEL_KEYS, extra_ok=lambda k: k.endswith(DROPOUT_SUFFIXES))
    _check_keys("tokenizer_config", tokenizer, TOKENIZER_KEYS, TOKENIZER_IGNORED)
    _check_keys("trainer_config", params.trainer_config, TRAINER_KEYS, TRAINER_IGNORED)
    if "pretrained_model_name_or_path" not in model:
        raise invalid("model_config.pretrained_model_name_or_path is required.")
    if model.get("torch_dtype") not in FLOAT32_NAMES:
        raise invalid("model_config.torch_dtype: modelmill trains text generators in float32.")
    loop = LoopSettings.of_trainer_config(trainer, exclusive=False)
    base = str(model["pretrained_model_name_or_path"])
    max_length = tokenizer.get("max_length", tokenizer.get("model_max_length"))
    return GenerationSettings(
        base_model=base,
        tokenizer=str(tokenizer.get("pretrained_model_name_or_path", base)),
        max_length=int(max_length or CausalParams.model_fields["max_length"].default),
        batch_size=int(trainer["per_device_train_batch_size"]),
        validation_fraction=float(trainer["validation_split"]),
        loop=loop,
        lora=_lm_lora(params.peft_config),
        packing=bool(tokenizer.get("packing", True)),
        chat_template=bool(tokenizer.get("chat_template", True)),
        config_overrides={k: v for k, v in model.items() if k.endswith(DROPOUT_SUFFIXES)},
        revision=model.get("revision"),
        warmup_steps=int(trainer["warmup_steps"]) if "warmup_steps" in trainer else None,
    )


def _plain(params: CausalParams) -> GenerationSettings:
    lora = None
    if isinstance(params, LoraParams):
        lora = {"r": params.lora_r, "lora_alpha": params.lora_alpha,
                "lora_dropout": params.lora_dropout}  # fmt: skip
        if params.lora_target_modules:
            lora["target_modules"] = list(params.lora_target_modules)
    loop = LoopSettings(
        num_epochs=params.num_epochs,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        beta1=TRAINER_DEFAULTS["adam_beta1"],
        warmup_epochs=params.warmup_epochs,
        patience=params.early_stopping_patience,
        seed=params.seed,
        exclusive=False,
        mixed_precision=params.mixed_precision,
    )
    return GenerationSettings(
        base_model=params.base_model,
        tokenizer=params.base_model,
        max_length=params.max_length,
        batch_size=params.batch_size,
        validation_fraction=params.validation_fraction,
        loop=loop,
        lora=lora,
        packing=params.packing,
        chat_template=params.chat_template,
        config_overrides={},
    )


def generation_settings(params: BaseModel) -> GenerationSettings:
    """The settings of any text-to-text Params; raises DataError for configs it cannot honour."""
    if isinstance(params, AdvancedParams):
        settings = _advanced(params)
    elif isinstance(params, CausalParams):
        settings = _plain(params)
    else:
        raise TypeError(f"not a text-generator Params: {type(params).__name__}")
    if settings.loop.num_epochs < 1 or settings.batch_size < 1:
        raise invalid("num_train_epochs and per_device_train_batch_size must be at least 1.")
    if settings.max_length < 2:
        raise invalid("tokenizer_config.max_length must be at least 2 tokens.")
    if not 0.0 <= settings.validation_fraction < 1.0:
        raise invalid("trainer_config.validation_split must be in [0, 1).")
    return settings
