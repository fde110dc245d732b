"""PostModelVersions and PostModelOutputs refuse what cannot work, at once, each with its own status
and a description that says what to fix; a refused training leaves nothing behind: no version,
no frozen dataset, no job."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from sqlalchemy import func, select

from api.helpers import assert_ok, assert_status, text_input
from api.training.support import (
    cancel_training,
    create_model,
    labelled_texts,
    predict,
    start_training,
    upload,
    version_request,
    wait_for_version,
)
from conftest import Account, Api, Server, create_app


@pytest.fixture(scope="session")
def jobs_count(training_server: Server) -> Iterator[Any]:
    """How many jobs the training server's database holds, of any kind and state."""
    from modelmill.store.database import Database
    from modelmill.store.tables import Job

    database = Database(training_server.database_url)

    def count() -> int:
        with database.session() as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)

    yield count
    database.dispose()


@pytest.fixture
def refused(tapi: Api, jobs_count: Any) -> Any:
    """`refused(model_id, **version)` sends PostModelVersions, checks that nothing was written, and
    returns the reply."""

    def send(model_id: str, **version: Any) -> Any:
        jobs_before = jobs_count()
        reply = tapi.PostModelVersions(
            model_id=model_id, model_versions=[version_request(**version)]
        )
        assert reply.status.code != codes.SUCCESS, "the training was accepted"
        assert_nothing_written(tapi, model_id)
        assert jobs_count() == jobs_before, "a job was queued"
        return reply

    return send


def assert_nothing_written(api: Api, model_id: str) -> None:
    versions = api.ListModelVersions(model_id=model_id)
    if versions.status.code == codes.SUCCESS:
        assert not versions.model_versions, [v.id for v in versions.model_versions]
    datasets = assert_ok(api.ListDatasets()).datasets
    assert f"{model_id}-training-data" not in [d.id for d in datasets], (
        "an automatic dataset was made"
    )


def test_unknown_template_of_a_type_that_needs_one(tapi: Api, refused: Any) -> None:
    upload(tapi, labelled_texts(2, topics=["cooking"]))
    create_model(tapi, "classifier", "visual-classifier", concepts=["cooking"])

    unknown = refused("classifier", train_params={"template": "MMClassification_Nope"})
    assert_status(
        unknown, codes.MODEL_TRAINING_INVALID_PARAMS, "MMClassification_Nope", "visual-classifier"
    )


@pytest.mark.parametrize(
    ("request_fields", "words"),
    [
        ({"train_params": {"enrich_dataset": "Sometimes"}}, ["enrich_dataset"]),
        ({"train_params": {"learning_rate": 0.1}}, ["learning_rate", "unknown"]),
        ({"inference_params": {"min_value": 1.5}}, ["min_value"]),
        ({"inference_params": {"max_concepts": 0}}, ["max_concepts"]),
        ({"inference_params": {"max_concepts": 2.5}}, ["max_concepts"]),
        (
            {"train_params": {"invalid_data_tolerance_percent": 150}},
            ["invalid_data_tolerance_percent"],
        ),
        (
            {"train_params": {"invalid_data_tolerance_percent": "lots"}},
            ["invalid_data_tolerance_percent", "'lots'", "number"],
        ),
        (
            {"train_params": {"max_training_minutes": "an hour"}},
            ["max_training_minutes", "'an hour'", "number"],
        ),
        ({"train_params": {"max_training_minutes": [5]}}, ["max_training_minutes", "number"]),
        ({"train_params": {"max_training_minutes": "nan"}}, ["max_training_minutes", "nan"]),
        ({"train_params": {"num_gpus": -1}}, ["num_gpus", "whole number"]),
        ({"train_params": {"num_gpus": 1.5}}, ["num_gpus", "whole number"]),
        ({"train_params": {"num_gpus": "two"}}, ["num_gpus", "'two'", "number"]),
    ],
    ids=[
        "enum-value",
        "unknown-param",
        "min-value-range",
        "max-concepts-range",
        "max-concepts-int",
        "tolerance-range",
        "tolerance-text",
        "cap-text",
        "cap-list",
        "cap-nan",
        "gpus-negative",
        "gpus-fraction",
        "gpus-text",
    ],
)
def test_bad_hyperparameters(
    tapi: Api, refused: Any, request_fields: dict[str, Any], words: list[str]
) -> None:
    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics", concepts=["cooking", "sports"])
    reply = refused("topics", **request_fields)
    assert_status(reply, codes.MODEL_TRAINING_INVALID_PARAMS, *words)


def test_unknown_concept(tapi: Api, refused: Any) -> None:
    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics")
    reply = refused("topics", concepts=["cooking", "unicorn"])
    assert_status(reply, codes.MODEL_INVALID_ARGUMENT, "unicorn", tapi.app_id)


def test_no_concepts(tapi: Api, refused: Any) -> None:
    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics")
    assert_status(refused("topics"), codes.MODEL_INVALID_ARGUMENT, "concepts")


