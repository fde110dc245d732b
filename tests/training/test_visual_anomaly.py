"""The visual-anomaly-heatmap templates on scikit-image textures with pasted defects: PatchCore
and PaDiM beat a nearest-neighbour on pooled features at telling defects apart, heatmaps
cover the input and light up the defect, the threshold is calibrated to 0.5 and the inference
setting moves it, the greedy coreset is the k-center one, and the task's data checks.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from PIL import Image
from sklearn.metrics import roc_auc_score

from modelmill.training import weights
from modelmill.training.contract import DataError, Example, TrainContext, TrainingData
from modelmill.training.tasks import samples
from modelmill.training.tasks.anomaly import (
    ANOMALY,
    ANOMALY_CONCEPT,
    anomaly_score,
    heatmap_values,
    textured_image,
)
from modelmill.training.templates.visual_anomaly import PADIM, PATCHCORE
from modelmill.training.templates.visual_anomaly.model import (
    calibrated,
    choose_threshold,
    with_threshold,
)
from modelmill.training.templates.visual_anomaly.patchcore import greedy_coreset
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_classifier.model import create_model

STORED_WIDTH = 128
IMAGE_SIZE = 128
COUNT = 36  # 24 normal brick crops, 12 with a gravel defect
MIN_PIXEL_AUROC = 0.8


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


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return ANOMALY.sample_data("image", COUNT, STORED_WIDTH)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory) -> dict[str, tuple[list[Example], np.ndarray, list]]:
    """Each template's held-out inputs, their anomaly truth and their outputs."""
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "hub_online", lambda: False)
        for template in (PATCHCORE, PADIM):
            params = template.Params(image_size=IMAGE_SIZE, holdout_fraction=0.25)
            work = tmp_path_factory.mktemp(template.name)
            artifacts = template.train(context(work), data, params).artifacts
            predictor = template.load(artifacts)
            held = set(predictor.meta["validation_ids"])
            examples = [e for e in data.examples if e.input_id in held]
            truth = np.array([ANOMALY_CONCEPT in e.concepts for e in examples], float)
            results[template.name] = (examples, truth, predictor.predict(examples, {}), artifacts)
    return results


def pooled_baseline_auroc(data: TrainingData, held_out: list[Example], truth: np.ndarray) -> float:
    """A plain nearest neighbour on the whole image's pooled Lite0 features (its 1280-d
    pre-logits): the anomaly score is the distance to the nearest fitted normal image."""
    location = weights.find_timm_weights(EFFICIENTNET_LITE0.weights, None).found
    model = create_model(EFFICIENTNET_LITE0, 1000, location).eval()
    held = {e.input_id for e in held_out}
    fitted = [
        e for e in data.examples if e.input_id not in held and ANOMALY_CONCEPT not in e.concepts
    ]

    def pooled(examples: list[Example]) -> torch.Tensor:
        pixels = np.stack(
            [np.asarray(e.load().resize((IMAGE_SIZE, IMAGE_SIZE)), np.float32) for e in examples]
        )
        images = (torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5
        with torch.no_grad():
            return model.forward_head(model.forward_features(images), pre_logits=True)

    distances = torch.cdist(pooled(held_out), pooled(fitted)).min(dim=1).values
    return float(roc_auc_score(truth, distances.numpy()))


def test_patchcore_beats_a_pooled_nearest_neighbour_on_local_defects(data, fitted):
    examples, truth, outputs, _ = fitted["PatchCore"]
    assert 0 < truth.sum() < len(truth)
    auroc = roc_auc_score(truth, [anomaly_score(o) for o in outputs])
    baseline = pooled_baseline_auroc(data, examples, truth)
    assert auroc > baseline, (auroc, baseline)
    padim = fitted["PaDiM"]
    padim_auroc = roc_auc_score(padim[1], [anomaly_score(o) for o in padim[2]])
    assert padim_auroc > baseline, (padim_auroc, baseline)


@pytest.mark.parametrize("name", ["PatchCore", "PaDiM"])
def test_metrics_report_image_and_pixel_auroc_and_f1(data, fitted, name):
    examples, truth, outputs, artifacts = fitted[name]
    template = PATCHCORE if name == "PatchCore" else PADIM
    metrics = template.evaluate(context(artifacts.parent), data, template.Params(), artifacts)
    extended = metrics["extended_metrics"]["user_metrics"]["anomaly"]
    assert extended["pixel_auroc"] > MIN_PIXEL_AUROC
    assert extended["image_auroc"] == metrics["binary_metrics"][0]["roc_auc"]
    assert metrics["binary_metrics"][0]["concept"]["id"] == ANOMALY_CONCEPT
    assert metrics["binary_metrics"][0]["num_pos"] == int(truth.sum())
    counts = extended["histogram"]
    assert sum(counts["normal"]) + sum(counts["anomalous"]) == len(examples)
    assert 0.0 <= extended["f1"] <= 1.0


def test_heatmaps_are_single_channel_the_inputs_size_and_light_up_the_defect(fitted):
    examples, truth, outputs, _ = fitted["PatchCore"]
    for example, output in zip(examples, outputs, strict=True):
        heatmap = Image.open(io.BytesIO(output.heatmap_png))
        assert heatmap.mode == "L"
        assert heatmap.size == example.load().size
    anomalous = next(i for i, t in enumerate(truth) if t)
    mask = Image.open(io.BytesIO(examples[anomalous].regions[0].mask_png))
    inside = np.asarray(mask) > 0
    heat = heatmap_values(outputs[anomalous].heatmap_png)
    assert heat[inside].mean() > heat[~inside].mean()


def test_a_non_square_input_gets_a_heatmap_its_own_size(fitted):
    _, _, _, artifacts = fitted["PatchCore"]
    pixels, _ = textured_image("brick", 90, 3, anomalous=False)
    wide = Image.fromarray(pixels).resize((150, 40))
    example = Example("wide", "image", lambda: wide, {})
    (output,) = PATCHCORE.load(artifacts).predict([example], {})
    assert Image.open(io.BytesIO(output.heatmap_png)).size == (150, 40)


def test_threshold_is_calibrated_to_one_half_and_the_setting_moves_it(fitted):
    examples, truth, outputs, artifacts = fitted["PatchCore"]
    predictor = PATCHCORE.load(artifacts)
    assert calibrated(np.array(predictor.threshold), predictor.threshold) == pytest.approx(0.5)
    scores = np.array([anomaly_score(o) for o in outputs])
    # the threshold was chosen for the best F1 on these held-out inputs: 0.5 separates them
    # at least as well as any other cut of the same scores
    flagged = scores >= 0.5
    best = max(
        2 * (s & (truth == 1)).sum() / (s.sum() + truth.sum())
        for s in (scores[:, None] >= scores[None, :]).T
    )
    assert 2 * (flagged & (truth == 1)).sum() / (flagged.sum() + truth.sum()) == best
    stricter = predictor.predict(examples, {"threshold": 0.8})
    looser = predictor.predict(examples, {"threshold": 0.2})
    for default, high, low in zip(outputs, stricter, looser, strict=True):
        assert anomaly_score(low) >= anomaly_score(default) >= anomaly_score(high)
    assert with_threshold(np.array(0.2), 0.2) == pytest.approx(0.5)
    with pytest.raises(DataError, match="threshold") as error:
        predictor.predict(examples[:1], {"threshold": 1.5})
    assert error.value.code == status_code_pb2.MODEL_INVALID_ARGUMENT


def test_choose_threshold_without_anomalies_sits_above_the_normals():
    threshold, how = choose_threshold(np.array([1.0, 2.0, 3.0]), np.zeros(0))
    assert threshold > 3.0 and "normal" in how
    threshold, _ = choose_threshold(np.array([1.0, 2.0]), np.array([4.0, 5.0]))
    assert 2.0 < threshold < 4.0


def test_export_has_the_feature_extractor_and_the_bank(fitted, tmp_path):
    _, _, _, artifacts = fitted["PatchCore"]
    archive = PATCHCORE.export(artifacts, tmp_path)
    with zipfile.ZipFile(archive) as bundle:
        names = set(bundle.namelist())
        config = json.loads(bundle.read("config.json"))
    assert {"model.onnx", "state.safetensors", "config.json"} <= names
    assert config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]
    assert config["threshold"] > 0


