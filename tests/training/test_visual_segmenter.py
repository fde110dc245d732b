"""The visual-segmenter templates on drawn shapes (the segmentation task's sample data) at 64 px:
learning beyond the same recipe from random weights, mask predictions at the input's size, the
data checks and bad masks against the tolerance, metrics on hand-made label maps, ONNX parity,
exact resume and incremental training with a new concept.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format
from PIL import Image

from modelmill.training import weights
from modelmill.training.checkpoints import find_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Hardware,
    Output,
    Region,
    TrainContext,
    TrainingCancelled,
    TrainingData,
    predict_all,
)
from modelmill.training.finetune.resume import plan_resume
from modelmill.training.runner import TrainingPlan, run
from modelmill.training.tasks import samples
from modelmill.training.tasks.segmentation import (
    SEGMENTATION,
    confusion,
    iou_per_class,
    label_map,
    mask_png,
    mean_iou,
)
from modelmill.training.templates.visual_segmenter import (
    FPN_SEGMENTER,
    SEGFORMER_SEGMENTER,
    UNET_SEGMENTER,
)
from modelmill.training.templates.visual_segmenter.model import SMP_HEAD_KEYS, create_model
from modelmill.training.templates.visual_segmenter.training import initial_model

SIZE = 64
COUNT = 24  # sample images: 18 to train, 6 held out
MIN_AGREEMENT = 0.999  # share of pixels whose ONNX argmax matches PyTorch's (ties may flip)
SCORE_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No internet, and empty Hugging Face and torch caches: only the packaged Lite0 weights."""
    monkeypatch.setattr(weights, "hub_online", lambda: False)
    monkeypatch.setattr(weights, "hf_cache_dir", lambda: tmp_path / "hf-cache")
    monkeypatch.setattr(weights, "torch_cache_dir", lambda: tmp_path / "torch-cache")


def context(work: Path, **overrides) -> tuple[TrainContext, list]:
    reports: list = []
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    values = {
        "device": "cpu",
        "work_dir": work,
        "checkpoint_dir": work / "checkpoints",
        "report": lambda progress, **metrics: reports.append((progress, metrics)),
        "cancelled": lambda: False,
        "embeddings": None,
        **overrides,
    }
    return TrainContext(**values), reports


def tiny(template=FPN_SEGMENTER, **params):
    defaults = {
        "image_size": SIZE,
        "batch_size": 4,
        "num_epochs": 3,
        "validation_fraction": 0.25,
        "early_stopping_patience": 0,
    }
    return template.Params(**{**defaults, **params})


def shapes(count: int = COUNT, extra: bool = False) -> TrainingData:
    return SEGMENTATION.sample_data("image", count, SIZE, extra_concept=extra)


@dataclass
class Trained:
    data: TrainingData
    artifacts: Path
    metrics: dict


@pytest.fixture(scope="module")
def fpn(tmp_path_factory) -> Trained:
    data = shapes()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "hub_online", lambda: False)
        ctx, _ = context(tmp_path_factory.mktemp("fpn"))
        artifacts = FPN_SEGMENTER.train(ctx, data, tiny()).artifacts
        metrics = FPN_SEGMENTER.evaluate(ctx, data, tiny(), artifacts)
    return Trained(data, artifacts, metrics)


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


# ---- learning and predictions ------------------------------------------------------------------


def test_imagenet_encoder_beats_the_same_recipe_from_random_weights(fpn: Trained, tmp_path):
    random_ctx, _ = context(tmp_path)
    params = tiny(pretrained_weights="None")
    artifacts = FPN_SEGMENTER.train(random_ctx, fpn.data, params).artifacts
    from_scratch = FPN_SEGMENTER.evaluate(random_ctx, fpn.data, params, artifacts)
    trained = fpn.metrics["extended_metrics"]["user_metrics"]
    scratch = from_scratch["extended_metrics"]["user_metrics"]
    assert fpn.metrics["eval_info"]["params"]["split"] == "validation"
    assert trained["mean_iou"] > scratch["mean_iou"]
    assert trained["mean_iou"] > 0.5 and trained["pixel_accuracy"] > 0.9
    message = json_format.ParseDict(fpn.metrics, resources_pb2.EvalMetrics())
    assert {row.concept.id for row in message.metrics_by_class} == set(fpn.data.concepts)
    entry = message.test_set[0]
    assert entry.ground_truth_annotation.data.regions[0].region_info.mask.image.base64
    assert entry.predicted_annotation.data.regions, "a held-out shape was found"


