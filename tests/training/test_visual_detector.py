"""The visual detector on shapes it draws (tasks/detection.sample_data): learning beats the same
recipe from random weights, ONNX matches PyTorch box for box, incremental training carries
each head layout's class rows over, bad boxes are refused or counted against the tolerance,
and the COCO metrics are right on boxes whose answer is known.

The contract test (tests/contract/test_templates.py) covers every template's train → evaluate
→ predict → export → exact resume → incremental start; this file goes deeper on the fast one.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format

from modelmill.training import weights
from modelmill.training.contract import (
    DataError,
    Example,
    Output,
    Region,
    TrainContext,
    TrainingData,
    predict_all,
)
from modelmill.training.runner import TrainingPlan, run
from modelmill.training.tasks import samples
from modelmill.training.tasks.coco_eval import AREA_BANDS, Box, coco_evaluate
from modelmill.training.tasks.detection import COLOURS, DETECTION, shapes_image
from modelmill.training.templates.visual_detector import (
    FASTER_RCNN_DETECTOR,
    RETINANET_DETECTOR,
    SSD_DETECTOR,
    YOLOF_DETECTOR,
)

IMAGE_SIZE = 64
TRAIN_IMAGES = 48
TEST_SEED_BASE = 10_000  # test images are drawn from seeds the sample set never uses
TINY = {
    "image_size": IMAGE_SIZE,
    "batch_size": 8,
    "num_epochs": 4,
    "min_samples_per_epoch": 96,  # 12 steps an epoch, 48 in all: enough to find the shapes
    "validation_fraction": 0.2,
    "early_stopping_patience": 0,
    "warmup_epochs": 0.5,
    "per_item_lrate": 2.5e-5,
    "detection_threshold": 0.0,  # export and predictions carry every box: a strict parity check
}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(weights, "hub_online", lambda: False)


def context(work: Path, resume_from: Path | None = None, warm_start: bool = False):
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda *a, **k: None,
        cancelled=lambda: False,
        embeddings=None,  # type: ignore[arg-type]
        resume_from=resume_from,
        warm_start=warm_start,
    )


def unseen_images(count: int) -> list[Example]:
    examples = []
    for i in range(count):
        data, regions = shapes_image(COLOURS, IMAGE_SIZE * 4 // 3, TEST_SEED_BASE + i)
        examples.append(Example(f"t{i}", "image", samples.decoder(data), regions=tuple(regions)))
    return examples


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return DETECTION.sample_data("image", TRAIN_IMAGES, IMAGE_SIZE * 4 // 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data) -> Path:
    params = RETINANET_DETECTOR.Params(**TINY)
    work = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "hub_online", lambda: False)
        return RETINANET_DETECTOR.train(context(work), data, params).artifacts


def test_imagenet_backbone_learns_boxes_better_than_random_weights(trained, data, tmp_path):
    tests = unseen_images(24)
    params = RETINANET_DETECTOR.Params(**TINY, pretrained_weights="None")
    from_scratch = RETINANET_DETECTOR.train(context(tmp_path), data, params).artifacts

    def map50(artifacts: Path) -> float:
        outputs = RETINANET_DETECTOR.load(artifacts).predict(tests, predict_all(data.concepts))
        metrics = DETECTION.metrics(tests, outputs, data.concepts, False)
        return metrics["summary"]["mean_avg_precision_iou_50"]

    pretrained, scratch = map50(trained), map50(from_scratch)
    assert pretrained > scratch, (pretrained, scratch)
    assert pretrained > 0.01, pretrained  # it found shapes, not chance overlaps


def test_predictions_are_regions_with_boxes_scores_and_settings(trained, data):
    predictor = RETINANET_DETECTOR.load(trained)
    examples = list(data.examples[:4])
    everything = predictor.predict(examples, predict_all(data.concepts))
    assert all(o.regions and not o.concepts for o in everything)
    for output in everything:
        values = [r.value for r in output.regions]
        assert values == sorted(values, reverse=True)
        for region in output.regions:
            ((concept, score),) = region.concepts.items()
            assert concept in data.concepts and score == region.value
            top, left, bottom, right = region.box
            assert 0 <= top <= bottom <= 1 and 0 <= left <= right <= 1
    few = predictor.predict(examples, {"min_value": 0.0, "max_detections": 3})
    assert all(len(o.regions) <= 3 for o in few)
    high = predictor.predict(examples, {"detection_threshold": 0.2})
    assert all(r.value >= 0.2 for o in high for r in o.regions)
    picked = data.concepts[0]
    only = predictor.predict(examples, {"min_value": 0.0, "select_concepts": [{"id": picked}]})
    assert all(set(r.concepts) == {picked} for o in only for r in o.regions)
    assert any(o.regions for o in only)


def test_evaluation_is_clarifai_eval_metrics_on_the_held_out_split(trained, data):
    metrics = RETINANET_DETECTOR.evaluate(
        context(trained.parent), data, RETINANET_DETECTOR.Params(**TINY), trained
    )
    message = json_format.ParseDict(metrics, resources_pb2.EvalMetrics())
    assert (
        0
        <= message.summary.mean_avg_precision_iou_range
        <= message.summary.mean_avg_precision_iou_50
    )
    assert {m.concept.id for m in message.metrics_by_class} == set(data.concepts)
    assert {m.area_name for m in message.metrics_by_area} == {name for name, _, _ in AREA_BANDS}
    held_out = {e.input.id for e in message.test_set}
    assert held_out and len(held_out) < len(data.examples)  # the validation split only
    assert metrics["eval_info"]["params"]["evaluated_on"] == "held-out split"
    entry = message.test_set[0]
    assert entry.predicted_annotation.data.regions  # every box at evaluation (min_value 0)


def test_onnx_export_gives_the_same_boxes_scores_and_labels(trained, data, tmp_path):
    import onnxruntime

    from modelmill.training.templates.visual_detector.data import letterbox

    archive = RETINANET_DETECTOR.export(trained, tmp_path)
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(tmp_path / "export")
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["onnx"]["outputs"] == ["boxes", "scores", "labels"]
    assert config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]
    session = onnxruntime.InferenceSession(
        str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    example = data.examples[0]
    pixels, (height, width) = letterbox(example.load(), IMAGE_SIZE, True)
    feed = {"images": pixels.transpose(2, 0, 1)[None].astype(np.float32)}
    boxes, scores, labels = session.run(["boxes", "scores", "labels"], feed)
    expected = RETINANET_DETECTOR.load(trained).predict([example], {"min_value": 0.0})[0]
    assert len(scores) == len(expected.regions) > 0
    order = np.argsort(-scores, kind="stable")
    for row, region in zip(order, expected.regions, strict=True):
        assert abs(float(scores[row]) - region.value) < 1e-4
        assert data.concepts[int(labels[row])] in region.concepts
        # ONNX boxes are fractions of the square; predictions, of the image inside it
        top, left, bottom, right = boxes[row] * IMAGE_SIZE
        fractions = (top / height, left / width, bottom / height, right / width)
        np.testing.assert_allclose(np.clip(fractions, 0, 1), region.box, atol=1e-4)


def test_incremental_training_adds_a_concept_and_keeps_the_old_ones(trained, data, tmp_path):
    more = DETECTION.sample_data("image", TRAIN_IMAGES, IMAGE_SIZE * 4 // 3, extra_concept=True)
    assert len(more.concepts) == len(data.concepts) + 1
    params = RETINANET_DETECTOR.Params(**{**TINY, "num_epochs": 1})
    ctx = context(tmp_path, resume_from=trained, warm_start=True)
    artifacts = RETINANET_DETECTOR.train(ctx, more, params).artifacts
    outputs = RETINANET_DETECTOR.load(artifacts).predict(
        list(more.examples), predict_all(more.concepts)
    )
    found = {c for o in outputs for r in o.regions for c in r.concepts}
    assert found <= set(more.concepts) and more.concepts[-1] in found


@pytest.mark.parametrize(
    "template",
    [RETINANET_DETECTOR, SSD_DETECTOR, FASTER_RCNN_DETECTOR, YOLOF_DETECTOR],
    ids=lambda t: t.name,
)
def test_class_rows_of_kept_concepts_carry_over_in_every_head_layout(template):
    """Old concepts [a, b]; new [b, c, a]: b's and a's rows (per anchor, background and box
    rows included) move to their new places; c's stay freshly initialised."""
    from modelmill.training.templates.visual_classifier.model import normalisation
    from modelmill.training.templates.visual_detector.model import (
        build_detector,
        carry_over_classes,
        class_row_layouts,
        lite0_features,
    )

    mean, std = normalisation(template.backbone)

    def detector(count: int):
        torch.manual_seed(count)
        features = lite0_features(template.backbone.weights, None)
        return build_detector(template.layout, count, 64, mean, std, features)

    old, new = detector(2), detector(3)
    old_state, new_state = old.state_dict(), new.state_dict()
    fresh = {k: v.clone() for k, v in new_state.items()}
    rows = class_row_layouts(new)
    assert rows, "every layout names its class rows"
    counts = carry_over_classes(old_state, ["a", "b"], new_state, ["b", "c", "a"], rows)
    assert counts["concepts_kept"] == 2 and counts["concepts_new"] == 1
    for key, (groups, offset, per) in rows.items():
        o = old_state[key].reshape(groups, offset + 2, per, -1)
        n = new_state[key].reshape(groups, offset + 3, per, -1)
        f = fresh[key].reshape(groups, offset + 3, per, -1)
        torch.testing.assert_close(n[:, offset + 0], o[:, offset + 1])  # b
        torch.testing.assert_close(n[:, offset + 2], o[:, offset + 0])  # a
        torch.testing.assert_close(n[:, offset + 1], f[:, offset + 1])  # c: fresh
        if offset:
            torch.testing.assert_close(n[:, 0], o[:, 0])  # background
    body = "model.backbone.body.conv_stem.weight"
    torch.testing.assert_close(new_state[body], old_state[body])


