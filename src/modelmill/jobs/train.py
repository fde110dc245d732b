"""The training job: the version's frozen data and plan → the training runner (validate, train
with progress, checkpoints and cancel, evaluate) → the version's artifacts and metrics stored."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from pydantic import BaseModel
from sqlalchemy import select

from modelmill.domain import model_versions as lifecycle
from modelmill.services import Env
from modelmill.services.datasets import load_snapshot
from modelmill.services.embedders import (
    BASE_EMBEDDER,
    TrainedEmbedderSource,
    load_trained_embedder,
)
from modelmill.services.embeddings import EmbeddingCache
from modelmill.services.estimates import estimate_job
from modelmill.services.evaluations import record_training_evaluation
from modelmill.services.examples import content_key, from_snapshot
from modelmill.services.training import PLAN, RESUME_FROM_VERSION
from modelmill.services.training_runs import JobTimes, record_training
from modelmill.settings import Settings
from modelmill.store import queue
from modelmill.store.blobs import get_tree, put_tree
from modelmill.store.tables import DatasetVersion, Job, Model, ModelVersion, as_utc, utcnow
from modelmill.training import runner
from modelmill.training.contract import (
    DataError,
    Example,
    Template,
    TrainContext,
    TrainingCancelled,
)
from modelmill.training.hardware import limit_gpu_memory, resolve_device
from modelmill.training.runner import TrainingPlan

REPORT_EVERY_S = 0.5
CANCEL_CHECK_EVERY_S = 1.0
EMBED_CHUNK = 64  # inputs embedded between two looks at the cancel flag: seconds of CPU work


class _Progress:
    """Writes progress to the version, at most every REPORT_EVERY_S, with an ETA: from the
    progress so far, or before there is any from the training time estimate."""

    def __init__(
        self,
        env: Env,
        version_pk: int,
        total_inputs: int,
        log: logging.Logger,
        estimated_s: float | None = None,
        since_start_s: float = 0.0,
    ) -> None:
        self.env, self.version_pk, self.total_inputs, self.log = env, version_pk, total_inputs, log
        self.estimated_s = estimated_s
        self.started = time.monotonic() - since_start_s  # elapsed counts from the job's start
        self.last = 0.0

    def __call__(self, progress: float, **metrics: Any) -> None:
        now = time.monotonic()
        if now - self.last < REPORT_EVERY_S and progress < 1.0:
            return
        self.last = now
        elapsed = now - self.started
        if progress > 0:
            eta: float | None = elapsed * (1 - progress) / progress
        else:
            eta = max(self.estimated_s - elapsed, 0.0) if self.estimated_s else None
        values = {k: (float(v) if isinstance(v, int | float) else v) for k, v in metrics.items()}
        state = {
            "percent": round(100 * min(max(progress, 0.0), 1.0), 1),
            "elapsed_s": round(elapsed, 1),
            "total_inputs": self.total_inputs,
            **({"eta_s": round(eta, 1)} if eta is not None else {}),
            **({"estimated_s": round(self.estimated_s)} if self.estimated_s else {}),
            **values,
        }
        self.log.info("progress %s", state)
        with self.env.db.session() as session:
            version = session.get(ModelVersion, self.version_pk)
            if version is not None:
                version.progress = state


def _checker(env: Env, job_pk: int):  # type: ignore[no-untyped-def]
    state = {"at": 0.0, "cancelled": False}

    def cancelled() -> bool:
        now = time.monotonic()
        if not state["cancelled"] and now - state["at"] > CANCEL_CHECK_EVERY_S:
            state["at"] = now
            state["cancelled"] = queue.is_cancel_requested(env, job_pk)
        return bool(state["cancelled"])

    return cancelled


class _CancellableEmbeddings:
    """The embedding cache, asked in chunks: a cancel is honoured between chunks rather than
    after all inputs are embedded (minutes for thousands of images), and each chunk is cached
    as it is done, so a training that dies mid-way starts again from what was embedded."""

    def __init__(self, cache: EmbeddingCache, cancelled: Callable[[], bool]) -> None:
        self.cache, self.cancelled = cache, cancelled

    def __call__(self, examples: Sequence[Example], model_id: str) -> np.ndarray:
        parts = []
        for start in range(0, len(examples), EMBED_CHUNK):
            if self.cancelled():
                raise TrainingCancelled("training was cancelled")
            parts.append(self.cache(examples[start : start + EMBED_CHUNK], model_id))
        return np.concatenate(parts) if parts else self.cache([], model_id)


def _start(env: Env, job: Job) -> tuple[ModelVersion, DatasetVersion | None]:
    """The version (now training) and its frozen data; None when that dataset version was
    deleted while the training waited (services refuse that, but not an older server)."""
    with env.db.session() as session:
        version = session.get(ModelVersion, job.model_version_pk)
        assert version is not None, "a version's jobs are deleted with it"
        dataset_version = (
            session.get(DatasetVersion, version.dataset_version_pk)
            if version.dataset_version_pk is not None
            else None
        )
        if version.status_code == lifecycle.QUEUED:
            version.status_code = lifecycle.check_transition(
                version.status_code, lifecycle.TRAINING
            )
            version.status_description = "Training"
        return version, dataset_version


def _source_checkpoint(env: Env, version_pk: int) -> str | None:
    """The last checkpoint of an earlier version's training, else its final artifacts."""
    with env.db.session() as session:
        key = session.scalar(
            select(Job.checkpoint_key)
            .where(Job.model_version_pk == version_pk, Job.kind == "train", Job.state == queue.DONE)
            .order_by(Job.pk.desc())
            .limit(1)
        )
        return key or session.scalar(
            select(ModelVersion.artifacts_key).where(ModelVersion.pk == version_pk)
        )