def test_predictions_are_one_mask_per_concept_at_the_input_size(fpn: Trained):
    predictor = FPN_SEGMENTER.load(fpn.artifacts)
    # Another size and aspect than the training images: masks follow the input.
    image = Image.fromarray(
        np.asarray(fpn.data.examples[1].load().resize((90, 50)), np.uint8)
    )  # a square, stretched
    example = Example("other-size", "image", lambda: image)
    (output,) = predictor.predict([example], {})
    assert output.regions
    for region in output.regions:
        (concept, confidence), *rest = region.concepts.items()
        assert not rest and concept in fpn.data.concepts and 0.0 < confidence <= 1.0
        assert region.mask_png is not None
        mask = decoded(region.mask_png)
        assert mask.shape == (50, 90) and mask.any() and set(np.unique(mask)) <= {0, 255}
    covered = sum(decoded(r.mask_png) > 0 for r in output.regions)
    assert covered.max() == 1, "a pixel belongs to one concept at most"
    top = output.regions[0].concepts
    assert list(top) == ["square"]
    only = predictor.predict([example], {"select_concepts": [{"id": "circle"}]})[0]
    assert all(list(r.concepts) == ["circle"] for r in only.regions)
    assert predictor.predict([example], {"min_value": 1.01})[0].regions == []


# ---- data checks and the tolerance -------------------------------------------------------------


def test_polygons_are_rasterised_and_later_regions_paint_over_earlier_ones():
    square = ((0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 0.0))
    everything = np.full((10, 20), True)
    example = Example(
        "e", "image", lambda: None, {},
        (Region({"a": 1.0}, mask_png=mask_png(everything)), Region({"b": 1.0}, polygon=square)),
    )  # fmt: skip
    classes = label_map(example, ["a", "b"], (20, 10))
    assert (classes[:5, :10] == 2).mean() > 0.8 and (classes[6:, :] == 1).all()


def test_bad_masks_count_against_the_tolerance(tmp_path):
    data = shapes(12)
    image = data.examples[0].load()
    wrong_size = mask_png(np.ones((image.height + 3, image.width), bool))
    bad = [
        Example("wrong-size", "image", data.examples[0].load, {},
                (Region({"circle": 1.0}, mask_png=wrong_size),)),
        Example("not-a-png", "image", data.examples[0].load, {},
                (Region({"circle": 1.0}, mask_png=b"not a png"),)),
        Example("box-only", "image", data.examples[0].load, {},
                (Region({"circle": 1.0}, box=(0.1, 0.1, 0.5, 0.5)),)),
    ]  # fmt: skip
    invalid = FPN_SEGMENTER.validate([*data.examples, *bad], tiny())
    reasons = {item.input_id: item.reason for item in invalid}
    assert set(reasons) == {"wrong-size", "not-a-png", "box-only"}
    assert "its image's size" in reasons["wrong-size"]
    assert "not a decodable image" in reasons["not-a-png"]
    assert "no mask or polygon" in reasons["box-only"]
    plan = TrainingPlan(
        FPN_SEGMENTER.model_type_id,
        FPN_SEGMENTER.name,
        list(data.concepts),
        False,
        tiny(image_size=32, num_epochs=1).model_dump(),
        tolerance_percent=5.0,
    )
    ctx, _ = context(tmp_path / "strict")
    with pytest.raises(DataError) as caught:
        run(FPN_SEGMENTER, plan, [*data.examples, *bad], ctx)
    assert caught.value.code == status_code_pb2.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED
    assert "wrong-size" in caught.value.description
    lenient = TrainingPlan(**{**plan.to_json(), "tolerance_percent": 25.0})
    outcome = run(FPN_SEGMENTER, lenient, [*data.examples, *bad], context(tmp_path / "lenient")[0])
    assert {item.input_id for item in outcome.invalid} == set(reasons)
    scored = {entry["input"]["id"] for entry in outcome.metrics["test_set"]}
    assert scored and not scored & set(reasons)


def test_a_background_only_image_is_a_negative_not_invalid():
    data = shapes(6)
    negative = Example("empty", "image", data.examples[0].load, {"circle": 0.0})
    assert FPN_SEGMENTER.validate([negative], tiny()) == []
    assert not label_map(negative, data.concepts, negative.load().size).any()


