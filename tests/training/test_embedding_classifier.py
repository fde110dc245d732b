"""The embedding-classifier template end to end on small real data (MiniLM texts, a few images)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2
from clarifai_grpc.grpc.api.status import status_code_pb2
from google.protobuf import json_format
from PIL import Image
from pydantic import ValidationError

from modelmill.training.contract import (
    DataError,
    Example,
    Hardware,
    TrainContext,
    TrainingCancelled,
    TrainingData,
)
from modelmill.training.embedders import get_embedder
from modelmill.training.registry import find_template, model_type_specs
from modelmill.training.templates.embedding_classifier import EMBEDDING_CLASSIFIER, Params
from modelmill.training.templates.embedding_classifier.selection import C_GRID, INNER_FOLDS

TOPICS = {
    "cooking": [
        "Simmer the tomato sauce for twenty minutes before adding basil.",
        "Knead the bread dough until it is smooth and elastic.",
        "Whisk the eggs with sugar until pale and fluffy.",
        "Roast the chicken at two hundred degrees for an hour.",
        "Chop the onions finely and fry them in butter.",
        "Season the soup with salt, pepper and a pinch of nutmeg.",
        "Let the cake cool before you spread the chocolate frosting.",
        "Boil the pasta in plenty of salted water until al dente.",
        "Marinate the beef overnight in soy sauce and garlic.",
        "Grate some parmesan over the risotto just before serving.",
        "Preheat the oven and grease the baking tray with oil.",
        "Stir the custard constantly so that it does not burn.",
        "Add a splash of lemon juice to brighten the salad dressing.",
        "Fold the whipped cream gently into the mousse.",
        "Fry the pancakes on a hot griddle until golden brown.",
        "The stew tastes better when it rests for a day.",
        "Peel and dice the potatoes for the gratin.",
        "Sprinkle fresh herbs over the grilled fish.",
        "Blend the roasted peppers into a smooth soup.",
        "Caramelise the sugar slowly in a heavy pan.",
        "Toast the pine nuts before stirring them into the pesto.",
        "Bake the cookies until the edges turn crisp.",
        "Slice the mushrooms and sauté them with thyme.",
        "Reduce the wine sauce until it coats the spoon.",
        "Steam the rice and fluff it with a fork.",
    ],
    "football": [
        "The striker scored twice in the second half.",
        "The goalkeeper saved a penalty in the last minute.",
        "Our team won the league after a dramatic final match.",
        "The referee showed a red card to the defender.",
        "The coach changed the formation at half time.",
        "A header from the corner kick equalised the score.",
        "The midfielder passed the ball through the defence.",
        "Fans sang in the stadium as the match kicked off.",
        "The winger crossed the ball into the penalty area.",
        "The club signed a new centre back for the season.",
        "Extra time ended goalless, so the cup went to penalties.",
        "The captain lifted the trophy in front of the supporters.",
        "An offside flag ruled out the late goal.",
        "The team trained on the pitch before the derby.",
        "The forward hit the crossbar from thirty yards.",
        "The league table tightened after the weekend fixtures.",
        "A free kick curled over the wall into the net.",
        "The defender cleared the ball off the goal line.",
        "The transfer window closes at midnight for the clubs.",
        "The substitute scored with his first touch of the game.",
        "The manager praised the team after the away win.",
        "The match was postponed because the pitch was frozen.",
        "The keeper punched the cross away from danger.",
        "Both teams struggled to create chances in the first half.",
        "The fans booed the referee after the final whistle.",
    ],
    "weather": [
        "Heavy rain is expected across the region tomorrow.",
        "A cold front will bring snow to the mountains.",
        "Temperatures will climb above thirty degrees this weekend.",
        "Strong winds may cause power cuts along the coast.",
        "Morning fog will clear to give a sunny afternoon.",
        "Thunderstorms are likely in the late evening.",
        "Frost is forecast overnight in rural areas.",
        "The humidity will make it feel even hotter.",
        "A high pressure system keeps the skies clear.",
        "Scattered showers will move in from the west.",
        "The hurricane is expected to make landfall on Friday.",
        "Drizzle and low clouds will persist all day.",
        "Forecasters warn of icy roads after the freezing rain.",
        "A heatwave warning has been issued for the south.",
        "Gusts of up to ninety kilometres an hour are expected.",
        "The monsoon season brings daily downpours.",
        "Clear skies tonight mean temperatures will drop sharply.",
        "Hail fell briefly during the afternoon storm.",
        "The weekend looks dry with light breezes.",
        "Snowfall totals could reach twenty centimetres.",
        "A weak warm front brings mild and cloudy weather.",
        "Lightning struck several trees during the night storm.",
        "The drought continues with no rain in the forecast.",
        "Expect sunshine and a few clouds on Tuesday.",
        "Sleet will turn to snow as the temperature falls.",
    ],
}
TRAIN_PER_TOPIC = 20
MIN_HELD_OUT_ACCURACY = 0.9
OFF_TOPIC_TEXT = "The function returns a new list containing all items from the iterable."


def text_example(input_id: str, text: str, concepts: dict[str, float] | None = None) -> Example:
    return Example(input_id, "text", lambda: text, concepts or {})


def topic_examples(part: slice, label: bool = True) -> list[Example]:
    return [
        text_example(f"{topic}-{i}", text, {topic: 1.0} if label else {})
        for topic, texts in TOPICS.items()
        for i, text in enumerate(texts[part])
    ]


TRAIN = slice(0, TRAIN_PER_TOPIC)
HELD_OUT = slice(TRAIN_PER_TOPIC, None)


def caching_embeddings():
    """A stand-in for the runtime's embedding cache: (input id, embedder id) → vector."""
    cache: dict[tuple[str, str], np.ndarray] = {}

    def embeddings(examples, model_id):
        missing = [e for e in examples if (e.input_id, model_id) not in cache]
        if missing:
            vectors = get_embedder(model_id).embed([e.load() for e in missing])
            cache.update({(e.input_id, model_id): v for e, v in zip(missing, vectors, strict=True)})
        return np.stack([cache[(e.input_id, model_id)] for e in examples])

    return embeddings


