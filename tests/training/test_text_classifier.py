"""The text-classifier templates: fine-tuning all-MiniLM-L6-v2 (shipped offline) on short texts of
distinct topics, HuggingFace_AdvancedConfig with LoRA on a tiny BERT, GPT-Neo LoRA on a tiny
GPT-Neo, where base weights come from (or the clear error), config checks, and the head in
incremental training.
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

from modelmill.training import weights
from modelmill.training.checkpoints import BEST_DIR, find_checkpoint
from modelmill.training.compat import ensure_torchvision
from modelmill.training.contract import DataError, Example, TrainContext, TrainingData
from modelmill.training.finetune.resume import plan_resume
from modelmill.training.templates.text_classifier import (
    BERT_FINE_TUNE,
    GPT_NEO_125M_LORA,
    HUGGINGFACE_ADVANCED,
)
from modelmill.training.templates.text_classifier.config import text_settings
from modelmill.training.templates.text_classifier.model import restore_model
from modelmill.training.templates.text_classifier.training import initial_model
from modelmill.training.weights import PACKAGED_HF_MODELS, find_hf_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOPICS = {
    "cooking": [
        "Simmer the tomato sauce and add fresh basil.", "Knead the bread dough until smooth.",
        "Whisk the eggs with sugar for the cake.", "Roast the chicken with garlic and lemon.",
        "Chop the onions and fry them in butter.", "Season the soup with salt and pepper.",
        "Boil the pasta in salted water.", "Bake the cookies until golden.",
        "Grate cheese over the warm risotto.", "Marinate the beef in soy sauce.",
        "Stir the custard so that it does not burn.", "Steam the rice and fluff it.",
    ],
    "football": [
        "The striker scored twice in the second half.", "The goalkeeper saved a late penalty.",
        "Our team won the league after the final match.", "The referee showed a red card.",
        "The coach changed the formation at half time.", "Fans sang in the stadium all night.",
        "The winger crossed and the defender cleared.", "The club signed a new midfielder.",
        "A header from the corner won the cup.", "The match ended in a goalless draw.",
        "The captain lifted the trophy.", "Extra time and then a penalty shootout.",
    ],
}  # fmt: skip
HELD_OUT = {
    "cooking": ["Fry the mushrooms with thyme.", "Whip the cream for the dessert.",
                "Slice the potatoes for the gratin.", "Bake the bread in a hot oven."],
    "football": ["The forward missed an open goal.", "Supporters cheered the late winner.",
                 "The defender was booked for a foul.", "The team lost the derby match."],
}  # fmt: skip
MIN_HELD_OUT_ACCURACY = 0.85


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setattr(weights, "hub_online", lambda: False)
    monkeypatch.setattr(weights, "hf_cache_dir", lambda: tmp_path / "hf-cache")


def examples(topics: dict[str, list[str]], prefix: str = "") -> list[Example]:
    return [
        Example(f"{prefix}{t}-{i}", "text", partial(str, s), {t: 1.0})
        for t, texts in topics.items()
        for i, s in enumerate(texts)
    ]


def context(work: Path, **overrides) -> TrainContext:
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    values = {
        "device": "cpu",
        "work_dir": work,
        "checkpoint_dir": work / "checkpoints",
        "report": lambda progress, **metrics: None,
        "cancelled": lambda: False,
        "embeddings": None,
        **overrides,
    }
    return TrainContext(**values)


def accuracy(predictor, topics: dict[str, list[str]]) -> float:
    held_out = examples(topics, "held-")
    outputs = predictor.predict(held_out, {})
    truth = [e.input_id.split("-")[1] for e in held_out]
    return float(np.mean([o.concepts[0][0] == t for o, t in zip(outputs, truth, strict=True)]))


def _vocab() -> Path:
    return PACKAGED_HF_MODELS[MINILM]() / "vocab.txt"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    ensure_torchvision()
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(_vocab().parent)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_gpt_neo(tmp_path_factory) -> Path:
    """A 2-layer GPT-Neo from config, saved under the hub id's name as a weights folder."""
    ensure_torchvision()
    from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM

    weights_dir = tmp_path_factory.mktemp("weights")
    folder = weights_dir / "EleutherAI--gpt-neo-125m"
    tokenizer = AutoTokenizer.from_pretrained(_vocab().parent)
    config = GPTNeoConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=64,
        bos_token_id=101,
        eos_token_id=102,
    )
    GPTNeoForCausalLM(config).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    return weights_dir


