"""text-to-text templates on a tiny Llama built from a config (tokenizer trained on the test
texts): samples and packing, training that learns, exact resume, incremental starts, generation
settings, metrics, export, bad params and bad data."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format
from tiny_lm import build_tiny_lm

from modelmill.domain.errors import ApiError
from modelmill.training import weights
from modelmill.training.checkpoints import find_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Output,
    TrainContext,
    TrainingCancelled,
    TrainingData,
    predict_all,
)
from modelmill.training.registry import find_template, task_of
from modelmill.training.tasks.generation import GENERATION, IGNORE_INDEX
from modelmill.training.templates.text_generator.params import SMOLLM2_135M
from modelmill.training.templates.text_generator.weights import find_generator_weights

LORA, FULL = "HF_SmolLM2_135m_lora", "HF_SmolLM2_135m_FullFineTune"
ADVANCED, GPT_NEO = "HuggingFace_AdvancedConfig", "HF_GPTNeo_125m_lora"
PAIRS = {  # a few pairs a tiny model can learn by heart
    "upper: red cat": "RED CAT",
    "upper: big dog": "BIG DOG",
    "reverse: one two": "two one",
    "reverse: sun moon": "moon sun",
}


def template(name: str):  # type: ignore[no-untyped-def]
    found = find_template("text-to-text", name)
    assert found is not None
    return found


def pair_examples(pairs: dict[str, str] = PAIRS) -> list[Example]:
    return [
        Example(f"pair-{i}", "text", lambda p=prompt: p, target_text=target)
        for i, (prompt, target) in enumerate(pairs.items())
    ]


def corpus() -> list[str]:
    data = GENERATION.sample_data("text", 40, 60, extra_concept=True)
    texts = [e.load() for e in data.examples] + [e.target_text or "" for e in data.examples]
    return texts + list(PAIRS) + list(PAIRS.values())


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(weights, "hub_online", lambda: False)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm"), corpus())


@pytest.fixture(scope="module")
def tiny_lm_no_chat(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm-plain"), corpus(), chat=False)


def make_ctx(work: Path, **kwargs: Any) -> tuple[TrainContext, list[tuple[float, dict]]]:
    reports: list[tuple[float, dict]] = []
    saves: list[int] = []
    cancel_after = kwargs.pop("cancel_after_saves", None)
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    ctx = TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda progress, **metrics: reports.append((progress, metrics)),
        cancelled=lambda: cancel_after is not None and len(saves) >= cancel_after,
        embeddings=None,  # type: ignore[arg-type]
        save_checkpoint=lambda: saves.append(1),
        **kwargs,
    )
    return ctx, reports


def full_params(base: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    values = {
        "base_model": str(base),
        "num_epochs": 80,
        "batch_size": 4,
        "max_length": 48,
        "learning_rate": 1e-2,
        "warmup_epochs": 0.0,
        "early_stopping_patience": 0,
        "validation_fraction": 0.0,
        **overrides,
    }
    return template(FULL).Params(**values)


def lora_params(base: Path, **overrides: Any):  # type: ignore[no-untyped-def]
    values = {
        "base_model": str(base),
        "num_epochs": 3,
        "batch_size": 4,
        "max_length": 48,
        "learning_rate": 5e-3,
        "early_stopping_patience": 0,
        "validation_fraction": 0.25,
        **overrides,
    }
    return template(LORA).Params(**values)


# ---- samples: prompt formats, loss on completions, truncation, packing --------------------------


def tokenizer_of(folder: Path):  # type: ignore[no-untyped-def]
    from modelmill.training.templates.text_generator.model import load_tokenizer

    return load_tokenizer(folder)


def test_pairs_use_the_chat_template_and_count_only_completion_tokens(tiny_lm):
    from modelmill.training.templates.text_generator.sequences import (
        causal_samples,
        prompt_format,
        prompt_text,
    )

    tokenizer = tokenizer_of(tiny_lm)
    assert prompt_format(tokenizer, has_pairs=True, use_chat_template=True) == "chat"
    assert prompt_format(tokenizer, has_pairs=True, use_chat_template=False) == "separator"
    assert prompt_format(tokenizer, has_pairs=False, use_chat_template=True) == "plain"
    (sample,) = causal_samples(tokenizer, "upper: red cat", "RED CAT", "chat", 64)
    head = prompt_text(tokenizer, "upper: red cat", "chat")
    assert head.startswith("<|im_start|>user\nupper: red cat<|im_end|>")
    prompt_tokens = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    assert sample.labels[:prompt_tokens] == [IGNORE_INDEX] * prompt_tokens
    completion = tokenizer.decode(sample.input_ids[prompt_tokens:])
    assert completion == "RED CAT<|im_end|>\n"  # the template's end of turn is learned too
    assert sample.labels[prompt_tokens:] == sample.input_ids[prompt_tokens:]


CHAT = (("system", "Answer in capitals."), ("user", "upper: tall tree"), ("assistant", "TALL TREE"))


def test_a_chat_learns_its_last_answer_after_every_earlier_turn(tiny_lm):
    from modelmill.training.templates.text_generator.sequences import example_prompt, samples_of

    tokenizer = tokenizer_of(tiny_lm)
    chat = Example("chat", "text", lambda: "upper: tall tree", messages=CHAT)
    ((sample,),) = samples_of(tokenizer, [chat], "chat", 64, "causal")
    head = example_prompt(tokenizer, chat, "chat")
    assert head.startswith("<|im_start|>system\nAnswer in capitals.<|im_end|>")
    assert head.endswith("<|im_start|>assistant\n")
    answer = [t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label >= 0]
    assert tokenizer.decode(answer) == "TALL TREE<|im_end|>\n"
    outputs = [Output(text="TALL TREE")]
    user = GENERATION.metrics([chat], outputs, [], False)["extended_metrics"]["user_metrics"]
    assert user["exact_match"] == 1.0


def test_plain_texts_learn_every_token_and_long_ones_are_cut_into_pieces(tiny_lm):
    from modelmill.training.templates.text_generator.sequences import causal_samples

    tokenizer = tokenizer_of(tiny_lm)
    text = " ".join(["the bank and the goal"] * 20)
    pieces = causal_samples(tokenizer, text, None, "plain", 16)
    tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1  # + end token
    assert sum(len(p.input_ids) for p in pieces) == tokens
    assert all(len(p.input_ids) <= 16 and p.labels == p.input_ids for p in pieces)


def test_an_over_long_pair_keeps_its_prompt_end_and_completion_start(tiny_lm):
    from modelmill.training.templates.text_generator.sequences import causal_samples

    tokenizer = tokenizer_of(tiny_lm)
    prompt = "upper: " + " ".join(["cloud"] * 60) + " rain"
    target = " ".join(["RAIN"] * 60)
    (sample,) = causal_samples(tokenizer, prompt, target, "separator", 32)
    assert len(sample.input_ids) == 32
    prompt_part = [
        t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label == IGNORE_INDEX
    ]
    assert len(prompt_part) == 16  # half the length when the completion is long
    assert tokenizer.decode(prompt_part).endswith("rain\n")
    assert tokenizer.decode(sample.labels[16:]).startswith("RAIN RAIN")


def test_packing_joins_short_samples_without_losing_a_label(tiny_lm):
    from modelmill.training.templates.text_generator.sequences import pack, samples_of

    tokenizer = tokenizer_of(tiny_lm)
    groups = samples_of(tokenizer, pair_examples(), "separator", 40, "causal")
    samples = [s for g in groups for s in g]
    packs = pack(samples, 40)
    assert len(packs) < len(samples)
    assert all(len(p.input_ids) <= 40 for p in packs)
    assert [x for p in packs for x in p.labels] == [x for s in samples for x in s.labels]


# ---- training, prediction, evaluation ------------------------------------------------------------


@pytest.fixture(scope="module")
def learned(tmp_path_factory, tiny_lm):
    """A full fine-tune that learns PAIRS by heart."""
    work = tmp_path_factory.mktemp("learned")
    ctx, reports = make_ctx(work)
    data = TrainingData(pair_examples(), [])
    result = template(FULL).train(ctx, data, full_params(tiny_lm))
    return result, reports, data, ctx


def test_full_fine_tune_learns_the_pairs_and_greedy_answers_them(learned):
    result, reports, data, _ = learned
    losses = [record["loss"] for record in history(result.artifacts)]
    assert len(losses) == 80 and losses[-1] < losses[0] / 10
    predictor = template(FULL).load(result.artifacts)
    outputs = predictor.predict(list(data.examples), {"max_tokens": 8})
    assert [o.text for o in outputs] == list(PAIRS.values())
    assert result.epochs_run == 80 and not result.stopped_at_cap


def test_progress_reports_tokens_per_second(learned):
    _, reports, _, _ = learned
    rates = [m["tokens_per_s"] for _, m in reports if "tokens_per_s" in m]
    assert rates and all(rate > 0 for rate in rates)
    progress = [p for p, _ in reports]
    assert progress == sorted(progress) and progress[-1] == 1.0


def test_generation_settings(learned):
    result, _, data, _ = learned
    predictor = template(FULL).load(result.artifacts)
    examples = list(data.examples[:2])
    one_token = predictor.predict(examples, {"max_tokens": 1.0})  # Struct numbers are floats
    for output, target in zip(one_token, PAIRS.values(), strict=False):
        assert len(predictor.tokenizer(output.text, add_special_tokens=False)["input_ids"]) == 1
        assert target.startswith(output.text)
    stopped = predictor.predict(examples, {"max_tokens": 8, "stop_sequences": [" CAT"]})
    assert [o.text for o in stopped] == ["RED", "BIG DOG"]
    assert [o.text for o in predictor.predict(examples, {"stop": "D"})] == ["RE", "BIG"]
    hot = {"max_tokens": 6, "temperature": 2.0, "top_k": 0, "top_p": 1.0}
    first = predictor.predict(examples, {**hot, "seed": 7})
    assert [o.text for o in predictor.predict(examples, {**hot, "seed": 7})] == [
        o.text for o in first
    ]
    samples = {
        o.text for seed in range(6) for o in predictor.predict(examples[:1], {**hot, "seed": seed})
    }
    assert len(samples) > 1, "sampling at temperature 2 varies with the seed"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_bad_generation_settings_are_refused(learned, params, field):
    result, _, data, _ = learned
    predictor = template(FULL).load(result.artifacts)
    with pytest.raises(ApiError) as caught:
        predictor.predict(list(data.examples[:1]), params)
    assert caught.value.code == codes.MODEL_INVALID_ARGUMENT
    assert field in caught.value.description


def test_an_evaluation_against_a_dataset_gets_generations_and_metrics(learned):
    """The evaluation job asks with predict_all's settings and has no held-out loss."""
    result, _, data, _ = learned
    predictor = template(FULL).load(result.artifacts)
    examples = [*data.examples, Example("plain", "text", lambda: "the bank")]
    outputs = predictor.predict(examples, {"max_tokens": 8, **predict_all([])})
    metrics = GENERATION.metrics(examples, outputs, [], False)
    user = metrics["extended_metrics"]["user_metrics"]
    assert user["exact_match"] == 1.0 and user["pairs"] == 4 and user["inputs"] == 5
    assert "loss" not in user and any("held-out loss" in note for note in user["notes"])


