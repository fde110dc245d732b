"""Classification evaluation as a plain dict in the shape of Clarifai's `EvalMetrics` JSON
(snake_case proto field names, proto3 defaults left out), ready for `json_format.ParseDict`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

DEFAULT_THRESHOLD = 0.5
MAX_CURVE_POINTS = 100
TOP_K_FOR_TOP5 = 5
UNLABELLED = -1.0  # y_true value (besides NaN) meaning "not labelled for this concept"


def _labelled_mask(y_true: np.ndarray) -> np.ndarray:
    return ~np.isnan(y_true) & (y_true != UNLABELLED)


def _downsample(*arrays: np.ndarray, max_points: int) -> list[list[float]]:
    """Keeps at most `max_points` evenly spaced points of parallel curve arrays, ends included."""
    length = len(arrays[0])
    if length > max_points:
        keep = np.unique(np.linspace(0, length - 1, max_points).round().astype(int))
        arrays = tuple(a[keep] for a in arrays)
    return [[float(v) for v in a] for a in arrays]


def _prune(value: Any) -> Any:
    """Drops proto3 defaults (0, "", empty lists and messages), as MessageToDict would."""
    if isinstance(value, dict):
        pruned = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in (0, 0.0, "", [], {}, None)}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [_prune(v) for v in value]
    return value


def _concept(concept_id: str, names: Mapping[str, str], value: float | None = None) -> dict:
    concept: dict[str, Any] = {"id": concept_id, "name": names.get(concept_id, concept_id)}
    if value is not None:
        concept["value"] = float(value)
    return concept


def _predictions(scores: np.ndarray, mutually_exclusive: bool, threshold: float) -> np.ndarray:
    """1/0 decisions: the top concept when exclusive, else every score at or above threshold."""
    if mutually_exclusive:
        predicted = np.zeros_like(scores, dtype=np.int64)
        predicted[np.arange(len(scores)), scores.argmax(axis=1)] = 1
        return predicted
    return (scores >= threshold).astype(np.int64)


def _binary_metrics(
    concept_id: str,
    truth: np.ndarray,
    scores: np.ndarray,
    predicted: np.ndarray,
    names: Mapping[str, str],
    notes: list[str],
    max_points: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The BinaryMetrics of one concept, and its precision and recall at the threshold."""
    num_pos = int(truth.sum())
    metrics: dict[str, Any] = {
        "num_pos": num_pos,
        "num_neg": len(truth) - num_pos,
        "num_tot": len(truth),
        "concept": _concept(concept_id, names),
        "f1": float(f1_score(truth, predicted, zero_division=0.0)),
    }
    # BinaryMetrics has no precision/recall fields; the caller moves these to extended_metrics.
    extra = {
        "concept_id": concept_id,
        "precision": float(precision_score(truth, predicted, zero_division=0.0)),
        "recall": float(recall_score(truth, predicted, zero_division=0.0)),
    }
    if 0 < num_pos < len(truth):
        metrics["roc_auc"] = float(roc_auc_score(truth, scores))
        metrics["avg_precision"] = float(average_precision_score(truth, scores))
        fpr, tpr, roc_thresholds = roc_curve(truth, scores)
        # sklearn starts the ROC at threshold +inf, which JSON cannot carry; scores are in [0, 1].
        roc_thresholds = np.minimum(roc_thresholds, 1.0)
        fpr, tpr, roc_thresholds = _downsample(fpr, tpr, roc_thresholds, max_points=max_points)
        metrics["roc_curve"] = {"fpr": fpr, "tpr": tpr, "thresholds": roc_thresholds}
        precision, recall, pr_thresholds = precision_recall_curve(truth, scores)
        # The last precision/recall point (1, 0) has no threshold; keep the arrays parallel.
        precision, recall, pr_thresholds = _downsample(
            precision[:-1], recall[:-1], pr_thresholds, max_points=max_points
        )
        metrics["precision_recall_curve"] = {
            "recall": recall,
            "precision": precision,
            "thresholds": pr_thresholds,
        }
    else:
        side = "no positive" if num_pos == 0 else "no negative"
        notes.append(f"concept {concept_id}: {side} test inputs, so ROC AUC is undefined")
    return metrics, extra


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _std(values: Sequence[float]) -> float:
    return float(np.std(values)) if len(values) else 0.0


