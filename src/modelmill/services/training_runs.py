"""What training time estimates are fitted to: the runs of calibration trials and of finished
trainings, and each finished training's whole wait in parts, kept per template and hardware
profile (`estimates` reads them back)."""

from __future__ import annotations

import logging
import resource
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from modelmill.services import Env
from modelmill.services.estimates import (
    TRAINING,
    WAIT,
    cost_model,
    embedder_of,
    job_costs,
    kind_trained_on,
    snapshot_stats,
)
from modelmill.store.tables import Job, TrainingRun, as_utc
from modelmill.training.contract import Hardware, InputKind, Template
from modelmill.training.estimator import Run, Workload, model_key, prompt_tokens_of, workload_of
from modelmill.training.hardware import this_hardware
from modelmill.training.waits import EMBED, Wait, wait_parts

log = logging.getLogger("modelmill")

KIB = 1024  # ru_maxrss is in KiB on Linux


def _hardware_json(hardware: Hardware) -> dict[str, Any]:
    return {"device": hardware.device, "name": hardware.name, "cores": hardware.cores}


def record_runs(
    env: Env,
    template: Template,
    kind: InputKind,
    hardware: Hardware,
    runs: Iterable[Run],
    model_version_pk: int | None = None,
) -> None:
    """Store measured runs; the next estimate of this template on this hardware is refitted
    with them."""
    key = model_key(template, kind)
    with env.db.session() as session:
        for run in runs:
            session.add(
                TrainingRun(
                    model_key=key,
                    hardware_profile=hardware.profile,
                    hardware=_hardware_json(hardware),
                    source=run.source,
                    run=run.to_json(),
                    model_version_pk=model_version_pk,
                )
            )


@dataclass(frozen=True)
class JobTimes:
    """When a training's phases began and ended, and its embedding of what was not cached:
    what its job measured, for `record_training`."""

    created: datetime  # PostModelVersions
    claimed: datetime  # a worker took the job
    runner_started: datetime
    runner_ended: datetime
    trained: datetime  # MODEL_TRAINED written
    embed_s: float = 0.0
    embedded: int = 0


def record_training(
    env: Env,
    job: Job,
    template: Template,
    params: BaseModel,
    snapshot: Sequence[dict[str, Any]],
    device: str,
    epochs_run: int | None,
    times: JobTimes,
) -> Wait | None:
    """Add a finished training to what its template's estimates are fitted to: the runner's
    time to the cost model (as calibration trials measure it: every input embedded), and the
    whole wait in parts to the job's own costs; return the wait. A job that ran more than
    once (a worker died) is left out (None): its time is not one training's."""
    if job.attempts != 1:
        return None
    kind = kind_trained_on(template, params, Counter(i["kind"] for i in snapshot))
    # the epochs it ran: early stopping ends some trainings sooner
    values = params.model_dump(mode="json")
    workload = workload_of(
        values, snapshot_stats(snapshot, kind), epochs_run, prompt_tokens_of(template, values)
    )
    hardware = this_hardware(device)
    embedding_inputs = workload.num_inputs if embedder_of(template, kind, params) else 0
    seconds = lambda start, end: (as_utc(end) - as_utc(start)).total_seconds()  # noqa: E731
    runner_s = seconds(times.runner_started, times.runner_ended)
    wait = Wait(
        workload,
        queued_s=seconds(times.created, times.claimed),
        start_s=seconds(times.claimed, times.runner_started),
        train_s=max(runner_s - times.embed_s, 0.0),
        save_s=seconds(times.runner_ended, times.trained),
        embed_s=times.embed_s,
        embedded=times.embedded,
        embedding_inputs=embedding_inputs,
    )
    cached = embedding_inputs - times.embedded
    if cached > 0:  # as a calibration trial would take: embedding the cached ones too
        runner_s += cached * (
            times.embed_s / times.embedded
            if times.embedded
            else _embed_rate(env, template, kind, hardware, workload)
        )
    gpu = None
    if device == "cuda":
        import torch

        gpu = int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB  # the job's own process
    record_runs(
        env,
        template,
        kind,
        hardware,
        [Run(workload, runner_s, peak, gpu, TRAINING)],
        job.model_version_pk,
    )
    _record_wait(env, model_key(template, kind), hardware, wait, job.model_version_pk)
    refitted = cost_model(env, template, kind, hardware)
    log.info(
        "training took %.0f s from PostModelVersions (%.0f s queued); %s estimates on %s "
        "refitted: %s",
        wait.total_s,
        wait.queued_s,
        template.name,
        hardware.profile,
        refitted.coefficients if refitted else "too few runs",
    )
    return wait


def _embed_rate(
    env: Env, template: Template, kind: InputKind, hardware: Hardware, workload: Workload
) -> float:
    """Seconds an estimate counts for embedding one input of `workload`."""
    model = cost_model(env, template, kind, hardware)
    if model is None:
        return 0.0
    costs = job_costs(env, template, kind, hardware, model)
    n = workload.num_inputs
    return wait_parts(model, costs, workload, n, n)[EMBED] / n


def _record_wait(
    env: Env, key: str, hardware: Hardware, wait: Wait, model_version_pk: int | None
) -> None:
    with env.db.session() as session:
        session.add(
            TrainingRun(
                model_key=key,
                hardware_profile=hardware.profile,
                hardware=_hardware_json(hardware),
                source=WAIT,
                run=wait.to_json(),
                model_version_pk=model_version_pk,
            )
        )
