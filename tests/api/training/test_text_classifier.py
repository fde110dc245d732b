"""Transfer learning on texts through the official client: train an embedding classifier on
three topics, predict with every inference setting, evaluate, and read the train log.

One model is trained per backend for the whole module (two versions with different inference
defaults, and a third cancelled at once); the tests read it over gRPC and REST.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status, jpeg, text_input, truncated_jpeg
from api.training.support import (
    TOPICS,
    TRAINED,
    StatusLog,
    accuracy,
    cancel_training,
    concepts_of,
    create_model,
    labelled_texts,
    predict,
    start_training,
    top_concept,
    train,
    upload,
    wait_for_version,
    wait_until,
)
from conftest import Account, Api, Server, create_app

CONCEPTS = list(TOPICS)
TRAIN_PER_TOPIC = 20
HELD_OUT_PER_TOPIC = 8
CLEAR = {
    "cooking": "Bake the bread in a hot oven and season the soup with salt.",
    "sports": "The striker scored a goal in the final minute of the football match.",
    "finance": "The bank raised interest rates and the stock market fell.",
}


@dataclass
class Topics:
    """The module's trained model: v1 stores max_concepts 3, v2 (newest trained) max_concepts 1,
    v3 was cancelled while queued or training."""

    app_id: str
    model_id: str
    v1: pb.ModelVersion
    v2: pb.ModelVersion
    v3: pb.ModelVersion
    v1_statuses: StatusLog
    held_out: list[pb.Input]


@pytest.fixture(scope="module")
def topics(training_server: Server, trainer: Account) -> Topics:
    app_id = create_app(training_server, trainer)
    api = Api(training_server, "grpc", trainer.key, trainer.user_id, app_id)
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="train"), pb.Dataset(id="holdout")]))
    training = labelled_texts(TRAIN_PER_TOPIC, prefix="train")
    held_out = labelled_texts(HELD_OUT_PER_TOPIC, held_out=True, prefix="holdout")
    for message in training:
        message.dataset_ids.append("train")
    for message in held_out:
        message.dataset_ids.append("holdout")
    upload(api, training + held_out)
    assert_ok(
        api.PostDatasetVersions(
            dataset_id="holdout", dataset_versions=[pb.DatasetVersion(id="holdout-v1")]
        )
    )
    create_model(api, "topics", concepts=CONCEPTS)

    statuses = StatusLog()
    common = {"train_params": {"dataset_id": "train"}, "exclusive": True}
    v1 = train(api, "topics", log=statuses, inference_params={"max_concepts": 3.0}, **common)
    v2 = train(api, "topics", inference_params={"max_concepts": 1.0}, **common)
    queued = start_training(api, "topics", **common)
    cancelled = cancel_training(api, "topics", queued.id)
    assert cancelled["status"]["code"] == codes.SUCCESS, cancelled
    v3 = wait_for_version(api, "topics", queued.id)
    return Topics(app_id, "topics", v1, v2, v3, statuses, held_out)


@pytest.fixture
def client(training_server: Server, trainer: Account, topics: Topics, transport: str) -> Api:
    """The trainer's client on the module's app, over this test's transport."""
    return Api(training_server, transport, trainer.key, trainer.user_id, topics.app_id)


# ---- training ------------------------------------------------------------------------------------


def test_training_goes_queued_then_training_then_trained(topics: Topics) -> None:
    seen = topics.v1_statuses.seen
    assert seen[0] == codes.MODEL_QUEUED_FOR_TRAINING and seen[-1] == TRAINED, (
        topics.v1_statuses.names()
    )
    assert set(seen) <= {codes.MODEL_QUEUED_FOR_TRAINING, codes.MODEL_TRAINING, TRAINED}


def test_trained_version_shows_progress_and_its_frozen_data(client: Api, topics: Topics) -> None:
    version = assert_ok(
        client.GetModelVersion(model_id="topics", version_id=topics.v1.id)
    ).model_version
    assert version.status.code == TRAINED
    progress = version.metadata["progress"]
    assert progress["percent"] == 100.0 and progress["total_inputs"] == 3 * TRAIN_PER_TOPIC
    assert version.total_input_count == 3 * TRAIN_PER_TOPIC
    assert version.active_concept_count == 3
    assert sorted(c.id for c in version.output_info.data.concepts) == sorted(CONCEPTS)
    assert version.output_info.output_config.concepts_mutually_exclusive
    params = version.train_info.params
    assert params["dataset_id"] == "train"
    # The data was frozen into a dataset version, so the training can be reproduced.
    frozen = assert_ok(
        client.GetDatasetVersion(
            dataset_id="train", dataset_version_id=params["dataset_version_id"]
        )
    )
    assert frozen.dataset_version.status.code == codes.DATASET_VERSION_READY