SHARED_EMBEDDINGS = caching_embeddings()


def make_context(tmp_path: Path, reports: list | None = None, cancelled=lambda: False):
    return TrainContext(
        device="cpu",
        work_dir=tmp_path,
        checkpoint_dir=tmp_path / "checkpoints",
        report=lambda progress, **metrics: (reports if reports is not None else []).append(
            (progress, metrics)
        ),
        cancelled=cancelled,
        embeddings=SHARED_EMBEDDINGS,
    )


def train_topics(tmp_path: Path, **params):
    data = TrainingData(topic_examples(TRAIN), list(TOPICS))
    params = Params(**params)
    artifacts = EMBEDDING_CLASSIFIER.train(make_context(tmp_path), data, params).artifacts
    return EMBEDDING_CLASSIFIER.load(artifacts), artifacts


def held_out_accuracy(predictor) -> float:
    examples = topic_examples(HELD_OUT, label=False)
    outputs = predictor.predict(examples, {})
    expected = [e.input_id.split("-")[0] for e in examples]
    return float(np.mean([o.concepts[0][0] == t for o, t in zip(outputs, expected, strict=True)]))


@pytest.mark.parametrize("exclusive", [False, True])
def test_trained_model_predicts_the_topic_of_unseen_texts(tmp_path, exclusive):
    predictor, _ = train_topics(tmp_path, concepts_mutually_exclusive=exclusive)
    assert held_out_accuracy(predictor) >= MIN_HELD_OUT_ACCURACY
    outputs = predictor.predict([text_example("x", TOPICS["weather"][-1])], {})
    values = [value for _, value in outputs[0].concepts]
    assert values == sorted(values, reverse=True)
    if exclusive:
        assert sum(values) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("enrich", ["Automatic", "Disabled"])
def test_training_runs_with_and_without_enrichment(tmp_path, enrich):
    predictor, artifacts = train_topics(tmp_path, enrich_dataset=enrich)
    config = json.loads((artifacts / "config.json").read_text())
    assert (config["training"]["num_generic_negatives"] > 0) == (enrich == "Automatic")
    assert held_out_accuracy(predictor) >= MIN_HELD_OUT_ACCURACY


def test_enrichment_lowers_scores_of_unrelated_text(tmp_path):
    enriched, _ = train_topics(tmp_path / "a", enrich_dataset="Automatic")
    plain, _ = train_topics(tmp_path / "b", enrich_dataset="Disabled")
    off_topic = [text_example("off", OFF_TOPIC_TEXT)]
    assert enriched.scores(off_topic).max() < plain.scores(off_topic).max()


