"""Both text-classifier Params shapes resolved into one `TextSettings`: the base model, tokenizer
length, loop settings, validation split and LoRA; unknown or unsafe config keys are refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2
from pydantic import BaseModel

from modelmill.training.contract import DataError
from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.templates.text_classifier.params import AdvancedParams, FineTuneParams

SINGLE_LABEL = "single_label_classification"
PROBLEM_TYPES = (SINGLE_LABEL, "multi_label_classification")
FLOAT32_NAMES = ("torch.float32", "float32", "auto", None)  # training always runs in float32
MODEL_KEYS = {"pretrained_model_name_or_path", "problem_type", "torch_dtype", "revision"}
DROPOUT_SUFFIXES = ("dropout", "dropout_prob", "dropout_rate", "pdrop")
TOKENIZER_KEYS = {"max_length", "model_max_length", "pretrained_model_name_or_path"}
TOKENIZER_IGNORED = {"padding", "truncation", "padding_side", "use_fast"}
TRAINER_KEYS = {
    "fp16",  # mixed precision on a GPU, as transformers' Trainer takes it
    "bf16",
    "num_train_epochs",
    "per_device_train_batch_size",
    "learning_rate",
    "weight_decay",
    "warmup_ratio",
    "warmup_steps",
    "adam_beta1",
    "seed",
    "validation_split",
    "early_stopping_patience",
}
# Accepted so that configs written for Clarifai or transformers' Trainer work; modelmill decides
# these itself (checkpoint every epoch, best epoch kept, float32 on CPU, its own logging).
TRAINER_IGNORED = {
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_steps", "logging_strategy",
    "save_strategy", "save_steps", "save_total_limit", "eval_strategy", "evaluation_strategy",
    "eval_steps", "per_device_eval_batch_size", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "report_to",
    "dataloader_num_workers", "disable_tqdm", "push_to_hub", "optim", "lr_scheduler_type",
}  # fmt: skip
PEFT_KEYS = {"r", "lora_alpha", "lora_dropout", "target_modules", "bias", "use_rslora",
             "fan_in_fan_out", "init_lora_weights", "modules_to_save"}  # fmt: skip
TRAINER_DEFAULTS: dict[str, Any] = {
    "num_train_epochs": 5,
    "per_device_train_batch_size": 16,
    "learning_rate": 5e-05,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "adam_beta1": 0.9,
    "seed": 0,
    "validation_split": 0.2,
    "early_stopping_patience": 2,
}
DEFAULT_MAX_LENGTH = 128


@dataclass(frozen=True)
class TextSettings:
    base_model: str
    tokenizer: str  # usually the base model
    max_length: int
    batch_size: int
    validation_fraction: float
    loop: LoopSettings
    config_overrides: Mapping[str, Any]  # e.g. dropout, passed to the model's config
    lora: Mapping[str, Any] | None  # peft LoraConfig arguments; None = full fine-tune
    revision: str | None = None
    warmup_steps: int | None = None  # when given (trainer_config), instead of warmup epochs


def invalid(message: str) -> DataError:
    return DataError(status_code_pb2.MODEL_TRAINING_INVALID_PARAMS, message)


def _check_keys(name: str, given: Iterable[str], allowed: set[str], ignored: Iterable[str] = (),
                extra_ok: Any = None) -> None:  # fmt: skip
    unknown = sorted(
        key for key in given
        if key not in allowed and key not in ignored and not (extra_ok and extra_ok(key))
    )  # fmt: skip
    if unknown:
        raise invalid(
            f"{name} has keys modelmill does not support: {', '.join(unknown)}. "
            f"Supported: {', '.join(sorted(allowed))}."
        )


def _lora(peft_config: Mapping[str, Any]) -> dict[str, Any] | None:
    if not peft_config:
        return None
    peft_type = str(peft_config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise invalid(f"peft_config.peft_type {peft_type!r} is not supported; use LORA.")
    task = str(peft_config.get("task_type", "SEQ_CLS")).upper()
    if task != "SEQ_CLS":
        raise invalid(f"peft_config.task_type must be SEQ_CLS for a classifier, not {task!r}.")
    options = {k: v for k, v in peft_config.items() if k not in ("peft_type", "task_type")}
    _check_keys("peft_config", options, PEFT_KEYS)
    if "r" in options:
        options["r"] = int(options["r"])  # Struct numbers arrive as floats
    return options


def _advanced(params: AdvancedParams, data_exclusive: bool) -> TextSettings:
    model, tokenizer = params.model_config_, params.tokenizer_config
    trainer = {**TRAINER_DEFAULTS, **params.trainer_config}
    _check_keys("model_config", model, MODEL_KEYS, extra_ok=lambda k: k.endswith(DROPOUT_SUFFIXES))
    _check_keys("tokenizer_config", tokenizer, TOKENIZER_KEYS, TOKENIZER_IGNORED)
    _check_keys("trainer_config", params.trainer_config, TRAINER_KEYS, TRAINER_IGNORED)
    if "pretrained_model_name_or_path" not in model:
        raise invalid("model_config.pretrained_model_name_or_path is required.")
    problem = model.get("problem_type", PROBLEM_TYPES[1])
    if problem not in PROBLEM_TYPES:
        raise invalid(f"model_config.problem_type must be one of {', '.join(PROBLEM_TYPES)}.")
    if model.get("torch_dtype") not in FLOAT32_NAMES:
        raise invalid("model_config.torch_dtype: modelmill trains text classifiers in float32.")
    exclusive = data_exclusive or params.concepts_mutually_exclusive or problem == SINGLE_LABEL
    loop = LoopSettings.of_trainer_config(trainer, exclusive)
    base = str(model["pretrained_model_name_or_path"])
    return TextSettings(
        base_model=base,
        tokenizer=str(tokenizer.get("pretrained_model_name_or_path", base)),
        max_length=int(
            tokenizer.get("max_length", tokenizer.get("model_max_length", DEFAULT_MAX_LENGTH))
        ),
        batch_size=int(trainer["per_device_train_batch_size"]),
        validation_fraction=float(trainer["validation_split"]),
        loop=loop,
        config_overrides={k: v for k, v in model.items() if k.endswith(DROPOUT_SUFFIXES)},
        lora=_lora(params.peft_config),
        revision=model.get("revision"),
        warmup_steps=int(trainer["warmup_steps"]) if "warmup_steps" in trainer else None,
    )


def _fine_tune(params: FineTuneParams, data_exclusive: bool) -> TextSettings:
    loop = LoopSettings.of(params, data_exclusive or params.concepts_mutually_exclusive)
    return TextSettings(
        base_model=params.base_model,
        tokenizer=params.base_model,
        max_length=params.max_length,
        batch_size=params.batch_size,
        validation_fraction=params.validation_fraction,
        loop=loop,
        config_overrides={},
        lora=None,
    )


def text_settings(params: BaseModel, data_exclusive: bool = False) -> TextSettings:
    """The settings of either Params shape; raises DataError for configs it cannot honour."""
    if isinstance(params, AdvancedParams):
        settings = _advanced(params, data_exclusive)
    elif isinstance(params, FineTuneParams):
        settings = _fine_tune(params, data_exclusive)
    else:
        raise TypeError(f"not a text-classifier Params: {type(params).__name__}")
    if settings.loop.num_epochs < 1 or settings.batch_size < 1:
        raise invalid("num_train_epochs and per_device_train_batch_size must be at least 1.")
    if not 0.0 <= settings.validation_fraction < 1.0:
        raise invalid("trainer_config.validation_split must be in [0, 1).")
    return settings