# ---- bad data ----------------------------------------------------------------------------------


def _plan(tolerance: float) -> TrainingPlan:
    return TrainingPlan(
        "visual-detector",
        RETINANET_DETECTOR.name,
        list(COLOURS),
        False,
        {**TINY, "num_epochs": 1, "min_samples_per_epoch": 0, "image_size": 64},
        tolerance,
    )


def _bad_examples(data: TrainingData) -> list[Example]:
    good = data.examples[0]
    return [
        Example(
            "outside", "image", good.load, regions=(Region({"red": 1.0}, box=(0.2, 1.3, 0.5, 1.6)),)
        ),
        Example(
            "flat", "image", good.load, regions=(Region({"red": 1.0}, box=(0.2, 0.2, 0.2, 0.6)),)
        ),
        Example("unboxed", "image", good.load, {"green": 1.0}),
        Example("text", "text", lambda: "a red square", regions=good.regions),
    ]


def test_bad_boxes_are_invalid_inputs_with_reasons(data):
    invalid = RETINANET_DETECTOR.validate(
        [*data.examples[:3], *_bad_examples(data)], RETINANET_DETECTOR.Params()
    )
    reasons = {item.input_id: item.reason for item in invalid}
    assert set(reasons) == {"outside", "flat", "unboxed", "text"}
    assert "outside the image" in reasons["outside"]
    assert "no area" in reasons["flat"]
    assert "no box" in reasons["unboxed"] and "green" in reasons["unboxed"]