def test_metrics_score_generations_against_targets():
    examples = pair_examples()
    right = [Output(text=t) for t in PAIRS.values()]
    wrong = [Output(text=t) for t in ["RED CAT", "BIG", "one two", "moon sun"]]
    perfect = GENERATION.metrics(examples, right, [], False, {"loss": 0.5})
    user = perfect["extended_metrics"]["user_metrics"]
    assert user["exact_match"] == 1.0 and user["chrf"] == pytest.approx(100.0)
    assert user["bleu"] == pytest.approx(100.0)
    assert user["perplexity"] == pytest.approx(1.6487, rel=1e-3)
    partly = GENERATION.metrics(examples, wrong, [], False)["extended_metrics"]["user_metrics"]
    assert partly["exact_match"] == 0.5 and 0 < partly["chrf"] < 100
    message = json_format.ParseDict(perfect, resources_pb2.EvalMetrics())
    entry = message.test_set[1]
    assert entry.input.data.text.raw == "upper: big dog"
    assert entry.predicted_annotation.data.text.raw == "BIG DOG"
    assert entry.ground_truth_annotation.data.text.raw == "BIG DOG"


def test_evaluate_reports_held_out_loss_and_generations(tmp_path, tiny_lm):
    data = GENERATION.sample_data("text", 13, 40)
    ctx, _ = make_ctx(tmp_path)
    params = lora_params(tiny_lm)
    result = template(LORA).train(ctx, data, params)
    metrics = template(LORA).evaluate(ctx, data, params, result.artifacts)
    message = json_format.ParseDict(metrics, resources_pb2.EvalMetrics())
    user = metrics["extended_metrics"]["user_metrics"]
    held = set(find_checkpoint(result.artifacts).meta["validation_ids"])
    assert held and {e.input.id for e in message.test_set} <= held
    assert user["loss"] > 0 and user["perplexity"] > 1 and "bleu" in user
    assert metrics["eval_info"]["params"]["held_out"] is True


