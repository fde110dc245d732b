"""What the detection partial (templates/partials/detection.html) shows of a detector's
EvalMetrics: the mAP summary, AP per concept and per area band, and sample inputs with their
predicted and true boxes placed over the image (coordinates in the image's own pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SAMPLE_INPUTS = 8  # inputs drawn with their boxes
SHOWN_SCORE = 0.3  # predicted boxes scoring below this are not drawn
MAX_DRAWN_PREDICTIONS = 10


@dataclass(frozen=True)
class ConceptRow:
    name: str
    true_boxes: int
    ap50: float | None
    ap75: float | None
    ap_range: float | None


@dataclass(frozen=True)
class AreaRow:
    name: str
    low: float  # share of the image area
    high: float
    true_boxes: int
    ap50: float | None
    ap_range: float | None


@dataclass(frozen=True)
class Drawn:
    """A box to draw: x, y, width, height as fractions (the partial scales them), its label."""

    box: tuple[float, float, float, float]
    label: str


@dataclass
class Sample:
    input_id: str
    truth: list[Drawn] = field(default_factory=list)
    predicted: list[Drawn] = field(default_factory=list)


@dataclass(frozen=True)
class DetectionView:
    summary: list[tuple[str, float]]
    concepts: list[ConceptRow]
    areas: list[AreaRow]
    samples: list[Sample]
    evaluated_on: str


def _drawn(regions: Sequence[Mapping[str, Any]], min_score: float, limit: int) -> list[Drawn]:
    drawn = []
    for region in regions:
        box = region.get("region_info", {}).get("bounding_box", {})
        concepts = region.get("data", {}).get("concepts", [])
        score = float(region.get("value", 1.0))
        if not box or score < min_score:
            continue
        top, left = float(box.get("top_row", 0.0)), float(box.get("left_col", 0.0))
        bottom, right = float(box.get("bottom_row", 0.0)), float(box.get("right_col", 0.0))
        name = concepts[0].get("name", concepts[0].get("id", "")) if concepts else ""
        label = name if min_score <= 0 else f"{name} {score:.2f}"
        drawn.append(Drawn((left, top, right - left, bottom - top), label))
    return drawn[:limit]


def detection_view(metrics: Mapping[str, Any]) -> DetectionView | None:
    """The view of a detector's metrics, or None when they are not a detector's."""
    summary = metrics.get("summary", {})
    if "mean_avg_precision_iou_50" not in summary and not metrics.get("metrics_by_class"):
        return None
    extended = metrics.get("extended_metrics", {}).get("user_metrics", {})
    by_iou: dict[str, dict[float, float]] = {}
    positives: dict[str, int] = {}
    names: dict[str, str] = {}
    for row in metrics.get("metrics_by_class", []):
        concept = row.get("concept", {})
        concept_id = concept.get("id", "")
        names[concept_id] = concept.get("name", concept_id)
        positives[concept_id] = int(row.get("num_pos", 0))
        if "avg_precision" in row:
            by_iou.setdefault(concept_id, {})[round(float(row.get("iou", 0.0)), 2)] = float(
                row["avg_precision"]
            )
    class_range = extended.get("avg_precision_iou_range_by_class", {})
    concepts = [
        ConceptRow(
            names[c],
            positives[c],
            by_iou.get(c, {}).get(0.5),
            by_iou.get(c, {}).get(0.75),
            class_range.get(c) if positives[c] else None,
        )
        for c in names
    ]
    bands: dict[str, dict[str, Any]] = {}
    for row in metrics.get("metrics_by_area", []):
        band = bands.setdefault(
            row.get("area_name", ""),
            {"low": row.get("area_min", 0.0), "high": row.get("area_max", 1.0), "n": 0, "ap": []},
        )
        band["n"] += int(row.get("num_pos", 0))
        if "avg_precision" in row:
            band["ap"].append(float(row["avg_precision"]))
    area_range = extended.get("avg_precision_iou_range_by_area", {})
    areas = [
        AreaRow(
            name,
            float(band["low"]),
            float(band["high"]),
            band["n"],
            sum(band["ap"]) / len(band["ap"]) if band["ap"] else None,
            area_range.get(name) if band["n"] else None,
        )
        for name, band in bands.items()
    ]
    samples = []
    for entry in metrics.get("test_set", [])[:SAMPLE_INPUTS]:
        input_id = entry.get("input", {}).get("id", "")
        truth = entry.get("ground_truth_annotation", {}).get("data", {}).get("regions", [])
        predicted = entry.get("predicted_annotation", {}).get("data", {}).get("regions", [])
        samples.append(
            Sample(
                input_id,
                _drawn(truth, 0.0, len(truth)),
                _drawn(predicted, SHOWN_SCORE, MAX_DRAWN_PREDICTIONS),
            )
        )
    return DetectionView(
        [
            ("mAP@0.5", float(summary.get("mean_avg_precision_iou_50", 0.0))),
            ("mAP@[0.5:0.95]", float(summary.get("mean_avg_precision_iou_range", 0.0))),
        ],
        concepts,
        areas,
        samples,
        str(metrics.get("eval_info", {}).get("params", {}).get("evaluated_on", "held-out split")),
    )
