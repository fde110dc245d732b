"""The training runtime under stress, with `modelmill worker` processes the tests start and kill:
a killed worker's job is finished by another, a job that keeps dying fails after the set number
of attempts, a training can be cancelled or deleted, and no status leaves a terminal state.

Each test gets a fresh server without workers of its own (MODELMILL_WORKERS=0) and a 4-second
lease, so a killed worker's job is claimed again within seconds.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psutil
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from api.helpers import assert_ok, assert_status, name
from api.training.support import (
    TERMINAL,
    TRAINED,
    TRAINING,
    StatusLog,
    cancel_training,
    create_model,
    labelled_images,
    labelled_texts,
    start_training,
    upload,
    wait_for_version,
    wait_until,
)
from conftest import Api

STAY_S = 3.0  # how long a terminal status is watched to see it stays


def training_started(api: Api, model_id: str, version_id: str, log: StatusLog) -> pb.ModelVersion:
    """Wait until the template is at work: status TRAINING with a first progress report."""
    return wait_for_version(
        api,
        model_id,
        version_id,
        log=log,
        until=lambda v: (
            v.status.code in TERMINAL or (v.status.code == TRAINING and "elapsed_s" in progress(v))
        ),
    )


def progress(version: pb.ModelVersion) -> dict[str, Any]:
    return dict(json_format.MessageToDict(version.metadata).get("progress", {}))


def assert_stays(api: Api, model_id: str, version_id: str, log: StatusLog) -> None:
    """Poll for STAY_S more seconds: a terminal status must not change."""
    deadline = time.monotonic() + STAY_S
    while time.monotonic() < deadline:
        wait_for_version(api, model_id, version_id, log=log, through_model=False)
        time.sleep(0.2)


def image_training(api: Api, per_class: int = 48) -> None:
    """A model whose training takes a while: images must go through EfficientNet first."""
    upload(api, labelled_images(per_class, concepts=["red-circle", "blue-triangle"]))
    create_model(api, "shapes", concepts=["red-circle", "blue-triangle"])


def text_training(api: Api, model_id: str = "topics") -> None:
    upload(api, labelled_texts(6, prefix=model_id))
    create_model(api, model_id, concepts=["cooking", "sports", "finance"])


def job_log(api: Api, model_id: str, version_id: str) -> str:
    import requests

    url = assert_ok(
        api.GetModelVersion(model_id=model_id, version_id=version_id)
    ).model_version.train_log
    return requests.get(url, timeout=30).text


def cancel_while_queued(api: Api) -> tuple[str, StatusLog]:
    text_training(api)
    queued = start_training(api, "topics")
    reply = cancel_training(api, "topics", queued.id)
    assert reply["status"]["code"] == codes.SUCCESS, reply
    # The cancel route writes enums as names ("MODEL_TRAINING_FAILED"), the REST gateway as
    # numbers; accept both until the route follows the gateway.
    code = reply["model_version"]["status"]["code"]
    assert code in (codes.MODEL_TRAINING_FAILED, "MODEL_TRAINING_FAILED"), reply
    log = StatusLog()
    version = wait_for_version(api, "topics", queued.id, log=log)
    assert_status(version.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    return queued.id, log


def test_cancel_a_queued_training(bare: Any) -> None:
    api = bare().api
    version_id, log = cancel_while_queued(api)
    again = cancel_training(api, "topics", version_id)
    assert again["status"]["code"] == codes.MODEL_INVALID_ARGUMENT, again
    assert "finished" in again["status"]["description"]
    assert_stays(api, "topics", version_id, log)
    assert log.seen == [codes.MODEL_TRAINING_FAILED], log.names()


@pytest.mark.slow
def test_a_worker_started_later_leaves_a_cancelled_training_alone(bare: Any) -> None:
    setup = bare()
    api = setup.api
    cancelled_id, log = cancel_while_queued(api)
    setup.workers.start()
    second = start_training(api, "topics")
    assert wait_for_version(api, "topics", second.id).status.code == TRAINED
    assert_stays(api, "topics", cancelled_id, log)
    assert log.seen == [codes.MODEL_TRAINING_FAILED], log.names()


@pytest.mark.slow
def test_a_killed_worker_loses_its_job_to_another_that_finishes_it(bare: Any) -> None:
    setup = bare()
    api, workers = setup.api, setup.workers
    image_training(api)
    version = start_training(api, "shapes")
    first = workers.start()
    log = StatusLog()
    started = training_started(api, "shapes", version.id, log)
    assert started.status.code == TRAINING, f"finished before it could be killed: {log.names()}"
    children = workers.job_processes(first)
    assert children, "the worker runs its job in a child process"

    workers.kill(first)
    # The orphaned training process notices its worker is gone and stops too.
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, "the killed worker's training process kept running"

    workers.start()
    done = wait_for_version(api, "shapes", version.id, log=log)
    assert done.status.code == TRAINED, f"{name(done.status.code)}: {done.status.description}"
    assert log.seen[-2:] == [TRAINING, TRAINED], log.names()
    assert_stays(api, "shapes", version.id, log)
    text = job_log(api, "shapes", version.id)
    assert "attempt 1 of 3" in text and "attempt 2 of 3" in text
    assert done.metrics.status.code == codes.MODEL_EVALUATED


@pytest.mark.slow
def test_a_job_that_keeps_dying_fails_after_max_attempts(bare: Any) -> None:
    setup = bare({"MODELMILL_JOB_MAX_ATTEMPTS": "2"})
    api, workers = setup.api, setup.workers
    text_training(api)
    version = start_training(api, "topics")
    worker = workers.start()
    killed: set[int] = set()
    log = StatusLog()

    def kill_each_attempt() -> pb.ModelVersion | None:
        # Each attempt's training process dies at once, as if the OOM killer took it.
        for child in workers.job_processes(worker):
            if child.pid not in killed:
                killed.add(child.pid)
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        current = assert_ok(
            api.GetModelVersion(model_id="topics", version_id=version.id)
        ).model_version
        log.add(current.status.code)
        return current if current.status.code in TERMINAL else None

    failed = wait_until(kill_each_attempt, "the job to fail for good", every_s=0.05)
    assert_status(failed.status, codes.MODEL_TRAINING_FAILED, "2 times", "will not be retried")
    assert len(killed) == 2, f"killed {len(killed)} attempts"
    assert worker.poll() is None, "the worker itself survives its jobs' crashes"
    assert_stays(api, "topics", version.id, log)

    # The worker goes on to the next job.
    second = start_training(api, "topics")
    assert wait_for_version(api, "topics", second.id).status.code == TRAINED


@pytest.mark.slow
def test_cancel_a_running_training(bare: Any) -> None:
    setup = bare({"MODELMILL_JOB_THREADS": "1"})
    api = setup.api
    image_training(api)
    version = start_training(api, "shapes")
    setup.workers.start()
    log = StatusLog()
    started = training_started(api, "shapes", version.id, log)
    assert started.status.code == TRAINING, log.names()
    # While it trains: progress on the version, and the live train log behind its link.
    shown = progress(started)
    assert 0 <= shown["percent"] < 100 and shown["total_inputs"] == 96, shown
    # The training time estimate made as it started: the ETA before there is progress to go by.
    assert shown["estimated_s"] > 0 and shown["eta_s"] >= 0, shown
    assert "attempt 1 of 3" in (text := job_log(api, "shapes", version.id))
    assert "1 CPU threads" in text, "MODELMILL_JOB_THREADS sets the job's torch threads"

    reply = cancel_training(api, "shapes", version.id)
    assert reply["status"]["code"] == codes.SUCCESS, reply
    ended = wait_for_version(api, "shapes", version.id, log=log)
    assert_status(ended.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    assert log.seen[-2:] == [TRAINING, codes.MODEL_TRAINING_FAILED], log.names()
    assert_stays(api, "shapes", version.id, log)
    assert "cancelled" in job_log(api, "shapes", version.id)


@pytest.mark.slow
def test_deleting_a_training_version_stops_it_and_the_worker_carries_on(bare: Any) -> None:
    setup = bare()
    api, workers = setup.api, setup.workers
    image_training(api)
    text_training(api)
    doomed = start_training(api, "shapes")
    worker = workers.start()
    assert training_started(api, "shapes", doomed.id, StatusLog()).status.code == TRAINING
    children = workers.job_processes(worker)

    assert_ok(api.DeleteModelVersion(model_id="shapes", version_id=doomed.id))
    gone = api.GetModelVersion(model_id="shapes", version_id=doomed.id)
    assert_status(gone, codes.MODEL_DOES_NOT_EXIST, doomed.id)
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, "the deleted version's training kept running"

    next_version = start_training(api, "topics")
    assert wait_for_version(api, "topics", next_version.id).status.code == TRAINED
    assert worker.poll() is None, f"the worker died:\n{workers.log()[-3000:]}"
