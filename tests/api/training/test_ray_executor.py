"""The Ray executor (MODELMILL_EXECUTOR=ray) behind a real server: its worker starts a local Ray
and runs each training as a Ray task with its resource request; a training reaches
MODEL_TRAINED and predicts, a running one can be cancelled, a worker killed mid-training
takes its Ray task with it, so the job's next owner never trains beside an orphan, and a
training that asks for num_gpus 2 trains on two Ray Train workers (CPU ones here).

Run: `.venv/bin/pytest tests/api/training/test_ray_executor.py -m slow -q` (a local Ray takes
seconds to start and most of a GB while it runs; one is shared by the module's tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_status, name
from api.training.conftest import (
    BARE_SETTINGS,
    TRAINING_SETTINGS,
    Workers,
    descendants,
    stop_with_descendants,
)
from api.training.support import (
    SHAPES,
    TRAINED,
    TRAINING,
    StatusLog,
    accuracy,
    cancel_training,
    create_model,
    labelled_images,
    labelled_texts,
    start_training,
    train,
    upload,
    wait_for_version,
)
from api.training.test_workers import (
    assert_stays,
    image_training,
    job_log,
    text_training,
    training_started,
)
from conftest import Account, Api, Server, create_app, make_server

pytestmark = pytest.mark.slow

RAY_SETTINGS = {**TRAINING_SETTINGS, "MODELMILL_EXECUTOR": "ray", "MODELMILL_JOB_THREADS": "1"}


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = make_server(tmp_path_factory.mktemp("ray"), settings=RAY_SETTINGS)
    server.start()
    yield server
    stop_with_descendants(server)  # the worker, and the local Ray it started


@pytest.fixture(scope="module")
def ray_user(ray_server: Server) -> Account:
    return Account("ray", ray_server.token("ray"))


@pytest.fixture
def ray_api(ray_server: Server, ray_user: Account) -> Api:
    return Api(ray_server, "grpc", ray_user.key, ray_user.user_id, create_app(ray_server, ray_user))


def test_a_training_runs_as_a_ray_task_and_predicts(ray_api: Api, ray_server: Server) -> None:
    text_training(ray_api)
    version = train(ray_api, "topics")

    assert "runs as a Ray task (1 CPUs, 0 GPUs" in ray_server.log()
    held_out = labelled_texts(4, prefix="held", held_out=True)
    assert accuracy(ray_api, "topics", held_out, version.id) >= 0.75
    assert "attempt 1 of 3" in job_log(ray_api, "topics", version.id)


def test_cancel_a_training_running_as_a_ray_task(ray_api: Api) -> None:
    image_training(ray_api)
    text_training(ray_api)
    version = start_training(ray_api, "shapes")
    log = StatusLog()
    assert training_started(ray_api, "shapes", version.id, log).status.code == TRAINING

    reply = cancel_training(ray_api, "shapes", version.id)
    assert reply["status"]["code"] == codes.SUCCESS, reply
    ended = wait_for_version(ray_api, "shapes", version.id, log=log)
    assert_status(ended.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    assert log.seen[-2:] == [TRAINING, codes.MODEL_TRAINING_FAILED], log.names()
    assert "cancelled" in job_log(ray_api, "shapes", version.id)
    # The worker and its Ray carry on with the next job.
    assert train(ray_api, "topics").status.code == TRAINED


def test_a_killed_worker_takes_its_ray_task_with_it_and_another_finishes_the_job(
    tmp_path: Path,
) -> None:
    server = make_server(tmp_path / "server", settings=BARE_SETTINGS).start()
    workers = Workers(server)
    try:
        user = Account("robust", server.token("robust"))
        api = Api(server, "grpc", user.key, user.user_id, create_app(server, user))
        image_training(api)
        version = start_training(api, "shapes")
        first = workers.start(env={**server.env, "MODELMILL_EXECUTOR": "ray"})
        log = StatusLog()
        started = training_started(api, "shapes", version.id, log)
        assert started.status.code == TRAINING, f"finished before it could be killed: {log.names()}"
        tasks = [p for p in descendants(first) if "ray::run_job" in " ".join(p.cmdline())]
        assert len(tasks) == 1, "the training runs in one Ray worker process"

        workers.kill(first)
        _, alive = psutil.wait_procs(tasks, timeout=60)
        assert not alive, "the killed worker's Ray task kept training"

        workers.start()  # a worker with the local executor finishes the job
        done = wait_for_version(api, "shapes", version.id, log=log)
        assert done.status.code == TRAINED, f"{name(done.status.code)}: {done.status.description}"
        assert_stays(api, "shapes", version.id, log)
        text = job_log(api, "shapes", version.id)
        assert "attempt 1 of 3" in text and "attempt 2 of 3" in text
    finally:
        workers.stop_all()
        stop_with_descendants(server)


def test_a_training_asking_for_two_gpus_trains_on_two_ray_train_workers(
    ray_api: Api, ray_server: Server
) -> None:
    upload(ray_api, labelled_images(4, seed=1, prefix="train"))
    create_model(ray_api, "shapes", model_type_id="visual-classifier", concepts=list(SHAPES))
    params = {
        "template": "EfficientNet_Lite0_Fast",
        "image_size": 32.0,
        "batch_size": 2.0,
        "num_epochs": 1.0,
        "num_gpus": 2.0,
    }
    version = train(ray_api, "shapes", train_params=params)

    assert version.train_info.params["num_gpus"] == 2
    assert "trains on 2 Ray Train workers (each 1 CPUs, 0 GPUs" in ray_server.log()
    assert "rank 0 of 2 (DDP)" in job_log(ray_api, "shapes", version.id)
