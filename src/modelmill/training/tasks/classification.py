"""The classification task (embedding-classifier, visual-classifier, text-classifier): concepts
per input, positives counted per concept, ROC/PR/F1 metrics, a "scores" export, and the loss
the fine-tuning loop minimises (softmax or a sigmoid per concept, negatives included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    Output,
    TrainingData,
)
from modelmill.training.tasks import samples

if TYPE_CHECKING:  # the registry imports tasks to answer ListModelTypes: no torch at import
    import torch

POSITIVE_AT = 0.5  # a concept value above this is a positive label, otherwise a negative one
LOG_EPSILON = 1e-7  # keeps log(1 - p) finite when a softmax probability reaches 1
NEGATIVE_ONLY_ID = "negative-only"

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
EXTRA_COLOUR = ("purple", (150, 40, 170))
TOPICS = {
    "food": [
        "bread",
        "eggs",
        "pasta",
        "tomato",
        "chicken",
        "cake",
        "rice",
        "soup",
        "bake",
        "fry",
        "roast",
        "recipe",
    ],
    "sport": [
        "striker",
        "goal",
        "tennis",
        "match",
        "league",
        "marathon",
        "runner",
        "basketball",
        "team",
        "score",
    ],
    "money": [
        "bank",
        "rates",
        "stocks",
        "invoice",
        "loan",
        "interest",
        "budget",
        "bonds",
        "shares",
        "price",
    ],
}
EXTRA_TOPIC = (
    "weather",
    ["rain", "snow", "cloud", "wind", "storm", "sunny", "forecast", "cold", "warm", "fog"],
)


def labels_of(example: Example) -> dict[str, float]:
    """An input's concept labels, its regions' concepts counted as the whole input's."""
    labels = dict(example.concepts)
    for region in example.regions:
        for concept, value in region.concepts.items():
            labels[concept] = max(value, labels.get(concept, 0.0))
    return labels


def ground_truth(examples: Sequence[Example], concepts: Sequence[str]) -> np.ndarray:
    """1 / 0 per (input, concept), NaN where nobody said. A labelled concept is a positive or a
    negative as labelled; an unlabelled one counts as a negative when the input is positive for
    another concept (a photo labelled "cat" is taken to be no "dog")."""
    truth = np.full((len(examples), len(concepts)), np.nan)
    for row, example in enumerate(examples):
        labels = labels_of(example)
        has_positive = any(v > POSITIVE_AT for v in labels.values())
        for column, concept in enumerate(concepts):
            if concept in labels:
                truth[row, column] = 1.0 if labels[concept] > POSITIVE_AT else 0.0
            elif has_positive:
                truth[row, column] = 0.0
    return truth


def score_matrix(outputs: Sequence[Output], concepts: Sequence[str]) -> np.ndarray:
    """Each output's score per concept (0 where a predictor left a concept out)."""
    index = {concept: column for column, concept in enumerate(concepts)}
    scores = np.zeros((len(outputs), len(concepts)))
    for row, output in enumerate(outputs):
        for concept, value in output.concepts:
            if concept in index:
                scores[row, index[concept]] = value
    return scores


