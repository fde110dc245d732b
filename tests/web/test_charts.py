"""The SVG charts: well-formed, labels escaped, curves and counts where the data puts them."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from modelmill.web.charts import Series, heatmap, line_chart
from modelmill.web.evaluation import evaluation_view

SVG = "{http://www.w3.org/2000/svg}"


def test_line_chart_draws_one_polyline_per_series_on_the_unit_square() -> None:
    svg = ET.fromstring(
        line_chart(
            [Series("cats", [0, 0, 1], [0, 1, 1]), Series("dogs", [0, 0.5, 1], [0, 0.5, 1])],
            title="ROC curve",
            x_label="False positive rate",
            y_label="True positive rate",
            diagonal=True,
        )
    )
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2
    first = [tuple(map(float, p.split(","))) for p in lines[0].get("points", "").split()]
    # (0,0) at the bottom left of the plot, (0,1) at its top left: y grows downwards in SVG.
    assert first[0][0] == first[1][0] and first[1][1] < first[0][1]
    assert svg.find(f"{SVG}title").text == "ROC curve"  # type: ignore[union-attr]


def test_labels_are_escaped() -> None:
    svg = line_chart(
        [Series("<script>alert(1)</script>", [0, 1], [0, 1])],
        title="a & b",
        x_label="x",
        y_label="y",
    )
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)
    matrix = heatmap(
        ['"quoted"', "<b>"], [[1, 0], [0, 1]], title="t", row_title="r", column_title="c"
    )
    assert "<b>" not in matrix
    ET.fromstring(matrix)


def test_heatmap_writes_every_count_and_shades_by_row_share() -> None:
    svg = ET.fromstring(
        heatmap(
            ["a", "b"],
            [[3, 1], [0, 10]],
            title="Confusion matrix",
            row_title="Actual",
            column_title="Predicted",
        )
    )
    counts = [t.text for t in svg.findall(f"{SVG}text") if t.get("class") == "count"]
    assert counts == ["3", "1", "0", "10"]
    fills = [r.get("fill") for r in svg.findall(f"{SVG}rect") if r.get("class") == "cell"]
    assert fills[3] == "#08519c" and fills[2] == "#ffffff"  # 10 of 10, 0 of 10


def test_evaluation_view_reads_the_eval_metrics_dict() -> None:
    metrics = {
        "summary": {"macro_avg_roc_auc": 0.9, "macro_avg_f1_score": 0.8},
        "binary_metrics": [
            {
                "concept": {"id": "cat", "name": "Cat"},
                "num_pos": 5,
                "num_neg": 5,
                "roc_auc": 0.9,
                "f1": 0.8,
                "roc_curve": {"fpr": [0, 1], "tpr": [0, 1]},
                "precision_recall_curve": {"recall": [0, 1], "precision": [1, 0.5]},
            },
        ],
        "confusion_matrix": {
            "concept_ids": ["cat", "dog"],
            "matrix": [{"actual": "cat", "predicted": "dog", "value": 2.0}],
        },
        "test_set": [
            {
                "input": {"id": "i1"},
                "predicted_concepts": [{"id": "cat", "name": "Cat", "value": 0.9}],
                "ground_truth_concepts": [{"id": "cat", "name": "Cat", "value": 1.0}],
            },
            {
                "input": {"id": "i2"},
                "predicted_concepts": [{"id": "cat", "name": "Cat", "value": 0.7}],
                "ground_truth_concepts": [{"id": "dog", "name": "Dog", "value": 1.0}],
            },
        ],
        "extended_metrics": {
            "user_metrics": {
                "per_concept": [{"concept_id": "cat", "precision": 0.75, "recall": 0.6}],
                "notes": [],
            }
        },
    }
    view = evaluation_view(metrics)
    assert view is not None
    assert view.summary == [("ROC AUC (macro average)", 0.9), ("F1 (macro average)", 0.8)]
    assert view.concepts[0].precision == 0.75 and view.concepts[0].name == "Cat"
    assert [s.input_id for s in view.right] == ["i1"] and [s.input_id for s in view.wrong] == ["i2"]
    assert view.roc is not None and view.precision_recall is not None and view.confusion is not None
    assert evaluation_view({}) is None