def test_get_model_shows_the_newest_version_even_when_it_failed(
    client: Api, topics: Topics
) -> None:
    model = assert_ok(client.GetModel(model_id="topics")).model
    assert model.model_version.id == topics.v3.id
    assert_status(model.model_version.status, codes.MODEL_TRAINING_FAILED, "cancelled")
    listed = assert_ok(client.ListModelVersions(model_id="topics")).model_versions
    assert [v.id for v in listed] == [topics.v3.id, topics.v2.id, topics.v1.id]


def test_cancelling_a_finished_version_changes_nothing(client: Api, topics: Topics) -> None:
    for version in (topics.v1, topics.v3):
        reply = cancel_training(client, "topics", version.id)
        assert reply["status"]["code"] == codes.MODEL_INVALID_ARGUMENT, reply
        assert "finished" in reply["status"]["description"]
    v1 = assert_ok(client.GetModelVersion(model_id="topics", version_id=topics.v1.id)).model_version
    assert v1.status.code == TRAINED
    v3 = assert_ok(client.GetModelVersion(model_id="topics", version_id=topics.v3.id)).model_version
    assert v3.status.code == codes.MODEL_TRAINING_FAILED


# ---- predictions ---------------------------------------------------------------------------------


def clear_inputs() -> list[pb.Input]:
    return [text_input(f"clear-{topic}", text) for topic, text in CLEAR.items()]


def assert_sorted(output: pb.Output) -> None:
    values = [c.value for c in output.data.concepts]
    assert values == sorted(values, reverse=True), values


def test_predictions_on_a_version_use_its_stored_settings(client: Api, topics: Topics) -> None:
    reply = assert_ok(predict(client, "topics", clear_inputs(), version_id=topics.v1.id))
    for topic, output in zip(CLEAR, reply.outputs, strict=True):
        assert output.status.code == codes.SUCCESS
        assert output.input.id == f"clear-{topic}"
        assert len(output.data.concepts) == 3  # v1 stores max_concepts 3
        assert_sorted(output)
        assert top_concept(output) == topic
        assert output.data.concepts[0].name == topic
        assert sum(v for _, v in concepts_of(output)) == pytest.approx(1.0, abs=1e-3)  # softmax


def test_the_version_can_be_named_in_the_model_of_the_request(client: Api, topics: Topics) -> None:
    # As the `clarifai` SDK sends it: model.model_version.id, no version_id.
    model = pb.Model(model_version=pb.ModelVersion(id=topics.v1.id))
    reply = assert_ok(
        client.PostModelOutputs(model_id="topics", inputs=clear_inputs(), model=model)
    )
    assert all(len(o.data.concepts) == 3 for o in reply.outputs)  # v1's max_concepts, not v2's


def test_predictions_on_the_model_use_the_newest_trained_version(
    client: Api, topics: Topics
) -> None:
    # v3 is newer but failed; v2 (max_concepts 1) answers.
    reply = assert_ok(predict(client, "topics", clear_inputs()))
    assert [concepts_of(o)[0][0] for o in reply.outputs] == list(CLEAR)
    assert all(len(o.data.concepts) == 1 for o in reply.outputs)
    assert reply.outputs[0].model.model_version.id in ("", topics.v2.id)


def test_output_config_overrides_the_stored_settings(client: Api, topics: Topics) -> None:
    inputs = clear_inputs()
    two = assert_ok(
        predict(client, "topics", inputs, output_config=pb.OutputConfig(max_concepts=2))
    )
    assert all(len(o.data.concepts) == 2 for o in two.outputs)

    sure = assert_ok(
        predict(
            client,
            "topics",
            inputs,
            version_id=topics.v1.id,
            output_config=pb.OutputConfig(min_value=0.5),
        )
    )
    for topic, output in zip(CLEAR, sure.outputs, strict=True):
        assert [c for c, _ in concepts_of(output)] == [topic]  # only the clear winner is ≥ 0.5
        assert all(v >= 0.5 for _, v in concepts_of(output))

    selected = pb.OutputConfig(select_concepts=[pb.Concept(id="sports"), pb.Concept(id="finance")])
    chosen = assert_ok(
        predict(client, "topics", inputs, version_id=topics.v1.id, output_config=selected)
    )
    for output in chosen.outputs:
        assert {c for c, _ in concepts_of(output)} == {"sports", "finance"}
        assert_sorted(output)