def _top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Share of inputs with a positive concept whose top-k scores include one of them."""
    positives = np.nan_to_num(y_true, nan=0.0) == 1
    has_positive = positives.any(axis=1)
    if not has_positive.any():
        return None
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(positives, top, axis=1).any(axis=1)
    return float(hits[has_positive].mean())


def _confusion_matrix(
    concept_ids: Sequence[str],
    y_true: np.ndarray,
    predicted: np.ndarray,
    names: Mapping[str, str],
) -> dict[str, Any]:
    """Counts of (actual, predicted) concept pairs: for each input, each of its positive
    concepts against each concept it was predicted as (the top one when exclusive)."""
    positives = (np.nan_to_num(y_true, nan=0.0) == 1).astype(np.int64)
    counts = positives.T @ predicted  # [actual, predicted]
    entries = [
        {
            "predicted": concept_ids[p],
            "actual": concept_ids[a],
            "value": float(counts[a, p]),
            "predicted_concept": _concept(concept_ids[p], names),
            "actual_concept": _concept(concept_ids[a], names),
        }
        for a, p in zip(*np.nonzero(counts), strict=True)
    ]
    return {"matrix": entries, "concept_ids": list(concept_ids)}


def classification_metrics(
    concept_ids: Sequence[str],
    y_true: np.ndarray,
    scores: np.ndarray,
    input_ids: Sequence[str],
    *,
    mutually_exclusive: bool,
    threshold: float = DEFAULT_THRESHOLD,
    concept_names: Mapping[str, str] | None = None,
    max_curve_points: int = MAX_CURVE_POINTS,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An `EvalMetrics` dict for a classifier's scores on labelled test inputs.

    `y_true` and `scores` are (inputs × concepts); `y_true` holds 1 / 0, with NaN or -1 where an
    input is not labelled for a concept (such cells are left out of that concept's metrics).
    `info` and the threshold go to `eval_info.params`; per-concept precision and recall (which
    BinaryMetrics lacks) and notes about undefined metrics to `extended_metrics.user_metrics`.

    >>> d = classification_metrics(["a", "b"], np.eye(2), np.eye(2), ["x", "y"],
    ...                            mutually_exclusive=True)
    >>> d["summary"]["top1_accuracy"], d["summary"]["macro_avg_roc_auc"]
    (1.0, 1.0)
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape or y_true.shape != (len(input_ids), len(concept_ids)):
        raise ValueError(
            f"y_true {y_true.shape} and scores {scores.shape} must both be "
            f"(inputs={len(input_ids)}, concepts={len(concept_ids)})"
        )
    names = concept_names or {}
    labelled = _labelled_mask(y_true)
    predicted = _predictions(scores, mutually_exclusive, threshold)
    notes: list[str] = []

    binary, per_concept = [], []
    for column, concept_id in enumerate(concept_ids):
        rows = labelled[:, column]
        truth = (y_true[rows, column] == 1).astype(np.int64)
        concept_metrics, extra = _binary_metrics(
            concept_id,
            truth,
            scores[rows, column],
            predicted[rows, column],
            names,
            notes,
            max_curve_points,
        )
        binary.append(concept_metrics)
        per_concept.append(extra)

    aucs = [m["roc_auc"] for m in binary if "roc_auc" in m]
    f1s = [m["f1"] for m in binary]
    summary: dict[str, Any] = {
        "macro_avg_f1_score": _mean(f1s),
        "macro_std_f1_score": _std(f1s),
        "macro_avg_precision": _mean([m["precision"] for m in per_concept]),
        "macro_avg_recall": _mean([m["recall"] for m in per_concept]),
        # Concepts whose AUC is undefined are left out of the mean (see the notes).
        "macro_avg_roc_auc": _mean(aucs),
        "macro_std_roc_auc": _std(aucs),
    }
    top1 = _top_k_accuracy(y_true, scores, 1)
    if top1 is not None:
        summary["top1_accuracy"] = top1
    if len(concept_ids) > TOP_K_FOR_TOP5:  # with five concepts or fewer top-5 is always 1
        summary["top5_accuracy"] = _top_k_accuracy(y_true, scores, TOP_K_FOR_TOP5)

    test_set = []
    for row, input_id in enumerate(input_ids):
        order = np.argsort(-scores[row], kind="stable")
        test_set.append(
            {
                "input": {"id": input_id},
                "predicted_concepts": [
                    _concept(concept_ids[c], names, scores[row, c]) for c in order
                ],
                "ground_truth_concepts": [
                    _concept(concept_ids[c], names, y_true[row, c])
                    for c in np.nonzero(labelled[row])[0]
                ],
            }
        )

    positive_counts = (np.nan_to_num(y_true, nan=0.0) == 1).sum(axis=0)
    result = {
        "summary": summary,
        "binary_metrics": binary,
        "confusion_matrix": _confusion_matrix(concept_ids, y_true, predicted, names),
        "label_counts": {
            "positive_label_counts": [
                {"concept_name": names.get(c, c), "count": int(n), "concept": _concept(c, names)}
                for c, n in zip(concept_ids, positive_counts, strict=True)
            ]
        },
        "test_set": test_set,
    }
    # Struct fields keep their values as they are, empty or zero alike, so they skip _prune.
    return {
        **_prune(result),
        "eval_info": {"params": {**(info or {}), "threshold": threshold}},
        "extended_metrics": {"user_metrics": {"per_concept": per_concept, "notes": notes}},
    }