def test_check_data_names_concepts_without_regions():
    data = shapes(6)
    with pytest.raises(DataError) as caught:
        SEGMENTATION.check_data(data.examples, [*data.concepts, "hexagon"], False)
    assert caught.value.code == status_code_pb2.MODEL_TRAINING_NO_POSITIVES
    assert "hexagon" in caught.value.description and "circle" not in caught.value.description
    with pytest.raises(DataError) as empty:
        SEGMENTATION.check_data([], ["circle"], False)
    assert empty.value.code == status_code_pb2.MODEL_TRAINING_NO_DATA
    box_only = Example("b", "image", lambda: None, {}, (Region({"circle": 1.0}, box=(0, 0, 1, 1)),))
    assert not SEGMENTATION.relevant(box_only, ["circle"])
    assert SEGMENTATION.relevant(data.examples[0], data.concepts)


# ---- metrics -----------------------------------------------------------------------------------


def test_iou_and_pixel_accuracy_on_hand_made_label_maps():
    truth = np.zeros((4, 4), np.uint8)
    truth[:2, :2] = 1  # 4 pixels of concept a
    predicted = np.zeros((4, 4), np.uint8)
    predicted[:2, :1] = 1  # 2 of them found
    predicted[3, 3] = 2  # and a false "b"
    matrix = confusion(truth, predicted, 3)
    ious = iou_per_class(matrix)
    assert ious[1] == pytest.approx(2 / 4) and ious[2] == 0.0
    assert mean_iou(matrix) == pytest.approx(0.25)
    example = Example("x", "image", lambda: Image.new("RGB", (4, 4)), {},
                      (Region({"a": 1.0}, mask_png=mask_png(truth == 1)),))  # fmt: skip
    output = Output(regions=[Region({"a": 0.7}, mask_png=mask_png(predicted == 1)),
                             Region({"b": 0.4}, mask_png=mask_png(predicted == 2))])  # fmt: skip
    metrics = SEGMENTATION.metrics([example], [output], ["a", "b", "c"], True)
    user = metrics["extended_metrics"]["user_metrics"]
    assert user["per_class_iou"] == {"a": 0.5, "b": 0.0, "c": None}
    assert user["mean_iou"] == pytest.approx(0.25)
    assert user["pixel_accuracy"] == pytest.approx(13 / 16)
    assert any("c:" in note for note in user["notes"])
    predicted_concepts = metrics["test_set"][0]["predicted_concepts"]
    assert {c["id"]: c["value"] for c in predicted_concepts} == {"a": 0.7, "b": 0.4}
    # A ground-truth dataset's mask of the wrong size is left out and named, not a crash.
    bad = Example("bad", "image", lambda: Image.new("RGB", (4, 4)), {},
                  (Region({"a": 1.0}, mask_png=mask_png(np.ones((5, 4), bool))),))  # fmt: skip
    again = SEGMENTATION.metrics([example, bad], [output, Output()], ["a", "b", "c"], True)
    assert [e["input"]["id"] for e in again["test_set"]] == ["x"]
    assert again["extended_metrics"]["user_metrics"]["mean_iou"] == pytest.approx(0.25)
    assert any(
        n.startswith("left out: bad") for n in again["extended_metrics"]["user_metrics"]["notes"]
    )


def test_sample_data_is_deterministic_and_cycles_distinct_images():
    first, again = shapes(40), shapes(40)
    pixels = [np.asarray(e.load()).tobytes() for e in first.examples]
    assert pixels == [np.asarray(e.load()).tobytes() for e in again.examples]
    assert len(set(pixels)) == samples.DISTINCT
    assert any(r.polygon for e in first.examples for r in e.regions)
    assert any(r.mask_png for e in first.examples for r in e.regions)
    assert shapes(8, extra=True).concepts == ["circle", "square", "triangle", "diamond"]


def test_estimate_grows_with_the_square_of_the_image_size():
    cpu = Hardware("cpu", "test", 2)
    small = UNET_SEGMENTER.estimate(1000, tiny(UNET_SEGMENTER, image_size=160), cpu)
    large = UNET_SEGMENTER.estimate(1000, tiny(UNET_SEGMENTER, image_size=320), cpu)
    assert large > 3 * small


# ---- export, resume, incremental ---------------------------------------------------------------