# ---- learning ----------------------------------------------------------------------------------


def test_fine_tuned_minilm_tells_topics_apart(tmp_path):
    data = TrainingData(examples(TOPICS), list(TOPICS), concepts_mutually_exclusive=True)
    params = BERT_FINE_TUNE.Params(max_length=32, batch_size=8, num_epochs=3,
                                   per_item_lrate=1e-5, early_stopping_patience=0)  # fmt: skip
    ctx = context(tmp_path)
    artifacts = BERT_FINE_TUNE.train(ctx, data, params).artifacts
    assert accuracy(BERT_FINE_TUNE.load(artifacts), HELD_OUT) >= MIN_HELD_OUT_ACCURACY
    metrics = BERT_FINE_TUNE.evaluate(ctx, data, params, artifacts)
    assert metrics["summary"]["top1_accuracy"] >= MIN_HELD_OUT_ACCURACY


def test_lora_trains_adapters_and_the_version_keeps_them_merged(tmp_path, tiny_bert):
    data = TrainingData(examples(TOPICS), list(TOPICS))
    params = HUGGINGFACE_ADVANCED.Params(
        model_config={"pretrained_model_name_or_path": str(tiny_bert)},
        tokenizer_config={"max_length": 24},
        trainer_config={"num_train_epochs": 2, "per_device_train_batch_size": 8,
                        "learning_rate": 1e-3},
        peft_config={"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query"]},
    )  # fmt: skip
    ctx = context(tmp_path)
    artifacts = HUGGINGFACE_ADVANCED.train(ctx, data, params).artifacts
    best = find_checkpoint(ctx.checkpoint_dir / BEST_DIR)
    assert any("lora_A" in key for key in best.model_state())
    kept = find_checkpoint(artifacts)
    assert not any("lora" in key for key in kept.model_state())
    # merged weights score exactly as the adapters did
    texts = examples(HELD_OUT)
    predictor = HUGGINGFACE_ADVANCED.load(artifacts)
    adapted = restore_model(best).eval()
    with torch.inference_mode():
        logits = adapted(**predictor.encode([e.load() for e in texts])).logits
    np.testing.assert_allclose(predictor.scores(texts), torch.sigmoid(logits).numpy(), atol=1e-5)


def test_gpt_neo_lora_template_trains_where_its_weights_are(tmp_path, tiny_gpt_neo):
    params = GPT_NEO_125M_LORA.Params(
        trainer_config={"num_train_epochs": 1, "per_device_train_batch_size": 8},
        tokenizer_config={"max_length": 24},
    )
    with pytest.raises(DataError) as caught:
        GPT_NEO_125M_LORA.check_params(params, tmp_path / "empty")
    assert caught.value.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS
    assert "EleutherAI/gpt-neo-125m" in caught.value.description
    assert str(tmp_path / "empty" / "EleutherAI--gpt-neo-125m") in caught.value.description
    GPT_NEO_125M_LORA.check_params(params, tiny_gpt_neo)

    data = TrainingData(examples(TOPICS), list(TOPICS), concepts_mutually_exclusive=True)
    artifacts = GPT_NEO_125M_LORA.train(
        context(tmp_path, weights_dir=tiny_gpt_neo), data, params
    ).artifacts
    outputs = GPT_NEO_125M_LORA.load(artifacts).predict(examples(HELD_OUT)[:2], {})
    assert sum(value for _, value in outputs[0].concepts) == pytest.approx(1.0, abs=1e-5)
    with zipfile.ZipFile(GPT_NEO_125M_LORA.export(artifacts, tmp_path / "out")) as bundle:
        config = json.loads(bundle.read("config.json"))
        assert "tokenizer/tokenizer.json" in bundle.namelist()
    assert config["onnx"]["max_abs_diff"] <= config["onnx"]["tolerance"]


