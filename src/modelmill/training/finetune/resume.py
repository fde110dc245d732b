"""Resuming a fine-tuning: continuing a training whose worker died from its last epoch, or
starting incrementally from an earlier version; and the version's artifacts from the best epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2

from modelmill.training.checkpoint_keys import (
    FINGERPRINT_KEY,
    LOOP_KEY,
    OPTIMIZER_KEY,
    TEMPLATE_KEY,
)
from modelmill.training.checkpoints import BEST_DIR, Checkpoint, find_checkpoint, save_checkpoint
from modelmill.training.contract import DataError, TrainContext
from modelmill.training.finetune.loop import LoopState

ARTIFACTS_DIR = "artifacts"


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