def _deadline(job: Job, plan: TrainingPlan) -> float | None:
    """The cap as a time.monotonic() value, counting the time earlier attempts already took."""
    if not plan.max_training_s:
        return None
    return time.monotonic() + plan.max_training_s - _since_start(job)


def _since_start(job: Job) -> float:
    """Seconds since the job first started, earlier attempts included."""
    return (utcnow() - as_utc(job.started_at or utcnow())).total_seconds()


def _frozen_data(env: Env, job: Job) -> DatasetVersion | None:
    """The dataset version a training learns from, read only (None when it was deleted)."""
    with env.db.session() as session:
        version = session.get(ModelVersion, job.model_version_pk)
        if version is None or version.dataset_version_pk is None:
            return None
        return session.get(DatasetVersion, version.dataset_version_pk)


def _work_dir(env: Env, name: str) -> Path:
    """A fresh scratch folder for one process of a training, with its checkpoints folder."""
    work = env.settings.data_dir / "work" / name
    shutil.rmtree(work, ignore_errors=True)
    (work / "checkpoints").mkdir(parents=True)
    return work


def _resume_source(env: Env, job: Job, work: Path, log: logging.Logger) -> tuple[Path | None, bool]:
    """The checkpoint to start from, fetched into `work`, and whether it is an earlier
    version's (a warm start) rather than this job's own; (None, False) to start afresh."""
    if job.checkpoint_key:  # this job ran before and died: continue from its last epoch
        log.info("resuming from this job's last checkpoint")
        return get_tree(env.blobs, job.checkpoint_key, work / "resume"), False
    if job.payload.get(RESUME_FROM_VERSION):
        key = _source_checkpoint(env, job.payload[RESUME_FROM_VERSION])
        if key:
            log.info("incremental training from an earlier version's checkpoint")
            return get_tree(env.blobs, key, work / "resume"), True
    return None, False


