"""EvalMetrics dicts: proto-compatible shape and known numbers on small cases."""

from __future__ import annotations

import numpy as np
import pytest
from clarifai_grpc.grpc.api import resources_pb2
from google.protobuf import json_format

from modelmill.training.metrics import classification_metrics

NAN = np.nan


def parse(metrics: dict) -> resources_pb2.EvalMetrics:
    return json_format.ParseDict(metrics, resources_pb2.EvalMetrics())


def test_metrics_parse_into_eval_metrics_and_match_message_to_dict():
    rng = np.random.default_rng(0)
    truth = np.eye(3)[rng.integers(0, 3, 300)]
    scores = np.clip(truth * 0.3 + rng.random((300, 3)) * 0.7, 0, 1)
    metrics = classification_metrics(
        ["a", "b", "c"], truth, scores, [f"i{n}" for n in range(300)], mutually_exclusive=True
    )
    message = parse(metrics)
    back = json_format.MessageToDict(message, preserving_proto_field_name=True)
    assert set(back) == set(metrics)
    assert set(back["binary_metrics"][0]) == set(metrics["binary_metrics"][0])
    curve = message.binary_metrics[0].roc_curve
    assert 2 < len(curve.fpr) <= 100 and len(curve.fpr) == len(curve.tpr) == len(curve.thresholds)
    pr = message.binary_metrics[0].precision_recall_curve
    assert len(pr.recall) == len(pr.precision) == len(pr.thresholds) <= 100


def test_known_binary_case_gives_known_numbers():
    # Concept "a": positives score 0.9 and 0.4, negatives 0.6 and 0.1 at threshold 0.5:
    # TP=1, FN=1, FP=1, TN=1 → precision = recall = F1 = 0.5; AUC = 3 of 4 pairs ordered = 0.75.
    truth = np.array([[1.0], [1.0], [0.0], [0.0]])
    scores = np.array([[0.9], [0.4], [0.6], [0.1]])
    metrics = classification_metrics(["a"], truth, scores, list("wxyz"), mutually_exclusive=False)
    binary = metrics["binary_metrics"][0]
    assert (binary["num_pos"], binary["num_neg"], binary["num_tot"]) == (2, 2, 4)
    assert binary["roc_auc"] == pytest.approx(0.75)
    assert binary["f1"] == pytest.approx(0.5)
    per_concept = metrics["extended_metrics"]["user_metrics"]["per_concept"][0]
    assert per_concept == {"concept_id": "a", "precision": 0.5, "recall": 0.5}
    assert metrics["summary"]["macro_avg_roc_auc"] == pytest.approx(0.75)
    assert metrics["summary"]["top1_accuracy"] == 1.0  # a single concept is always the top one
    counts = metrics["label_counts"]["positive_label_counts"]
    assert counts == [{"concept_name": "a", "count": 2, "concept": {"id": "a", "name": "a"}}]
    parse(metrics)


def test_exclusive_case_counts_argmax_confusions_and_top1():
    truth = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)
    scores = np.array([[0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.4, 0.6]])
    metrics = classification_metrics(
        ["a", "b"], truth, scores, list("wxyz"), mutually_exclusive=True
    )
    assert metrics["summary"]["top1_accuracy"] == 0.75
    cells = {
        (e["actual"], e["predicted"]): e["value"] for e in metrics["confusion_matrix"]["matrix"]
    }
    assert cells == {("a", "a"): 1.0, ("a", "b"): 1.0, ("b", "b"): 2.0}
    assert metrics["confusion_matrix"]["concept_ids"] == ["a", "b"]
    entry = metrics["test_set"][1]
    assert entry["input"] == {"id": "x"}
    assert [c["id"] for c in entry["predicted_concepts"]] == ["b", "a"]
    assert entry["ground_truth_concepts"][0] == {"id": "a", "name": "a", "value": 1.0}
    parse(metrics)


def test_unlabelled_cells_are_left_out_of_that_concepts_metrics():
    truth = np.array([[1, NAN], [0, 1], [1, -1], [0, 0]], dtype=float)
    scores = np.array([[0.9, 0.9], [0.2, 0.8], [0.7, 0.1], [0.1, 0.3]])
    metrics = classification_metrics(
        ["a", "b"], truth, scores, list("wxyz"), mutually_exclusive=False
    )
    a, b = metrics["binary_metrics"]
    assert a["num_tot"] == 4 and b["num_tot"] == 2
    assert b["roc_auc"] == 1.0
    ground_truth = metrics["test_set"][0]["ground_truth_concepts"]
    assert [c["id"] for c in ground_truth] == ["a"]


def test_concept_without_negatives_or_positives_does_not_crash():
    truth = np.array([[1, 0], [1, 0], [1, 0]], dtype=float)
    scores = np.array([[0.9, 0.1], [0.6, 0.2], [0.4, 0.3]])
    metrics = classification_metrics(
        ["a", "b"], truth, scores, list("xyz"), mutually_exclusive=False
    )
    assert all("roc_auc" not in m for m in metrics["binary_metrics"])
    assert "macro_avg_roc_auc" not in metrics["summary"]  # undefined everywhere: left at 0
    notes = metrics["extended_metrics"]["user_metrics"]["notes"]
    assert any("a: no negative" in n for n in notes) and any("b: no positive" in n for n in notes)
    parse(metrics)


def test_shapes_must_agree():
    with pytest.raises(ValueError, match="concepts"):
        classification_metrics(
            ["a"], np.ones((2, 1)), np.ones((2, 2)), ["x", "y"], mutually_exclusive=False
        )