class ClassificationTask:
    """See the module docstring."""

    name = "classification"
    export_outputs = ("scores",)
    web_partial = "classification"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        return bool(set(labels_of(example)) & set(concepts))

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        if not examples:
            raise DataError(
                codes.MODEL_TRAINING_NO_DATA,
                f"No inputs are labelled with the concepts {', '.join(concepts)}; label some "
                "inputs (PostInputs with data.concepts, or PostAnnotations) or choose a dataset.",
            )
        positives = dict.fromkeys(concepts, 0)
        for example in examples:
            for concept, value in labels_of(example).items():
                if concept in positives and value > 0:
                    positives[concept] += 1
        missing = [c for c, n in positives.items() if n == 0]
        if missing:
            raise DataError(
                codes.MODEL_TRAINING_NO_POSITIVES,
                f"No input is labelled as a positive example of {', '.join(missing)} in the "
                "training data; add positive examples or leave those concepts out.",
            )
        if exclusive and len(concepts) < 2:
            raise DataError(
                codes.MODEL_TRAINING_ONE_VS_N_SINGLE_CLASS,
                f"Mutually exclusive concepts need at least two concepts; this training has only "
                f"'{concepts[0]}'. Add a concept or turn concepts_mutually_exclusive off.",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        from modelmill.training.metrics import classification_metrics  # scikit-learn

        return classification_metrics(
            list(concepts),
            ground_truth(examples, concepts),
            score_matrix(outputs, concepts),
            [e.input_id for e in examples],
            mutually_exclusive=exclusive,
            info=info,
        )

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """Colour squares (red, green, blue) or texts on topics (food, sport, money), dealt
        round-robin, plus one input labelled only as a negative (of the first concept)."""
        if kind == "image":
            colours = dict([*COLOURS.items(), *([EXTRA_COLOUR] if extra_concept else [])])
            contents: dict[str, Callable[[int], Callable[[], Any]]] = {
                c: (
                    lambda seed, rgb=rgb: samples.decoder(
                        samples.colour_pixels_jpeg(rgb, size, seed)
                    )
                )
                for c, rgb in colours.items()
            }
        else:
            topics = dict([*TOPICS.items(), *([EXTRA_TOPIC] if extra_concept else [])])
            contents = {
                c: (lambda seed, words=words: _constant(samples.topic_text(words, size, seed)))
                for c, words in topics.items()
            }
        concepts = list(contents)
        loaders: dict[tuple[str, int], Callable[[], Any]] = {}
        examples = []
        for i in range(max(count - 1, len(concepts))):
            concept = concepts[i % len(concepts)]
            seed = i % samples.DISTINCT
            if (concept, seed) not in loaders:
                loaders[concept, seed] = contents[concept](seed)
            examples.append(Example(f"{concept}-{i}", kind, loaders[concept, seed], {concept: 1.0}))
        # Labelled only "not the first concept", with the content of the second one.
        negative = Example(
            NEGATIVE_ONLY_ID, kind, contents[concepts[1]](samples.DISTINCT), {concepts[0]: 0.0}
        )
        return TrainingData([*examples, negative], concepts)

    def objective(
        self, forward: Callable[[Any, Any], Any], exclusive: bool
    ) -> ClassificationObjective:
        return ClassificationObjective(forward, exclusive)


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


# ---- the loss and validation, torch --------------------------------------------------------


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, exclusive: bool
) -> torch.Tensor:
    """Mean loss per input. Sigmoid: binary cross-entropy over the labelled cells. Softmax:
    cross-entropy towards the positive concept(s); an input labelled only with negatives
    contributes -log(1 - p) for each of them, so negatives teach an exclusive model too."""
    import torch
    from torch import nn

    if not exclusive:
        cells = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (cells * mask).sum() / mask.sum().clamp(min=1.0)
    positives = targets * mask
    has_positive = positives.sum(dim=1) > 0
    log_probs = torch.log_softmax(logits, dim=1)
    distribution = positives / positives.sum(dim=1, keepdim=True).clamp(min=1.0)
    cross_entropy = -(distribution * log_probs).sum(dim=1)
    negatives = mask * (1.0 - targets)
    not_chosen = torch.log((1.0 - log_probs.exp()).clamp(min=LOG_EPSILON))
    negative_loss = -(negatives * not_chosen).sum(dim=1)
    per_input = torch.where(has_positive, cross_entropy, negative_loss)
    return per_input.mean()


class ClassificationObjective:
    """Batches are (model inputs, targets (N, C), mask (N, C)); `forward(model, inputs)` gives
    logits. The best epoch is the one with the lowest validation loss."""

    monitor = "val_loss"
    higher_is_better = False

    def __init__(self, forward: Callable[[Any, Any], Any], exclusive: bool) -> None:
        self.forward, self.exclusive = forward, exclusive

    def loss(self, model: Any, batch: Any) -> torch.Tensor:
        inputs, targets, mask = batch
        return classification_loss(self.forward(model, inputs), targets, mask, self.exclusive)

    def validate(self, model: Any, batches: Iterable[Any]) -> dict[str, float]:
        """Mean validation loss and, among inputs with a positive concept, top-1 accuracy."""
        import torch

        total_loss, inputs_seen, hits, with_positive = 0.0, 0, 0, 0
        with torch.inference_mode():
            for inputs, targets, mask in batches:
                logits = self.forward(model, inputs)
                loss = classification_loss(logits, targets, mask, self.exclusive)
                total_loss += float(loss) * len(mask)
                inputs_seen += len(mask)
                positive_rows = (targets * mask).sum(dim=1) > 0
                top = logits.argmax(dim=1)
                hits += int(targets[torch.arange(len(top)), top][positive_rows].sum())
                with_positive += int(positive_rows.sum())
        return {
            "val_loss": total_loss / max(1, inputs_seen),
            "val_accuracy": hits / max(1, with_positive),
        }


CLASSIFICATION = ClassificationTask()
