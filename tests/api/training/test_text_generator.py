"""Text-to-text through the official client: texts with input metadata {"prompt",
"completion"} uploaded, a version trained from a template (a tiny Llama given by path in the
fast tier; SmolLM2-135M with LoRA, from the package's GGUF, in the slow tier), then
PostModelOutputs with generation settings in output_info.params."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import json_format

from api.helpers import assert_ok, text_input
from api.training.support import (
    create_model,
    predict,
    start_training,
    struct,
    train,
    upload,
    wait_for_version,
)
from conftest import Api

sys.path.insert(0, str(Path(__file__).parents[2] / "training"))
from tiny_lm import build_tiny_lm  # noqa: E402

PAIRS = {
    "upper: red cat": "RED CAT",
    "upper: big dog": "BIG DOG",
    "reverse: one two": "two one",
    "reverse: sun moon": "moon sun",
}


def pair_inputs(pairs: dict[str, str], prefix: str = "pair") -> list[pb.Input]:
    """Inputs whose metadata holds the prompt and the completion, as LLM fine-tuning sets are
    uploaded; the raw text is what the model reads when no prompt is given."""
    inputs = []
    for i, (prompt, completion) in enumerate(pairs.items()):
        message = text_input(f"{prefix}-{i}", prompt)
        message.data.metadata.CopyFrom(struct({"prompt": prompt, "completion": completion}))
        inputs.append(message)
    return inputs


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    texts = [*PAIRS, *PAIRS.values(), "the bank and the goal", "rain and cloud"]
    return build_tiny_lm(tmp_path_factory.mktemp("api-tiny-lm"), texts * 4)


def test_text_to_text_lists_its_templates_and_generation_settings(trainer_api: Api) -> None:
    types = assert_ok(trainer_api.ListModelTypes(per_page=100)).model_types
    (generator,) = [t for t in types if t.id == "text-to-text"]
    template = next(f for f in generator.model_type_fields if f.path.endswith(".template"))
    options = {o.id: o for o in template.model_type_enum_options}
    assert {"HF_SmolLM2_135m_lora", "HuggingFace_AdvancedConfig", "HF_GPTNeo_125m_lora"} <= set(
        options
    )
    assert options["HF_SmolLM2_135m_lora"].recommended
    paths = {f.path for f in options["HF_SmolLM2_135m_lora"].model_type_fields}
    assert {"output_info.params.max_tokens", "output_info.params.temperature"} <= paths
    assert not any(f.path == "output_info.data.concepts" for f in generator.model_type_fields)


def test_a_text_generator_trains_without_concepts_and_generates(
    trainer_api: Api, tiny_lm: Path
) -> None:
    api = trainer_api
    chat = text_input("chat", "upper: tall tree")
    chat.data.metadata.CopyFrom(struct({"messages": [
        {"role": "system", "content": "Answer in capitals."},
        {"role": "user", "content": "upper: tall tree"},
        {"role": "assistant", "content": "TALL TREE"},
    ]}))  # fmt: skip
    upload(api, [*pair_inputs(PAIRS), chat, text_input("plain", "the bank and the goal")])
    create_model(api, "writer", model_type_id="text-to-text")
    params = {
        "template": "HF_SmolLM2_135m_FullFineTune",
        "base_model": str(tiny_lm),
        "num_epochs": 80.0,
        "batch_size": 8.0,
        "max_length": 48.0,
        "learning_rate": 0.01,
        "warmup_epochs": 0.0,
        "early_stopping_patience": 0.0,
        "validation_fraction": 0.0,
    }
    version = train(api, "writer", train_params=params, inference_params={"max_tokens": 8.0})
    user = json_format.MessageToDict(version.metrics.extended_metrics.user_metrics)
    assert user["pairs"] == len(PAIRS) + 1, user  # the chat counts: evaluated on training data
    full = assert_ok(
        api.GetEvaluation(evaluation_id=version.id, fields=pb.FieldsValue(test_set=True))
    ).eval_metrics
    entries = {e.input.id: e for e in full.test_set}
    generated = {i: entries[i].predicted_annotation.data.text.raw for i in entries if i != "chat"}
    assert generated == {f"pair-{i}": target for i, target in enumerate(PAIRS.values())}
    assert entries["chat"].ground_truth_annotation.data.text.raw == "TALL TREE"
    assert "Answer in capitals." in entries["chat"].input.data.text.raw

    prompts = [text_input(f"q{i}", prompt) for i, prompt in enumerate(PAIRS)]
    reply = assert_ok(predict(api, "writer", prompts))
    assert [o.data.text.raw for o in reply.outputs] == list(PAIRS.values())
    stopped = assert_ok(predict(api, "writer", prompts[:2], params={"stop_sequences": [" "]}))
    assert [o.data.text.raw for o in stopped.outputs] == ["RED", "BIG"]
    bad = predict(api, "writer", prompts[:1], params={"temperature": -1.0})
    assert bad.status.code == codes.MODEL_INVALID_ARGUMENT
    assert "temperature" in bad.status.description


def test_a_training_without_texts_is_refused_at_once(trainer_api: Api, tiny_lm: Path) -> None:
    create_model(trainer_api, "empty-writer", model_type_id="text-to-text")
    reply = trainer_api.PostModelVersions(
        model_id="empty-writer",
        model_versions=[pb.ModelVersion(train_info=pb.TrainInfo(params=struct({
            "template": "HF_SmolLM2_135m_lora", "base_model": str(tiny_lm)})))],
    )  # fmt: skip
    assert reply.status.code == codes.MODEL_TRAINING_NO_DATA, reply.status
    assert "completion" in reply.status.description


@pytest.mark.slow
def test_smollm2_lora_fine_tunes_and_generates_with_settings(trainer_api: Api) -> None:
    api = trainer_api
    upload(api, pair_inputs(PAIRS))
    create_model(api, "smol", model_type_id="text-to-text")
    params = {
        "template": "HF_SmolLM2_135m_lora",
        "num_epochs": 1.0,
        "batch_size": 4.0,
        "max_length": 64.0,
        "validation_fraction": 0.25,
    }
    version = start_training(api, "smol", train_params=params)
    # converting the packaged GGUF once takes about a minute on the shared 2-core machine
    done = wait_for_version(api, "smol", version.id, timeout_s=900.0)
    assert done.status.code == codes.MODEL_TRAINED, done.status
    user = json_format.MessageToDict(done.metrics.extended_metrics.user_metrics)
    assert user["perplexity"] > 1 and "chrf" in user
    prompt = [text_input("q", "upper: red cat")]
    settings = {"max_tokens": 6.0, "temperature": 0.8, "top_p": 0.9, "top_k": 40.0, "seed": 3.0}
    first = assert_ok(predict(api, "smol", prompt, params=settings)).outputs[0].data.text.raw
    again = assert_ok(predict(api, "smol", prompt, params=settings)).outputs[0].data.text.raw
    assert first and first == again  # the seed makes sampling repeatable
    greedy = assert_ok(predict(api, "smol", prompt, params={"max_tokens": 4.0}))
    assert greedy.outputs[0].data.text.raw
