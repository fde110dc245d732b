"""The fine-tuning loop every deep template shares: seeded epochs, linear warmup then cosine
learning rate, early stopping on the objective's validation metric, the best weights kept, a
checkpoint every epoch, exact resume, cancel, the time cap and progress. What is optimised (the
loss of a batch, the validation metrics) is the task's `Objective`; batches are the template's.
In a torch process group (several workers, started by the Ray executor) it trains with DDP.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from clarifai_grpc.grpc.api.status import status_code_pb2
from torch import nn

from modelmill.training.checkpoint_keys import LOOP_KEY
from modelmill.training.checkpoints import BEST_DIR, LAST_DIR, save_checkpoint
from modelmill.training.contract import DataError, Objective, TrainContext, TrainingCancelled
from modelmill.training.finetune.fields import LoopSettings

REPORT_INTERVAL_S = 2.0  # progress reports between epoch ends, at most this often
CANCEL_CHECK_INTERVAL_S = 1.0  # ctx.cancelled() may read a database: not every step
ADAM_BETA2 = 0.999


@dataclass
class LoopState:
    """Where a training stands; stored as JSON in every checkpoint so a job can resume exactly."""

    epochs_done: int = 0
    best_score: float | None = None  # the objective's monitored validation metric
    best_epoch: int = 0
    epochs_since_best: int = 0
    finished: bool = False
    stopped_at_cap: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoopState:
        values = dict(data)
        if "best_loss" in values:  # checkpoints written before objectives: a loss, lower wins
            values["best_score"] = values.pop("best_loss")
        return cls(**values)


@dataclass(frozen=True)
class LoopData:
    """One epoch of shuffled training batches (the generator decides order and augmentation),
    and the validation batches when there is a validation split."""

    train_batches: Callable[[torch.Generator], Iterator[Any]]
    steps_per_epoch: int
    validation_batches: Callable[[], Iterator[Any]] | None


class SaveCheckpoint(Protocol):
    """Writes one checkpoint folder: the model, the loop state and (for `last/`) the optimizer;
    `same_model_as` is a folder just written with the same weights (see save_checkpoint)."""

    def __call__(
        self,
        directory: Path,
        state: LoopState,
        optimizer: torch.optim.Optimizer | None,
        same_model_as: Path | None = None,
    ) -> None: ...


def checkpoint_saver(
    model: nn.Module,
    meta: Mapping[str, Any],
    write_extra: Callable[[Path], None] | None = None,
) -> SaveCheckpoint:
    """The SaveCheckpoint of a template: `model`'s weights with `meta` and the loop state at
    the time, plus `write_extra(folder)`'s own files (a tokenizer, say)."""

    def save(
        directory: Path,
        state: LoopState,
        optimizer: torch.optim.Optimizer | None,
        same_model_as: Path | None = None,
    ) -> None:
        meta_now = {**meta, LOOP_KEY: state.to_json()}
        save_checkpoint(
            directory, model.state_dict(), meta_now, optimizer, write_extra, same_model_as
        )

    return save


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a resumed job replays exactly the epochs it had not finished."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def learning_rate_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def autocast_dtype(setting: str, device: str) -> torch.dtype | None:
    """The dtype mixed precision trains in on `device` (None: float32). A CPU always trains in
    float32; a GPU in bfloat16 where it has it (auto, bf16), else float16 with loss scaling."""
    if setting == "off" or not device.startswith("cuda"):
        return None
    if setting == "fp16":
        return torch.float16
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if setting == "bf16":
        raise DataError(
            status_code_pb2.MODEL_TRAINING_INVALID_PARAMS,
            f"This GPU ({torch.cuda.get_device_name()}) has no bfloat16; set mixed_precision "
            "to auto or fp16.",
        )
    return torch.float16


def _optimizer(model: nn.Module, settings: LoopSettings) -> torch.optim.AdamW:
    # No weight decay on biases and normalisation scales (1-D): decaying them only hurts.
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters; on CPU about 5x faster than the per-tensor default
    # (an optimizer step over MiniLM's 22M parameters: 0.025 s instead of 0.13 s on one core).
    return torch.optim.AdamW(
        groups, lr=settings.learning_rate, betas=(settings.beta1, ADAM_BETA2), fused=True
    )


class _Throttle:
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return False
        self.last = now
        return True