def run_training(env: Env, job: Job, owner: str, log: logging.Logger) -> None:
    version, dataset_version = _start(env, job)
    if dataset_version is None:
        _end(
            env,
            job,
            owner,
            codes.MODEL_TRAINING_NO_DATA,
            "The dataset version this training was to learn from was deleted before the "
            "training started; train again on another dataset version.",
        )
        return
    plan = TrainingPlan.from_json(job.payload[PLAN])
    snapshot = load_snapshot(env, dataset_version)
    examples = [from_snapshot(env, item, plan.concepts) for item in snapshot]
    log.info(
        "template %s, %d inputs, concepts %s, params %s",
        plan.template,
        len(examples),
        plan.concepts,
        plan.params,
    )
    try:
        if BASE_EMBEDDER in job.payload:  # a trained embedder: services chose it, checked
            load_trained_embedder(env, TrainedEmbedderSource.from_json(job.payload[BASE_EMBEDDER]))
        template = plan.resolve()
        params = template.Params.model_validate(plan.params)
        estimated_s = _estimate(env, template, params, snapshot, log)
        work = _work_dir(env, f"job-{job.pk}")
        checkpoints = work / "checkpoints"
        resume_from, warm_start = _resume_source(env, job, work, log)

        def save_checkpoint() -> None:
            queue.set_checkpoint(env, job.pk, put_tree(env.blobs, checkpoints), owner)

        keys = {item["id"]: content_key(item) for item in snapshot}
        cancelled = _checker(env, job.pk)
        cache = EmbeddingCache(env, keys)
        ctx = TrainContext(
            device=resolve_device(env.settings.device),
            work_dir=work,
            checkpoint_dir=checkpoints,
            report=_Progress(env, version.pk, len(examples), log, estimated_s, _since_start(job)),
            cancelled=cancelled,
            embeddings=_CancellableEmbeddings(cache, cancelled),
            log=log,
            resume_from=resume_from,
            warm_start=warm_start,
            weights_dir=env.settings.resolved_weights_dir,
            save_checkpoint=save_checkpoint,
            deadline=_deadline(job, plan),
        )
        if ctx.device == "cuda":
            limit_gpu_memory(env.settings.resolved_gpu_memory_fraction)
        runner_started = utcnow()
        outcome = runner.run(template, plan, examples, ctx)
        runner_ended = utcnow()
        artifacts_key = put_tree(env.blobs, outcome.result.artifacts)
    except TrainingCancelled:
        _end(env, job, owner, codes.MODEL_TRAINING_FAILED, "Training was cancelled by the user.")
        log.info("cancelled")
        return
    except DataError as error:
        _end(env, job, owner, error.code, error.description)
        log.error("%s", error.description)
        return
    done = "Model is trained and ready"
    if outcome.result.stopped_at_cap:
        done = (
            f"Stopped at the {plan.max_training_s / 60:g}-minute training time cap; the best "
            "checkpoint so far is kept and evaluated."
        )
        log.info("stopped at the training time cap")
    _end(
        env,
        job,
        owner,
        lifecycle.TRAINED,
        done,
        artifacts_key,
        outcome.metrics,
        input_kinds=outcome.input_kinds,
    )
    try:  # the actual time refits this template's estimates; that must never fail a training
        times = JobTimes(
            version.created_at,
            job.started_at or runner_started,
            runner_started,
            runner_ended,
            utcnow(),
            cache.computing_s,
            cache.computed,
        )
        wait = record_training(
            env, job, template, params, snapshot, ctx.device, outcome.result.epochs_run, times
        )
        if wait and estimated_s:
            took = wait.total_s - wait.queued_s
            log.info(
                "training took %.0f s from a worker's claim to trained; estimated %.0f s before "
                "it started (%+.0f%%)",
                took,
                estimated_s,
                100 * (estimated_s - took) / took,
            )
    except Exception:
        log.warning("could not record this training's time for estimates", exc_info=True)
    shutil.rmtree(work, ignore_errors=True)
    log.info("trained")


