"""The `clarifai` SDK's transfer-learning flow against modelmill over gRPC: create_model →
get_params → update_params → train → training_status until MODEL_TRAINED, with the train log
downloaded from its signed link."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, name, text_input
from api.training.support import (
    TERMINAL,
    TOPICS,
    TRAINING_TIMEOUT_S,
    StatusLog,
    labelled_texts,
    predict,
    top_concept,
    upload,
)
from conftest import Account, Api, Server, create_app

CONCEPTS = list(TOPICS)


@pytest.mark.slow
def test_sdk_trains_a_transfer_learning_model(
    training_server: Server, trainer: Account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarifai.client.app import App

    monkeypatch.chdir(tmp_path)  # training_status(training_logs=True) writes VERSION.log here
    app_id = create_app(training_server, trainer)
    api = Api(training_server, "grpc", trainer.key, trainer.user_id, app_id)
    upload(api, labelled_texts(12))

    app = App(
        user_id=trainer.user_id,
        app_id=app_id,
        pat=trainer.key,
        base_url=f"http://127.0.0.1:{training_server.grpc_port}",
    )
    model = app.create_model(model_id="sdk-topics", model_type_id="embedding-classifier")
    params = model.get_params(save_to=str(tmp_path / "params.yaml"))
    assert (tmp_path / "params.yaml").exists()
    assert "concepts" in str(params) or "concepts" in params.get("train_params", {}), params
    model.update_params(concepts=CONCEPTS)
    version_id = model.train()
    assert version_id

    statuses = StatusLog()
    deadline = time.monotonic() + TRAINING_TIMEOUT_S
    while True:
        status = model.training_status(version_id=version_id)
        statuses.add(status.code)
        if status.code in TERMINAL:
            break
        assert time.monotonic() < deadline, f"still {statuses.names()}"
        time.sleep(0.5)
    assert status.code == codes.MODEL_TRAINED, f"{name(status.code)}: {status.description}"
    assert statuses.seen[0] in (
        codes.MODEL_QUEUED_FOR_TRAINING,
        codes.MODEL_TRAINING,
        codes.MODEL_TRAINED,
    )

    # The SDK downloads the train log from the link in the version, without a key.
    again = model.training_status(version_id=version_id, training_logs=True)
    assert again.code == codes.MODEL_TRAINED
    log = (tmp_path / f"{version_id}.log").read_text()
    assert "attempt 1 of" in log and "trained" in log

    # The version trained on the app's labelled inputs for the concepts the SDK sent.
    version = assert_ok(
        api.GetModelVersion(model_id="sdk-topics", version_id=version_id)
    ).model_version
    assert sorted(c.id for c in version.output_info.data.concepts) == sorted(CONCEPTS)
    assert version.train_info.params["dataset_id"] == "sdk-topics-training-data"
    reply = assert_ok(
        predict(
            api,
            "sdk-topics",
            [
                text_input("q", "The goalkeeper saved a penalty in the cup final."),
            ],
        )
    )
    assert top_concept(reply.outputs[0]) == "sports"
