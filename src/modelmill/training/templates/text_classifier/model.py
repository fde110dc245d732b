"""Hugging Face models of the text-classifier templates: the base encoder with a new classification
layer, LoRA through peft, rebuilding a model from a checkpoint (merged or not), the tokenizer, and
the scores module that ONNX export traces. Remote code is never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelmill.training.checkpoint_keys import CONCEPTS_KEY, CONFIG_KEY
from modelmill.training.checkpoints import Checkpoint
from modelmill.training.compat import ensure_torchvision
from modelmill.training.finetune.outputs import scores_from_logits
from modelmill.training.templates.text_classifier.config import TextSettings
from modelmill.training.weights import WeightsLocation, hf_model_source


def _transformers():  # type: ignore[no-untyped-def]
    ensure_torchvision()  # transformers imports torchvision when it is installed
    import transformers

    transformers.utils.logging.set_verbosity_error()  # the new head's "newly initialised" note
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(source: str | Path, revision: str | None = None) -> Any:
    """A tokenizer that can pad: decoder-only models (GPT-Neo) reuse their end-of-text token."""
    tokenizer = _transformers().AutoTokenizer.from_pretrained(
        str(source), revision=revision, trust_remote_code=False
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def label_maps(concepts: list[str]) -> dict[str, Any]:
    return {
        "num_labels": len(concepts),
        "id2label": dict(enumerate(concepts)),
        "label2id": {concept: index for index, concept in enumerate(concepts)},
    }


def pretrained_model(
    settings: TextSettings, location: WeightsLocation, concepts: list[str], pad_token_id: int
) -> nn.Module:
    """The base model's weights with a fresh classification layer (seed torch first)."""
    transformers = _transformers()
    source = hf_model_source(location)
    config = transformers.AutoConfig.from_pretrained(
        source,
        revision=settings.revision,
        trust_remote_code=False,
        **label_maps(concepts),
        **settings.config_overrides,
    )
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else pad_token_id
    return transformers.AutoModelForSequenceClassification.from_pretrained(
        source, config=config, revision=settings.revision, trust_remote_code=False
    )


def model_from_config(hf_config: Mapping[str, Any], concepts: list[str]) -> nn.Module:
    """A model of the architecture `hf_config` describes, for `concepts`, with fresh weights."""
    transformers = _transformers()
    config = transformers.AutoConfig.for_model(**{**hf_config, **label_maps(concepts)})
    return transformers.AutoModelForSequenceClassification.from_config(config)


def with_lora(model: nn.Module, lora: Mapping[str, Any]) -> nn.Module:
    """LoRA adapters on the encoder; the classification layer is trained in full (peft's
    SEQ_CLS task keeps it in modules_to_save)."""
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, **lora))


def merged(model: Any) -> nn.Module:
    """The plain transformers model, LoRA weights merged in (no-op without LoRA)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def plain_model(config: Mapping[str, Any]) -> nn.Module:
    """An untrained plain model for a checkpoint's config section."""
    return model_from_config(config["hf_config"], config["concepts"])


def restore_model(checkpoint: Checkpoint) -> nn.Module:
    """The model a checkpoint holds, as it was trained (LoRA-wrapped when it used LoRA)."""
    config = checkpoint.meta[CONFIG_KEY]
    model = plain_model({**config, "concepts": checkpoint.meta[CONCEPTS_KEY]})
    if config.get("lora"):
        model = with_lora(model, config["lora"])
    model.load_state_dict(checkpoint.model_state())
    return model


def forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The classification logits for a batch of (input_ids, attention_mask)."""
    return model(**inputs).logits


def hf_config(model: nn.Module) -> Any:
    """The transformers config of a (possibly LoRA-wrapped) model."""
    return model.config


def head_keys(model: nn.Module, num_labels: int) -> tuple[str, ...]:
    """The state-dict keys of the classification layer: the last Linear with one output per
    concept (BERT's `classifier`, GPT-Neo's `score`, RoBERTa's `classifier.out_proj`)."""
    name, layer = next(
        (name, module)
        for name, module in reversed(list(model.named_modules()))
        if isinstance(module, nn.Linear) and module.out_features == num_labels
    )
    return (f"{name}.weight",) + ((f"{name}.bias",) if layer.bias is not None else ())


class TextScores(nn.Module):
    """(input_ids, attention_mask) → concept scores (softmax or sigmoid); what ONNX export takes."""

    def __init__(self, model: nn.Module, exclusive: bool) -> None:
        super().__init__()
        self.model = model
        self.exclusive = exclusive

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return scores_from_logits(logits, self.exclusive)
