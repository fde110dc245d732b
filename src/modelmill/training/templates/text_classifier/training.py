"""Training a text classifier: tokenising once, batches padded to their longest text, the shared
loop with checkpoints every epoch, exact resume, incremental starts, LoRA merged at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from pydantic import BaseModel
from torch import nn

from modelmill.training.checkpoints import BEST_DIR, carry_over_head, find_checkpoint
from modelmill.training.checkpoints import save_checkpoint as write_checkpoint
from modelmill.training.contract import DataError, TrainContext, TrainingData
from modelmill.training.data import (
    batched,
    epoch_order,
    label_targets,
    pad_token_batch,
    split_train_validation,
    token_ids,
    training_batches,
)
from modelmill.training.finetune.loop import LoopData, checkpoint_saver, fit
from modelmill.training.finetune.resume import (
    ARTIFACTS_DIR,
    ResumePlan,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.templates.text_classifier.config import TextSettings
from modelmill.training.templates.text_classifier.model import (
    TOKENIZER_DIR,
    copy_tokenizer,
    forward,
    head_keys,
    hf_config,
    load_tokenizer,
    merged,
    model_from_config,
    pretrained_model,
    restore_model,
    with_lora,
)
from modelmill.training.weights import hf_model_source

if TYPE_CHECKING:
    from modelmill.training.templates.text_classifier.template import TextClassifier


def train_classifier(
    template: TextClassifier, ctx: TrainContext, data: TrainingData, params: BaseModel
) -> Path:
    """TextClassifier.train (see there): the artifacts folder (best epoch, LoRA merged)."""
    settings = template.settings_of(params, data.concepts_mutually_exclusive)
    concepts = list(data.concepts)
    examples = [e for e in data.examples if e.kind == "text"]
    targets = label_targets(examples, concepts)
    input_ids = [e.input_id for e in examples]
    seed = settings.loop.seed
    train_rows, val_rows = split_train_validation(
        input_ids, targets, settings.validation_fraction, seed
    )
    if not train_rows:
        raise DataError(status_code_pb2.MODEL_TRAINING_NO_DATA, "No labelled texts to train on.")
    fingerprint = training_fingerprint(
        template.name, params.model_dump(by_alias=True), concepts, input_ids
    )
    plan = plan_resume(ctx.resume_from, ctx.warm_start, template.name, fingerprint)
    torch.manual_seed(seed)  # the new classification layer's initialisation
    model, tokenizer, base = initial_model(template, ctx, settings, concepts, plan)
    model.to(ctx.device)
    plain_config = json.loads(hf_config(model).to_json_string())
    meta = {
        "template": template.name,
        "config": {
            "base_model": base,
            "hf_config": plain_config,
            "lora": dict(settings.lora) if settings.lora else None,
            "max_length": settings.max_length,
            "exclusive": settings.loop.exclusive,
        },
        "concepts": concepts,
        "params": params.model_dump(by_alias=True),
        "fingerprint": fingerprint,
        "validation_ids": [input_ids[r] for r in val_rows],
    }

    def save_tokenizer(folder: Path) -> None:
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

    save = checkpoint_saver(model, meta, save_tokenizer)

    sequences = token_ids(tokenizer, [e.load() for e in examples], settings.max_length)
    values = torch.from_numpy(targets.values).to(ctx.device)
    mask = torch.from_numpy(targets.mask).to(ctx.device)

    def batch(rows: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        ids, attention = pad_token_batch([sequences[r] for r in rows], tokenizer.pad_token_id)
        inputs = {"input_ids": ids.to(ctx.device), "attention_mask": attention.to(ctx.device)}
        return inputs, values[rows], mask[rows]

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        for rows in training_batches(epoch_order(train_rows, generator), settings.batch_size):
            yield batch(rows)

    def validation_batches() -> Iterator[Any]:
        for rows in batched(val_rows, settings.batch_size):
            yield batch(rows)

    steps_per_epoch = len(training_batches(train_rows, settings.batch_size))
    loop = settings.loop
    if settings.warmup_steps is not None:
        loop = dataclasses.replace(loop, warmup_epochs=settings.warmup_steps / steps_per_epoch)
    loop_data = LoopData(train_batches, steps_per_epoch, validation_batches if val_rows else None)
    state, optimizer_state = continued_state(ctx, plan)
    fit(ctx, model, forward, loop_data, loop, save, state, optimizer_state)
    return artifacts_from_best(ctx)


def initial_model(
    template: TextClassifier,
    ctx: TrainContext,
    settings: TextSettings,
    concepts: list[str],
    plan: ResumePlan | None,
) -> tuple[nn.Module, Any, str]:
    """(model to train, tokenizer, base model name) for a fresh start, a continuation
    (the checkpoint's model as it was) or an incremental start (see `train`)."""
    if plan is None:
        location = template.base_weights(settings, ctx.weights_dir)
        tokenizer_source = (
            hf_model_source(location)
            if settings.tokenizer == settings.base_model
            else settings.tokenizer
        )
        tokenizer = load_tokenizer(tokenizer_source, settings.revision)
        model = pretrained_model(settings, location, concepts, tokenizer.pad_token_id)
        model = with_lora(model, settings.lora) if settings.lora else model
        return model, tokenizer, settings.base_model
    checkpoint = plan.checkpoint
    tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
    base = checkpoint.meta["config"]["base_model"]
    if plan.continues:
        return restore_model(checkpoint), tokenizer, base
    old = merged(restore_model(checkpoint))
    model = model_from_config(checkpoint.meta["config"]["hf_config"], concepts)
    state = model.state_dict()
    counts = carry_over_head(
        old.state_dict(),
        checkpoint.meta["concepts"],
        state,
        concepts,
        head_keys(model, len(concepts)),
    )
    model.load_state_dict(state)
    ctx.log.info("incremental training from %s: %s", checkpoint.path, counts)
    model = with_lora(model, settings.lora) if settings.lora else model
    return model, tokenizer, base


def artifacts_from_best(ctx: TrainContext) -> Path:
    """The best epoch's model with LoRA merged in: the version needs no base weights."""
    best = find_checkpoint(ctx.checkpoint_dir / BEST_DIR)
    model = merged(restore_model(best))
    meta = {
        **best.meta,
        "config": {**best.meta["config"], "lora": None},
        "loop": {**best.meta["loop"], "finished": True},
    }
    meta.pop("optimizer", None)
    target = ctx.work_dir / ARTIFACTS_DIR
    return write_checkpoint(
        target,
        model.state_dict(),
        meta,
        write_extra=copy_tokenizer(best.path),
    )
