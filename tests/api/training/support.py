"""What the training tests make and wait for: labelled texts of three topics, synthetic images of
visual classes, uploads in batches, and polls that check a version's statuses never go backwards.
"""

from __future__ import annotations

import io
import random
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import requests
from clarifai_grpc.grpc.api import resources_pb2 as pb
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from google.protobuf import struct_pb2
from PIL import Image, ImageDraw

from api.helpers import assert_ok, image_input, name, text_input

MAX_BATCH = 128
TRAINING_TIMEOUT_S = 300.0  # generous: the CI machine has 2 cores that other jobs share
POLL_S = 0.25

QUEUED = codes.MODEL_QUEUED_FOR_TRAINING
TRAINING = codes.MODEL_TRAINING
TRAINED = codes.MODEL_TRAINED
TERMINAL = {
    codes.MODEL_TRAINED,
    codes.MODEL_TRAINING_FAILED,
    codes.MODEL_TRAINING_NO_DATA,
    codes.MODEL_TRAINING_NO_POSITIVES,
    codes.MODEL_TRAINING_INSUFFICIENT_DATA,
    codes.MODEL_TRAINING_INVALID_PARAMS,
    codes.MODEL_TRAINING_INVALID_DATA_TOLERANCE_EXCEEDED,
    codes.MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS,
}

# ---- texts ---------------------------------------------------------------------------------------

# Each topic has sentence parts; the training texts and the held-out texts draw their objects from
# different lists, so held-out accuracy measures generalisation, not recall of seen sentences.
TOPICS: dict[str, dict[str, list[str]]] = {
    "cooking": {
        "subjects": ["The chef", "My grandmother", "The baker", "Our cook", "The pastry student"],
        "verbs": ["simmered", "baked", "roasted", "seasoned", "whisked", "chopped", "fried"],
        "train": [
            "the tomato sauce",
            "a loaf of sourdough bread",
            "the chicken thighs",
            "the garlic and onions",
            "a pot of lentil soup",
            "the pancake batter",
            "the beef stew",
            "a tray of cinnamon rolls",
        ],
        "held_out": [
            "the mushroom risotto",
            "a lemon tart",
            "the vegetable curry",
            "a batch of butter cookies",
            "the pumpkin pie",
        ],
        "tails": [
            "in the kitchen",
            "with fresh basil and olive oil",
            "in a hot oven",
            "for the family dinner",
            "with a pinch of salt and pepper",
        ],
    },
    "sports": {
        "subjects": [
            "The striker",
            "The home team",
            "Our goalkeeper",
            "The tennis champion",
            "The young sprinter",
        ],
        "verbs": [
            "won",
            "lost",
            "dominated",
            "trained hard for",
            "scored twice in",
            "was injured during",
            "celebrated",
        ],
        "train": [
            "the league final",
            "the penalty shootout",
            "the marathon",
            "the basketball playoffs",
            "the championship match",
            "the relay race",
            "the away game",
            "the derby against their rivals",
        ],
        "held_out": [
            "the world cup qualifier",
            "the grand slam semi-final",
            "the cycling stage",
            "the hockey tournament",
            "the olympic heats",
        ],
        "tails": [
            "in front of a roaring crowd",
            "after extra time",
            "at the stadium",
            "under the coach's new tactics",
            "despite the referee's decisions",
        ],
    },
    "finance": {
        "subjects": [
            "The central bank",
            "The investors",
            "Our portfolio manager",
            "The hedge fund",
            "The company's board",
        ],
        "verbs": ["raised", "sold", "bought", "reported", "cut", "hedged", "restructured"],
        "train": [
            "interest rates",
            "the quarterly earnings",
            "government bonds",
            "the stock dividend",
            "its corporate debt",
            "the currency reserves",
            "the pension fund's equities",
            "the mortgage portfolio",
        ],
        "held_out": [
            "the inflation forecast",
            "shares of the bank",
            "the treasury bills",
            "the venture capital stake",
            "the credit default swaps",
        ],
        "tails": [
            "as markets fell",
            "after the earnings call",
            "to calm nervous shareholders",
            "ahead of the fiscal year end",
            "while bond yields climbed",
        ],
    },
}


