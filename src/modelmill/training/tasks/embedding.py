"""The embedding task (visual-embedder): concepts per image are the classes a metric-learning
loss pulls together; a model answers an L2-normalised embedding per input.

Metrics: retrieval among the held-out inputs (each one a query against all the others):
recall@1 and @5 (a neighbour among the k nearest shares its concept) and mAP@R
(pytorch-metric-learning's AccuracyCalculator), overall, and separately for queries of concepts
the training saw and of concepts it never saw (when the template held some out), each searched
among all held-out inputs; in extended_metrics. The test set lists
each input's nearest neighbour's concept as its prediction (value: the cosine similarity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    Output,
    TrainingData,
)
from modelmill.training.tasks.classification import CLASSIFICATION, POSITIVE_AT, labels_of

RECALL_AT = (1, 5)
MIN_IMAGES_PER_CONCEPT = 2  # a pair: metric learning pulls images of a concept together
UNSEEN_KEY = "unseen_concepts"  # info key: concepts the training held out entirely


def first_concept(example: Example, concepts: Sequence[str]) -> str | None:
    """The class of an input: its first positive concept in the model's order."""
    labels = labels_of(example)
    return next((c for c in concepts if labels.get(c, 0.0) > POSITIVE_AT), None)


def retrieval_metrics(
    embeddings: np.ndarray, labels: Sequence[int], queries: Sequence[int] | None = None
) -> dict[str, float | None]:
    """recall@k and mAP@R of the `queries` rows (default: all), each searched among all the
    other rows; needs two rows."""
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    vectors = np.asarray(embeddings, np.float32)
    classes = np.asarray(labels)
    rows = np.arange(len(classes)) if queries is None else np.asarray(queries)
    similarity = vectors[rows] @ vectors.T
    similarity[np.arange(len(rows)), rows] = -np.inf  # a query is not its own neighbour
    order = np.argsort(-similarity, axis=1, kind="stable")
    result: dict[str, float] = {}
    for k in RECALL_AT:
        top = order[:, : min(k, len(classes) - 1)]
        result[f"recall_at_{k}"] = float((classes[top] == classes[rows, None]).any(axis=1).mean())
    calculator = AccuracyCalculator(include=("mean_average_precision_at_r",), k="max_bin_count")
    # the references start with the queries, as AccuracyCalculator wants them to
    references = np.concatenate([rows, np.setdiff1d(np.arange(len(classes)), rows)])
    accuracies = calculator.get_accuracy(
        torch.from_numpy(vectors[rows]),
        torch.from_numpy(classes[rows]),
        torch.from_numpy(vectors[references]),
        torch.from_numpy(classes[references]),
        ref_includes_query=True,
    )
    map_at_r = float(accuracies["mean_average_precision_at_r"])
    # Undefined (NaN) when no query has another row of its class: missing, not a number that
    # JSON and PostgreSQL refuse.
    result["map_at_r"] = map_at_r if math.isfinite(map_at_r) else None
    return result


class EmbeddingTask:
    """See the module docstring."""

    name = "embedding"
    export_outputs = ("embeddings",)
    web_partial = "embedding"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        return first_concept(example, concepts) is not None

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        counts = dict.fromkeys(concepts, 0)
        for example in examples:
            concept = first_concept(example, concepts)
            if concept is not None:
                counts[concept] += 1
        if not any(counts.values()):
            raise DataError(
                codes.MODEL_TRAINING_NO_DATA,
                f"No image is labelled with the concepts {', '.join(concepts)}; an embedder "
                "learns which images belong together from their concepts.",
            )
        if sum(1 for n in counts.values() if n) < 2:
            raise DataError(
                codes.MODEL_TRAINING_INSUFFICIENT_DATA,
                "An embedder needs images of at least two concepts (it learns to keep "
                "concepts apart); add images labelled with another concept.",
            )
        if max(counts.values()) < MIN_IMAGES_PER_CONCEPT:
            raise DataError(
                codes.MODEL_TRAINING_INSUFFICIENT_DATA,
                f"No concept has {MIN_IMAGES_PER_CONCEPT} images; an embedder learns from "
                "images of the same concept: label more images of each concept.",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        unseen = set((info or {}).get(UNSEEN_KEY) or ())
        rows = [
            i
            for i, e in enumerate(examples)
            if first_concept(e, concepts) is not None and outputs[i].embedding is not None
        ]
        labels = [first_concept(examples[i], concepts) for i in rows]
        vectors = (
            np.stack([np.asarray(outputs[i].embedding, np.float32) for i in rows])
            if rows
            else np.zeros((0, 1))
        )
        notes: list[str] = []
        user: dict[str, Any] = {"notes": notes, "inputs": len(rows)}
        groups = {"all": list(range(len(rows)))}
        if unseen:
            groups["seen"] = [r for r, c in enumerate(labels) if c not in unseen]
            groups["unseen"] = [r for r, c in enumerate(labels) if c in unseen]
            user["unseen_concepts"] = sorted(unseen)
        index = {c: n for n, c in enumerate(concepts)}
        classes = [index[c] for c in labels]
        if len(rows) < 2 or len(set(classes)) < 2:
            notes.append("retrieval needs held-out inputs of two concepts or more; too few")
            groups = {}
        for group, members in groups.items():  # queries of the group among every input
            if members:
                user[group] = retrieval_metrics(vectors, classes, members)
        test_set = []
        if len(rows) >= 2:
            similarity = vectors @ vectors.T
            np.fill_diagonal(similarity, -np.inf)
            nearest = similarity.argmax(axis=1)
            for r, row in enumerate(rows):
                test_set.append(
                    {
                        "input": {"id": examples[row].input_id},
                        "predicted_concepts": [
                            {
                                "id": labels[nearest[r]],
                                "name": labels[nearest[r]],
                                "value": float(similarity[r, nearest[r]]),
                            }
                        ],
                        "ground_truth_concepts": [
                            {"id": labels[r], "name": labels[r], "value": 1.0}
                        ],
                    }
                )
        summary = {}
        if "all" in user:
            summary["top1_accuracy"] = user["all"]["recall_at_1"]
        return {
            **({"summary": summary} if summary else {}),
            "test_set": test_set,
            "eval_info": {"params": dict(info or {})},
            "extended_metrics": {"user_metrics": user},
        }

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """The classification task's colour squares, without its input labelled only as a
        negative (an embedder learns from positives)."""
        data = CLASSIFICATION.sample_data(kind, count + 1, size, extra_concept)
        examples = [e for e in data.examples if first_concept(e, data.concepts) is not None]
        return TrainingData(examples, data.concepts)


EMBEDDING = EmbeddingTask()