# ---- base weights and config checks ------------------------------------------------------------


def test_minilm_comes_from_its_package_offline():
    found = find_hf_model(MINILM, None).found
    assert found is not None and found.source == "package"
    BERT_FINE_TUNE.check_params(BERT_FINE_TUNE.Params(), None)


def test_base_models_are_found_in_the_hugging_face_cache(tmp_path, tiny_bert):
    snapshot = tmp_path / "hf-cache" / "models--acme--tiny-bert" / "snapshots" / "0123"
    snapshot.parent.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123")
    snapshot.symlink_to(tiny_bert, target_is_directory=True)
    found = find_hf_model("acme/tiny-bert", None).found
    assert found is not None and found.source == "hf_cache"


@pytest.mark.parametrize(
    "change, named",
    [
        ({"model_config": {"pretrained_model_name_or_path": MINILM, "trust_remote_code": True}},
         "trust_remote_code"),
        ({"peft_config": {"peft_type": "PREFIX_TUNING"}}, "PREFIX_TUNING"),
        ({"trainer_config": {"num_train_epochs": 1, "deepspeed": "ds.json"}}, "deepspeed"),
        ({"model_config": {"pretrained_model_name_or_path": MINILM,
                           "problem_type": "regression"}}, "problem_type"),
    ],
)  # fmt: skip
def test_unsupported_advanced_config_is_refused_before_queueing(change, named):
    with pytest.raises(DataError) as caught:
        HUGGINGFACE_ADVANCED.check_params(HUGGINGFACE_ADVANCED.Params(**change), None)
    assert caught.value.code == status_code_pb2.MODEL_TRAINING_INVALID_PARAMS
    assert named in caught.value.description


def test_trainer_config_maps_to_loop_settings():
    params = HUGGINGFACE_ADVANCED.Params(
        model_config={"pretrained_model_name_or_path": MINILM,
                      "problem_type": "single_label_classification", "hidden_dropout_prob": 0.2},
        trainer_config={"num_train_epochs": 4.0, "per_device_train_batch_size": 8.0,
                        "learning_rate": 3e-5, "warmup_ratio": 0.25, "output_dir": "ignored"},
    )  # fmt: skip
    settings = text_settings(params)
    assert settings.loop.num_epochs == 4 and settings.batch_size == 8
    assert settings.loop.warmup_epochs == 1.0 and settings.loop.exclusive
    assert settings.config_overrides == {"hidden_dropout_prob": 0.2}


# ---- incremental training ----------------------------------------------------------------------


def test_incremental_start_keeps_rows_of_kept_concepts(tmp_path, tiny_bert):
    data = TrainingData(examples(TOPICS), list(TOPICS))
    params = BERT_FINE_TUNE.Params(base_model=str(tiny_bert), max_length=16, num_epochs=1)
    artifacts = BERT_FINE_TUNE.train(context(tmp_path / "v1"), data, params).artifacts
    old = find_checkpoint(artifacts).model_state()["classifier.weight"]
    ctx = context(tmp_path / "v2", resume_from=artifacts, warm_start=True)
    plan = plan_resume(artifacts, True, BERT_FINE_TUNE.name, "another training")
    settings = text_settings(params)
    model, _, base = initial_model(BERT_FINE_TUNE, ctx, settings, ["weather", "football"], plan)
    new = model.state_dict()["classifier.weight"]
    assert torch.equal(new[1], old[1]) and not torch.equal(new[0], old[0])
    assert base == str(tiny_bert)
