"""One training, as everything that trains runs it — the worker's training job and the
estimator's calibration trials alike: validate → invalid-data tolerance → training data →
train → evaluate. The decisions it follows were made once, by services, and travel in a
`TrainingPlan` (the job's payload).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from clarifai_grpc.grpc.api.status import status_code_pb2

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    InvalidInput,
    Template,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.estimator import BATCH_PARAMS, find_param
from modelmill.training.registry import find_template

MAX_LISTED_INVALID = 5
PERCENT = 100.0


@dataclass(frozen=True)
class TrainingPlan:
    """What to train, decided when the version was created: the template (by name, of a model
    type), the concepts in output order and their exclusivity, the template's params (a Params
    model_dump by alias), the invalid-data tolerance (0-100 %), the time cap (0 = none) and the
    GPUs asked for (num_gpus: above 1, that many workers under the Ray executor)."""

    model_type_id: str
    template: str
    concepts: list[str]
    exclusive: bool
    params: dict[str, Any]
    tolerance_percent: float
    max_training_s: float = 0.0
    num_gpus: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingPlan:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def resolve(self) -> Template:
        template = find_template(self.model_type_id, self.template)
        if template is None:  # checked when the version was created; a server downgrade
            raise DataError(
                status_code_pb2.MODEL_TRAINING_INVALID_PARAMS,
                f"This server has no {self.model_type_id} template {self.template!r}.",
            )
        return template


@dataclass(frozen=True)
class Outcome:
    """A finished training: what `train` returned, the EvalMetrics, the kinds of input it
    kept and the inputs it skipped (and why)."""

    result: TrainResult
    metrics: dict[str, Any]
    input_kinds: list[InputKind]
    invalid: list[InvalidInput]


def check_tolerance(total: int, invalid: Sequence[InvalidInput], percent: float) -> None:
    """Raises DataError(MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED) when the share of unusable
    inputs is above `percent` (0-100) of `total`.

    >>> check_tolerance(100, [InvalidInput("a", "has no concept labels")], 5.0)  # 1% is fine
    """
    if total <= 0 or not invalid:
        return
    share = PERCENT * len(invalid) / total
    if share <= percent:
        return
    listed = "; ".join(f"{i.input_id}: {i.reason}" for i in invalid[:MAX_LISTED_INVALID])
    more = len(invalid) - MAX_LISTED_INVALID
    raise DataError(
        status_code_pb2.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED,
        f"{len(invalid)} of {total} inputs ({share:.1f}%) cannot be used, more than the "
        f"invalid_data_tolerance_percent of {percent:g}%. For example: {listed}"
        + (f" (and {more} more)." if more > 0 else ".")
        + " Fix or remove those inputs, or raise invalid_data_tolerance_percent.",
    )


def _out_of_memory(plan: TrainingPlan, device: str) -> DataError:
    """A GPU out of memory, as a status a person can act on (retrying would fail the same)."""
    path, batch = find_param(plan.params, BATCH_PARAMS)
    advice = (
        f"try {'.'.join(path)} {max(1, int(batch) // 2)} (it is {int(batch)}), "
        if path and batch
        else ""
    )
    return DataError(
        status_code_pb2.MODEL_TRAINING_FAILED,
        f"Training ran out of memory on the {device} device: {advice}a smaller image size or "
        "sequence length, or a GPU with more memory.",
    )


def training_data(
    template: Template, plan: TrainingPlan, examples: Sequence[Example], ctx: TrainContext
) -> tuple[TrainingData, list[InvalidInput]]:
    """The examples `template` can use, and the ones it skips; DataError when too many are
    unusable (the plan's tolerance) or none is usable."""
    params = template.Params.model_validate(plan.params)
    invalid = template.validate(examples, params)
    for item in invalid:
        ctx.log.warning("skipping input %s: %s", item.input_id, item.reason)
    check_tolerance(len(examples), invalid, plan.tolerance_percent)
    skipped = {item.input_id for item in invalid}
    usable = [e for e in examples if e.input_id not in skipped]
    if not usable:
        raise DataError(
            status_code_pb2.MODEL_TRAINING_NO_DATA,
            "None of the training inputs is usable; the train log lists why each was skipped.",
        )
    return TrainingData(usable, plan.concepts, plan.exclusive), list(invalid)


def run(
    template: Template, plan: TrainingPlan, examples: Sequence[Example], ctx: TrainContext
) -> Outcome:
    """Train and evaluate `plan` with `template` (the job's `plan.resolve()`; a calibration
    trial's own) on `examples`. Raises DataError (a status for the version),
    TrainingCancelled, or whatever a bug raises."""
    params = template.Params.model_validate(plan.params)
    data, invalid = training_data(template, plan, examples, ctx)
    try:
        result = template.train(ctx, data, params)
    except Exception as error:
        if type(error).__name__ != "OutOfMemoryError":  # torch.OutOfMemoryError, CUDA's
            raise
        raise _out_of_memory(plan, ctx.device) from error
    ctx.report(1.0, stage="evaluating")
    ctx.log.info("evaluating")
    metrics = template.evaluate(ctx, data, params, result.artifacts)
    return Outcome(result, metrics, sorted({e.kind for e in data.examples}), invalid)
