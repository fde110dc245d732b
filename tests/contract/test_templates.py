"""Every registered template, on tiny data its model type's task makes: train a few steps →
evaluate → predict → export → resume → incremental start; and its Params ↔ ListModelTypes
fields round trip.

Templates are taken from registry.TEMPLATES, so a template added later is covered without
editing this file; knobs are shrunk only where a template's Params have them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format
from PIL import Image
from pydantic import BaseModel

from modelmill.training import weights
from modelmill.training.contract import (
    DataError,
    Example,
    Hardware,
    Output,
    Template,
    TrainContext,
    TrainingCancelled,
    TrainingData,
    predict_all,
)
from modelmill.training.registry import TEMPLATES, params_fields, task_of
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.tasks.generation import GENERATION

# Knobs that make any template tiny, applied only where its Params have the field.
TINY = {
    "image_size": 32,
    "batch_size": 4,
    "num_epochs": 2,
    "max_length": 16,
    "warmup_epochs": 0.5,
    "early_stopping_patience": 0,
    "validation_fraction": 0.25,
    "enrich_dataset": "Disabled",
}
TINY_TRAINER = {
    "num_train_epochs": 2,
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.25,
    "early_stopping_patience": 0,
    "validation_split": 0.25,
}
FAKE_EMBEDDING_DIM = 64
SCORE_TOLERANCE = 1e-5  # a resumed training must give the same model as an uninterrupted one


def template_id(template: Template) -> str:
    return f"{template.model_type_id}:{template.name}"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No hub probe (3 s without internet); lookups see only what is on disk."""
    monkeypatch.setattr(weights, "hub_online", lambda: False)


# ---- tiny data: each template's task makes it --------------------------------------------

SAMPLE_COUNT = 13
SAMPLE_SIZE = 40  # pixels wide, or characters


def training_data(template: Template, extra_concept: bool = False) -> TrainingData:
    task = task_of(template.model_type_id)
    return task.sample_data(template.input_kind, SAMPLE_COUNT, SAMPLE_SIZE, extra_concept)


def fake_embeddings(examples, model_id: str) -> np.ndarray:
    """Deterministic stand-in for base-model embeddings: colour means or hashed words."""
    from modelmill.training.embedders import get_embedder

    dim = getattr(get_embedder(model_id), "dim", FAKE_EMBEDDING_DIM)
    vectors = np.zeros((len(examples), dim), np.float32)
    for row, example in enumerate(examples):
        content = example.load()
        if isinstance(content, Image.Image):
            vectors[row, :3] = np.asarray(content.convert("RGB"), np.float32).mean(axis=(0, 1))
        else:
            for word in content.split():
                vectors[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % dim] += 1.0
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


@dataclass
class Context:
    ctx: TrainContext
    reports: list[tuple[float, dict[str, Any]]]
    saves: list[int]


def make_context(
    work: Path,
    resume_from: Path | None = None,
    warm_start: bool = False,
    cancel_after_saves: int | None = None,
) -> Context:
    reports: list[tuple[float, dict[str, Any]]] = []
    saves: list[int] = []
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda progress, **metrics: reports.append((progress, metrics)),
        cancelled=lambda: cancel_after_saves is not None and len(saves) >= cancel_after_saves,
        embeddings=fake_embeddings,
        resume_from=resume_from,
        warm_start=warm_start,
        save_checkpoint=lambda: saves.append(1),
    )
    return Context(ctx, reports, saves)


