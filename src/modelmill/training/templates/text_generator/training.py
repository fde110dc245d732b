"""Training a text generator: texts tokenised once into samples (loss on completions), short ones
packed, the shared loop with checkpoints every epoch, exact resume, incremental starts (the
earlier version's weights, new adapters), progress with tokens per second, and the version's
artifacts: the best epoch's model with LoRA merged, the adapter alone, the tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
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
from modelmill.training.checkpoints import BEST_DIR, TOKENIZER_DIR, copy_tokenizer, find_checkpoint
from modelmill.training.checkpoints import save_checkpoint as write_checkpoint
from modelmill.training.contract import DataError, TrainContext, TrainingData, TrainResult
from modelmill.training.data import batched, epoch_order
from modelmill.training.finetune.loop import LoopData, checkpoint_saver, fit
from modelmill.training.finetune.resume import (
    ARTIFACTS_DIR,
    ResumePlan,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.tasks.generation import GENERATION, target_of
from modelmill.training.templates.text_generator.config import GenerationSettings
from modelmill.training.templates.text_generator.model import (
    CAUSAL,
    architecture_of,
    forward_of,
    hf_config,
    load_tokenizer,
    local_model_folder,
    merged,
    pretrained_model,
    restore_model,
    with_lora,
)
from modelmill.training.templates.text_generator.sequences import (
    Sample,
    collate,
    pack,
    prompt_format,
    samples_of,
    split_held_out,
)
from modelmill.training.weights import WeightsLocation

ADAPTER_DIR = "adapter"  # the LoRA adapter alone (peft's save_pretrained), in the artifacts


@dataclasses.dataclass(frozen=True)
class Start:
    """The model a training starts from, its tokenizer, base model name and architecture."""

    model: nn.Module
    tokenizer: Any
    base_model: str
    architecture: str


def train_generator(
    name: str,
    ctx: TrainContext,
    data: TrainingData,
    params: BaseModel,
    settings: GenerationSettings,
    find_base_weights: Callable[[], WeightsLocation],
) -> TrainResult:
    """TextGenerator.train (see there): the artifacts folder."""
    examples = [e for e in data.examples if e.kind == "text"]
    input_ids = [e.input_id for e in examples]
    seed = settings.loop.seed
    train_rows, held_rows = split_held_out(examples, settings.validation_fraction, seed)
    fingerprint = training_fingerprint(name, params.model_dump(by_alias=True), [], input_ids)
    plan = plan_resume(ctx.resume_from, ctx.warm_start, name, fingerprint)
    torch.manual_seed(seed)  # LoRA's initialisation
    start = initial_model(find_base_weights, ctx, settings, plan)
    model, tokenizer, architecture = start.model, start.tokenizer, start.architecture
    model.to(ctx.device)
    has_pairs = any(target_of(e) is not None for e in examples)
    layout = (
        plan.checkpoint.meta[CONFIG_KEY]["prompt_format"]
        if plan is not None and plan.continues
        else prompt_format(tokenizer, has_pairs, settings.chat_template)
    )
    sequences = samples_of(tokenizer, examples, layout, settings.max_length, architecture)
    train_samples = [s for r in train_rows for s in sequences[r]]
    held_samples = [s for r in held_rows for s in sequences[r]]
    if settings.packing and architecture == CAUSAL:
        train_samples = pack(train_samples, settings.max_length)
    if not train_samples:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_NO_DATA,
            "No training text gives a sample to learn from"
            + (
                ": an encoder-decoder model learns from prompt/completion pairs only; add "
                "target texts."
                if architecture != CAUSAL
                else "; add texts, or prompt/completion pairs."
            ),
        )
    meta = {
        TEMPLATE_KEY: name,
        CONFIG_KEY: {
            "base_model": start.base_model,
            "hf_config": json.loads(hf_config(model).to_json_string()),
            "architecture": architecture,
            "lora": dict(settings.lora) if settings.lora else None,
            "max_length": settings.max_length,
            "prompt_format": layout,
        },
        CONCEPTS_KEY: [],
        PARAMS_KEY: params.model_dump(by_alias=True),
        FINGERPRINT_KEY: fingerprint,
        VALIDATION_IDS_KEY: [input_ids[r] for r in held_rows],
    }

    def save_tokenizer(folder: Path) -> None:
        tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

    save = checkpoint_saver(model, meta, save_tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    counter = TokenCounter()

    def batch(samples: list[Sample]) -> dict[str, torch.Tensor]:
        return {k: v.to(ctx.device) for k, v in collate(samples, pad_id, architecture).items()}

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        order = epoch_order(list(range(len(train_samples))), generator)
        for rows in batched(order, settings.batch_size):
            chosen = [train_samples[r] for r in rows]
            counter.add(sum(len(s.input_ids) for s in chosen))
            yield batch(chosen)

    def validation_batches() -> Iterator[Any]:
        for rows in batched(range(len(held_samples)), settings.batch_size):
            yield batch([held_samples[r] for r in rows])

    steps_per_epoch = -(-len(train_samples) // settings.batch_size)
    loop = settings.loop
    if settings.warmup_steps is not None:
        loop = dataclasses.replace(loop, warmup_epochs=settings.warmup_steps / steps_per_epoch)
    loop_data = LoopData(
        train_batches, steps_per_epoch, validation_batches if held_samples else None
    )
    state, optimizer_state = continued_state(ctx, plan)
    objective = GENERATION.objective(forward_of(architecture))
    reporting = dataclasses.replace(ctx, report=counter.reporting(ctx.report))
    state = fit(reporting, model, objective, loop_data, loop, save, state, optimizer_state)
    artifacts = artifacts_from_best(ctx, model)
    return TrainResult(artifacts, state.stopped_at_cap, state.epochs_done)


class TokenCounter:
    """Tokens fed to the model since training started, for progress in tokens per second."""

    def __init__(self) -> None:
        self.tokens = 0
        self.started = time.monotonic()

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def reporting(self, report: Callable[..., None]) -> Callable[..., None]:
        def with_rate(progress: float, **metrics: Any) -> None:
            elapsed = time.monotonic() - self.started
            if self.tokens and elapsed > 0:
                metrics = {**metrics, "tokens_per_s": self.tokens / elapsed}
            report(progress, **metrics)

        return with_rate


def initial_model(
    find_base_weights: Callable[[], WeightsLocation],
    ctx: TrainContext,
    settings: GenerationSettings,
    plan: ResumePlan | None,
) -> Start:
    """The model to train: the pretrained base (LoRA-wrapped when asked), a continuation (the
    checkpoint's model as it was), or an incremental start (the earlier version's weights with
    LoRA merged, new adapters when this training's settings ask for them)."""
    if plan is None:
        source = local_model_folder(find_base_weights(), ctx.weights_dir)
        tokenizer_source = (
            source if settings.tokenizer == settings.base_model else settings.tokenizer
        )
        tokenizer = load_tokenizer(tokenizer_source, settings.revision)
        model, architecture = pretrained_model(settings, source, int(tokenizer.pad_token_id))
        if settings.lora:
            model = with_lora(model, settings.lora, architecture)
        return Start(model, tokenizer, settings.base_model, architecture)
    checkpoint = plan.checkpoint
    config = checkpoint.meta[CONFIG_KEY]
    tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
    model = restore_model(checkpoint)
    if plan.continues:
        return Start(model, tokenizer, config["base_model"], config["architecture"])
    ctx.log.info("incremental training from %s", checkpoint.path)
    model = merged(model)
    architecture = architecture_of(model.config)
    if settings.lora:
        model = with_lora(model, settings.lora, architecture)
    return Start(model, tokenizer, config["base_model"], architecture)


def artifacts_from_best(ctx: TrainContext, model: nn.Module) -> Path:
    """The best epoch's model with LoRA merged in (the version needs no base weights), the
    adapter alone beside it (peft's format), and the tokenizer. `model` is the trained one:
    it takes the best epoch's weights, then is merged."""
    best = find_checkpoint(ctx.checkpoint_dir / BEST_DIR)
    model.load_state_dict(best.model_state())
    model.to("cpu")
    lora = best.meta[CONFIG_KEY].get("lora")
    adapter = ctx.work_dir / ADAPTER_DIR
    shutil.rmtree(adapter, ignore_errors=True)
    if lora:
        model.save_pretrained(str(adapter))  # before merging: merging unwraps the adapters

    def write_extra(folder: Path) -> None:
        copy_tokenizer(best.path)(folder)
        if lora:
            shutil.copytree(adapter, folder / ADAPTER_DIR)

    meta = {
        **best.meta,
        CONFIG_KEY: {**best.meta[CONFIG_KEY], "lora": None, "adapter": lora},
        LOOP_KEY: {**best.meta[LOOP_KEY], "finished": True},
    }
    meta.pop(OPTIMIZER_KEY, None)
    state = merged(model).state_dict()
    return write_checkpoint(ctx.work_dir / ARTIFACTS_DIR, state, meta, write_extra=write_extra)
