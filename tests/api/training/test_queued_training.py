"""What a queued training (a server without workers) decides and protects: the recommended
template when none is named, and its dataset version, which cannot be deleted under it."""

from __future__ import annotations

from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from api.helpers import assert_ok, assert_status
from api.training.support import (
    cancel_training,
    create_model,
    labelled_images,
    start_training,
    upload,
)
from modelmill.training.waits import EPOCHS
from modelmill.training.waits import START as STARTUP


def test_no_template_trains_the_recommended_one_and_says_so(bare: Any) -> None:
    api = bare().api
    upload(api, labelled_images(4))
    create_model(api, "shapes", "visual-classifier", concepts=["red-circle", "green-square"])

    version = start_training(api, "shapes", concepts=["red-circle", "green-square"])

    assert version.train_info.params["template"] == "EfficientNet_Lite0_Fast"
    listed = assert_ok(api.GetModelVersion(model_id="shapes", version_id=version.id))
    assert listed.model_version.train_info.params["template"] == "EfficientNet_Lite0_Fast"


def test_a_dataset_version_in_use_by_a_queued_training_cannot_be_deleted(bare: Any) -> None:
    api = bare().api
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="photos")]))
    images = labelled_images(4)
    for message in images:
        message.dataset_ids.append("photos")
    upload(api, images)
    assert_ok(
        api.PostDatasetVersions(dataset_id="photos", dataset_versions=[pb.DatasetVersion(id="v1")])
    )
    create_model(api, "shapes", "visual-classifier", concepts=["red-circle", "green-square"])
    version = start_training(
        api,
        "shapes",
        concepts=["red-circle", "green-square"],
        train_params={"dataset_id": "photos", "dataset_version_id": "v1"},
    )

    refused = api.DeleteDatasetVersions(dataset_id="photos", dataset_version_ids=["v1"])
    assert_status(refused, codes.CONN_INVALID_REQUEST, "v1", "shapes", "still training")
    refused_whole = api.DeleteDatasets(dataset_ids=["photos"])
    assert_status(refused_whole, codes.CONN_INVALID_REQUEST, "v1", "still training")
    assert_ok(api.GetDatasetVersion(dataset_id="photos", dataset_version_id="v1"))

    cancel_training(api, "shapes", version.id)
    assert_ok(api.DeleteDatasetVersions(dataset_id="photos", dataset_version_ids=["v1"]))


def _progress(version: pb.ModelVersion) -> dict[str, Any]:
    return dict(json_format.MessageToDict(version.metadata)["progress"])


def test_a_queued_version_shows_its_wait_in_parts_and_when_it_should_start(bare: Any) -> None:
    api = bare().api
    upload(api, labelled_images(4))
    concepts = ["red-circle", "green-square"]
    create_model(api, "shapes", "visual-classifier", concepts=concepts)
    # Nothing trains here (no worker): enough epochs that the epochs' part is shown beside the
    # start-up (parts under PART_SHOWN_S are left out of the breakdown).
    params = {"template": "EfficientNet_Lite0_Fast", "num_epochs": 20}

    first_version = start_training(api, "shapes", concepts=concepts, train_params=params)
    second_version = start_training(api, "shapes", concepts=concepts, train_params=params)
    first, second = _progress(first_version), _progress(second_version)

    assert first["jobs_ahead"] == 0 and first["starts_in_s"] == 0, "an idle server starts at once"
    parts = dict(first["estimate_parts"])
    assert {STARTUP, EPOCHS} <= set(parts)
    assert sum(parts.values()) == pytest.approx(first["estimated_s"], abs=2)
    # One worker (none here: counted as one), one training ahead: it starts when that one ends.
    assert second["jobs_ahead"] == 1
    assert second["starts_in_s"] == pytest.approx(first["estimated_s"], abs=1)
    listed = assert_ok(api.GetModelVersion(model_id="shapes", version_id=second_version.id))
    assert _progress(listed.model_version)["starts_in_s"] == second["starts_in_s"]
