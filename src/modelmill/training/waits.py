"""The whole wait a user has after pressing Train, in parts: what a training job adds around the
calibrated training (its start-up, embedding what the cache lacks, its end), fitted from
finished trainings' click-to-trained times. The cost model of the training itself is
estimator.py's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from modelmill.training.estimator import TIME_TERMS, CostModel, Workload

# The parts of the wait from a worker taking a training to MODEL_TRAINED, in the order they
# happen (the queue before it is said apart: it depends on the jobs ahead, not on this one).
START = "start-up: job process, imports, data, model"
EMBED = "embedding inputs not cached yet"
DATA = "reading and decoding inputs"
EPOCHS = "training, all epochs"
EVALUATION = "evaluation"
SAVE = "saving artifacts, checkpoints and results"
PARTS = (START, EMBED, DATA, EPOCHS, EVALUATION, SAVE)
# Which part of the wait each calibrated term's time falls in (TIME_TERMS' `why`).
TERM_PARTS = {
    "start-up": START,
    "per input": DATA,
    "per input × stored size": DATA,
    "per input × model size": EVALUATION,
}
# Until finished trainings here say otherwise: the job's own start-up (spawning its process,
# imports, opening the database, reading the frozen dataset) and its end (artifacts to the blob
# store, the version's status): 1.9-3.1 s and under 0.1 s on the idle 2-core CI machine, 3.2-8.0 s
# at load 5-11 (bench/RESULTS.md, "The whole wait"). Estimates are of an idle server.
DEFAULT_START_S = 2.0
DEFAULT_SAVE_S = 0.2
RECENT_WAITS = 20  # newest finished trainings the job's own costs are fitted to


@dataclass(frozen=True)
class Wait:
    """One finished training's whole wait, in parts its job measured (seconds): `queued_s`
    from PostModelVersions to a worker's claim, `start_s` from the claim to the runner (child
    process, imports, data), `embed_s` computing the `embedded` embeddings not cached (of
    `embedding_inputs` a transfer-learning template embeds; 0 for others), `train_s` the runner
    without them, `save_s` from the runner's end to MODEL_TRAINED. `workload` has the epochs
    that ran."""

    workload: Workload
    queued_s: float
    start_s: float
    train_s: float
    save_s: float
    embed_s: float = 0.0
    embedded: int = 0
    embedding_inputs: int = 0

    @property
    def total_s(self) -> float:
        return self.queued_s + self.start_s + self.embed_s + self.train_s + self.save_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "workload": self.workload.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Wait:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "workload": Workload.from_json(data["workload"])})


@dataclass(frozen=True)
class JobCosts:
    """What a training job costs beyond the calibrated runner: its start-up and its end
    (seconds), and embedding one input the cache did not have (None until a training here
    embedded some: then the calibration trials' rate)."""

    start_s: float = DEFAULT_START_S
    save_s: float = DEFAULT_SAVE_S
    embed_s_per_input: float | None = None
    trainings: int = 0  # finished trainings these were fitted to; 0: the defaults


def fit_job_costs(waits: Sequence[Wait], model: CostModel | None) -> JobCosts:
    """The job's own costs from finished trainings' click-to-trained times: what each took
    beyond its queue, its embedding and what `model` predicts for its runner (the median, so
    one disturbed training does not move it), split into start-up and end as measured. The
    defaults while no training has finished.

    e.g. `fit_job_costs([wait], model).start_s`
    """
    embedded = sum(w.embedded for w in waits)
    rate = sum(w.embed_s for w in waits) / embedded if embedded else None
    if not waits:
        return JobCosts()
    bare = JobCosts(0.0, 0.0, rate)

    def runner_s(wait: Wait) -> float:
        if model is None:
            return wait.train_s
        return sum(wait_parts(model, bare, wait.workload, wait.embedding_inputs).values())

    beyond = max(
        float(np.median([w.total_s - w.queued_s - w.embed_s - runner_s(w) for w in waits])), 0.0
    )
    start, save = (float(np.median([getattr(w, a) for w in waits])) for a in ("start_s", "save_s"))
    share = start / (start + save) if start + save > 0 else 1.0
    return JobCosts(beyond * share, beyond * (1 - share), rate, len(waits))


def wait_parts(
    model: CostModel,
    costs: JobCosts,
    workload: Workload,
    embedding_inputs: int = 0,
    missing: int = 0,
) -> dict[str, float]:
    """Seconds of each part of the whole wait (PARTS) of training
    `workload`: the calibrated model's terms and the job's own start-up and end. For a
    transfer-learning template embedding `embedding_inputs`, of which `missing` are not
    cached: the calibration trials embedded them all (in the per-input terms), so that is
    taken off those, and embedding the missing ones is its own part, at the rate finished
    trainings here measured, else the trials' (all of the per-input time where they did not
    measure it apart)."""
    parts = dict.fromkeys(PARTS, 0.0)
    for term in TIME_TERMS:
        part = TERM_PARTS.get(term.name, EPOCHS)
        parts[part] += model.coefficients.get(term.name, 0.0) * term.value(workload)
    per_input = parts[DATA] + parts[EVALUATION]
    if embedding_inputs and per_input > 0:
        trials_s = model.embed_seconds(workload)
        trials_rate = (per_input if trials_s is None else trials_s) / workload.num_inputs
        rate = costs.embed_s_per_input or trials_rate
        kept = 1 - min(rate * embedding_inputs, per_input) / per_input
        parts[DATA] *= kept
        parts[EVALUATION] *= kept
        parts[EMBED] = rate * missing
    parts[START] += costs.start_s
    parts[SAVE] += costs.save_s
    return parts
