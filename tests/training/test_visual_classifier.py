"""The visual-classifier templates on tiny images: learning colour squares, where pretrained
weights come from (or the clear error when they cannot), checkpoints and exact resume, the head
in incremental training, the invalid-data tolerance, ONNX export checks, and the shared loop.
"""

from __future__ import annotations

import json
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from PIL import Image
from safetensors.torch import save_file

from modelmill.training import weights
from modelmill.training.checkpoints import BEST_DIR, LAST_DIR, carry_over_head, find_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Hardware,
    InvalidInput,
    TrainContext,
    TrainingCancelled,
    TrainingData,
)
from modelmill.training.data import (
    label_targets,
    split_train_validation,
    training_batches,
)
from modelmill.training.finetune.loop import (
    LoopData,
    LoopSettings,
    fit,
    learning_rate_at,
)
from modelmill.training.finetune.onnx_export import ExportMismatchError, export_zip
from modelmill.training.finetune.resume import plan_resume
from modelmill.training.runner import check_tolerance
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.templates.visual_classifier import (
    EFFICIENTNET_LITE0_CLASSIFIER,
    RESNET50_CLASSIFIER,
)
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0, RESNET50
from modelmill.training.templates.visual_classifier.model import create_model
from modelmill.training.templates.visual_classifier.training import initial_model
from modelmill.training.weights import find_timm_weights, read_state_dict

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
LITE0 = EFFICIENTNET_LITE0_CLASSIFIER
MIN_HELD_OUT_ACCURACY = 0.9


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No internet, and empty Hugging Face and torch caches: only what a test puts there."""
    monkeypatch.setattr(weights, "hub_online", lambda: False)
    monkeypatch.setattr(weights, "hf_cache_dir", lambda: tmp_path / "hf-cache")
    monkeypatch.setattr(weights, "torch_cache_dir", lambda: tmp_path / "torch-cache")


def square(rgb, seed: int, size: int = 40) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-30, 30, (size, size, 3))
    return Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8))


def colour_examples(per_colour: int, offset: int = 0, colours=COLOURS) -> list[Example]:
    return [
        Example(f"{name}-{offset + i}", "image", partial(square, rgb, offset + i), {name: 1.0})
        for name, rgb in colours.items()
        for i in range(per_colour)
    ]  # fmt: skip


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


def tiny(template=LITE0, **params):
    defaults = {"image_size": 32, "batch_size": 8, "num_epochs": 2, "early_stopping_patience": 0}
    return template.Params(**{**defaults, **params})


# ---- learning ----------------------------------------------------------------------------------


def test_fine_tuned_lite0_tells_colour_squares_apart(tmp_path):
    data = TrainingData(colour_examples(8), list(COLOURS), concepts_mutually_exclusive=True)
    # 64 px: at 32 px some seeds confuse two colours (ImageNet features of tiny upscaled squares)
    params = tiny(image_size=64, num_epochs=5, concepts_mutually_exclusive=True)
    ctx, reports = context(tmp_path)
    artifacts = LITE0.train(ctx, data, params).artifacts
    held_out = colour_examples(4, offset=100)
    outputs = LITE0.load(artifacts).predict(held_out, {})
    correct = [
        o.concepts[0][0] == e.input_id.split("-")[0] for o, e in zip(outputs, held_out, strict=True)
    ]
    assert np.mean(correct) >= MIN_HELD_OUT_ACCURACY
    assert reports[-1][0] == pytest.approx(1.0)
    metrics = LITE0.evaluate(ctx, data, params, artifacts)
    assert metrics["eval_info"]["params"]["split"] == "validation"
    assert {t["input"]["id"] for t in metrics["test_set"]} <= {e.input_id for e in data.examples}


def test_multi_label_model_scores_concepts_independently(tmp_path):
    data = TrainingData(colour_examples(3), list(COLOURS))
    artifacts = LITE0.train(context(tmp_path)[0], data, tiny()).artifacts
    scores = [
        value for _, value in LITE0.load(artifacts).predict(data.examples[:1], {})[0].concepts
    ]
    assert len(scores) == len(COLOURS) and sum(scores) != pytest.approx(1.0, abs=1e-3)


def test_evaluation_without_held_out_inputs_says_it_used_training_inputs(tmp_path):
    data = TrainingData(colour_examples(2), list(COLOURS))
    params = tiny(num_epochs=1, validation_fraction=0.0)
    ctx, _ = context(tmp_path)
    metrics = LITE0.evaluate(ctx, data, params, LITE0.train(ctx, data, params).artifacts)
    assert metrics["eval_info"]["params"]["split"].startswith("training inputs")
    assert len(metrics["test_set"]) == len(data.examples)


# ---- pretrained weights ------------------------------------------------------------------------


def test_imagenet_weights_missing_fail_check_params_with_where_we_looked(tmp_path):
    with pytest.raises(DataError) as caught:
        RESNET50_CLASSIFIER.check_params(RESNET50_CLASSIFIER.Params(), tmp_path / "weights")
    error = caught.value
    assert error.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS
    assert str(tmp_path / "weights" / "resnet50.a1_in1k.safetensors") in error.description
    assert "hf-cache" in error.description and "pretrained_weights to None" in error.description
    RESNET50_CLASSIFIER.check_params(RESNET50_CLASSIFIER.Params(pretrained_weights="None"), None)


def _random_resnet50_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return create_model(RESNET50, 1000, None).state_dict()


def test_weights_in_the_weights_dir_are_loaded(tmp_path):
    state = _random_resnet50_weights()
    save_file(state, str(tmp_path / "resnet50.a1_in1k.safetensors"))
    RESNET50_CLASSIFIER.check_params(RESNET50_CLASSIFIER.Params(), tmp_path)
    location = find_timm_weights(RESNET50.weights, tmp_path).found
    assert location is not None and location.source == "weights_dir"
    model = create_model(RESNET50, 2, location)
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    assert model.state_dict()["fc.weight"].shape == (2, 2048)  # a new head for 2 concepts


def test_weights_in_the_hugging_face_cache_are_found(tmp_path):
    repo = tmp_path / "hf-cache" / "models--timm--resnet50.a1_in1k"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file({"x": torch.zeros(1)}, str(snapshot / "model.safetensors"))
    found = find_timm_weights(RESNET50.weights, None).found
    assert found is not None and found.source == "hf_cache"


def test_lite0_starts_from_the_packaged_imagenet_weights():
    location = find_timm_weights(EFFICIENTNET_LITE0.weights, None).found
    assert location is not None and location.source == "package"
    packaged = list(read_state_dict(location.path).values())
    model = create_model(EFFICIENTNET_LITE0, 3, location)
    assert torch.equal(next(iter(model.state_dict().values())), packaged[0])


# ---- checkpoints, resume, incremental ---------------------------------------------------------


def test_checkpoints_are_safetensors_and_json_and_resume_from_the_saved_epoch(tmp_path):
    data = TrainingData(colour_examples(3), list(COLOURS))
    params = tiny(num_epochs=3)
    saves: list[int] = []
    first, _ = context(tmp_path / "a", cancelled=lambda: len(saves) >= 1,
                       save_checkpoint=lambda: saves.append(1))  # fmt: skip
    with pytest.raises(TrainingCancelled):
        LITE0.train(first, data, params)
    files = [p for p in first.checkpoint_dir.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json"}
    last = find_checkpoint(first.checkpoint_dir)
    assert last.meta["loop"]["epochs_done"] == 1 and last.optimizer_state() is not None
    resumed, reports = context(tmp_path / "b", resume_from=first.checkpoint_dir)
    LITE0.train(resumed, data, params)
    assert {int(m["epoch"]) for _, m in reports if "val_loss" in m} == {2, 3}
    assert (resumed.checkpoint_dir / BEST_DIR).is_dir()
    assert (resumed.checkpoint_dir / LAST_DIR).is_dir()


def test_incremental_start_copies_rows_of_kept_concepts_and_adds_fresh_ones(tmp_path):
    data = TrainingData(colour_examples(3), list(COLOURS))
    artifacts = LITE0.train(context(tmp_path / "v1")[0], data, tiny(num_epochs=1)).artifacts
    old = find_checkpoint(artifacts)
    ctx, _ = context(tmp_path / "v2", resume_from=artifacts, warm_start=True)
    plan = plan_resume(artifacts, True, LITE0.name, "another training")
    concepts = ["blue", "purple", "red"]
    model = initial_model(LITE0.backbone, ctx, concepts, None, plan, seed=0)
    old_head, new_head = (
        old.model_state()["classifier.weight"],
        model.state_dict()["classifier.weight"],
    )
    assert torch.equal(new_head[0], old_head[2]) and torch.equal(new_head[2], old_head[0])
    assert not any(torch.equal(new_head[1], row) for row in old_head)
    assert torch.equal(
        model.state_dict()["conv_stem.weight"], old.model_state()["conv_stem.weight"]
    )


def test_carry_over_head_drops_rows_of_concepts_no_longer_asked_for():
    old = {
        "fc.weight": torch.arange(6.0).view(3, 2),
        "fc.bias": torch.arange(3.0),
        "w": torch.ones(2),
    }
    new = {
        "fc.weight": torch.full((2, 2), -1.0),
        "fc.bias": torch.full((2,), -1.0),
        "w": torch.zeros(2),
    }
    counts = carry_over_head(old, ["a", "b", "c"], new, ["c", "d"], ("fc.weight", "fc.bias"))
    assert new["fc.weight"].tolist() == [[4.0, 5.0], [-1.0, -1.0]]
    assert new["fc.bias"].tolist() == [2.0, -1.0] and new["w"].tolist() == [1.0, 1.0]
    assert counts == {"tensors_copied": 1, "concepts_kept": 1, "concepts_new": 1,
                      "concepts_dropped": 2}  # fmt: skip


def test_incremental_training_needs_the_same_template(tmp_path):
    data = TrainingData(colour_examples(2), list(COLOURS))
    artifacts = LITE0.train(context(tmp_path / "v1")[0], data, tiny(num_epochs=1)).artifacts
    ctx, _ = context(tmp_path / "v2", resume_from=artifacts, warm_start=True)
    params = tiny(RESNET50_CLASSIFIER, pretrained_weights="None")
    with pytest.raises(DataError) as caught:
        RESNET50_CLASSIFIER.train(ctx, data, params)
    assert caught.value.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS


# ---- invalid inputs and the tolerance ----------------------------------------------------------


def _truncated_jpeg() -> Image.Image:
    import io

    buffer = io.BytesIO()
    square((1, 2, 3), 0).save(buffer, "JPEG")
    return Image.open(io.BytesIO(buffer.getvalue()[:100]))


def test_validate_names_undecodable_wrong_kind_and_unlabelled_inputs():
    examples = [
        *colour_examples(1),
        Example("broken", "image", _truncated_jpeg, {"red": 1.0}),
        Example("a-text", "text", lambda: "hello", {"red": 1.0}),
        Example("unlabelled", "image", lambda: square((0, 0, 0), 1), {}),
    ]
    reasons = {i.input_id: i.reason for i in LITE0.validate(examples, LITE0.Params())}
    assert set(reasons) == {"broken", "a-text", "unlabelled"}
    assert "decod" in reasons["broken"] and "text" in reasons["a-text"]


def test_tolerance_passes_at_or_below_the_share_and_fails_above_it_naming_inputs():
    invalid = [InvalidInput(f"bad-{i}", "is not a decodable image") for i in range(7)]
    check_tolerance(100, invalid, 7.0)
    with pytest.raises(DataError) as caught:
        check_tolerance(100, invalid, 5.0)
    error = caught.value
    assert error.code == status_code_pb2.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED
    assert "7 of 100 inputs (7.0%)" in error.description and "5%" in error.description
    assert "bad-4" in error.description and "bad-5" not in error.description
    assert "and 2 more" in error.description


# ---- export --------------------------------------------------------------------------------------


def test_export_checks_onnx_against_pytorch_and_records_the_difference(tmp_path):
    data = TrainingData(colour_examples(2), list(COLOURS))
    artifacts = LITE0.train(context(tmp_path)[0], data, tiny(num_epochs=1)).artifacts
    with zipfile.ZipFile(LITE0.export(artifacts, tmp_path / "out")) as bundle:
        config = json.loads(bundle.read("config.json"))
        manifest = json.loads(bundle.read("manifest.json"))
        assert json.loads(bundle.read("concepts.json")) == list(COLOURS)
    assert 0.0 <= config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]
    assert manifest["onnx_check"]["max_abs_diff"] == config["onnx"]["max_abs_diff"]
    assert "model.onnx" in manifest["files"]


def test_export_fails_when_onnx_and_pytorch_disagree(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Softmax(dim=1))
    inputs = {"x": torch.randn(2, 4)}
    with pytest.raises(ExportMismatchError):
        export_zip(module, inputs, [{"x": torch.randn(3, 4)}], {"x": {0: "batch"}}, tmp_path,
                   "m", {}, ["a", "b"], ("scores",), tolerance=-1.0)  # fmt: skip


# ---- estimate, split, the shared loop ------------------------------------------------------------


def test_estimate_grows_with_the_square_of_the_image_size():
    cpu = Hardware("cpu", "test", 2)
    small = LITE0.estimate(1000, LITE0.Params(image_size=112), cpu)
    large = LITE0.estimate(1000, LITE0.Params(image_size=224), cpu)
    overhead = LITE0.estimate(0, LITE0.Params(image_size=224), cpu)
    assert large - overhead == pytest.approx(4 * (small - overhead))
    assert LITE0.estimate(1000, LITE0.Params(), Hardware("cuda", "gpu", 8)) < LITE0.estimate(
        1000, LITE0.Params(), cpu
    )


def test_split_is_stratified_and_independent_of_input_order():
    examples = colour_examples(10)
    ids = [e.input_id for e in examples]
    train, validation = split_train_validation(ids, label_targets(examples, list(COLOURS)), 0.2, 7)
    assert len(validation) == 6 and not set(train) & set(validation)
    assert {ids[r].split("-")[0] for r in validation} == set(COLOURS)
    reversed_examples = examples[::-1]
    _, again = split_train_validation(
        [e.input_id for e in reversed_examples],
        label_targets(reversed_examples, list(COLOURS)), 0.2, 7,
    )  # fmt: skip
    assert {reversed_examples[r].input_id for r in again} == {ids[r] for r in validation}


def test_a_lone_last_input_joins_the_batch_before_it():
    assert training_batches(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert training_batches([0], 4) == [[0]]


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate_at(step, 10, 2, 1.0) for step in range(11)]
    assert rates[0] == 0.5 and rates[1] == 1.0 and rates[2] == 1.0
    assert rates == rates[:2] + sorted(rates[2:], reverse=True) and rates[10] == 0.0


def test_early_stopping_ends_training_and_keeps_the_best_epoch(tmp_path):
    model = torch.nn.Linear(2, 2)
    inputs, targets = torch.randn(4, 2), torch.eye(2).repeat(2, 1)
    batch = (inputs, targets, torch.ones_like(targets))
    data = LoopData(lambda generator: iter([batch]), 1, lambda: iter([batch]))
    settings = LoopSettings(num_epochs=10, learning_rate=0.0, weight_decay=0.0, beta1=0.9,
                            warmup_epochs=0, patience=2, seed=0, exclusive=True)  # fmt: skip
    saved: list[tuple[str, int]] = []
    ctx, _ = context(tmp_path)
    state = fit(
        ctx,
        model,
        CLASSIFICATION.objective(lambda m, x: m(x), exclusive=True),
        data,
        settings,
        lambda directory, s, optimizer, same_model_as=None: saved.append(
            (directory.name, s.epochs_done)
        ),
    )
    assert state.finished and state.epochs_done == 3 and state.best_epoch == 1
    assert saved[0] == (BEST_DIR, 1) and (BEST_DIR, 2) not in saved


def test_cancelling_stops_training(tmp_path):
    data = TrainingData(colour_examples(2), list(COLOURS))
    ctx, _ = context(tmp_path, cancelled=lambda: True)
    with pytest.raises(TrainingCancelled):
        LITE0.train(ctx, data, tiny())


class RisingScore:
    """An objective whose monitored metric rises and falls by epoch, higher being better."""

    monitor, higher_is_better = "val_map", True

    def __init__(self, scores: list[float]) -> None:
        self.scores = iter(scores)

    def loss(self, model, batch):
        return model(batch).sum() * 0.0

    def validate(self, model, batches):
        list(batches)
        return {"val_map": next(self.scores)}


def test_the_loop_keeps_the_best_epoch_of_a_metric_that_should_rise(tmp_path):
    model = torch.nn.Linear(2, 1)
    batch = torch.randn(3, 2)
    data = LoopData(lambda generator: iter([batch]), 1, lambda: iter([batch]))
    settings = LoopSettings(num_epochs=5, learning_rate=0.0, weight_decay=0.0, beta1=0.9,
                            warmup_epochs=0, patience=2, seed=0, exclusive=False)  # fmt: skip
    ctx, _ = context(tmp_path)
    saves = lambda directory, s, optimizer, same_model_as=None: None  # noqa: E731
    state = fit(ctx, model, RisingScore([0.2, 0.5, 0.4, 0.3, 0.9]), data, settings, saves)
    assert state.best_epoch == 2 and state.best_score == 0.5
    assert state.finished and state.epochs_done == 4  # two epochs without a higher mAP