# ---- resume, incremental, time cap -----------------------------------------------------------


def history(artifacts: Path) -> list[dict[str, float]]:
    return find_checkpoint(artifacts).meta["loop"]["history"]


def state_of(artifacts: Path) -> dict[str, torch.Tensor]:
    return find_checkpoint(artifacts).model_state()


def test_resumed_training_equals_an_uninterrupted_one(tmp_path, tiny_lm):
    data = GENERATION.sample_data("text", 13, 40)
    params = lora_params(tiny_lm)
    whole_ctx, _ = make_ctx(tmp_path / "whole")
    whole = template(LORA).train(whole_ctx, data, params).artifacts
    first, _ = make_ctx(tmp_path / "first", cancel_after_saves=1)
    with pytest.raises(TrainingCancelled):
        template(LORA).train(first, data, params)
    copy = tmp_path / "downloaded"
    shutil.copytree(first.checkpoint_dir, copy)
    second, _ = make_ctx(tmp_path / "second", resume_from=copy)
    resumed = template(LORA).train(second, data, params).artifacts
    expected, got = state_of(whole), state_of(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    assert (resumed / "adapter" / "adapter_model.safetensors").is_file()


def test_incremental_training_starts_from_the_earlier_version(learned, tmp_path):
    result, _, data, _ = learned
    extra = TrainingData([*data.examples, *pair_examples({"upper: sun": "SUN"})[:1]], [])
    # with a learning rate of zero the new version is exactly where it started
    params = full_params(Path("unused"), num_epochs=1, learning_rate=0.0)
    ctx, _ = make_ctx(tmp_path, resume_from=result.artifacts, warm_start=True)
    again = template(FULL).train(ctx, extra, params).artifacts
    before, after = state_of(result.artifacts), state_of(again)
    for key in before:
        torch.testing.assert_close(after[key], before[key])
    outputs = template(FULL).load(again).predict(list(data.examples), {"max_tokens": 8})
    assert [o.text for o in outputs] == list(PAIRS.values())


def test_incremental_lora_continues_on_top_of_a_merged_adapter(tmp_path, tiny_lm):
    data = GENERATION.sample_data("text", 13, 40)
    params = lora_params(tiny_lm, num_epochs=1)
    first_ctx, _ = make_ctx(tmp_path / "first")
    first = template(LORA).train(first_ctx, data, params).artifacts
    more = GENERATION.sample_data("text", 13, 40, extra_concept=True)
    ctx, _ = make_ctx(tmp_path / "second", resume_from=first, warm_start=True)
    second = template(LORA).train(ctx, more, params).artifacts
    assert find_checkpoint(second).meta["config"]["adapter"]
    assert template(LORA).load(second).predict(list(more.examples[:1]), {"max_tokens": 2})


def test_time_cap_stops_after_an_epoch_and_keeps_the_best(tmp_path, tiny_lm):
    ctx, _ = make_ctx(tmp_path, deadline=time.monotonic())
    result = template(FULL).train(ctx, TrainingData(pair_examples(), []), full_params(tiny_lm))
    assert result.stopped_at_cap and result.epochs_run == 1
    assert template(FULL).load(result.artifacts).predict(pair_examples()[:1], {"max_tokens": 2})


# ---- export --------------------------------------------------------------------------------


def test_export_holds_the_merged_model_the_adapter_onnx_logits_and_gguf(tmp_path, tiny_lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = GENERATION.sample_data("text", 13, 40)
    ctx, _ = make_ctx(tmp_path / "train")
    artifacts = template(LORA).train(ctx, data, lora_params(tiny_lm, num_epochs=1)).artifacts
    archive = template(LORA).export(artifacts, tmp_path)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(unpacked)
    config = json.loads((unpacked / "config.json").read_text())
    assert config["prompt_format"] == "chat" and config["onnx"]["max_abs_diff"] < 1e-3
    assert (unpacked / "model.onnx").is_file()
    merged = AutoModelForCausalLM.from_pretrained(unpacked / "merged").eval()
    tokenizer = AutoTokenizer.from_pretrained(unpacked / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    adapted = PeftModel.from_pretrained(base, unpacked / "adapter").eval()
    ids = tokenizer("upper: red cat", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(adapted(ids).logits, merged(ids).logits, atol=1e-4, rtol=0)
    predictor = template(LORA).load(artifacts)
    from_gguf = AutoModelForCausalLM.from_pretrained(unpacked, gguf_file="model.gguf").eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(unpacked, gguf_file="model.gguf")
    assert gguf_tokenizer("upper: red cat")["input_ids"] == ids[0].tolist()
    with torch.inference_mode():
        torch.testing.assert_close(predictor.model(ids).logits, merged(ids).logits)
        torch.testing.assert_close(from_gguf(ids).logits, merged(ids).logits)


# ---- params, weights and data that cannot train -----------------------------------------------


def test_packaged_smollm2_gguf_is_found_without_a_download(tmp_path):
    lookup = find_generator_weights(SMOLLM2_135M, tmp_path)
    assert lookup.found is not None and lookup.found.source == "package"
    assert lookup.found.path is not None and lookup.found.path.suffix == ".gguf"
    template(LORA).check_params(template(LORA).Params(), tmp_path)


def test_the_estimate_counts_the_tokens_smollm2s_prompt_formats_add():
    """The constants the training time estimate reads (template.py) are what SmolLM2's tokenizer
    (from the packaged GGUF) makes of a pair in each layout, beyond the pair's own tokens."""
    from transformers import AutoTokenizer

    from modelmill.training.templates.text_generator.sequences import causal_samples
    from modelmill.training.templates.text_generator.template import (
        CHAT_TEMPLATE_TOKENS,
        SEPARATOR_TOKENS,
    )
    from modelmill.training.templates.text_generator.weights import packaged_gguf

    gguf = packaged_gguf()
    assert gguf is not None
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompt, target = "Translate to French: the black cat sleeps.", "Le chat noir dort."
    own = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in (prompt, target))
    for layout, added in (
        ("chat", CHAT_TEMPLATE_TOKENS[SMOLLM2_135M]),
        ("separator", SEPARATOR_TOKENS),
    ):
        sample = causal_samples(tokenizer, prompt, target, layout, 1024)[0]
        assert len(sample.input_ids) - own == added, layout


def test_gpt_neo_refuses_at_once_without_its_weights_and_trains_with_them(tmp_path):
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    params = template(GPT_NEO).Params()
    with pytest.raises(DataError) as caught:
        template(GPT_NEO).check_params(params, tmp_path)
    assert caught.value.code == codes.MODEL_TRAINING_INVALID_PARAMS
    assert "EleutherAI--gpt-neo-125m" in caught.value.description
    folder = tmp_path / "EleutherAI--gpt-neo-125m"
    tiny = GPTNeoConfig(
        vocab_size=400, hidden_size=32, num_layers=2, num_heads=2,
        attention_types=[[["global", "local"], 1]], max_position_embeddings=128,
    )  # fmt: skip
    GPTNeoForCausalLM(tiny).save_pretrained(folder)
    build_tiny_lm(tmp_path / "tok", corpus())
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tmp_path / "tok" / name, folder / name)
    template(GPT_NEO).check_params(params, tmp_path)
    small = template(GPT_NEO).Params(
        trainer_config={"num_train_epochs": 1, "per_device_train_batch_size": 4},
        tokenizer_config={"max_length": 32},
    )
    ctx, _ = make_ctx(tmp_path / "work", weights_dir=tmp_path)
    result = template(GPT_NEO).train(ctx, TrainingData(pair_examples(), []), small)
    assert template(GPT_NEO).load(result.artifacts).predict(pair_examples()[:1], {"max_tokens": 3})


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        ({"peft_type": "LORA", "task_type": "SEQ_CLS"}, "task_type"),
        ({"peft_type": "IA3"}, "peft_type"),
        ({"peft_type": "LORA", "rank": 8}, "rank"),
    ],
)
def test_advanced_config_refuses_what_it_cannot_honour(peft, message):
    params = template(ADVANCED).Params(peft_config=peft)
    with pytest.raises(DataError) as caught:
        template(ADVANCED).check_params(params, None)
    assert caught.value.code == codes.MODEL_TRAINING_INVALID_PARAMS
    assert message in caught.value.description