def test_bad_annotations_over_the_tolerance_stop_training_before_it_starts(data, tmp_path):
    examples = [*data.examples[:8], *_bad_examples(data)]
    with pytest.raises(DataError) as refused:
        run(RETINANET_DETECTOR, _plan(tolerance=10.0), examples, context(tmp_path))
    assert refused.value.code == status_code_pb2.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED
    assert "outside" in refused.value.description
    assert not (tmp_path / "checkpoints" / "best").exists()


def test_bad_annotations_within_the_tolerance_are_skipped(data, tmp_path):
    examples = [*data.examples[:12], *_bad_examples(data)[:1]]
    outcome = run(RETINANET_DETECTOR, _plan(tolerance=10.0), examples, context(tmp_path))
    assert [item.input_id for item in outcome.invalid] == ["outside"]
    assert "mean_avg_precision_iou_50" in outcome.metrics["summary"]


def test_check_data_names_concepts_without_any_box(data):
    with pytest.raises(DataError) as missing:
        DETECTION.check_data(list(data.examples), [*data.concepts, "purple"], False)
    assert missing.value.code == status_code_pb2.MODEL_TRAINING_NO_POSITIVES
    assert "purple" in missing.value.description and "red" not in missing.value.description
    with pytest.raises(DataError) as empty:
        DETECTION.check_data([], ["red"], False)
    assert empty.value.code == status_code_pb2.MODEL_TRAINING_NO_DATA
    DETECTION.check_data(list(data.examples), data.concepts, False)


