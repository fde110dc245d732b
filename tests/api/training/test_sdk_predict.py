"""Inference settings sent the way the `clarifai` SDK sends them: `Model.predict_by_bytes(...,
output_config=..., inference_params=...)` puts them under `model.model_version.output_info`,
beside the version's stored settings it read with GetModel.

One text classifier is trained per backend for the module; its version stores max_concepts 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from clarifai.client.app import App
from clarifai.client.model import Model
from clarifai_grpc.grpc.api import resources_pb2 as pb

from api.helpers import assert_ok, text_input
from api.training.support import TOPICS, concepts_of, create_model, labelled_texts, train, upload
from conftest import Account, Api, Server, create_app

SPORTS = b"The striker scored a goal in the final minute of the football match."
STORED_MAX_CONCEPTS = 3


@dataclass
class Trained:
    app_id: str
    model_id: str
    version_id: str


@pytest.fixture(scope="module")
def trained(training_server: Server, trainer: Account) -> Trained:
    app_id = create_app(training_server, trainer)
    api = Api(training_server, "grpc", trainer.key, trainer.user_id, app_id)
    upload(api, labelled_texts(12))
    create_model(api, "topics", concepts=list(TOPICS))
    version = train(
        api,
        "topics",
        exclusive=True,
        inference_params={"max_concepts": float(STORED_MAX_CONCEPTS)},
    )
    return Trained(app_id, "topics", version.id)


@pytest.fixture
def sdk_model(training_server: Server, trainer: Account, trained: Trained) -> Model:
    """The model as the SDK loads it (GetModel), so its requests echo the stored settings."""
    app = App(
        user_id=trainer.user_id,
        app_id=trained.app_id,
        pat=trainer.key,
        base_url=f"http://127.0.0.1:{training_server.grpc_port}",
    )
    return app.model(model_id=trained.model_id)


def concept_ids(response: pb.Output) -> list[str]:
    return [c for c, _ in concepts_of(response.outputs[0])]


def test_sdk_predict_without_settings_uses_the_stored_ones(sdk_model: Model) -> None:
    reply = sdk_model.predict_by_bytes(SPORTS, input_type="text")
    assert len(concept_ids(reply)) == STORED_MAX_CONCEPTS
    assert concept_ids(reply)[0] == "sports"


def test_sdk_output_config_max_concepts_wins_over_the_echoed_stored_params(
    sdk_model: Model,
) -> None:
    reply = sdk_model.predict_by_bytes(SPORTS, input_type="text", output_config={"max_concepts": 1})
    assert concept_ids(reply) == ["sports"]


def test_sdk_output_config_min_value_drops_weak_concepts(sdk_model: Model) -> None:
    reply = sdk_model.predict_by_bytes(SPORTS, input_type="text", output_config={"min_value": 0.5})
    assert concept_ids(reply) == ["sports"]
    assert all(value >= 0.5 for _, value in concepts_of(reply.outputs[0]))


def test_sdk_output_config_select_concepts_keeps_only_those(sdk_model: Model) -> None:
    selected = [pb.Concept(id="cooking"), pb.Concept(id="finance")]
    reply = sdk_model.predict_by_bytes(
        SPORTS, input_type="text", output_config={"select_concepts": selected}
    )
    assert set(concept_ids(reply)) == {"cooking", "finance"}


def test_sdk_inference_params_override_the_stored_settings(sdk_model: Model) -> None:
    reply = sdk_model.predict_by_bytes(
        SPORTS, input_type="text", inference_params={"max_concepts": 2}
    )
    assert len(concept_ids(reply)) == 2
    only = sdk_model.predict_by_bytes(
        SPORTS, input_type="text", inference_params={"select_concepts": [{"id": "cooking"}]}
    )
    assert concept_ids(only) == ["cooking"]


def test_the_versions_output_info_wins_over_the_models(
    training_server: Server, trainer: Account, trained: Trained, transport: str
) -> None:
    api = Api(training_server, transport, trainer.key, trainer.user_id, trained.app_id)
    model = pb.Model()
    model.output_info.output_config.max_concepts = 2
    model.output_info.params.update({"min_value": 0.0})
    model.model_version.output_info.output_config.max_concepts = 1
    reply = assert_ok(
        api.PostModelOutputs(
            model_id=trained.model_id, inputs=[text_input("q", SPORTS.decode())], model=model
        )
    )
    assert concept_ids(reply) == ["sports"]
    # A setting only the model's output_info names still applies.
    model.model_version.output_info.ClearField("output_config")
    reply = assert_ok(
        api.PostModelOutputs(
            model_id=trained.model_id, inputs=[text_input("q", SPORTS.decode())], model=model
        )
    )
    assert len(concept_ids(reply)) == 2