def topic_texts(topic: str, count: int, held_out: bool = False, seed: int = 0) -> list[str]:
    """`count` distinct sentences about `topic`."""
    parts = TOPICS[topic]
    rng = random.Random(f"{topic}-{held_out}-{seed}")
    objects = parts["held_out" if held_out else "train"]
    sentences: list[str] = []
    seen: set[str] = set()
    while len(sentences) < count:
        sentence = (
            f"{rng.choice(parts['subjects'])} {rng.choice(parts['verbs'])} "
            f"{rng.choice(objects)} {rng.choice(parts['tails'])}."
        )
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def labelled_texts(
    per_topic: int, held_out: bool = False, prefix: str = "t", topics: Iterable[str] = TOPICS
) -> list[pb.Input]:
    """Inputs labelled with their topic: ids PREFIX-TOPIC-N."""
    return [
        text_input(f"{prefix}-{topic}-{n}", text, concepts=[topic])
        for topic in topics
        for n, text in enumerate(topic_texts(topic, per_topic, held_out))
    ]


# ---- images --------------------------------------------------------------------------------------

# Visual classes that differ in colour and shape; each image varies in size, place and background.
SHAPES = {
    "red-circle": ((210, 30, 30), "circle"),
    "green-square": ((30, 170, 40), "square"),
    "blue-triangle": ((30, 60, 210), "triangle"),
}