def test_export_matches_pytorch(fpn: Trained, tmp_path):
    import onnxruntime

    archive = FPN_SEGMENTER.export(fpn.artifacts, tmp_path)
    with zipfile.ZipFile(archive) as bundle:
        config = json.loads(bundle.read("config.json"))
        (tmp_path / "model.onnx").write_bytes(bundle.read("model.onnx"))
        assert json.loads(bundle.read("concepts.json")) == list(fpn.data.concepts)
    assert config["onnx"]["outputs"] == ["scores"]
    assert 0.0 <= config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]
    predictor = FPN_SEGMENTER.load(fpn.artifacts)
    images = [e.load() for e in fpn.data.examples[:3]]
    expected = predictor.probabilities(images)
    pixels = np.stack(
        [np.asarray(i.resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for i in images]
    )
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (scores,) = session.run(["scores"], {"images": pixels.transpose(0, 3, 1, 2).astype(np.float32)})
    assert scores.shape == (3, len(fpn.data.concepts) + 1, SIZE, SIZE)
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-3)
    agreement = (scores.argmax(axis=1) == expected.argmax(dim=1).numpy()).mean()
    assert agreement >= MIN_AGREEMENT


def test_segformer_resumes_exactly_after_a_killed_worker(tmp_path):
    data = shapes(12)
    params = tiny(SEGFORMER_SEGMENTER, image_size=32, num_epochs=2)
    straight = SEGFORMER_SEGMENTER.train(context(tmp_path / "a")[0], data, params).artifacts
    saves: list[int] = []
    killed, _ = context(tmp_path / "b", cancelled=lambda: len(saves) >= 1,
                        save_checkpoint=lambda: saves.append(1))  # fmt: skip
    with contextlib.suppress(TrainingCancelled):
        SEGFORMER_SEGMENTER.train(killed, data, params)
    assert find_checkpoint(killed.checkpoint_dir).meta["loop"]["epochs_done"] == 1
    resumed_ctx, _ = context(tmp_path / "c", resume_from=killed.checkpoint_dir)
    resumed = SEGFORMER_SEGMENTER.train(resumed_ctx, data, params).artifacts
    examples = list(data.examples)
    want = SEGFORMER_SEGMENTER.load(straight).predict(examples, predict_all(data.concepts))
    got = SEGFORMER_SEGMENTER.load(resumed).predict(examples, predict_all(data.concepts))
    for a, b in zip(got, want, strict=True):
        assert [r.mask_png for r in a.regions] == [r.mask_png for r in b.regions]
        for ra, rb in zip(a.regions, b.regions, strict=True):
            assert list(ra.concepts) == list(rb.concepts)
            np.testing.assert_allclose(
                list(ra.concepts.values()), list(rb.concepts.values()), atol=SCORE_TOLERANCE
            )


def test_incremental_training_keeps_rows_and_adds_a_fresh_one(fpn: Trained, tmp_path):
    old = find_checkpoint(fpn.artifacts)
    ctx, _ = context(tmp_path, resume_from=fpn.artifacts, warm_start=True)
    plan = plan_resume(fpn.artifacts, True, FPN_SEGMENTER.name, "another training")
    concepts = ["triangle", "diamond", "circle"]  # square dropped, diamond new
    model = initial_model(FPN_SEGMENTER.architecture, ctx, concepts, None, plan, seed=0)
    weight_key = SMP_HEAD_KEYS[0]
    old_rows, new_rows = old.model_state()[weight_key], model.state_dict()[weight_key]
    old_index = {c: i + 1 for i, c in enumerate(old.meta["concepts"])}
    assert torch.equal(new_rows[0], old_rows[0])  # background
    assert torch.equal(new_rows[1], old_rows[old_index["triangle"]])
    assert torch.equal(new_rows[3], old_rows[old_index["circle"]])
    assert not any(torch.equal(new_rows[2], row) for row in old_rows)
    fresh = create_model(FPN_SEGMENTER.architecture, 4, None).state_dict()
    stem = "encoder.model.conv_stem.weight"
    assert torch.equal(model.state_dict()[stem], old.model_state()[stem])
    assert not torch.equal(fresh[stem], old.model_state()[stem])
    data = shapes(extra=True)
    artifacts = FPN_SEGMENTER.train(ctx, data, tiny(num_epochs=1)).artifacts
    outputs = FPN_SEGMENTER.load(artifacts).predict(list(data.examples), predict_all(data.concepts))
    found = {c for o in outputs for r in o.regions for c in r.concepts}
    assert found <= set(data.concepts) and found & {"circle", "square", "triangle"}
