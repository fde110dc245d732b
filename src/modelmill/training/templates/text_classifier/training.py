"""Training a text classifier: tokenising once, batches padded to their longest text, the shared
loop with checkpoints every epoch, exact resume, incremental starts, LoRA merged at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from pydantic import BaseModel
from torch import nn

from modelmill.training.checkpoint_keys import (
    CONCEPTS_KEY,
    CONFIG_KEY,
    FINGERPRINT_KEY,
    LOOP_KEY,
    OPTIMIZER_KEY,
    PARAMS_KEY,
    TEMPLATE_KEY,
    VALIDATION_IDS_KEY,
)
from modelmill.training.checkpoints import (
    BEST_DIR,
    TOKENIZER_DIR,
    carry_over_head,
    copy_tokenizer,
    find_checkpoint,
)
from modelmill.training.checkpoints import save_checkpoint as write_checkpoint
from modelmill.training.contract import DataError, TrainContext, TrainingData, TrainResult
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
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.templates.text_classifier.config import TextSettings
from modelmill.training.templates.text_classifier.model import (
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
from modelmill.training.weights import WeightsLocation, hf_model_source


def train_classifier(
    name: str,
    ctx: TrainContext,
    data: TrainingData,
    params: BaseModel,
    settings: TextSettings,
    find_base_weights: Callable[[], WeightsLocation],
) -> TrainResult:
    """TextClassifier.train (see there): the artifacts folder (best epoch, LoRA merged)."""
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
    fingerprint = training_fingerprint(name, params.model_dump(by_alias=True), concepts, input_ids)
    plan = plan_resume(ctx.resume_from, ctx.warm_start, name, fingerprint)
    torch.manual_seed(seed)  # the new classification layer's initialisation
    model, tokenizer, base = initial_model(find_base_weights, ctx, settings, concepts, plan)
    model.to(ctx.device)
    plain_config = json.loads(hf_config(model).to_json_string())
    meta = {
        TEMPLATE_KEY: name,
        CONFIG_KEY: {
            "base_model": base,
            "hf_config": plain_config,
            "lora": dict(settings.lora) if settings.lora else None,
            "max_length": settings.max_length,
            "exclusive": settings.loop.exclusive,
        },
        CONCEPTS_KEY: concepts,
        PARAMS_KEY: params.model_dump(by_alias=True),
        FINGERPRINT_KEY: fingerprint,
        VALIDATION_IDS_KEY: [input_ids[r] for r in val_rows],
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
    objective = CLASSIFICATION.objective(forward, loop.exclusive)
    state = fit(ctx, model, objective, loop_data, loop, save, state, optimizer_state)
    return TrainResult(artifacts_from_best(ctx), state.stopped_at_cap, state.epochs_done)


def initial_model(
    find_base_weights: Callable[[], WeightsLocation],
    ctx: TrainContext,
    settings: TextSettings,
    concepts: list[str],
    plan: ResumePlan | None,
) -> tuple[nn.Module, Any, str]:
    """(model to train, tokenizer, base model name) for a fresh start, a continuation
    (the checkpoint's model as it was) or an incremental start (see `train`)."""
    if plan is None:
        location = find_base_weights()
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
    base = checkpoint.meta[CONFIG_KEY]["base_model"]
    if plan.continues:
        return restore_model(checkpoint), tokenizer, base
    old = merged(restore_model(checkpoint))
    model = model_from_config(checkpoint.meta[CONFIG_KEY]["hf_config"], concepts)
    state = model.state_dict()
    counts = carry_over_head(
        old.state_dict(),
        checkpoint.meta[CONCEPTS_KEY],
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
        CONFIG_KEY: {**best.meta[CONFIG_KEY], "lora": None},
        LOOP_KEY: {**best.meta[LOOP_KEY], "finished": True},
    }
    meta.pop(OPTIMIZER_KEY, None)
    target = ctx.work_dir / ARTIFACTS_DIR
    return write_checkpoint(
        target,
        model.state_dict(),
        meta,
        write_extra=copy_tokenizer(best.path),
    )