def test_output_info_params_override_the_stored_settings(client: Api, topics: Topics) -> None:
    inputs = clear_inputs()
    every = assert_ok(
        predict(client, "topics", inputs, params={"max_concepts": 3, "min_value": 0.0})
    )
    assert all(len(o.data.concepts) == 3 for o in every.outputs)  # v2 stores 1
    for output in every.outputs:
        assert_sorted(output)

    sure = assert_ok(
        predict(client, "topics", inputs, version_id=topics.v1.id, params={"min_value": 0.5})
    )
    assert [[c for c, _ in concepts_of(o)] for o in sure.outputs] == [[t] for t in CLEAR]

    only = assert_ok(
        predict(
            client,
            "topics",
            inputs,
            version_id=topics.v1.id,
            params={"select_concepts": [{"id": "cooking"}]},
        )
    )
    assert [[c for c, _ in concepts_of(o)] for o in only.outputs] == [["cooking"]] * 3


def test_held_out_texts_are_classified_correctly(client: Api, topics: Topics) -> None:
    assert accuracy(client, "topics", topics.held_out, topics.v1.id) >= 0.9


def test_up_to_128_inputs_per_call(client: Api, topics: Topics) -> None:
    texts = [text_input(f"many-{n}", f"{CLEAR[CONCEPTS[n % 3]]} ({n})") for n in range(129)]
    reply = assert_ok(predict(client, "topics", texts[:128]))
    assert len(reply.outputs) == 128 and all(o.data.concepts for o in reply.outputs)

    too_many = predict(client, "topics", texts)
    assert_status(too_many, codes.INPUT_INVALID_REQUEST, "128", "129")
    assert not too_many.outputs


def test_unreadable_inputs_get_their_own_status(client: Api, topics: Topics) -> None:
    inputs = [
        text_input("fine", CLEAR["sports"]),
        pb.Input(id="broken", data=pb.Data(image=pb.Image(base64=truncated_jpeg()))),
        pb.Input(id="picture", data=pb.Data(image=pb.Image(base64=jpeg(48, 48)))),
    ]
    reply = predict(client, "topics", inputs)
    assert reply.status.code == codes.MIXED_STATUS, reply.status
    fine, broken, picture = reply.outputs
    assert fine.status.code == codes.SUCCESS and top_concept(fine) == "sports"
    assert_status(broken.status, codes.INPUT_UNSUPPORTED_FORMAT, "decode")
    # The model reads texts: its base embedder cannot embed an image.
    assert_status(picture.status, codes.INPUT_UNSUPPORTED_FORMAT, "text")
    assert not broken.data.concepts and not picture.data.concepts


# ---- evaluations ---------------------------------------------------------------------------------


def test_training_stores_cross_validation_metrics(client: Api, topics: Topics) -> None:
    version = assert_ok(
        client.GetModelVersion(model_id="topics", version_id=topics.v1.id)
    ).model_version
    metrics = version.metrics
    assert metrics.status.code == codes.MODEL_EVALUATED
    assert metrics.summary.macro_avg_roc_auc >= 0.9
    assert metrics.summary.top1_accuracy >= 0.85
    assert metrics.eval_info.params["method"] == "k-fold cross-validation"
    assert 2 <= metrics.eval_info.params["k_folds"] <= 5
    assert not metrics.binary_metrics and not metrics.test_set  # heavy parts only when asked

    listed = assert_ok(
        client.ListModelVersionEvaluations(model_id="topics", model_version_id=topics.v1.id)
    )
    after_training = {e.id: e for e in listed.eval_metrics}[topics.v1.id]
    assert after_training.status.code == codes.MODEL_EVALUATED
    assert after_training.summary.macro_avg_roc_auc == pytest.approx(
        metrics.summary.macro_avg_roc_auc
    )

    full = assert_ok(
        client.GetEvaluation(
            evaluation_id=topics.v1.id, fields=pb.FieldsValue(binary_metrics=True, test_set=True)
        )
    ).eval_metrics
    assert sorted(b.concept.id for b in full.binary_metrics) == sorted(CONCEPTS)
    assert (
        len(full.test_set) == 3 * TRAIN_PER_TOPIC
    )  # every input scored by a head that did not see it


def test_model_version_evaluation_answers_only_for_the_version_it_names(
    client: Api, topics: Topics
) -> None:
    def get(model_id: str, version_id: str) -> Any:
        return client.GetModelVersionEvaluation(
            model_id=model_id, model_version_id=version_id, evaluation_id=topics.v1.id
        )

    own = assert_ok(get("topics", topics.v1.id)).eval_metrics
    assert own.id == topics.v1.id and own.model.model_version.id == topics.v1.id

    other_version = get("topics", topics.v2.id)
    assert_status(other_version, codes.EVALUATION_INVALID_ARGUMENT, topics.v1.id, topics.v2.id)
    assert not other_version.eval_metrics.id
    assert_status(get("no-such-model", topics.v1.id), codes.MODEL_DOES_NOT_EXIST, "no-such-model")
    assert_status(get("topics", "no-such-version"), codes.MODEL_DOES_NOT_EXIST, "no-such-version")