def test_advanced_config_trains_a_seq2seq_model(tmp_path, tiny_lm):
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tokenizer_of(tiny_lm)
    folder = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2,
            num_heads=2, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
        )
    ).save_pretrained(folder)  # fmt: skip
    tokenizer.save_pretrained(folder)
    params = template(ADVANCED).Params(
        model_config={"pretrained_model_name_or_path": str(folder)},
        tokenizer_config={"max_length": 32},
        trainer_config={"num_train_epochs": 30, "per_device_train_batch_size": 4,
                        "learning_rate": 1e-2, "validation_split": 0.0,
                        "early_stopping_patience": 0},
        peft_config={},
    )  # fmt: skip
    ctx, _ = make_ctx(tmp_path / "work")
    data = TrainingData(pair_examples(), [])
    result = template(ADVANCED).train(ctx, data, params)
    assert find_checkpoint(result.artifacts).meta["config"]["architecture"] == "seq2seq"
    losses = [record["loss"] for record in history(result.artifacts)]
    assert losses[-1] < losses[0] / 2
    outputs = template(ADVANCED).load(result.artifacts).predict(list(data.examples), {})
    assert all(isinstance(o.text, str) for o in outputs)


def test_check_data_needs_texts():
    task = task_of("text-to-text")
    with pytest.raises(DataError) as caught:
        task.check_data([], [], False)
    assert caught.value.code == codes.MODEL_TRAINING_NO_DATA
    assert "prompt" in caught.value.description and "completion" in caught.value.description
    images = [Example("img", "image", lambda: None)]
    with pytest.raises(DataError):
        task.check_data(images, [], False)
    task.check_data([Example("t", "text", lambda: "hello")], [], False)
    assert task.relevant(Example("t", "text", lambda: "hello"), [])
    assert not task.relevant(images[0], [])


def test_validate_flags_empty_and_unreadable_texts(tiny_lm):
    def unreadable() -> str:
        raise OSError("blob missing")

    examples = [
        Example("good", "text", lambda: "hello"),
        Example("only-target", "text", lambda: "", target_text="a greeting"),
        Example("empty", "text", lambda: "  "),
        Example("empty-target", "text", lambda: "hi", target_text=" "),
        Example("broken", "text", unreadable),
        Example("chat", "text", lambda: "", messages=CHAT),
        Example("unanswered", "text", lambda: "", messages=CHAT[:2]),
    ]
    invalid = template(LORA).validate(examples, template(LORA).Params())
    assert [i.input_id for i in invalid] == ["empty", "empty-target", "broken", "unanswered"]
    assert all(i.reason for i in invalid)


def test_training_with_no_usable_sample_says_so(tmp_path, tiny_lm):
    ctx, _ = make_ctx(tmp_path)
    with pytest.raises(DataError) as caught:
        template(FULL).train(
            ctx, TrainingData([Example("x", "text", lambda: "")], []), full_params(tiny_lm)
        )
    assert caught.value.code == codes.MODEL_TRAINING_NO_DATA