def test_no_input_labelled_with_the_concepts(tapi: Api, refused: Any) -> None:
    upload(
        tapi, labelled_texts(3, topics=["cooking"]) + [text_input("unlabelled", "no label here")]
    )
    assert_ok(tapi.PostConcepts(concepts=[pb.Concept(id="sports"), pb.Concept(id="finance")]))
    create_model(tapi, "topics")
    reply = refused("topics", concepts=["sports", "finance"])
    assert_status(reply, codes.MODEL_TRAINING_NO_DATA, "sports", "finance")


def test_a_concept_without_positive_examples(tapi: Api, refused: Any) -> None:
    negatives = [
        text_input(f"not-finance-{n}", text, concepts=[pb.Concept(id="finance", value=0.0)])
        for n, text in enumerate(["A quiet walk in the park.", "The cat sleeps all day."])
    ]
    upload(tapi, labelled_texts(3, topics=["cooking"]) + negatives)
    create_model(tapi, "topics")
    reply = refused("topics", concepts=["cooking", "finance"])
    assert_status(reply, codes.MODEL_TRAINING_NO_POSITIVES, "finance")
    assert "cooking" not in reply.status.description


def test_one_concept_cannot_be_mutually_exclusive(tapi: Api, refused: Any) -> None:
    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics")
    reply = refused("topics", concepts=["cooking"], exclusive=True)
    assert_status(
        reply, codes.MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS, "cooking", "mutually exclusive"
    )


def test_a_dataset_version_of_another_app(
    tapi: Api, refused: Any, training_server: Server, trainer: Account
) -> None:
    other = Api(
        training_server,
        tapi.transport,
        trainer.key,
        trainer.user_id,
        create_app(training_server, trainer),
    )
    assert_ok(other.PostDatasets(datasets=[pb.Dataset(id="shared")]))
    elsewhere = labelled_texts(3, prefix="other")
    for message in elsewhere:
        message.dataset_ids.append("shared")
    upload(other, elsewhere)
    assert_ok(
        other.PostDatasetVersions(
            dataset_id="shared", dataset_versions=[pb.DatasetVersion(id="sv1")]
        )
    )

    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics", concepts=["cooking", "sports"])
    from_other_app = refused(
        "topics", train_params={"dataset_id": "shared", "dataset_version_id": "sv1"}
    )
    assert_status(from_other_app, codes.CONN_DOES_NOT_EXIST, "shared", tapi.app_id)

    # A dataset of the same name here does not have the other app's version either.
    assert_ok(tapi.PostDatasets(datasets=[pb.Dataset(id="shared")]))
    same_name = refused(
        "topics", train_params={"dataset_id": "shared", "dataset_version_id": "sv1"}
    )
    assert_status(same_name, codes.CONN_DOES_NOT_EXIST, "sv1")
    no_dataset = refused("topics", train_params={"dataset_version_id": "sv1"})
    assert_status(no_dataset, codes.CONN_INVALID_REQUEST, "dataset_id")


def test_training_an_unknown_model(tapi: Api) -> None:
    reply = tapi.PostModelVersions(
        model_id="nope", model_versions=[version_request(concepts=["a"])]
    )
    assert_status(reply, codes.MODEL_DOES_NOT_EXIST, "nope")


def test_predicting_on_a_model_without_a_trained_version(tapi: Api) -> None:
    create_model(tapi, "fresh", concepts=["cooking"])
    text = [text_input("q", "What is for dinner?")]
    assert_status(
        predict(tapi, "fresh", text), codes.MODEL_UNTRAINED, "fresh", "no trained version"
    )
    assert_status(
        predict(tapi, "fresh", text, version_id="v-nope"), codes.MODEL_DOES_NOT_EXIST, "v-nope"
    )
    assert_status(predict(tapi, "missing", text), codes.MODEL_DOES_NOT_EXIST, "missing")


def test_predicting_on_a_version_that_is_not_trained(tapi: Api) -> None:
    upload(tapi, labelled_texts(3))
    create_model(tapi, "topics", concepts=["cooking", "sports"])
    version = start_training(tapi, "topics")
    reply = cancel_training(tapi, "topics", version.id)
    assert reply["status"]["code"] == codes.SUCCESS, reply
    # Queued, training or (once the cancel lands) failed: never something to predict with.
    text = [text_input("q", "What is for dinner?")]
    assert_status(
        predict(tapi, "topics", text, version_id=version.id), codes.MODEL_UNTRAINED, version.id
    )
    assert_status(predict(tapi, "topics", text), codes.MODEL_UNTRAINED, "no trained version")
    ended = wait_for_version(tapi, "topics", version.id)
    assert_status(ended.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    assert_status(
        predict(tapi, "topics", text, version_id=version.id),
        codes.MODEL_UNTRAINED,
        "MODEL_TRAINING_FAILED",
    )


def test_predicting_needs_inputs(tapi: Api) -> None:
    create_model(tapi, "fresh", concepts=["cooking"])
    assert_status(predict(tapi, "fresh", []), codes.INPUT_INVALID_REQUEST, "at least one input")