def wait_for_evaluation(
    api: Api, evaluation_id: str, model_id: str, version_id: str
) -> pb.EvalMetrics:
    def finished() -> pb.EvalMetrics | None:
        metrics = assert_ok(
            api.GetModelVersionEvaluation(
                model_id=model_id, model_version_id=version_id, evaluation_id=evaluation_id
            )
        ).eval_metrics
        if metrics.status.code in (codes.MODEL_QUEUED_FOR_EVALUATION, codes.MODEL_EVALUATING):
            return None
        return metrics

    return wait_until(finished, f"evaluation {evaluation_id}", every_s=0.25)


def test_evaluate_a_version_on_a_ground_truth_dataset(
    training_server: Server, trainer: Account, topics: Topics
) -> None:
    grpc = Api(training_server, "grpc", trainer.key, trainer.user_id, topics.app_id)
    truth = pb.Dataset(id="holdout", version=pb.DatasetVersion(id="holdout-v1"))
    posted = assert_ok(
        grpc.PostModelVersionEvaluations(
            model_id="topics",
            model_version_id=topics.v1.id,
            eval_metrics=[pb.EvalMetrics(id="holdout-eval", ground_truth_dataset=truth)],
        )
    ).eval_metrics
    assert [e.id for e in posted] == ["holdout-eval"]
    assert posted[0].status.code in (
        codes.MODEL_QUEUED_FOR_EVALUATION,
        codes.MODEL_EVALUATING,
        codes.MODEL_EVALUATED,
    )

    done = wait_for_evaluation(grpc, "holdout-eval", "topics", topics.v1.id)
    assert done.status.code == codes.MODEL_EVALUATED, done.status
    assert done.model.model_version.id == topics.v1.id
    assert done.summary.top1_accuracy >= 0.9  # held-out texts: learning quality
    assert done.summary.macro_avg_roc_auc >= 0.9
    assert not done.binary_metrics and not done.test_set and not done.HasField("confusion_matrix")

    for transport in ("grpc", "rest"):
        client = Api(training_server, transport, trainer.key, trainer.user_id, topics.app_id)
        light = assert_ok(client.GetEvaluation(evaluation_id="holdout-eval")).eval_metrics
        assert light.summary.top1_accuracy == pytest.approx(done.summary.top1_accuracy)
        assert not light.binary_metrics and not light.test_set
        assert not light.HasField("confusion_matrix") and not light.HasField("label_counts")

        heavy = assert_ok(
            client.GetEvaluation(
                evaluation_id="holdout-eval",
                fields=pb.FieldsValue(
                    binary_metrics=True, confusion_matrix=True, label_counts=True, test_set=True
                ),
            )
        ).eval_metrics
        assert sorted(b.concept.id for b in heavy.binary_metrics) == sorted(CONCEPTS)
        assert all(
            b.HasField("roc_curve") and b.HasField("precision_recall_curve")
            for b in heavy.binary_metrics
        )
        assert sum(c.value for c in heavy.confusion_matrix.matrix) == pytest.approx(
            3 * HELD_OUT_PER_TOPIC
        )
        assert len(heavy.test_set) == 3 * HELD_OUT_PER_TOPIC
        assert heavy.label_counts.positive_label_counts

        only_matrix = assert_ok(
            client.GetEvaluation(
                evaluation_id="holdout-eval", fields=pb.FieldsValue(confusion_matrix=True)
            )
        ).eval_metrics
        assert only_matrix.confusion_matrix.matrix and not only_matrix.binary_metrics

        listed = [e.id for e in assert_ok(client.ListEvaluations()).eval_metrics]
        assert "holdout-eval" in listed and topics.v1.id in listed
        by_version = assert_ok(
            client.ListModelVersionEvaluations(model_id="topics", model_version_id=topics.v1.id)
        ).eval_metrics
        assert sorted(e.id for e in by_version) == sorted(["holdout-eval", topics.v1.id])


