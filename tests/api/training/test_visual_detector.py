"""A visual detector through the official client: images with boxes (PostInputs with
data.regions) in a training dataset and a held-out one, trained from the fast template,
predicting regions with bounding boxes, evaluated right after training and again on the
held-out dataset version (PostModelVersionEvaluations)."""

from __future__ import annotations

import time

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, image_input
from api.training.support import create_model, predict, train, upload
from conftest import Api
from modelmill.training.tasks.detection import COLOURS, shapes_image

TINY_DETECTOR = {
    "template": "EfficientNet_Lite0_RetinaNet_Fast",
    "image_size": 64.0,
    "batch_size": 8.0,
    "num_epochs": 2.0,
    "min_samples_per_epoch": 32.0,
    "dataset_id": "train",
}
WIDTH = 96
EVALUATION_TIMEOUT_S = 300.0


def boxed_images(count: int, seed: int, dataset: str) -> list[pb.Input]:
    inputs = []
    for i in range(count):
        data, regions = shapes_image(COLOURS, WIDTH, seed + i)
        message = image_input(f"{dataset}-{i}", data)
        for region in regions:
            top, left, bottom, right = region.box  # type: ignore[misc]
            message.data.regions.append(
                pb.Region(
                    region_info=pb.RegionInfo(
                        bounding_box=pb.BoundingBox(
                            top_row=top, left_col=left, bottom_row=bottom, right_col=right
                        )
                    ),
                    data=pb.Data(concepts=[pb.Concept(id=c, value=1.0) for c in region.concepts]),
                )
            )
        message.dataset_ids.append(dataset)
        inputs.append(message)
    return inputs


def wait_for_evaluation(api: Api, evaluation_id: str, version_id: str) -> pb.EvalMetrics:
    deadline = time.monotonic() + EVALUATION_TIMEOUT_S
    while True:
        metrics = assert_ok(
            api.GetModelVersionEvaluation(
                model_id="shapes", model_version_id=version_id, evaluation_id=evaluation_id
            )
        ).eval_metrics
        if metrics.status.code not in (
            codes.MODEL_QUEUED_FOR_EVALUATION,
            codes.MODEL_EVALUATING,
        ):
            return metrics
        assert time.monotonic() < deadline, metrics.status
        time.sleep(0.25)


@pytest.mark.slow
def test_visual_detector_trains_predicts_regions_and_evaluates(trainer_api: Api) -> None:
    api = trainer_api
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="train"), pb.Dataset(id="holdout")]))
    held_out = boxed_images(8, seed=5_000, dataset="holdout")
    upload(api, boxed_images(24, seed=0, dataset="train") + held_out)
    assert_ok(
        api.PostDatasetVersions(
            dataset_id="holdout", dataset_versions=[pb.DatasetVersion(id="holdout-v1")]
        )
    )
    create_model(api, "shapes", model_type_id="visual-detector", concepts=list(COLOURS))
    version = train(api, "shapes", train_params=TINY_DETECTOR)
    assert version.train_info.params["template"] == TINY_DETECTOR["template"]
    summary = version.metrics.summary
    assert 0 <= summary.mean_avg_precision_iou_range <= summary.mean_avg_precision_iou_50

    reply = assert_ok(predict(api, "shapes", held_out[:3], params={"min_value": 0.0}))
    for output in reply.outputs:
        assert output.data.regions, "every box at min_value 0"
        for region in output.data.regions:
            box = region.region_info.bounding_box
            assert 0 <= box.top_row <= box.bottom_row <= 1
            assert 0 <= box.left_col <= box.right_col <= 1
            assert 0 <= region.value <= 1
            assert [c.id for c in region.data.concepts][0] in COLOURS
    few = assert_ok(
        predict(api, "shapes", held_out[:3], params={"max_detections": 2.0, "min_value": 0.0})
    )
    assert all(len(o.data.regions) <= 2 for o in few.outputs)

    truth = pb.Dataset(id="holdout", version=pb.DatasetVersion(id="holdout-v1"))
    assert_ok(
        api.PostModelVersionEvaluations(
            model_id="shapes",
            model_version_id=version.id,
            eval_metrics=[pb.EvalMetrics(id="holdout-eval", ground_truth_dataset=truth)],
        )
    )
    done = wait_for_evaluation(api, "holdout-eval", version.id)
    assert done.status.code == codes.MODEL_EVALUATED, done.status
    assert 0 <= done.summary.mean_avg_precision_iou_range <= done.summary.mean_avg_precision_iou_50
    full = assert_ok(
        api.GetEvaluation(
            evaluation_id="holdout-eval",
            fields=pb.FieldsValue(metrics_by_class=True, test_set=True),
        )
    ).eval_metrics
    assert {m.concept.id for m in full.metrics_by_class} == set(COLOURS)
