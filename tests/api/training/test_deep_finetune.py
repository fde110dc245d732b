"""Deep fine-tuning through the official client: a visual and a text classifier trained from
templates on tiny data, predicted, exported, trained incrementally with a new concept, stopped
at a time cap, and the invalid-data tolerance both ways."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from api.helpers import assert_ok, text_input
from api.training.support import (
    SHAPES,
    TERMINAL,
    TOPICS,
    create_model,
    labelled_images,
    labelled_texts,
    start_training,
    top_concept,
    train,
    upload,
    version_request,
    wait_for_version,
)
from conftest import Api

SHAPE_CONCEPTS = list(SHAPES)
# Tiny settings so a training takes seconds on 2 cores; the SDK sends numbers as floats.
TINY_VISUAL = {
    "template": "EfficientNet_Lite0_Fast",
    "image_size": 32.0,
    "batch_size": 8.0,
    "num_epochs": 2.0,
    "pretrained_weights": "ImageNet-1k",
    "concepts_mutually_exclusive": True,  # the SDK puts every template field in train params
}
EXPORT_TIMEOUT_S = 300.0


def _wait_for_export(api: Api, model_id: str, version_id: str) -> pb.ModelVersionExport:
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while True:
        export = assert_ok(api.GetModelVersionExport(model_id=model_id, version_id=version_id))
        if export.export.status.code in (codes.MODEL_EXPORTED, codes.MODEL_EXPORTING_FAILED):
            return export.export
        assert time.monotonic() < deadline, export.export.status
        time.sleep(0.5)


@pytest.mark.slow
def test_visual_classifier_trains_predicts_exports_and_trains_incrementally(
    trainer_api: Api,
) -> None:
    api = trainer_api
    upload(api, labelled_images(6, seed=1, prefix="train"))
    create_model(api, "shapes", model_type_id="visual-classifier", concepts=SHAPE_CONCEPTS)
    version = train(api, "shapes", train_params=TINY_VISUAL)
    assert version.train_info.params["template"] == "EfficientNet_Lite0_Fast"
    assert version.metrics.summary.macro_avg_roc_auc > 0  # evaluated on the held-out split

    held_out = labelled_images(2, seed=2, prefix="held-out")
    reply = assert_ok(api.PostModelOutputs(model_id="shapes", inputs=held_out))
    assert all(len(o.data.concepts) == len(SHAPE_CONCEPTS) for o in reply.outputs)

    assert_ok(api.PutModelVersionExports(model_id="shapes", version_id=version.id))
    export = _wait_for_export(api, "shapes", version.id)
    assert export.status.code == codes.MODEL_EXPORTED, export.status
    archive = requests.get(export.url, timeout=30)
    assert archive.status_code == 200 and archive.content[:2] == b"PK"  # a zip, fetched unsigned-in

    # Incremental: new data; the version starts from the first one's checkpoint.
    upload(api, labelled_images(6, seed=3, prefix="more"))
    request = version_request(
        concepts=[*SHAPE_CONCEPTS],
        train_params={**TINY_VISUAL, "num_epochs": 1.0},
    )
    request.train_info.resume_from_model.id = "shapes"
    request.train_info.resume_from_model.model_version.id = version.id
    second = assert_ok(api.PostModelVersions(model_id="shapes", model_versions=[request]))
    done = wait_for_version(api, "shapes", second.model.model_version.id)
    assert done.status.code == codes.MODEL_TRAINED, done.status
    assert done.train_info.resume_from_model.model_version.id == version.id


@pytest.mark.slow
def test_training_stops_at_the_time_cap_and_keeps_its_best_weights(trainer_api: Api) -> None:
    api = trainer_api
    upload(api, labelled_images(4, seed=4, prefix="cap"))
    create_model(api, "capped", model_type_id="visual-classifier", concepts=SHAPE_CONCEPTS)
    # A cap of a fraction of a second: the first epoch ends past it, so training stops there.
    version = train(
        api,
        "capped",
        train_params={**TINY_VISUAL, "num_epochs": 50.0, "max_training_minutes": 0.001},
    )
    assert "time cap" in version.status.description
    reply = assert_ok(api.PostModelOutputs(model_id="capped", inputs=labelled_images(1, seed=5)))
    assert reply.outputs[0].data.concepts


@pytest.mark.slow
def test_invalid_data_tolerance_both_ways(trainer_api: Api) -> None:
    api = trainer_api
    images = labelled_images(4, seed=6, prefix="img")
    # Texts labelled with the image concepts cannot train a visual classifier: unusable inputs.
    texts = [text_input(f"txt-{i}", "a red circle", concepts=[SHAPE_CONCEPTS[0]]) for i in range(3)]
    upload(api, [*images, *texts])
    create_model(api, "strict", model_type_id="visual-classifier", concepts=SHAPE_CONCEPTS)
    strict = start_training(
        api, "strict", train_params={**TINY_VISUAL, "invalid_data_tolerance_percent": 0.0}
    )
    failed = wait_for_version(api, "strict", strict.id)
    assert failed.status.code == codes.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED
    assert "txt-" in failed.status.description

    create_model(api, "lenient", model_type_id="visual-classifier", concepts=SHAPE_CONCEPTS)
    lenient = train(
        api, "lenient", train_params={**TINY_VISUAL, "invalid_data_tolerance_percent": 50.0}
    )
    assert lenient.status.code == codes.MODEL_TRAINED


@pytest.mark.slow
def test_text_classifier_fine_tunes_minilm(trainer_api: Api) -> None:
    api = trainer_api
    upload(api, labelled_texts(8))
    topics = list(TOPICS)
    create_model(api, "topics", model_type_id="text-classifier", concepts=topics)
    params = {
        "template": "HF_BERT_FullFineTune",
        "num_epochs": 1.0,
        "batch_size": 8.0,
        "max_length": 32.0,
    }
    version = train(api, "topics", train_params=params)
    assert version.status.code == codes.MODEL_TRAINED
    reply = assert_ok(
        api.PostModelOutputs(model_id="topics", inputs=[text_input("q", "The chef baked bread")])
    )
    assert top_concept(reply.outputs[0]) in topics


@pytest.mark.slow
def test_a_killed_workers_deep_training_resumes_from_its_last_epoch(bare: Any) -> None:
    setup = bare()
    api, workers = setup.api, setup.workers
    upload(api, labelled_images(6, seed=7, prefix="resume"))
    create_model(api, "resumed", model_type_id="visual-classifier", concepts=SHAPE_CONCEPTS)
    params = {**TINY_VISUAL, "num_epochs": 30.0, "early_stopping_patience": 0.0}
    version = start_training(api, "resumed", train_params=params)
    first = workers.start()

    def checkpointed(v: pb.ModelVersion) -> bool:
        progress = json_format.MessageToDict(v.metadata).get("progress", {})
        # Progress during epoch 2 means epoch 1 ended and its checkpoint was stored.
        return v.status.code in TERMINAL or progress.get("epoch", 0) >= 2

    at_kill = wait_for_version(api, "resumed", version.id, until=checkpointed)
    assert at_kill.status.code == codes.MODEL_TRAINING, "finished before it could be killed"
    workers.kill(first)
    workers.start()
    done = wait_for_version(api, "resumed", version.id)
    assert done.status.code == codes.MODEL_TRAINED, done.status
    log = requests.get(done.train_log, timeout=30).text
    assert "resuming from this job's last checkpoint" in log, log
