"""Transfer learning on images the test draws (three shapes in three colours): the classifier
learns them from a few examples each, and tells held-out images apart."""

from __future__ import annotations

import random

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from api.helpers import assert_ok, assert_status, image_input, text_input, truncated_jpeg
from api.training.support import (
    SHAPES,
    accuracy,
    concepts_of,
    create_model,
    labelled_images,
    predict,
    shape_image,
    top_concept,
    train,
    upload,
)
from conftest import Api

CONCEPTS = list(SHAPES)


@pytest.mark.slow
def test_images_of_three_visual_classes_are_learned(trainer_api: Api) -> None:
    api = trainer_api
    upload(api, labelled_images(10, seed=1, prefix="train"))
    create_model(api, "shapes", concepts=CONCEPTS)
    version = train(api, "shapes", exclusive=True, inference_params={"max_concepts": 3.0})
    assert version.metrics.summary.top1_accuracy >= 0.8  # k-fold on the training images

    held_out = labelled_images(8, seed=2, prefix="held-out")
    assert accuracy(api, "shapes", held_out) >= 0.9

    rng = random.Random(3)
    reply = predict(
        api,
        "shapes",
        [
            image_input("circle", shape_image("red-circle", rng, fmt="JPEG")),
            pb.Input(id="broken", data=pb.Data(image=pb.Image(base64=truncated_jpeg()))),
            text_input("words", "a red circle"),
        ],
    )
    assert reply.status.code == codes.MIXED_STATUS, reply.status
    circle, broken, words = reply.outputs
    assert top_concept(circle) == "red-circle"
    assert [c for c, _ in concepts_of(circle)] == sorted(
        CONCEPTS, key=dict(concepts_of(circle)).get, reverse=True
    )
    assert_status(broken.status, codes.INPUT_UNSUPPORTED_FORMAT, "decode")
    assert_status(words.status, codes.INPUT_UNSUPPORTED_FORMAT, "image")
    assert not broken.data.concepts and not words.data.concepts


@pytest.mark.slow
def test_two_classes_without_enrichment_as_independent_concepts(trainer_api: Api) -> None:
    api = trainer_api
    concepts = ["red-circle", "blue-triangle"]
    upload(api, labelled_images(10, seed=4, prefix="train", concepts=concepts))
    create_model(api, "shapes", concepts=concepts)
    train(api, "shapes", train_params={"enrich_dataset": "Disabled"})

    assert (
        accuracy(api, "shapes", labelled_images(8, seed=5, prefix="held-out", concepts=concepts))
        >= 0.9
    )
    rng = random.Random(6)
    reply = assert_ok(
        predict(
            api,
            "shapes",
            [image_input("t", shape_image("blue-triangle", rng))],
            params={"min_value": 0.5},
        )
    )
    assert [c for c, _ in concepts_of(reply.outputs[0])] == ["blue-triangle"]