def follow_training(settings_values: dict[str, Any], job_pk: int, rank: int) -> None:
    """Rank `rank` of a training on several workers (torch DDP; the Ray executor starts the
    ranks in a process group): it trains beside rank 0, the job itself (`child.run_job`), which
    alone reports, checkpoints, evaluates and records the outcome. Writes only its own scratch
    folder; a cancel, the time cap and bad data end it when they end rank 0."""
    import torch

    settings = Settings(**settings_values)
    env = Env.open(settings, migrate=False)
    torch.set_num_threads(settings.resolved_job_threads)
    log = logging.getLogger(f"modelmill.job.{job_pk}.rank-{rank}")
    job = queue.get(env, job_pk)
    dataset_version = _frozen_data(env, job)
    if dataset_version is None:  # rank 0 records why
        return
    plan = TrainingPlan.from_json(job.payload[PLAN])
    snapshot = load_snapshot(env, dataset_version)
    examples = [from_snapshot(env, item, plan.concepts) for item in snapshot]
    work = _work_dir(env, f"job-{job.pk}-rank-{rank}")
    try:
        template = plan.resolve()
        params = template.Params.model_validate(plan.params)
        resume_from, warm_start = _resume_source(env, job, work, log)
        keys = {item["id"]: content_key(item) for item in snapshot}

        def never() -> bool:
            return False

        ctx = TrainContext(
            device=resolve_device(settings.device),
            work_dir=work,
            checkpoint_dir=work / "checkpoints",
            report=lambda progress, **metrics: None,
            cancelled=never,  # rank 0 decides, in the loop
            embeddings=_CancellableEmbeddings(EmbeddingCache(env, keys), never),
            log=log,
            resume_from=resume_from,
            warm_start=warm_start,
            weights_dir=settings.resolved_weights_dir,
        )
        data, _ = runner.training_data(template, plan, examples, ctx)
        template.train(ctx, data, params)
    except (DataError, TrainingCancelled):
        pass  # rank 0 meets the same and records it
    finally:
        shutil.rmtree(work, ignore_errors=True)
        env.db.dispose()


def estimated_peak_memory(env: Env, job: Job) -> int | None:
    """The peak RAM, in bytes, the estimator expects of this training job on this worker's
    hardware (what a Ray task asks for); None for other jobs, or when it cannot say."""
    if PLAN not in job.payload:
        return None
    try:
        plan = TrainingPlan.from_json(job.payload[PLAN])
        template = plan.resolve()
        dataset_version = _frozen_data(env, job)
        if dataset_version is None:
            return None
        params = template.Params.model_validate(plan.params)
        snapshot = load_snapshot(env, dataset_version)
        device = resolve_device(env.settings.device)
        return estimate_job(env, template, params, snapshot, device).peak_memory_bytes
    except Exception:  # an estimate must never stop a training
        logging.getLogger("modelmill.worker").warning(
            "job %s: no memory estimate", job.pk, exc_info=True
        )
        return None


def _estimate(
    env: Env,
    template: Template,
    params: BaseModel,
    snapshot: Sequence[dict[str, Any]],
    log: logging.Logger,
) -> float | None:
    """Seconds this training is expected to take on this worker; None when that cannot be
    said (an estimate must never stop a training)."""
    try:
        estimate = estimate_job(
            env, template, params, snapshot, resolve_device(env.settings.device)
        )
    except Exception:
        log.warning("no training time estimate", exc_info=True)
        return None
    log.info("estimated training time %.0f s (%s)", estimate.seconds, estimate.basis)
    return estimate.seconds


def _end(
    env: Env,
    job: Job,
    owner: str,
    code: int,
    description: str,
    artifacts_key: str | None = None,
    metrics: dict[str, Any] | None = None,
    input_kinds: list[str] | None = None,
) -> None:
    with env.db.session() as session:
        current = session.get(Job, job.pk)
        if current is None or current.lease_owner != owner:
            return  # another worker owns the job now; it will record the outcome
        version = session.get(ModelVersion, job.model_version_pk)
        assert version is not None
        version.status_code = lifecycle.check_transition(version.status_code, code)
        version.status_description = description
        version.completed_at = utcnow()
        if artifacts_key:
            version.artifacts_key = artifacts_key
            version.metrics = metrics or {}
            version.progress = {**version.progress, "percent": 100.0, "eta_s": 0.0}
            # The kinds of input the template kept (validate() drops the ones it cannot read),
            # as Clarifai's input_info.fields_map: predictions refuse other kinds per input.
            kinds = {kind: kind for kind in input_kinds or []}
            version.input_info = {**version.input_info, "fields_map": kinds}
            model = session.get(Model, version.model_pk)
            assert model is not None
            record_training_evaluation(session, model.app_pk, version)
