"""The trainings ahead of one: when a worker should take it, from the estimates of the trainings
queued and running ahead and the workers there are."""

from __future__ import annotations

import heapq
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from modelmill.services import Env
from modelmill.services.datasets import load_snapshot
from modelmill.services.estimates import Estimate, estimate_job
from modelmill.services.training import PLAN
from modelmill.store import queue
from modelmill.store.tables import DatasetVersion, Job, ModelVersion, as_utc, utcnow
from modelmill.training.runner import TrainingPlan

log = logging.getLogger("modelmill")


def with_queue(env: Env, estimate: Estimate) -> Estimate:
    """`estimate` of a training queued now, with the trainings ahead of it and when a worker
    should take it."""
    jobs_ahead, starts_in_s = queue_ahead(env)
    return replace(estimate, jobs_ahead=jobs_ahead, starts_in_s=starts_in_s)


def queue_ahead(env: Env, job_pk: int | None = None) -> tuple[int, float]:
    """(trainings ahead, seconds until a worker should take the training) for the queued job
    `job_pk`, or for one queued now when None. Workers finish the running trainings (their
    progress's ETA), then take the queued ones ahead oldest first, each on the worker that
    frees first, for as long as its estimate says; a worker free now means 0."""
    with env.db.session() as session:
        rows = list(
            session.execute(
                select(Job, ModelVersion.progress)
                .join(ModelVersion, ModelVersion.pk == Job.model_version_pk)
                .where(
                    Job.kind == "train",
                    Job.state.in_((queue.QUEUED, queue.RUNNING)),
                    *([Job.pk < job_pk] if job_pk is not None else []),
                )
                .order_by(Job.pk)
            )
        )
    running = [(job, progress or {}) for job, progress in rows if job.state == queue.RUNNING]
    workers = max(env.settings.workers, len(running), 1)
    free_at = [_remaining_s(env, job, progress) for job, progress in running]
    free_at += [0.0] * (workers - len(running))
    heapq.heapify(free_at)
    for job, _ in rows:
        if job.state == queue.QUEUED:
            heapq.heappush(free_at, heapq.heappop(free_at) + _job_seconds(env, job))
    return len(rows), round(free_at[0], 1)


def _remaining_s(env: Env, job: Job, progress: dict[str, Any]) -> float:
    if progress.get("eta_s") is not None:
        return float(progress["eta_s"])
    elapsed = (utcnow() - as_utc(job.started_at or utcnow())).total_seconds()
    total = progress.get("estimated_s") or _job_seconds(env, job)
    return max(float(total) - elapsed, 0.0)


def _job_estimate(env: Env, job: Job) -> Estimate:
    plan = TrainingPlan.from_json(job.payload[PLAN])
    template = plan.resolve()
    with env.db.session() as session:
        version = session.get(ModelVersion, job.model_version_pk)
        assert version is not None and version.dataset_version_pk is not None
        dataset_version = session.get(DatasetVersion, version.dataset_version_pk)
        assert dataset_version is not None
    snapshot = load_snapshot(env, dataset_version)
    return estimate_job(env, template, template.Params.model_validate(plan.params), snapshot)


def _job_seconds(env: Env, job: Job) -> float:
    """A queued job's estimate; 0 when it cannot be made (a deleted dataset version: the job
    will end at once)."""
    try:
        return _job_estimate(env, job).seconds
    except Exception:
        log.warning("no estimate of queued job %s", job.pk, exc_info=True)
        return 0.0


def estimate_queued_version(env: Env, version: ModelVersion) -> ModelVersion:
    """The version just queued (a detached row), its progress holding the estimate of its
    training in parts (`estimate_parts`: [part, seconds] pairs, in the order they happen) and
    when a worker should take it (`starts_in_s`, `expected_start_at`, `jobs_ahead`): what
    PostModelVersions answers, and GetModelVersion and the version's page show until the
    training starts. An estimate is advice: when it cannot be made, the version is returned as
    it was."""
    try:
        with env.db.session() as session:
            job = session.scalars(
                select(Job)
                .where(Job.model_version_pk == version.pk, Job.kind == "train")
                .order_by(Job.pk.desc())
                .limit(1)
            ).one()
        estimate = _job_estimate(env, job)
        jobs_ahead, starts_in_s = queue_ahead(env, job.pk)
    except Exception:
        log.warning("no estimate of version %s", version.id, exc_info=True)
        return version
    progress = {
        **version.progress,
        "estimated_s": estimate.seconds,
        "estimate_parts": [[part, seconds] for part, seconds in estimate.parts.items()],
        "jobs_ahead": jobs_ahead,
        "starts_in_s": starts_in_s,
        "expected_start_at": (utcnow() + timedelta(seconds=starts_in_s)).isoformat(),
    }
    with env.db.session() as session:  # unless a worker took it already: its progress says more
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.pk == version.pk, ModelVersion.status_code == version.status_code)
            .values(progress=progress)
        )
    version.progress = progress  # the answer to PostModelVersions says it either way
    return version