def test_post_evaluations_names_model_and_version_in_the_body(
    training_server: Server, trainer: Account, topics: Topics
) -> None:
    client = Api(training_server, "grpc", trainer.key, trainer.user_id, topics.app_id)
    evaluation_id = "post-eval"
    metrics = pb.EvalMetrics(
        id=evaluation_id,
        model=pb.Model(id="topics", model_version=pb.ModelVersion(id=topics.v2.id)),
        ground_truth_dataset=pb.Dataset(id="holdout", version=pb.DatasetVersion(id="holdout-v1")),
    )
    assert_ok(client.PostEvaluations(eval_metrics=[metrics]))
    done = wait_for_evaluation(client, evaluation_id, "topics", topics.v2.id)
    assert done.status.code == codes.MODEL_EVALUATED, done.status
    assert done.summary.top1_accuracy >= 0.9


def test_evaluating_needs_a_trained_version_and_a_ground_truth(client: Api, topics: Topics) -> None:
    truth = pb.Dataset(id="holdout", version=pb.DatasetVersion(id="holdout-v1"))
    untrained = client.PostModelVersionEvaluations(
        model_id="topics",
        model_version_id=topics.v3.id,
        eval_metrics=[pb.EvalMetrics(ground_truth_dataset=truth)],
    )
    assert_status(untrained, codes.MODEL_UNTRAINED, topics.v3.id)
    no_truth = client.PostModelVersionEvaluations(
        model_id="topics", model_version_id=topics.v1.id, eval_metrics=[pb.EvalMetrics()]
    )
    assert_status(no_truth, codes.EVALUATION_INVALID_ARGUMENT, "ground_truth_dataset")
    missing = client.GetEvaluation(evaluation_id="no-such-evaluation")
    assert_status(missing, codes.EVALUATION_INVALID_ARGUMENT, "no-such-evaluation")


# ---- train log -----------------------------------------------------------------------------------


def test_train_log_link_serves_the_log_without_a_key(client: Api, topics: Topics) -> None:
    url = assert_ok(
        client.GetModelVersion(model_id="topics", version_id=topics.v1.id)
    ).model_version.train_log
    assert "sig=" in url
    reply = requests.get(url, timeout=30)
    assert reply.status_code == 200
    assert "attempt 1 of" in reply.text and "trained" in reply.text
    # The estimate made before training, and how far it was off once the time was known.
    assert "estimated training time" in reply.text and "before it started (" in reply.text


def test_train_log_link_with_a_tampered_signature_is_refused(client: Api, topics: Topics) -> None:
    url = assert_ok(
        client.GetModelVersion(model_id="topics", version_id=topics.v1.id)
    ).model_version.train_log
    other = assert_ok(
        client.GetModelVersion(model_id="topics", version_id=topics.v2.id)
    ).model_version.train_log
    base, signature = url.split("?sig=")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in (
        f"{base}?sig={flipped}",
        f"{base}?sig=",
        base,
        f"{other.split('?')[0]}?sig={signature}",
    ):
        reply = requests.get(bad, timeout=30)
        assert reply.status_code == 403, bad
        assert "trained" not in reply.text


# ---- export --------------------------------------------------------------------------------------


def test_export_a_trained_version(
    training_server: Server, trainer: Account, topics: Topics
) -> None:
    grpc = Api(training_server, "grpc", trainer.key, trainer.user_id, topics.app_id)
    started = assert_ok(
        grpc.PutModelVersionExports(model_id="topics", version_id=topics.v1.id)
    ).export
    assert started.status.code in (
        codes.MODEL_EXPORT_PENDING,
        codes.MODEL_EXPORTING,
        codes.MODEL_EXPORTED,
    )

    def exported() -> pb.ModelVersionExport | None:
        export = assert_ok(
            grpc.GetModelVersionExport(model_id="topics", version_id=topics.v1.id)
        ).export
        return (
            export
            if export.status.code not in (codes.MODEL_EXPORT_PENDING, codes.MODEL_EXPORTING)
            else None
        )

    export = wait_until(exported, "the export", every_s=0.25)
    assert export.status.code == codes.MODEL_EXPORTED, export.status
    archive = requests.get(export.url, timeout=30)  # a signed link: no key needed
    assert archive.status_code == 200 and len(archive.content) == export.size
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert {"head.onnx", "config.json", "concepts.json"} <= set(bundle.namelist())
        assert sorted(json.loads(bundle.read("concepts.json"))) == sorted(CONCEPTS)

    rest = Api(training_server, "rest", trainer.key, trainer.user_id, topics.app_id)
    same = assert_ok(rest.PutModelVersionExports(model_id="topics", version_id=topics.v1.id)).export
    assert same.status.code == codes.MODEL_EXPORTED and same.size == export.size  # not built twice
    untrained = rest.PutModelVersionExports(model_id="topics", version_id=topics.v3.id)
    assert_status(untrained, codes.MODEL_UNTRAINED, topics.v3.id)
