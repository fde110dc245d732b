"""A training on two Ray Train workers (MODELMILL_RAY_TRAIN_WORKERS=2) behind a real server:
TorchTrainer runs the fine-tuning loop with torch DDP over gloo on the CPU; rank 0 alone
reports, checkpoints and records the version, whose weights the ordinary predictor loads; a
cancel stops every rank at the same step and leaves no worker behind.

Run: `.venv/bin/pytest tests/api/training/test_ray_train.py -m slow -q`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

import psutil
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status
from api.training.conftest import TRAINING_SETTINGS, descendants, stop_with_descendants
from api.training.support import (
    SHAPES,
    TRAINING,
    StatusLog,
    cancel_training,
    create_model,
    labelled_images,
    start_training,
    train,
    upload,
    wait_for_version,
)
from api.training.test_workers import job_log, progress
from conftest import Account, Api, Server, create_app, make_server

pytestmark = pytest.mark.slow

DDP_SETTINGS = {
    **TRAINING_SETTINGS,
    "MODELMILL_EXECUTOR": "ray",
    "MODELMILL_RAY_TRAIN_WORKERS": "2",
    "MODELMILL_JOB_THREADS": "1",
}
# The shipped ImageNet weights: from random ones (pretrained_weights None) EfficientNet-Lite0
# does not learn 30 tiny images in a few epochs, on one process or two (its loss wanders).
TINY_VISUAL = {
    "template": "EfficientNet_Lite0_Fast",
    "image_size": 32.0,
    "batch_size": 4.0,  # per worker
    "num_epochs": 5.0,
    "pretrained_weights": "ImageNet-1k",
    "concepts_mutually_exclusive": True,
}
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+: (\{.*\})")


@pytest.fixture(scope="module")
def ddp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Account]]:
    server = make_server(tmp_path_factory.mktemp("ray-train"), settings=DDP_SETTINGS).start()
    try:
        yield server, Account("ddp", server.token("ddp"))
    finally:
        stop_with_descendants(server)  # the worker, its local Ray and Ray Train's workers


@pytest.fixture
def ddp_api(ddp_server: tuple[Server, Account]) -> Api:
    """A client on a fresh app of the module's server."""
    server, user = ddp_server
    api = Api(server, "grpc", user.key, user.user_id, create_app(server, user))
    upload(api, labelled_images(10, seed=1, prefix="train"))
    return api


def epoch_losses(log: str) -> list[float]:
    return [float(ast.literal_eval(match[2])["loss"]) for match in EPOCH_LINE.finditer(log)]


def test_a_training_on_two_ray_train_workers_learns_and_predicts(ddp_api: Api) -> None:
    concepts = list(SHAPES)
    create_model(ddp_api, "shapes", model_type_id="visual-classifier", concepts=concepts)
    version = train(ddp_api, "shapes", train_params=TINY_VISUAL)

    server: Server = ddp_api.server
    assert "trains on 2 Ray Train workers" in server.log()
    text = job_log(ddp_api, "shapes", version.id)
    assert "rank 0 of 2 (DDP)" in text
    losses = epoch_losses(text)
    assert len(losses) >= 3 and losses[-1] < losses[0] / 2, losses
    # The weights rank 0 saved load in the ordinary predictor.
    reply = assert_ok(
        ddp_api.PostModelOutputs(
            model_id="shapes", inputs=labelled_images(1, seed=2, prefix="held-out")
        )
    )
    assert all(len(o.data.concepts) == len(concepts) for o in reply.outputs)


def test_cancel_a_training_on_two_ray_train_workers(ddp_api: Api) -> None:
    create_model(ddp_api, "long", model_type_id="visual-classifier", concepts=list(SHAPES))
    version = start_training(ddp_api, "long", train_params={**TINY_VISUAL, "num_epochs": 500.0})
    log = StatusLog()
    training = wait_for_version(
        ddp_api, "long", version.id, log=log, until=lambda v: "epoch" in progress(v)
    )
    assert training.status.code == TRAINING, log.names()
    server: Server = ddp_api.server
    ranks = [p for p in descendants(server.process) if "RayTrainWorker" in " ".join(p.cmdline())]
    assert len(ranks) == 2, ranks

    reply = cancel_training(ddp_api, "long", version.id)
    assert reply["status"]["code"] == codes.SUCCESS, reply
    ended = wait_for_version(ddp_api, "long", version.id, log=log)
    assert_status(ended.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    # Rank 0 stopped at a step and recorded it (the worker did not have to kill anything).
    assert "cancelled" in job_log(ddp_api, "long", version.id)
    _, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive, "a Ray Train worker outlived the cancelled training"
