"""A visual segmenter through the official client: images uploaded with PostInputs, their mask
and polygon regions with PostAnnotations, trained from a template on one dataset, evaluated
(mIoU and IoU per concept, after training and against a ground-truth dataset version), and
predicted as one mask region per concept at each input's size."""

from __future__ import annotations

import io

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image

from api.helpers import assert_ok, image_input
from api.training.support import create_model, train, upload, wait_until
from conftest import Api
from modelmill.training.contract import Example
from modelmill.training.tasks.segmentation import SEGMENTATION

IMAGE_WIDTH = 64
TINY_SEGMENTER = {
    "template": "FPN_EfficientNet_Lite0",
    "image_size": 64.0,
    "batch_size": 4.0,
    "num_epochs": 3.0,
    "early_stopping_patience": 0.0,
}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def region_message(region) -> pb.Region:  # type: ignore[no-untyped-def]
    (concept,) = region.concepts
    message = pb.Region(data=pb.Data(concepts=[pb.Concept(id=concept, value=1.0)]))
    if region.mask_png is not None:
        message.region_info.mask.image.base64 = region.mask_png
    else:
        message.region_info.polygon.points.extend(
            pb.Point(row=row, col=col) for row, col in region.polygon
        )
    return message


def uploaded(api: Api, examples: list[Example], prefix: str, dataset_id: str) -> None:
    """The images with PostInputs into a dataset, then their regions with PostAnnotations."""
    inputs = [image_input(f"{prefix}-{i}", png(e.load())) for i, e in enumerate(examples)]
    for message in inputs:
        message.dataset_ids.append(dataset_id)
    upload(api, inputs)
    annotations = [
        pb.Annotation(
            input_id=f"{prefix}-{i}", data=pb.Data(regions=[region_message(r) for r in e.regions])
        )
        for i, e in enumerate(examples)
    ]
    assert_ok(api.PostAnnotations(annotations=annotations))


@pytest.mark.slow
def test_visual_segmenter_trains_evaluates_and_predicts_masks(trainer_api: Api) -> None:
    api = trainer_api
    data = SEGMENTATION.sample_data("image", 24, IMAGE_WIDTH)
    truth = SEGMENTATION.sample_data("image", 32, IMAGE_WIDTH).examples[24:]  # other images
    assert_ok(api.PostDatasets(datasets=[pb.Dataset(id="train"), pb.Dataset(id="truth")]))
    uploaded(api, list(data.examples), "shapes", "train")
    uploaded(api, list(truth), "truth", "truth")
    assert_ok(
        api.PostDatasetVersions(dataset_id="truth", dataset_versions=[pb.DatasetVersion(id="v1")])
    )
    create_model(api, "segmenter", model_type_id="visual-segmenter", concepts=data.concepts)
    version = train(api, "segmenter", train_params={**TINY_SEGMENTER, "dataset_id": "train"})
    user = version.metrics.extended_metrics.user_metrics
    assert user["mean_iou"] > 0.3, user
    full = assert_ok(
        api.GetEvaluation(
            evaluation_id=version.id,
            fields=pb.FieldsValue(metrics_by_class=True, test_set=True),
        )
    ).eval_metrics
    assert {row.concept.id for row in full.metrics_by_class} == set(data.concepts)
    assert all(row.iou > 0 for row in full.metrics_by_class), full.metrics_by_class
    entry = full.test_set[0]
    assert entry.ground_truth_annotation.data.regions[0].region_info.mask.image.base64

    held_out = SEGMENTATION.sample_data("image", 32, IMAGE_WIDTH).examples[24:28]
    images = [e.load() for e in held_out]
    reply = assert_ok(
        api.PostModelOutputs(
            model_id="segmenter",
            inputs=[image_input(f"q-{i}", png(image)) for i, image in enumerate(images)],
        )
    )
    assert reply.outputs[0].status.code == codes.SUCCESS
    for output, image in zip(reply.outputs, images, strict=True):
        assert output.data.regions, "every held-out image has a shape"
        for region in output.data.regions:
            (concept,) = region.data.concepts
            assert concept.id in data.concepts and 0.0 < concept.value <= 1.0
            mask = np.asarray(Image.open(io.BytesIO(region.region_info.mask.image.base64)))
            assert mask.shape == (image.height, image.width) and mask.any()

    # The same metrics against a ground-truth dataset version (PostModelVersionEvaluations).
    ground_truth = pb.Dataset(id="truth", version=pb.DatasetVersion(id="v1"))
    assert_ok(
        api.PostModelVersionEvaluations(
            model_id="segmenter",
            model_version_id=version.id,
            eval_metrics=[pb.EvalMetrics(id="truth-eval", ground_truth_dataset=ground_truth)],
        )
    )

    def evaluated() -> pb.EvalMetrics | None:
        metrics = assert_ok(
            api.GetModelVersionEvaluation(
                model_id="segmenter", model_version_id=version.id, evaluation_id="truth-eval"
            )
        ).eval_metrics
        waiting = (codes.MODEL_QUEUED_FOR_EVALUATION, codes.MODEL_EVALUATING)
        return None if metrics.status.code in waiting else metrics

    done = wait_until(evaluated, "the ground-truth evaluation", every_s=0.25)
    assert done.status.code == codes.MODEL_EVALUATED, done.status
    assert "8 labelled inputs" in done.status.description
    assert done.extended_metrics.user_metrics["mean_iou"] > 0.3, done.extended_metrics