def tiny_params(template: Template, tiny_text_model: Path, tiny_causal_model: Path) -> BaseModel:
    """The template's defaults, shrunk; pretrained weights only where this machine has them;
    a text template's base model is a tiny one of the kind it takes (a generator a causal LM)."""
    if task_of(template.model_type_id) is GENERATION:
        tiny_text_model = tiny_causal_model
    fields = template.Params.model_fields
    values: dict[str, Any] = {k: v for k, v in TINY.items() if k in fields}
    if "base_model" in fields:
        values["base_model"] = str(tiny_text_model)
    if "model_config_" in fields:
        defaults = template.Params()
        values["model_config"] = {
            **defaults.model_config_,  # type: ignore[attr-defined]
            "pretrained_model_name_or_path": str(tiny_text_model),
        }
        values["tokenizer_config"] = {"max_length": TINY["max_length"]}
        values["trainer_config"] = {**defaults.trainer_config, **TINY_TRAINER}  # type: ignore[attr-defined]
    params = template.Params(**values)
    if "pretrained_weights" in fields:
        try:
            template.check_params(params, None)
        except DataError:
            params = template.Params(**values, pretrained_weights="None")
    return params


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A 2-layer BERT from config (random weights) with the MiniLM vocabulary."""
    from modelmill.training.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    from modelmill.training.weights import PACKAGED_HF_MODELS

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = PACKAGED_HF_MODELS["sentence-transformers/all-MiniLM-L6-v2"]() / "vocab.txt"
    tokenizer = AutoTokenizer.from_pretrained(vocab.parent)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_causal_model(tmp_path_factory) -> Path:
    """A 2-layer Llama from config (random weights) with the MiniLM vocabulary."""
    from modelmill.training.compat import ensure_torchvision

    ensure_torchvision()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from modelmill.training.weights import PACKAGED_HF_MODELS

    folder = tmp_path_factory.mktemp("tiny-llama")
    vocab = PACKAGED_HF_MODELS["sentence-transformers/all-MiniLM-L6-v2"]() / "vocab.txt"
    tokenizer = AutoTokenizer.from_pretrained(vocab.parent)
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@dataclass
class Trained:
    template: Template
    params: BaseModel
    data: TrainingData
    artifacts: Path
    context: Context


@pytest.fixture(scope="module", params=TEMPLATES, ids=template_id)
def trained(request, tmp_path_factory, tiny_text_model, tiny_causal_model) -> Trained:
    template = request.param
    params = tiny_params(template, tiny_text_model, tiny_causal_model)
    data = training_data(template)
    context = make_context(tmp_path_factory.mktemp(template.name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(weights, "hub_online", lambda: False)
        artifacts = template.train(context.ctx, data, params).artifacts
    return Trained(template, params, data, artifacts, context)


def predict_everything(template: Template, artifacts: Path, data: TrainingData) -> list[Output]:
    """Every input's output, every concept at every score."""
    return template.load(artifacts).predict(list(data.examples), predict_all(data.concepts))


def numbers(output: Output) -> tuple[list[float], list[str]]:
    """What an output says, whatever its model type: its numbers (concept scores, region boxes,
    polygon points and values, embedding, heatmap pixels) and its words (region and mask
    bytes as hex, generated text), for comparing two models' answers."""
    values = [v for _, v in sorted(output.concepts)]
    words = [c for c, _ in sorted(output.concepts)]
    for region in output.regions:
        values += [*(region.box or ()), *(x for point in region.polygon for x in point)]
        values += [v for _, v in sorted(region.concepts.items())]
        values += [] if region.value is None else [region.value]
        words += sorted(region.concepts) + ([region.mask_png.hex()] if region.mask_png else [])
    if output.embedding is not None:
        values += [float(v) for v in output.embedding]
    if output.heatmap_png is not None:
        values += np.asarray(Image.open(io.BytesIO(output.heatmap_png)), float).ravel().tolist()
    if output.text is not None:
        words.append(output.text)
    return values, words


def mentioned(output: Output) -> set[str]:
    return {c for c, _ in output.concepts} | {c for r in output.regions for c in r.concepts}


# ---- Params ↔ ListModelTypes -------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES, ids=template_id)
def test_params_fields_round_trip_with_descriptions(template: Template):
    fields = params_fields(template.Params)
    assert fields, "the SDK needs every template option to list fields"
    for spec in fields:
        assert spec.description, f"{spec.path} has no description"
        assert len(spec.path.split(".")) >= 2
        if spec.range is not None:
            low, high, _ = spec.range
            assert low <= spec.default <= high, spec.path
        if spec.options:
            assert str(spec.default) in [option.id for option in spec.options], spec.path
    # what ListModelTypes lists as defaults (keyed as the API names them) validates back
    defaults = {spec.path.rsplit(".", 1)[-1]: spec.default for spec in fields}
    assert template.Params(**defaults) == template.Params()


def test_listing_templates_loads_no_torch():
    """The API process imports every template to answer ListModelTypes: keep that cheap."""
    code = (
        "import sys, modelmill.training.registry; print(sorted(m for m in {} if m in sys.modules))"
    )
    heavy = ("torch", "timm", "transformers", "sklearn", "peft", "onnxruntime")
    loaded = subprocess.run(
        [sys.executable, "-c", code.format(heavy)], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("template", TEMPLATES, ids=template_id)
def test_check_params_accepts_defaults_or_explains(template: Template, tmp_path):
    try:
        template.check_params(template.Params(), tmp_path)
    except DataError as error:
        assert error.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS
        assert str(tmp_path) in error.description or "weights" in error.description


@pytest.mark.parametrize("template", TEMPLATES, ids=template_id)
def test_estimate_is_positive_and_grows_with_inputs(template: Template):
    cpu = Hardware("cpu", "test", 2)
    small = template.estimate(100, template.Params(), cpu)
    assert 0 < small < template.estimate(10_000, template.Params(), cpu)


@pytest.mark.parametrize("template", TEMPLATES, ids=template_id)
def test_validate_flags_unreadable_inputs(template: Template):
    def unreadable():
        raise OSError("blob missing")

    good = training_data(template).examples[0]
    bad = Example("broken", template.input_kind, unreadable, {"x": 1.0})
    invalid = template.validate([good, bad], template.Params())
    assert [item.input_id for item in invalid] == ["broken"]
    assert invalid[0].reason


# ---- train → evaluate → predict → export --------------------------------------------------------


def test_training_reports_progress(trained: Trained):
    progress = [p for p, _ in trained.context.reports]
    assert progress, "no progress reported"
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)