def test_greedy_coreset_is_the_k_center_choice():
    generator = torch.Generator().manual_seed(1)
    points = torch.randn(400, 8, generator=generator)
    picks = greedy_coreset(points, 20, seed=0).tolist()
    # the same choice made the slow way: full distance matrix, farthest point each step
    expected = [picks[0]]
    distances = torch.cdist(points, points)
    for _ in range(19):
        expected.append(int(distances[:, expected].min(dim=1).values.argmax()))
    assert picks == expected
    radius = torch.cdist(points, points[picks]).min(dim=1).values.max()
    random_radius = torch.cdist(points, points[:20]).min(dim=1).values.max()
    assert radius < random_radius


def test_check_data_needs_normal_images_and_one_normal_concept():
    pixels = samples.colour_pixels_jpeg((10, 10, 10), 16, 0)
    load = samples.decoder(pixels)
    anomalous = [Example("a", "image", load, {ANOMALY_CONCEPT: 1.0})]
    with pytest.raises(DataError) as error:
        ANOMALY.check_data(anomalous, ["normal", ANOMALY_CONCEPT], False)
    assert error.value.code == status_code_pb2.MODEL_TRAINING_NO_POSITIVES
    assert "normal" in error.value.description
    with pytest.raises(DataError) as error:
        ANOMALY.check_data(anomalous, ["normal", "fine"], False)
    assert error.value.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS
    normal_zero = Example("z", "image", load, {"normal": 0.0})
    fine = Example("n", "image", load, {"normal": 1.0})
    ANOMALY.check_data([fine, normal_zero], ["normal"], False)
    assert ANOMALY.relevant(anomalous[0], ["normal"])
    assert not ANOMALY.relevant(Example("x", "image", load, {"cat": 1.0}), ["normal"])


def test_version_page_partial_shows_scores_histogram_threshold_and_heatmaps(data, fitted):
    from modelmill.web.rendering import create_templates

    _, truth, _, artifacts = fitted["PatchCore"]
    metrics = PATCHCORE.evaluate(context(artifacts.parent), data, PATCHCORE.Params(), artifacts)
    samples = metrics["extended_metrics"]["user_metrics"]["anomaly"]["samples"]
    assert any(s["anomalous"] for s in samples) and not all(s["anomalous"] for s in samples)
    html = (
        create_templates()
        .env.get_template("partials/anomaly.html")
        .render(metrics=metrics, input_cards=lambda ids: {})
    )
    assert "Image AUROC" in html and "Pixel AUROC" in html and "threshold" in html
    assert html.count('class="overlay heatmap"') == len(samples)
    assert html.count("<rect") == 2 * len(
        metrics["extended_metrics"]["user_metrics"]["anomaly"]["histogram"]["normal"]
    )