def test_evaluate_cross_validates_into_eval_metrics(tmp_path):
    data = TrainingData(topic_examples(TRAIN), list(TOPICS))
    artifacts = EMBEDDING_CLASSIFIER.train(make_context(tmp_path), data, Params()).artifacts
    metrics = EMBEDDING_CLASSIFIER.evaluate(make_context(tmp_path), data, Params(), artifacts)
    message = json_format.ParseDict(metrics, resources_pb2.EvalMetrics())
    assert message.summary.top1_accuracy >= MIN_HELD_OUT_ACCURACY
    assert len(message.test_set) == len(data.examples)
    assert {m.concept.id for m in message.binary_metrics} == set(TOPICS)
    assert metrics["eval_info"]["params"]["k_folds"] == 5


def test_training_and_evaluation_report_the_chosen_penalty(tmp_path):
    data = TrainingData(topic_examples(TRAIN), list(TOPICS))
    artifacts = EMBEDDING_CLASSIFIER.train(make_context(tmp_path), data, Params()).artifacts
    training = json.loads((artifacts / "config.json").read_text())["training"]
    assert training["regularization_c"] in C_GRID
    assert isinstance(training["standardize_features"], bool)
    assert training["selection_folds"] == INNER_FOLDS and training["selection_candidates"] > 0

    metrics = EMBEDDING_CLASSIFIER.evaluate(make_context(tmp_path), data, Params(), artifacts)
    info = metrics["eval_info"]["params"]
    assert info["regularization_c"] == training["regularization_c"]
    assert info["standardize_features"] == training["standardize_features"]
    assert len(info["fold_regularization_c"]) == info["k_folds"] == 5
    assert all(c in C_GRID for c in info["fold_regularization_c"])


def test_inference_params_filter_and_limit_concepts(tmp_path):
    predictor, _ = train_topics(tmp_path)
    example = [text_example("q", "The goalkeeper caught the ball before the storm.")]
    everything = predictor.predict(example, {"min_value": 0.0})[0].concepts
    assert len(everything) == len(TOPICS)
    assert len(predictor.predict(example, {"max_concepts": 1})[0].concepts) == 1
    threshold = everything[1][1] + 1e-6
    above = predictor.predict(example, {"min_value": threshold})[0].concepts
    assert [c for c, _ in above] == [everything[0][0]]
    selected = predictor.predict(example, {"select_concepts": ["weather", {"id": "cooking"}]})
    assert {c for c, _ in selected[0].concepts} == {"weather", "cooking"}


def test_training_reports_progress_and_can_be_cancelled(tmp_path):
    reports: list = []
    data = TrainingData(topic_examples(TRAIN), list(TOPICS))
    EMBEDDING_CLASSIFIER.train(make_context(tmp_path, reports), data, Params())
    progress = [p for p, _ in reports]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any("loss" in metrics for _, metrics in reports)
    with pytest.raises(TrainingCancelled):
        EMBEDDING_CLASSIFIER.train(make_context(tmp_path, cancelled=lambda: True), data, Params())