class _World:
    """The processes training one model together: torch DDP in a process group that the Ray
    executor's workers set up, or this process alone. Each rank takes every size-th batch (the
    batch size is per worker); rank 0 decides when to stop (cancel, time cap, early stop) and
    the others follow, as a collective that one rank skips would wait forever."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.size = dist.get_world_size() if self.distributed else 1

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` as the objective's loss calls it: under DDP, which syncs the gradients, so
        an objective calls the model itself, not its methods or parts."""
        if not self.distributed:
            return model
        on_gpu = self.device.startswith("cuda")
        # find_unused_parameters: some templates' models have trainable parts a batch may not
        # reach (a pooler, a loss head); without it DDP fails on them at the next step.
        return nn.parallel.DistributedDataParallel(
            model,
            device_ids=[torch.cuda.current_device()] if on_gpu else None,
            find_unused_parameters=True,
        )

    def agree(self, decide: Callable[[], bool]) -> bool:
        """Rank 0's `decide()`, on every rank."""
        if not self.distributed:
            return decide()
        flag = torch.tensor([int(decide()) if self.rank == 0 else 0], device=self.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def steps(self, steps_per_epoch: int) -> int:
        """Batches of an epoch that are trained: a whole number for every rank."""
        kept = steps_per_epoch - steps_per_epoch % self.size
        if kept == 0 and self.distributed:
            raise DataError(
                status_code_pb2.MODEL_TRAINING_INSUFFICIENT_DATA,
                f"An epoch has {steps_per_epoch} batches, fewer than the {self.size} workers "
                "that train together: lower batch_size, add inputs, or train on fewer workers.",
            )
        return kept


def fit(
    ctx: TrainContext,
    model: nn.Module,
    objective: Objective,
    data: LoopData,
    settings: LoopSettings,
    save: SaveCheckpoint,
    state: LoopState | None = None,
    optimizer_state: dict[str, Any] | None = None,
    train_mode: Callable[[nn.Module], object] = nn.Module.train,
) -> LoopState:
    """Trains `model` from `state.epochs_done` to the end (or an early stop).

    `train_mode(model)` puts the model in training mode (e.g. keeping batch-norm statistics).
    Each epoch ends with `save(ctx.checkpoint_dir / "best", ...)` when the objective's monitored
    metric improved (every epoch when there is no validation split), then `save(.../"last", ...)`
    with the optimizer, then `ctx.save_checkpoint()`. The state says whether it stopped at the
    time cap.
    """
    state = state or LoopState()
    if state.finished:  # the job died after its last epoch was saved: nothing left to train
        return state
    world = _World(ctx.device)
    trained_steps = world.steps(data.steps_per_epoch)
    trained = world.wrap(model)
    optimizer = _optimizer(model, settings)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    total_steps = settings.num_epochs * data.steps_per_epoch
    warmup_steps = round(settings.warmup_epochs * data.steps_per_epoch)
    report_throttle, cancel_throttle = (
        _Throttle(REPORT_INTERVAL_S),
        _Throttle(CANCEL_CHECK_INTERVAL_S),
    )
    started, steps_run = time.monotonic(), 0
    precision = autocast_dtype(settings.mixed_precision, ctx.device)
    # float16 needs its gradients scaled so that small ones do not underflow; bfloat16 does not.
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None
    ctx.log.info(
        "training on %s in %s%s",
        ctx.device,
        precision or torch.float32,
        f", rank {world.rank} of {world.size} (DDP)" if world.distributed else "",
    )

    def cancelled_now(due: Callable[[], bool] = lambda: True) -> bool:
        return world.agree(lambda: due() and ctx.cancelled())

    def autocast() -> contextlib.AbstractContextManager[Any]:
        if precision is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=precision)

    def eta_s(step: int) -> float:
        per_step = (time.monotonic() - started) / max(1, steps_run * world.size)
        return per_step * (total_steps - step)

    for epoch in range(state.epochs_done, settings.num_epochs):
        if cancelled_now():
            raise TrainingCancelled("training was cancelled")
        generator = torch.Generator().manual_seed(epoch_seed(settings.seed, epoch))
        torch.manual_seed(epoch_seed(settings.seed, epoch))  # dropout, replayed on resume
        train_mode(model)
        running = torch.zeros((), device=ctx.device)
        count = 0
        for index, batch in enumerate(data.train_batches(generator)):
            if index >= trained_steps:
                break
            if index % world.size != world.rank:
                continue
            # The group's step: every rank trains at the same learning rate.
            step = epoch * data.steps_per_epoch + index - index % world.size
            rate = learning_rate_at(step, total_steps, warmup_steps, settings.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = rate
            with autocast():
                loss = objective.loss(trained, batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            running += loss.detach()  # read back only when reporting: no device sync per step
            count += 1
            steps_run += 1
            if cancelled_now(cancel_throttle.due):
                raise TrainingCancelled("training was cancelled")
            if report_throttle.due():
                ctx.report(
                    (step + 1) / total_steps,
                    epoch=epoch + 1,
                    step=step + 1,
                    loss=float(running) / count,
                    eta_s=eta_s(step + 1),
                )
        record = {"epoch": float(epoch + 1), "loss": float(running) / max(1, count)}
        if data.validation_batches is not None and world.rank == 0:
            model.eval()
            with autocast():
                record.update(objective.validate(model, data.validation_batches()))
        _update_state(state, record, settings, objective)
        state.finished = world.agree(lambda: state.finished)
        # best/ first: a crash between the two leaves last/ at the previous epoch, replayed
        # exactly on resume, rather than a last/ that believes in a best/ never written.
        best = ctx.checkpoint_dir / BEST_DIR if state.best_epoch == epoch + 1 else None
        if best is not None:
            save(best, state, None)
        save(ctx.checkpoint_dir / LAST_DIR, state, optimizer, same_model_as=best)
        ctx.save_checkpoint()
        done_steps = (epoch + 1) * data.steps_per_epoch
        progress = 1.0 if state.finished else done_steps / total_steps  # early stops end at 1
        ctx.report(progress, step=done_steps, eta_s=eta_s(done_steps), **record)
        ctx.log.info("epoch %d/%d: %s", epoch + 1, settings.num_epochs, record)
        if state.finished:
            break
        # The budget cap: checked per epoch, so the best/ weights are whole.
        if world.agree(ctx.out_of_time):
            state.stopped_at_cap = True
            ctx.log.info("training time cap reached after epoch %d", epoch + 1)
            ctx.report(1.0, step=done_steps, stage="stopped at the time cap")
            break
    return state


def _update_state(
    state: LoopState, record: dict[str, float], settings: LoopSettings, objective: Objective
) -> None:
    state.epochs_done = int(record["epoch"])
    state.history.append(record)
    score = record.get(objective.monitor)
    better = (
        score is None
        or state.best_score is None
        or (score > state.best_score if objective.higher_is_better else score < state.best_score)
    )
    if better:
        state.best_score, state.best_epoch, state.epochs_since_best = score, state.epochs_done, 0
    else:
        state.epochs_since_best += 1
    stop_early = settings.patience > 0 and state.epochs_since_best >= settings.patience
    state.finished = stop_early or state.epochs_done >= settings.num_epochs