def test_relevant_inputs_have_boxes_of_the_concepts(data):
    boxed = next(e for e in data.examples if e.regions)
    empty = next(e for e in data.examples if not e.regions)
    concept = next(iter(boxed.regions[0].concepts))
    assert DETECTION.relevant(boxed, [concept])
    assert not DETECTION.relevant(boxed, ["purple"])
    assert not DETECTION.relevant(empty, data.concepts)  # only a dataset brings negatives


# ---- metrics ------------------------------------------------------------------------------------


def test_sample_data_has_negative_images_and_boxes_of_every_concept(data):
    assert any(not e.regions for e in data.examples)
    assert {c for e in data.examples for r in e.regions for c in r.concepts} == set(data.concepts)
    image = data.examples[0].load()
    assert image.size == (IMAGE_SIZE * 4 // 3, IMAGE_SIZE)


def test_perfect_predictions_score_one_and_a_miss_lowers_the_concept(data):
    examples = list(data.examples)
    perfect = [
        Output(regions=[Region(r.concepts, box=r.box, value=0.9) for r in e.regions])
        for e in examples
    ]
    metrics = DETECTION.metrics(examples, perfect, data.concepts, False)
    assert metrics["summary"]["mean_avg_precision_iou_50"] == pytest.approx(1.0)
    assert metrics["summary"]["mean_avg_precision_iou_range"] == pytest.approx(1.0)
    # Drop every "red" box and add one red box where nothing is.
    missing = [
        Output(
            regions=[r for r in o.regions if "red" not in r.concepts]
            + [Region({"red": 0.99}, box=(0.0, 0.0, 0.05, 0.05), value=0.99)]
        )
        for o in perfect
    ]
    worse = DETECTION.metrics(examples, missing, data.concepts, False)
    per_class = {
        row["concept"]["id"]: row.get("avg_precision", -1)
        for row in worse["metrics_by_class"]
        if row["iou"] == 0.5
    }
    assert per_class["red"] == pytest.approx(0.0) and per_class["green"] == pytest.approx(1.0)


def test_pycocotools_and_faster_coco_eval_agree():
    rng = np.random.default_rng(1)
    truth, predictions = [], []
    for _ in range(40):
        true = [Box(str(rng.integers(2)), 0.1 * k, 0.1, 0.1 * k + 0.3, 0.5) for k in range(3)]
        truth.append(true)
        predictions.append(
            [
                Box(
                    b.concept,
                    b.top + rng.normal(0, 0.03),
                    b.left,
                    b.bottom,
                    b.right,
                    float(rng.random()),
                )
                for b in true
            ]
        )
    fast = coco_evaluate(truth, predictions, ["0", "1"], "faster_coco_eval")
    reference = coco_evaluate(truth, predictions, ["0", "1"], "pycocotools")
    np.testing.assert_allclose(fast.precision, reference.precision, atol=1e-9)
    assert 0 < fast.average_precision() < 1


def test_area_bands_are_shares_of_the_image():
    small = Box("a", 0.0, 0.0, 0.05, 0.05)  # 0.25 % of the image
    large = Box("a", 0.0, 0.0, 0.5, 0.5)  # 25 %
    result = coco_evaluate([[small, large]], [[small, large]], ["a"])
    assert result.true_counts.tolist() == [[2, 1, 0, 1]]


def test_detection_partial_draws_true_and_predicted_boxes(data):
    from modelmill.web.rendering import create_templates

    examples = list(data.examples[:3])
    outputs = [
        Output(regions=[Region(r.concepts, box=r.box, value=0.8) for r in e.regions])
        for e in examples
    ]
    metrics = DETECTION.metrics(examples, outputs, data.concepts, False)

    def input_cards(ids):
        from types import SimpleNamespace

        return {
            i: SimpleNamespace(image_url=f"/blob/{i}", width=400, height=300, label_size=12)
            for i in ids
        }

    html = (
        create_templates()
        .env.get_template("partials/detection.html")
        .render(metrics=metrics, input_cards=input_cards)
    )
    assert "mAP@0.5" in html and 'id="ap-per-concept"' in html
    assert html.count('class="region truth"') == sum(len(e.regions) for e in examples)
    assert html.count('class="region predicted"') == sum(len(o.regions) for o in outputs)
    for concept in data.concepts:
        assert f"<td>{concept}</td>" in html


@pytest.mark.parametrize("keep_aspect_ratio", [True, False])
def test_boxes_move_with_the_pixels_through_letterbox_resize_and_flip(data, keep_aspect_ratio):
    """After placing, random resizing (crop or pad) and flipping, the centre of every box is
    still on its shape: the pixel there has the concept's colour."""
    from modelmill.training.templates.visual_detector.data import (
        PlacedImages,
        flip,
        random_resize,
    )

    placed = PlacedImages(list(data.examples), data.concepts, IMAGE_SIZE, keep_aspect_ratio)
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for row in range(len(data.examples)):
        for resize, mirrored in [(False, False), (True, False), (False, True), (True, True)]:
            item = placed[row]
            if resize:
                item = random_resize(item, 0.6, 1.6, generator)
            if mirrored:
                item = flip(item)
            boxes = list(zip(item.boxes.tolist(), item.labels.tolist(), strict=True))
            for x1, y1, x2, y2 in (box for box, _ in boxes):
                assert 0 <= x1 < x2 <= IMAGE_SIZE and 0 <= y1 < y2 <= IMAGE_SIZE
                x, y = int((x1 + x2) / 2), int((y1 + y2) / 2)
                pixel = item.pixels[:, y, x].float().numpy()
                # Shapes may overlap: the colour is that of one of the boxes over this point.
                colours = [
                    np.array(COLOURS[data.concepts[label]], np.float32)
                    for (a1, b1, a2, b2), label in boxes
                    if a1 <= x <= a2 and b1 <= y <= b2
                ]
                # Resizing blends small shapes' centres a little: the nearest concept colour
                # must be one of those boxes' and not far from it.
                nearest = min(COLOURS.values(), key=lambda c: np.abs(pixel - c).max())
                assert any(np.array_equal(nearest, c) for c in colours), (row, resize, pixel)
                assert min(np.abs(pixel - c).max() for c in colours) < 80, (row, resize, pixel)
                checked += 1
    assert checked > len(data.examples)