def test_export_writes_an_onnx_head_that_matches_the_predictor(tmp_path):
    predictor, artifacts = train_topics(tmp_path)
    bundle = EMBEDDING_CLASSIFIER.export(artifacts, tmp_path / "export")
    with zipfile.ZipFile(bundle) as archive:
        assert set(archive.namelist()) == {"head.onnx", "config.json", "concepts.json"}
        assert json.loads(archive.read("concepts.json")) == list(TOPICS)
        onnx_bytes = archive.read("head.onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(onnx_bytes)
    embeddings = get_embedder("all-minilm-l6-v2").embed([OFF_TOPIC_TEXT, TOPICS["cooking"][0]])
    (scores,) = session.run(["scores"], {"embedding": embeddings})
    np.testing.assert_allclose(scores, predictor.head.scores(embeddings), atol=1e-5)


def _raise_unreadable():
    raise OSError("truncated file")


def test_validate_reports_wrong_kind_and_unreadable_inputs():
    examples = [
        text_example("fine", "hello there"),
        Example("picture", "image", lambda: Image.new("RGB", (8, 8))),
        Example("broken", "text", _raise_unreadable),
        text_example("empty", ""),
    ]
    invalid = {i.input_id: i.reason for i in EMBEDDING_CLASSIFIER.validate(examples, Params())}
    assert set(invalid) == {"picture", "broken", "empty"}
    assert "truncated file" in invalid["broken"]


def _data(concepts, labelled, exclusive=False):
    examples = [text_example(f"i{n}", text, labels) for n, (text, labels) in enumerate(labelled)]
    return TrainingData(examples, concepts, exclusive)


@pytest.mark.parametrize(
    ("concepts", "labelled", "params", "code", "named"),
    [
        (
            ["a", "b"],
            [("x", {"a": 1.0}), ("y", {"a": 1.0})],
            {},
            "MODEL_TRAINING_NO_POSITIVES",
            "b",
        ),
        (
            ["a"],
            [("x", {"a": 1.0})],
            {"concepts_mutually_exclusive": True},
            "MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS",
            "a",
        ),
        (
            ["a"],
            [("x", {"a": 1.0}), ("y", {"a": 1.0})],
            {"enrich_dataset": "Disabled"},
            "MODEL_TRAINING_INSUFFICIENT_DATA",
            "a",
        ),
        (["a"], [("x", {}), ("y", {"other": 1.0})], {}, "MODEL_TRAINING_NO_DATA", ""),
    ],
)
def test_unusable_data_raises_data_error(tmp_path, concepts, labelled, params, code, named):
    with pytest.raises(DataError) as raised:
        EMBEDDING_CLASSIFIER.train(
            make_context(tmp_path), _data(concepts, labelled), Params(**params)
        )
    assert raised.value.code == status_code_pb2.StatusCode.Value(code)
    assert named in raised.value.description


def test_one_concept_with_generic_negatives_trains(tmp_path):
    data = _data(["weather"], [(t, {"weather": 1.0}) for t in TOPICS["weather"][:5]])
    artifacts = EMBEDDING_CLASSIFIER.train(make_context(tmp_path), data, Params()).artifacts
    predictor = EMBEDDING_CLASSIFIER.load(artifacts)
    rain, code = predictor.scores(
        [text_example("r", "Rain and wind all night."), text_example("c", OFF_TOPIC_TEXT)]
    )[:, 0]
    assert rain > code


def test_image_inputs_use_the_image_embedder(tmp_path):
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    rng = np.random.default_rng(0)

    def crop(image, n):
        x, y = rng.integers(0, 150, 2)
        return Example(f"{n}", "image", lambda: image.crop((x, y, x + 250, y + 250)))

    examples = [crop(china, f"c{i}") for i in range(6)] + [crop(flower, f"f{i}") for i in range(6)]
    labelled = [
        Example(e.input_id, e.kind, e.load, {"china" if e.input_id[0] == "c" else "flower": 1.0})
        for e in examples
    ]
    artifacts = EMBEDDING_CLASSIFIER.train(
        make_context(tmp_path), TrainingData(labelled, ["china", "flower"]), Params()
    ).artifacts
    assert (
        json.loads((artifacts / "config.json").read_text())["embedder_id"] == "efficientnet-lite0"
    )
    outputs = EMBEDDING_CLASSIFIER.load(artifacts).predict(
        [Example("q", "image", lambda: flower)], {}
    )
    assert outputs[0].concepts[0][0] == "flower"


def test_params_are_checked_and_listed_with_their_api_paths():
    with pytest.raises(ValidationError):
        Params(unknown_field=1)
    with pytest.raises(ValidationError):
        Params(base_embed_model="no-such-model")
    with pytest.raises(ValidationError):
        Params(max_concepts=0)
    assert find_template("embedding-classifier", None) is EMBEDDING_CLASSIFIER
    (spec,) = [s for s in model_type_specs() if s.info.id == "embedding-classifier"]
    paths = {f.path for f in spec.fields}
    assert {
        "train_info.params.enrich_dataset",
        "output_info.output_config.concepts_mutually_exclusive",
        "output_info.params.min_value",
        "output_info.params.max_concepts",
        "input_info.base_embed_model",
    } <= paths
    assert all(f.description for f in spec.fields)


def test_estimate_grows_with_inputs_and_is_faster_on_gpu():
    cpu = Hardware("cpu", "test", 2)
    gpu = Hardware("cuda", "test", 2)
    small = EMBEDDING_CLASSIFIER.estimate(100, Params(), cpu)
    large = EMBEDDING_CLASSIFIER.estimate(10_000, Params(), cpu)
    assert 0 < small < large
    assert EMBEDDING_CLASSIFIER.estimate(10_000, Params(), gpu) < large