def test_evaluate_gives_clarifai_eval_metrics(trained: Trained):
    t = trained
    metrics = t.template.evaluate(t.context.ctx, t.data, t.params, t.artifacts)
    message = json_format.ParseDict(
        metrics, resources_pb2.EvalMetrics(), ignore_unknown_fields=False
    )
    assert {m.concept.id for m in message.binary_metrics} <= set(t.data.concepts)
    assert message.test_set, "evaluation names the inputs it scored"


def test_predict_answers_each_input_in_the_training_concepts(trained: Trained):
    outputs = predict_everything(trained.template, trained.artifacts, trained.data)
    assert len(outputs) == len(trained.data.examples)
    for output in outputs:
        assert mentioned(output) <= set(trained.data.concepts)
        assert all(0.0 <= value <= 1.0 for _, value in output.concepts)
        for region in output.regions:
            assert all(0.0 <= value <= 1.0 for value in region.concepts.values())
            assert all(0.0 <= x <= 1.0 for x in region.box or ())


def test_classifier_predictions_sort_and_filter_concepts(trained: Trained):
    if task_of(trained.template.model_type_id) is not CLASSIFICATION:
        pytest.skip("ranking and filtering concepts per input is what classifiers answer")
    predictor = trained.template.load(trained.artifacts)
    examples = list(trained.data.examples[:3])
    for output in predictor.predict(examples, {}):
        values = [value for _, value in output.concepts]
        assert values == sorted(values, reverse=True)
        assert {concept for concept, _ in output.concepts} <= set(trained.data.concepts)
        assert all(0.0 <= value <= 1.0 for value in values)
    top = predictor.predict(examples, {"max_concepts": 1})
    assert all(len(o.concepts) == 1 for o in top)
    picked = trained.data.concepts[-1]
    selected = predictor.predict(examples, {"select_concepts": [{"id": picked}]})
    assert all([c for c, _ in o.concepts] == [picked] for o in selected)
    assert all(not o.concepts for o in predictor.predict(examples, {"min_value": 1.01}))


def test_export_writes_a_zip_with_its_config(trained: Trained, tmp_path):
    archive = trained.template.export(trained.artifacts, tmp_path)
    with zipfile.ZipFile(archive) as bundle:
        names = bundle.namelist()
    assert "config.json" in names and "concepts.json" in names
    if task_of(trained.template.model_type_id).export_outputs:  # the task exports to ONNX
        assert any(name.endswith(".onnx") for name in names)


# ---- resume and incremental training -----------------------------------------------------------


def test_resumed_training_matches_an_uninterrupted_one(trained: Trained, tmp_path):
    t = trained
    first = make_context(tmp_path / "first", cancel_after_saves=1)
    with contextlib.suppress(TrainingCancelled):
        t.template.train(first.ctx, t.data, t.params)
    # the runtime hands a copy of the uploaded checkpoint folder to the retried job
    copy = tmp_path / "downloaded"
    shutil.copytree(first.ctx.checkpoint_dir, copy)
    second = make_context(tmp_path / "second", resume_from=copy if first.saves else None)
    artifacts = t.template.train(second.ctx, t.data, t.params).artifacts
    resumed = [numbers(o) for o in predict_everything(t.template, artifacts, t.data)]
    straight = [numbers(o) for o in predict_everything(t.template, t.artifacts, t.data)]
    assert [words for _, words in resumed] == [words for _, words in straight]
    for (got, _), (want, _) in zip(resumed, straight, strict=True):
        np.testing.assert_allclose(got, want, atol=SCORE_TOLERANCE)


def test_incremental_training_adds_a_concept(trained: Trained, tmp_path):
    t = trained
    data = training_data(t.template, extra_concept=True)
    context = make_context(tmp_path, resume_from=t.artifacts, warm_start=True)
    artifacts = t.template.train(context.ctx, data, t.params).artifacts
    outputs = predict_everything(t.template, artifacts, data)
    assert len(outputs) == len(data.examples)
    assert set().union(*map(mentioned, outputs)) <= set(data.concepts)
    if task_of(t.template.model_type_id) is CLASSIFICATION:  # every concept scored per input
        assert {c for c, _ in outputs[0].concepts} == set(data.concepts)
