"""What a fine-tuned classifier answers: scores from logits, predictions ranked and filtered as
PostModelOutputs asks, EvalMetrics on held-out inputs, and the simple training-time estimate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmill.training.checkpoint_keys import LOOP_KEY, VALIDATION_IDS_KEY
from modelmill.training.contract import Example, Output, TrainingData, predict_all
from modelmill.training.tasks.classification import CLASSIFICATION

if TYPE_CHECKING:  # the templates' light modules use this file's estimate: no torch at import
    import torch

DEFAULT_MAX_CONCEPTS = 20  # Clarifai's default for PostModelOutputs
VALIDATION_SPLIT = "validation"
TRAINING_SPLIT = "training inputs (none were held out: validation fraction 0 or too few inputs)"


def scores_from_logits(logits: torch.Tensor, exclusive: bool) -> torch.Tensor:
    return logits.softmax(dim=1) if exclusive else logits.sigmoid()


def _selected_ids(select: Any) -> set[str]:
    """select_concepts as Clarifai sends it: concept dicts ({"id": ..., "name": ...}) or ids."""
    ids: set[str] = set()
    for concept in select or ():
        if isinstance(concept, Mapping):
            ids.update(str(concept[key]) for key in ("id", "name") if concept.get(key))
        else:
            ids.add(str(concept))
    return ids


def ranked_concepts(
    scores: Sequence[float], concepts: Sequence[str], params: Mapping[str, Any]
) -> list[tuple[str, float]]:
    """(concept, score) highest first, honouring select_concepts, min_value and max_concepts."""
    pairs = [(concept, float(score)) for concept, score in zip(concepts, scores, strict=True)]
    if selected := _selected_ids(params.get("select_concepts")):
        pairs = [pair for pair in pairs if pair[0] in selected]
    min_value = float(params.get("min_value") or 0.0)
    pairs = [pair for pair in pairs if pair[1] >= min_value]
    pairs.sort(key=lambda pair: -pair[1])
    max_concepts = int(params.get("max_concepts") or 0) or (
        len(pairs) if selected else DEFAULT_MAX_CONCEPTS
    )
    return pairs[:max_concepts]


class ClassifierPredictor(ABC):
    """A fine-tuned classifier loaded for work. A template's predictor loads its checkpoint
    and says how it `scores` inputs; predictions and EvalMetrics follow from the scores."""

    meta: dict[str, Any]  # the checkpoint's metadata
    concepts: list[str]
    exclusive: bool

    @abstractmethod
    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        """One row per example, one column per concept."""

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        return [
            Output(concepts=ranked_concepts(row, self.concepts, params))
            for row in self.scores(examples)
        ]

    def evaluate(self, template: str, data: TrainingData) -> dict[str, Any]:
        """EvalMetrics (the classification task's) on the validation inputs the training held
        out (never trained on); on all inputs, and saying so in eval_info, when it kept none
        (failing the version instead would lose a good model over a report)."""
        examples, info = held_out(self.meta, template, data)
        outputs = self.predict(examples, predict_all(self.concepts))
        return CLASSIFICATION.metrics(examples, outputs, self.concepts, self.exclusive, info)


def held_out(
    meta: Mapping[str, Any], template: str, data: TrainingData
) -> tuple[list[Example], dict[str, Any]]:
    """The validation inputs a training held out (checkpoint `meta`) and the eval_info saying
    so; all inputs, and an eval_info saying that, when it kept none."""
    kept = set(meta[VALIDATION_IDS_KEY])
    examples = [e for e in data.examples if e.input_id in kept]
    split = VALIDATION_SPLIT if examples else TRAINING_SPLIT
    info = {"template": template, "split": split, "best_epoch": meta[LOOP_KEY]["best_epoch"]}
    return examples or list(data.examples), info


def linear_estimate(
    coefficients: Mapping[str, tuple[float, float]],
    device: str,
    num_inputs: int,
    num_epochs: int,
    scale: float,
) -> float:
    """Seconds ≈ A · num_inputs · num_epochs · scale + B, with (A, B) per device kind
    ("cpu", "cuda"); `scale` is e.g. (image_size / reference size)²."""
    per_item, overhead = coefficients.get(device, coefficients["cpu"])
    return per_item * num_inputs * num_epochs * scale + overhead
