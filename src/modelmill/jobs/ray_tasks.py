"""The Ray executor: each claimed job runs as a Ray task, on a local Ray the worker starts or on
the cluster MODELMILL_RAY_ADDRESS names, asking for the job's CPUs, GPU and estimated memory.

The task runs the entry a local child process runs (`child.run_job`) in a fresh Ray worker
process (`max_calls=1`), and Ray never retries it: the database queue is the record of jobs, and
the worker that claimed one decides whether it runs again. A worker that dies takes its tasks
with it (Ray ends a driver's tasks when the driver goes), and its lease lapses as before.
With MODELMILL_RAY_TRAIN_WORKERS above 1 a training's task runs Ray Train's TorchTrainer
instead: rank 0 runs the job as above, the other ranks `train.follow_training`, and the shared
fine-tuning loop trains with DDP in the process group Ray Train sets up.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, get_device

from modelmill.jobs.child import run_job
from modelmill.jobs.train import estimated_peak_memory, follow_training
from modelmill.services import Env
from modelmill.services.training import PLAN
from modelmill.settings import Settings
from modelmill.store.tables import Job
from modelmill.training.runner import TrainingPlan

log = logging.getLogger("modelmill.worker")
MIB = 1024 * 1024
# Jobs pass nothing through Ray's object store (they read the database and the blob store), so a
# local Ray keeps it at its smallest useful size rather than 30% of the machine's memory.
OBJECT_STORE_BYTES = 128 * MIB
KILL_WAIT_S = 30.0


@dataclass(frozen=True)
class Request:
    """What one job's task asks Ray for; `memory` in bytes (None: no memory request)."""

    num_cpus: int
    num_gpus: int
    memory: int | None

    def describe(self) -> str:
        memory = f"{self.memory / MIB:.0f} MiB" if self.memory else "memory not estimated"
        return f"{self.num_cpus} CPUs, {self.num_gpus} GPUs, {memory}"

    def per_worker(self) -> dict[str, float]:
        """The request of one Ray Train worker (a GPU each comes with use_gpu)."""
        return {"CPU": self.num_cpus, **({"memory": self.memory} if self.memory else {})}


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker of a training on several: rank 0 is the job, the others follow."""
    device = get_device()
    if device.type == "cuda":  # the GPU Ray Train gave this rank, for its "cuda" tensors
        torch.cuda.set_device(device)
    rank = ray.train.get_context().get_world_rank()
    if rank == 0:
        run_job(config["settings"], config["job_pk"], config["token"])
    else:
        follow_training(config["settings"], config["job_pk"], rank)


def _train_on_workers(
    settings_values: dict[str, Any],
    job_pk: int,
    token: str,
    workers: int,
    per_worker: dict[str, float],
    use_gpu: bool,
) -> None:
    """The task of a training on several workers: it waits while TorchTrainer runs them."""
    settings = Settings(**settings_values)
    TorchTrainer(
        _train_loop,
        train_loop_config={"settings": settings_values, "job_pk": job_pk, "token": token},
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        # Ray Train keeps its run's state there; checkpoints go to the blob store, not Ray.
        run_config=RunConfig(
            name=f"job-{job_pk}-{token.rsplit('/', 1)[-1]}",
            storage_path=str((settings.data_dir / "work" / "ray-train").resolve()),
        ),
    ).fit()


class RayTask:
    def __init__(self, ref: ray.ObjectRef) -> None:
        self.ref = ref

    def wait(self, timeout_s: float) -> bool:
        ready, _ = ray.wait([self.ref], timeout=timeout_s)
        return bool(ready)

    def kill(self) -> None:
        ray.cancel(self.ref, force=True)  # kills the task's worker process
        self.wait(KILL_WAIT_S)

    def describe_end(self) -> str:
        try:
            ray.get(self.ref, timeout=0)
        except Exception as error:
            return f"the Ray task ended with {type(error).__name__}"
        return "the Ray task returned"


def _largest_node() -> dict[str, float]:
    """The most of each resource one live node of the cluster has."""
    largest: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for name, amount in node.get("Resources", {}).items():
                largest[name] = max(largest.get(name, 0.0), float(amount))
    return largest


class RayExecutor:
    def __init__(self, settings: Settings, env: Env) -> None:
        self.settings, self.env = settings, env
        local: dict[str, Any] = (
            {}
            if settings.ray_address
            else {"num_cpus": os.cpu_count() or 1, "object_store_memory": OBJECT_STORE_BYTES}
        )
        ray.init(
            address=settings.ray_address or None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            **local,
        )
        self.task = ray.remote(max_retries=0, max_calls=1)(run_job)
        # It only waits for its workers: no CPU of its own, or it would hold one of theirs.
        self.trainer = ray.remote(max_retries=0, max_calls=1, num_cpus=0)(_train_on_workers)

    def request(self, job: Job) -> Request:
        """The job's CPU threads, a GPU when the device setting wants one and the cluster has
        one, and the estimator's peak memory; each capped at the largest node, as a request no
        node can meet would wait forever."""
        largest = _largest_node()
        gpus = 1 if self.settings.device != "cpu" and largest.get("GPU", 0) >= 1 else 0
        cpus = max(1, min(self.settings.resolved_job_threads, int(largest.get("CPU", 1))))
        memory = estimated_peak_memory(self.env, job)
        if memory and "memory" in largest:
            memory = min(memory, int(largest["memory"]))
        return Request(cpus, gpus, memory or None)

    def train_workers(self, job: Job, request: Request) -> int:
        """The Ray Train workers a job trains on: MODELMILL_RAY_TRAIN_WORKERS or the training's
        num_gpus, whichever is more, at most one per GPU of the cluster when they take GPUs;
        1 (a plain task) for other jobs."""
        if job.kind != "train":
            return 1
        plan = TrainingPlan.from_json(job.payload[PLAN])
        workers = max(self.settings.ray_train_workers, plan.num_gpus)
        if request.num_gpus:
            workers = min(workers, int(ray.cluster_resources().get("GPU", 1)))
        return max(workers, 1)

    def start(self, job: Job, token: str) -> RayTask:
        request = self.request(job)
        workers = self.train_workers(job, request)
        if workers > 1:
            ref = self.trainer.remote(
                self.settings.model_dump(),
                job.pk,
                token,
                workers,
                request.per_worker(),
                request.num_gpus > 0,
            )
            log.info(
                "job %s trains on %d Ray Train workers (each %s)",
                job.pk,
                workers,
                request.describe(),
            )
            return RayTask(ref)
        ref = self.task.options(
            num_cpus=request.num_cpus,
            num_gpus=request.num_gpus,
            **({"memory": request.memory} if request.memory else {}),
        ).remote(self.settings.model_dump(), job.pk, token)
        log.info("job %s runs as a Ray task (%s)", job.pk, request.describe())
        return RayTask(ref)

    def close(self) -> None:
        ray.shutdown()
