"""PostModelVersionsTrainingTimeEstimate over gRPC and REST: seconds for every template, from an
estimated input count or a dataset version's real inputs, and a clear status when something is
missing. Run: `.venv/bin/pytest tests/api/test_estimates.py -q`."""

from __future__ import annotations

from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2

from api.helpers import assert_ok, assert_status, image_input, jpeg
from conftest import Api, Http
from modelmill.training.registry import MODEL_TYPES, TEMPLATES

TEMPLATE_CASES = [
    pytest.param(
        t.model_type_id,
        t.name if MODEL_TYPES[t.model_type_id].uses_template else "",
        id=f"{t.model_type_id}:{t.name}",
    )
    for t in TEMPLATES
]


def create_model(api: Api, model_type_id: str, model_id: str = "estimated") -> str:
    model = pb.Model(
        id=model_id,
        model_type_id=model_type_id,
        output_info=pb.OutputInfo(
            data=pb.Data(concepts=[pb.Concept(id="cat"), pb.Concept(id="dog")])
        ),
    )
    assert_ok(api.PostModels(model=model))
    return model_id


def estimate(api: Api, model_id: str, params: dict[str, Any], count: int = 0) -> Any:
    struct = struct_pb2.Struct()
    struct.update(params)
    version = pb.ModelVersion(train_info=pb.TrainInfo(params=struct))
    return api.PostModelVersionsTrainingTimeEstimate(
        model_id=model_id, model_versions=[version], estimated_input_count=count
    )


def seconds(reply: Any) -> int:
    assert_ok(reply)
    assert len(reply.training_time_estimates) == 1
    return int(reply.training_time_estimates[0].seconds)


@pytest.mark.parametrize(("model_type_id", "template"), TEMPLATE_CASES)
def test_every_template_gets_an_estimate_in_seconds(
    api: Api, model_type_id: str, template: str
) -> None:
    model_id = create_model(api, model_type_id)
    params = {"template": template} if template else {}

    small = seconds(estimate(api, model_id, params, count=100))
    large = seconds(estimate(api, model_id, params, count=10_000))

    assert 0 < small < large


def test_more_epochs_and_bigger_images_take_longer(api: Api) -> None:
    template = next(t for t in TEMPLATES if t.model_type_id == "visual-classifier")
    model_id = create_model(api, "visual-classifier")
    base = {"template": template.name, "num_epochs": 4.0, "image_size": 128.0}

    quick = seconds(estimate(api, model_id, base, count=500))
    longer = seconds(estimate(api, model_id, {**base, "num_epochs": 16.0}, count=500))
    bigger = seconds(estimate(api, model_id, {**base, "image_size": 256.0}, count=500))

    assert longer > 2 * quick
    assert bigger > 1.5 * quick  # four times the pixels


def test_an_alias_estimates_like_its_template(api: Api) -> None:
    template = next(t for t in TEMPLATES if t.aliases)
    model_id = create_model(api, template.model_type_id)

    by_name = seconds(estimate(api, model_id, {"template": template.name}, count=300))
    by_alias = seconds(estimate(api, model_id, {"template": template.aliases[0]}, count=300))

    assert by_name == by_alias


def test_a_dataset_version_gives_its_real_input_count(api: Api) -> None:
    model_id = create_model(api, "embedding-classifier")
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="photos")]))
    inputs = [
        image_input(
            f"photo-{i}",
            jpeg(640, 480),
            concepts=["cat" if i % 2 else "dog"],
            dataset_ids=["photos"],
        )
        for i in range(6)
    ]
    assert_ok(api.PostInputs(inputs=inputs))
    assert_ok(
        api.PostDatasetVersions(dataset_id="photos", dataset_versions=[pb.DatasetVersion(id="v1")])
    )

    from_version = seconds(estimate(api, model_id, {"dataset_version_id": "v1"}))
    with_dataset = seconds(
        estimate(api, model_id, {"dataset_id": "photos", "dataset_version_id": "v1"})
    )
    # The app holds exactly those six photos, so "six inputs like the app's" is the same data.
    from_count = seconds(estimate(api, model_id, {}, count=6))

    assert from_version == with_dataset == from_count
    assert from_count < seconds(estimate(api, model_id, {}, count=600))


def test_unknown_template_is_refused_with_the_known_ones(api: Api) -> None:
    template = next(t for t in TEMPLATES if MODEL_TYPES[t.model_type_id].uses_template)
    model_id = create_model(api, template.model_type_id)

    reply = estimate(api, model_id, {"template": "NoSuchTemplate"}, count=100)

    assert_status(reply, codes.MODEL_TRAINING_INVALID_PARAMS, "NoSuchTemplate", template.name)
    assert not reply.training_time_estimates


def test_unknown_hyperparameter_is_refused(api: Api) -> None:
    model_id = create_model(api, "embedding-classifier")

    reply = estimate(api, model_id, {"learning_speed": 3.0}, count=100)

    assert_status(reply, codes.MODEL_TRAINING_INVALID_PARAMS, "learning_speed")


def test_unknown_dataset_version_is_reported(api: Api) -> None:
    model_id = create_model(api, "embedding-classifier")
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="photos")]))

    alone = estimate(api, model_id, {"dataset_version_id": "ghost"})
    in_dataset = estimate(api, model_id, {"dataset_id": "photos", "dataset_version_id": "ghost"})

    assert_status(alone, codes.CONN_DOES_NOT_EXIST, "ghost")
    assert_status(in_dataset, codes.CONN_DOES_NOT_EXIST, "ghost")


def test_estimate_needs_a_count_or_a_dataset(api: Api) -> None:
    model_id = create_model(api, "embedding-classifier")

    reply = estimate(api, model_id, {})

    assert_status(
        reply, codes.MODEL_INVALID_ARGUMENT, "estimated_input_count", "dataset_version_id"
    )


def test_unknown_model_is_reported(api: Api) -> None:
    reply = estimate(api, "ghost-model", {}, count=10)

    assert_status(reply, codes.MODEL_DOES_NOT_EXIST, "ghost-model")


def test_rest_answers_a_duration_at_the_literal_path(http: Http, api: Api) -> None:
    model_id = create_model(api, "embedding-classifier")

    reply = http.post(
        f"models/{model_id}/versions/time_estimate/",
        json={
            "model_versions": [{"train_info": {"params": {}}}],
            "estimated_input_count": "250",
        },
    ).json()

    assert reply["status"]["code"] == codes.SUCCESS, reply
    (duration,) = reply["training_time_estimates"]
    assert duration.endswith("s") and float(duration[:-1]) > 0


def test_params_that_cannot_train_get_the_error_training_would(api: Api) -> None:
    """The estimate reads the template's settings (a text generator's prompt format): params it
    cannot train with get the same status and description PostModelVersions gives."""
    model_id = create_model(api, "text-to-text")
    params = {"template": "HuggingFace_AdvancedConfig", "model_config": {"torch_dtype": "float32"}}

    reply = estimate(api, model_id, params, count=100)

    assert_status(reply, codes.MODEL_TRAINING_INVALID_PARAMS, "pretrained_model_name_or_path")