def shape_image(concept: str, rng: random.Random, size: int = 64, fmt: str = "PNG") -> bytes:
    colour, shape = SHAPES[concept]
    grey = rng.randint(200, 250)
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    for _ in range(20):  # speckle, so no two backgrounds are alike
        x, y = rng.randrange(size), rng.randrange(size)
        shade = rng.randint(150, 255)
        draw.point((x, y), (shade, shade, shade))
    extent = rng.randint(size // 2, size - 8)
    left, top = rng.randint(2, size - extent - 2), rng.randint(2, size - extent - 2)
    jitter = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
    box = (left, top, left + extent, top + extent)
    if shape == "circle":
        draw.ellipse(box, fill=jitter)
    elif shape == "square":
        draw.rectangle(box, fill=jitter)
    else:
        draw.polygon(
            [(left + extent // 2, top), (left, top + extent), (left + extent, top + extent)],
            fill=jitter,
        )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def labelled_images(
    per_class: int, seed: int = 0, prefix: str = "i", concepts: Sequence[str] = tuple(SHAPES)
) -> list[pb.Input]:
    rng = random.Random(seed)
    return [
        image_input(f"{prefix}-{concept}-{n}", shape_image(concept, rng), concepts=[concept])
        for concept in concepts
        for n in range(per_class)
    ]


# ---- calls ---------------------------------------------------------------------------------------


def upload(api: Any, inputs: Sequence[pb.Input]) -> None:
    """PostInputs in batches of at most MAX_BATCH; every input must be stored."""
    for start in range(0, len(inputs), MAX_BATCH):
        reply = assert_ok(api.PostInputs(inputs=inputs[start : start + MAX_BATCH]))
        assert all(i.status.code == codes.INPUT_DOWNLOAD_SUCCESS for i in reply.inputs), reply


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def create_model(
    api: Any,
    model_id: str,
    model_type_id: str = "embedding-classifier",
    concepts: Sequence[str] = (),
) -> pb.Model:
    model = pb.Model(id=model_id, model_type_id=model_type_id)
    model.output_info.data.concepts.extend(pb.Concept(id=c) for c in concepts)
    return assert_ok(api.PostModels(models=[model])).model


def version_request(
    concepts: Sequence[str] = (),
    train_params: dict[str, Any] | None = None,
    inference_params: dict[str, Any] | None = None,
    exclusive: bool | None = None,
    base_embed_model: str = "",
) -> pb.ModelVersion:
    """The ModelVersion of a PostModelVersions request."""
    version = pb.ModelVersion()
    version.output_info.data.concepts.extend(pb.Concept(id=c) for c in concepts)
    if train_params is not None:
        version.train_info.params.CopyFrom(struct(train_params))
    if inference_params is not None:
        version.output_info.params.CopyFrom(struct(inference_params))
    if exclusive is not None:
        version.output_info.output_config.concepts_mutually_exclusive = exclusive
    if base_embed_model:
        version.input_info.base_embed_model.id = base_embed_model
    return version


def start_training(api: Any, model_id: str, **request: Any) -> pb.ModelVersion:
    """PostModelVersions; the answer comes at once, queued."""
    reply = assert_ok(
        api.PostModelVersions(model_id=model_id, model_versions=[version_request(**request)])
    )
    version = reply.model.model_version
    assert version.id and version.status.code == QUEUED, version.status
    return version


class StatusLog:
    """The statuses one version went through, as polls saw them; checks each step is allowed."""

    RANK = {QUEUED: 0, TRAINING: 1}

    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, code: int) -> None:
        if self.seen:
            last = self.seen[-1]
            if last in TERMINAL:
                assert code == last, f"left terminal {name(last)} for {name(code)}: {self.names()}"
            elif code not in TERMINAL:
                assert self.RANK[code] >= self.RANK[last], f"went backwards: {self.names()}"
        if not self.seen or self.seen[-1] != code:
            self.seen.append(code)

    def names(self) -> list[str]:
        return [name(c) for c in self.seen]


def wait_for_version(
    api: Any,
    model_id: str,
    version_id: str,
    until: Callable[[pb.ModelVersion], bool] = lambda v: v.status.code in TERMINAL,
    timeout_s: float = TRAINING_TIMEOUT_S,
    log: StatusLog | None = None,
    through_model: bool = True,
) -> pb.ModelVersion:
    """Poll GetModel (the model's newest version, as the SDK does) or GetModelVersion until
    `until(version)`; every status seen goes through `log`."""
    log = log or StatusLog()
    deadline = time.monotonic() + timeout_s
    while True:
        if through_model:
            version = assert_ok(api.GetModel(model_id=model_id)).model.model_version
            assert version.id == version_id, "GetModel shows another version than the newest"
        else:
            version = assert_ok(
                api.GetModelVersion(model_id=model_id, version_id=version_id)
            ).model_version
        log.add(version.status.code)
        if until(version):
            return version
        assert time.monotonic() < deadline, (
            f"version {version_id} still {log.names()} after {timeout_s} s"
        )
        time.sleep(POLL_S)


def train(api: Any, model_id: str, log: StatusLog | None = None, **request: Any) -> pb.ModelVersion:
    """Start a training and wait until it is TRAINED."""
    version = start_training(api, model_id, **request)
    done = wait_for_version(api, model_id, version.id, log=log)
    assert done.status.code == TRAINED, f"{name(done.status.code)}: {done.status.description}"
    return done


def predict(
    api: Any,
    model_id: str,
    inputs: Sequence[pb.Input],
    version_id: str = "",
    output_config: pb.OutputConfig | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    model = pb.Model()
    if output_config is not None:
        model.output_info.output_config.CopyFrom(output_config)
    if params is not None:
        model.output_info.params.CopyFrom(struct(params))
    return api.PostModelOutputs(
        model_id=model_id, version_id=version_id, inputs=inputs, model=model
    )


def concepts_of(output: pb.Output) -> list[tuple[str, float]]:
    return [(c.id, c.value) for c in output.data.concepts]


def top_concept(output: pb.Output) -> str:
    concepts = concepts_of(output)
    return concepts[0][0] if concepts else ""


def without_labels(message: pb.Input) -> pb.Input:
    copy = pb.Input()
    copy.CopyFrom(message)
    copy.data.ClearField("concepts")
    return copy


def accuracy(api: Any, model_id: str, inputs: Sequence[pb.Input], version_id: str = "") -> float:
    """Share of `inputs` whose best predicted concept is their label."""
    right = 0
    for start in range(0, len(inputs), MAX_BATCH):
        batch = inputs[start : start + MAX_BATCH]
        unlabelled = [without_labels(i) for i in batch]
        reply = assert_ok(predict(api, model_id, unlabelled, version_id, params={"min_value": 0.0}))
        for sent, output in zip(batch, reply.outputs, strict=True):
            assert output.input.id == sent.id
            right += top_concept(output) == sent.data.concepts[0].id
    return right / len(inputs)


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout_s: float = TRAINING_TIMEOUT_S,
    every_s: float = 0.1,
) -> Any:
    """Poll `condition` until it returns something true, which is returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(every_s)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def cancel_training(api: Any, model_id: str, version_id: str) -> dict[str, Any]:
    """modelmill's own REST call that stops a training; the JSON answer."""
    user = api.user_app_id
    url = (
        f"{api.server.http_url}/v2/users/{user.user_id}/apps/{user.app_id}/models/{model_id}"
        f"/versions/{version_id}/cancel"
    )
    reply = requests.post(url, headers={"Authorization": f"Key {api.key}"}, timeout=30)
    return dict(reply.json())
