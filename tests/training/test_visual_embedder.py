"""The visual-embedder templates on scikit-learn's digits (1,797 8×8 handwritten digits, BSD
licence, shipped with scikit-learn), trained briefly: concepts held out of training never reach
it and are measured apart, embeddings are L2-normalised and the export matches PyTorch; the
retrieval metrics on known neighbours, the data checks and the version page's partial.
(Whether training beats frozen ImageNet features is bench/embedder.py's question: see
bench/RESULTS.md.)
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clarifai_grpc.grpc.api.status import status_code_pb2
from PIL import Image

from modelmill.training import weights
from modelmill.training.contract import DataError, Example, Output, TrainContext, TrainingData
from modelmill.training.tasks.embedding import EMBEDDING, retrieval_metrics
from modelmill.training.tasks.samples import decoder, encode_jpeg
from modelmill.training.templates.visual_embedder import (
    ANGULAR_MARGIN_EMBEDDER,
    MULTI_SIMILARITY_EMBEDDER,
)

PER_DIGIT, DIGITS = 8, 5
IMAGE_SIZE = 32
TINY = {
    "image_size": IMAGE_SIZE,
    "batch_size": 16,
    "num_epochs": 1,
    "warmup_epochs": 0.5,
    "validation_fraction": 0.25,
    "unseen_concepts_fraction": 0.2,
    "embedding_size": 64,
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(weights, "hub_online", lambda: False)


def context(work: Path) -> TrainContext:
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda progress, **metrics: None,
        cancelled=lambda: False,
        embeddings=lambda examples, model_id: np.zeros((len(examples), 1)),
    )


def digits_data(per_digit: int) -> TrainingData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    examples = []
    for digit in range(DIGITS):
        for n, index in enumerate(np.nonzero(digits.target == digit)[0][:per_digit]):
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            rgb = np.repeat(np.asarray(Image.fromarray(pixels).resize((32, 32)))[..., None], 3, 2)
            load = decoder(encode_jpeg(rgb))
            examples.append(Example(f"d{digit}-{n}", "image", load, {f"digit-{digit}": 1.0}))
    return TrainingData(examples, [f"digit-{d}" for d in range(DIGITS)])


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return digits_data(PER_DIGIT)


@pytest.fixture(scope="module", params=[ANGULAR_MARGIN_EMBEDDER, MULTI_SIMILARITY_EMBEDDER])
def trained(request, data, tmp_path_factory):
    template = request.param
    work = tmp_path_factory.mktemp(template.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "hub_online", lambda: False)
        artifacts = template.train(context(work), data, template.Params(**TINY)).artifacts
    return template, artifacts, work


def test_evaluation_measures_seen_and_unseen_concepts_apart(data, trained):
    template, artifacts, work = trained
    metrics = template.evaluate(context(work), data, template.Params(**TINY), artifacts)
    user = metrics["extended_metrics"]["user_metrics"]
    assert len(user["unseen_concepts"]) == 1
    for group in ("all", "seen", "unseen"):
        assert set(user[group]) == {"recall_at_1", "recall_at_5", "map_at_r"}
        assert all(0.0 <= v <= 1.0 for v in user[group].values())
    assert metrics["summary"]["top1_accuracy"] == user["all"]["recall_at_1"]
    assert len(metrics["test_set"]) == user["inputs"]


def test_unseen_concepts_never_reach_training(data, trained):
    template, artifacts, _ = trained
    predictor = template.load(artifacts)
    config = predictor.meta["config"]
    unseen = set(config["unseen_concepts"])
    assert unseen and not unseen & set(config["trained_concepts"])
    held = set(predictor.meta["validation_ids"])
    assert all(e.input_id in held for e in data.examples if next(iter(e.concepts)) in unseen)


def test_embeddings_are_l2_normalised_and_the_export_matches(data, trained, tmp_path):
    template, artifacts, _ = trained
    outputs = template.load(artifacts).predict(list(data.examples[:5]), {})
    vectors = np.stack([o.embedding for o in outputs])
    assert vectors.shape == (5, TINY["embedding_size"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with zipfile.ZipFile(template.export(artifacts, tmp_path)) as bundle:
        config = json.loads(bundle.read("config.json"))
    assert config["embedding_size"] == TINY["embedding_size"]
    assert config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]


def test_retrieval_metrics_on_known_neighbours():
    # two tight pairs far apart: every nearest neighbour is right
    clusters = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99]], np.float32)
    perfect = retrieval_metrics(clusters, [0, 0, 1, 1])
    assert perfect == {"recall_at_1": 1.0, "recall_at_5": 1.0, "map_at_r": 1.0}
    # labels crossed: each nearest neighbour is of the other concept
    crossed = retrieval_metrics(clusters, [0, 1, 0, 1])
    assert crossed["recall_at_1"] == 0.0 and crossed["recall_at_5"] == 1.0
    assert crossed["map_at_r"] == 0.0
    # no query has another row of its class: mAP@R is undefined, so missing (None), never NaN
    alone = retrieval_metrics(clusters, [0, 1, 2, 3])
    assert alone == {"recall_at_1": 0.0, "recall_at_5": 0.0, "map_at_r": None}


def test_check_data_names_what_an_embedder_needs():
    load = decoder(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(DataError) as error:
        EMBEDDING.check_data([], ["cat", "dog"], False)
    assert error.value.code == status_code_pb2.MODEL_TRAINING_NO_DATA
    one_concept = [Example(f"c{i}", "image", load, {"cat": 1.0}) for i in range(3)]
    with pytest.raises(DataError) as error:
        EMBEDDING.check_data(one_concept, ["cat", "dog"], False)
    assert error.value.code == status_code_pb2.MODEL_TRAINING_INSUFFICIENT_DATA
    singles = [Example("c", "image", load, {"cat": 1.0}), Example("d", "image", load, {"dog": 1.0})]
    with pytest.raises(DataError) as error:
        EMBEDDING.check_data(singles, ["cat", "dog"], False)
    assert "more images" in error.value.description
    EMBEDDING.check_data(
        [*singles, Example("c2", "image", load, {"cat": 1.0})], ["cat", "dog"], False
    )


def test_version_page_partial_shows_retrieval_and_nearest_neighbours():
    from modelmill.web.rendering import create_templates

    load = decoder(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    concepts = ["cat", "dog", "fox"]
    examples = [Example(f"{c}{i}", "image", load, {c: 1.0}) for c in concepts for i in range(2)]
    vectors = np.eye(3)[[0, 0, 1, 1, 2, 2]] + 0.01 * np.arange(6)[:, None]
    outputs = [Output(embedding=v / np.linalg.norm(v)) for v in vectors]
    metrics = EMBEDDING.metrics(examples, outputs, concepts, False, {"unseen_concepts": ["fox"]})
    user = metrics["extended_metrics"]["user_metrics"]
    assert user["all"]["recall_at_1"] == 1.0 and user["unseen"]["map_at_r"] == 1.0
    html = (
        create_templates()
        .env.get_template("partials/embedding.html")
        .render(metrics=metrics, input_cards=lambda ids: {}, input_card=lambda card: "")
    )
    assert "Recall@1" in html and "Never seen in training" in html and "fox" in html
    assert html.count('class="sample right"') == len(examples)
