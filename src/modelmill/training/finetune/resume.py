"""Starting and resuming a fine-tuning: the split, the fingerprint and the resume plan;
continuing a training whose worker died from its last epoch, or starting incrementally from an
earlier version; the checkpoints' metadata; and the version's artifacts from the best epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
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
from modelmill.training.checkpoints import BEST_DIR, Checkpoint, find_checkpoint, save_checkpoint
from modelmill.training.contract import DataError, Example, Objective, TrainContext, TrainResult
from modelmill.training.data import Targets, split_train_validation
from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.finetune.loop import LoopData, LoopState, SaveCheckpoint, fit

ARTIFACTS_DIR = "artifacts"
ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass(frozen=True)
class ResumePlan:
    """How a training starts from `ctx.resume_from`: `continues` = the same training's unfinished
    epochs (a job whose worker died); otherwise incremental training from an earlier version."""

    checkpoint: Checkpoint
    continues: bool


def training_fingerprint(
    template: str, params: Mapping[str, Any], concepts: Sequence[str], input_ids: Sequence[str]
) -> str:
    """Identifies one training (template, params, concepts, inputs) across worker restarts."""
    payload = json.dumps(
        {
            "template": template,
            "params": params,
            "concepts": list(concepts),
            "inputs": sorted(input_ids),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def plan_resume(
    resume_from: Path | None, warm_start: bool, template: str, fingerprint: str
) -> ResumePlan | None:
    """Continue a training from its own `last/` checkpoint (a job whose worker died), or, with
    `warm_start`, start incrementally from the weights an earlier version kept (its `best/`, or
    its artifacts folder). The template must be the same. A "continue" checkpoint of another
    training (different params, concepts or inputs) is used as a warm start instead, since its
    epochs are not this training's."""
    if resume_from is None:
        return None
    last = find_checkpoint(resume_from)
    if last.meta.get(TEMPLATE_KEY) != template:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_INVALID_PARAMS,
            f"The model version to start from was trained with template "
            f"{last.meta.get(TEMPLATE_KEY)!r}; incremental training needs the same template "
            f"({template!r}).",
        )
    if not warm_start and last.meta.get(FINGERPRINT_KEY) == fingerprint:
        return ResumePlan(last, continues=True)
    best = resume_from / BEST_DIR
    return ResumePlan(find_checkpoint(best) if best.is_dir() else last, continues=False)


class SplitParams(Protocol):
    """Params naming the split as the image templates do."""

    validation_fraction: float
    seed: int

    def model_dump(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TrainingStart:
    """How one training starts: its split (rows of its examples), its fingerprint and its
    resume plan (None: afresh)."""

    template: str
    concepts: list[str]
    input_ids: list[str]
    train_rows: list[int]
    validation_rows: list[int]
    fingerprint: str
    plan: ResumePlan | None

    def decided(self, config_key: str, fresh: bool) -> bool:
        """A choice made when the training first started (keeping batch-norm statistics, say):
        as the checkpoint it continues recorded it under `config_key`, else `fresh`."""
        if self.plan is not None and self.plan.continues:
            return bool(self.plan.checkpoint.meta[CONFIG_KEY][config_key])
        return fresh

    def checkpoint_meta(self, config: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        """What each checkpoint of this training says of it (the loop adds its own state)."""
        return {
            TEMPLATE_KEY: self.template,
            CONFIG_KEY: config,
            CONCEPTS_KEY: self.concepts,
            PARAMS_KEY: params,
            FINGERPRINT_KEY: self.fingerprint,
            VALIDATION_IDS_KEY: [self.input_ids[r] for r in self.validation_rows],
        }


def start_training(
    ctx: TrainContext,
    template: str,
    examples: Sequence[Example],
    concepts: Sequence[str],
    targets: Targets,
    params: SplitParams,
    no_data: str,
) -> TrainingStart:
    """The split of `examples` (stratified by `targets`), the fingerprint and the resume plan;
    DataError (no data) saying `no_data` when nothing is left to train on."""
    input_ids = [e.input_id for e in examples]
    train_rows, validation_rows = split_train_validation(
        input_ids, targets, params.validation_fraction, params.seed
    )
    if not train_rows:
        raise DataError(status_code_pb2.MODEL_TRAINING_NO_DATA, no_data)
    fingerprint = training_fingerprint(template, params.model_dump(), concepts, input_ids)
    plan = plan_resume(ctx.resume_from, ctx.warm_start, template, fingerprint)
    return TrainingStart(
        template, list(concepts), input_ids, train_rows, validation_rows, fingerprint, plan
    )


def start_weights(
    ctx: TrainContext,
    model: ModelT,
    plan: ResumePlan | None,
    carry_over: Callable[[dict[str, torch.Tensor], list[str], dict[str, torch.Tensor]], Any],
) -> ModelT:
    """`model` as it starts: as built (afresh), with the weights of the training it continues,
    or with an earlier version's weights where `carry_over(old_state, old_concepts, new_state)`
    copies them (kept concepts' rows of the output layers; it says what it did)."""
    if plan is None:
        return model
    old_state = plan.checkpoint.model_state()
    if plan.continues:
        model.load_state_dict(old_state)
        return model
    new_state = model.state_dict()
    counts = carry_over(old_state, plan.checkpoint.meta[CONCEPTS_KEY], new_state)
    model.load_state_dict(new_state)
    ctx.log.info("incremental training from %s: %s", plan.checkpoint.path, counts)
    return model


def fit_to_artifacts(
    ctx: TrainContext,
    start: TrainingStart,
    model: nn.Module,
    objective: Objective,
    data: LoopData,
    settings: LoopSettings,
    save: SaveCheckpoint,
    train_mode: Callable[[nn.Module], object],
) -> TrainResult:
    """Runs the shared loop (continuing where `start` says) and hands back the version's
    artifacts from the best epoch."""
    state, optimizer_state = continued_state(ctx, start.plan)
    state = fit(
        ctx, model, objective, data, settings, save, state, optimizer_state, train_mode=train_mode
    )
    return TrainResult(artifacts_from_best(ctx), state.stopped_at_cap, state.epochs_done)


def continued_state(
    ctx: TrainContext, plan: ResumePlan | None
) -> tuple[LoopState | None, dict[str, Any] | None]:
    """The loop state and optimizer state to continue with (None, None when not continuing).
    The best epoch so far travels with them when the checkpoint came from elsewhere."""
    if plan is None or not plan.continues:
        return None, None
    assert ctx.resume_from is not None
    best, target = ctx.resume_from / BEST_DIR, ctx.checkpoint_dir / BEST_DIR
    if best.is_dir() and best.resolve() != target.resolve():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(best, target)
    state = LoopState.from_json(plan.checkpoint.meta[LOOP_KEY])
    ctx.log.info("resuming after epoch %d of %s", state.epochs_done, plan.checkpoint.path)
    return state, plan.checkpoint.optimizer_state()


def artifacts_from_best(
    ctx: TrainContext, write_extra: Callable[[Path], None] | None = None
) -> Path:
    """The version's artifacts (work_dir/artifacts): the best epoch's weights and metadata,
    marked finished, without optimizer state. `write_extra` adds family files (tokenizer)."""
    best = find_checkpoint(ctx.checkpoint_dir / BEST_DIR)
    meta = {**best.meta, LOOP_KEY: {**best.meta[LOOP_KEY], "finished": True}}
    meta.pop(OPTIMIZER_KEY, None)
    return save_checkpoint(
        ctx.work_dir / ARTIFACTS_DIR, best.model_state(), meta, write_extra=write_extra
    )
