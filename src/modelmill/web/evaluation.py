"""The evaluation of a trained version, as the version page shows it: read from the EvalMetrics
dict stored on the version (summary, binary_metrics with curves, confusion_matrix, test_set)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from modelmill.web.charts import Series, heatmap, line_chart

SUMMARY_FIELDS = (
    ("macro_avg_roc_auc", "ROC AUC (macro average)"),
    ("macro_std_roc_auc", "ROC AUC standard deviation"),
    ("macro_avg_f1_score", "F1 (macro average)"),
    ("macro_avg_precision", "Precision (macro average)"),
    ("macro_avg_recall", "Recall (macro average)"),
    ("top1_accuracy", "Top-1 accuracy"),
    ("top5_accuracy", "Top-5 accuracy"),
)
SAMPLES_PER_KIND = 6
MAX_MATRIX_CONCEPTS = 40  # beyond this the heatmap is unreadable; the table still lists all


@dataclass
class ConceptRow:
    id: str
    name: str
    positives: int
    negatives: int
    roc_auc: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    avg_precision: float | None


@dataclass
class Sample:
    input_id: str
    predicted: str  # name of the top concept
    score: float
    truth: list[str]  # names of the positive concepts


@dataclass
class EvaluationView:
    summary: list[tuple[str, float]] = field(default_factory=list)
    concepts: list[ConceptRow] = field(default_factory=list)
    confusion: Markup | None = None
    confusion_note: str = ""
    roc: Markup | None = None
    precision_recall: Markup | None = None
    right: list[Sample] = field(default_factory=list)
    wrong: list[Sample] = field(default_factory=list)
    test_count: int = 0
    notes: list[str] = field(default_factory=list)


def _name(concept: dict[str, Any]) -> str:
    return str(concept.get("name") or concept.get("id") or "")


def _confusion(metrics: dict[str, Any], names: dict[str, str]) -> tuple[Markup | None, str]:
    matrix = metrics.get("confusion_matrix") or {}
    ids = list(matrix.get("concept_ids") or [])
    if not ids:
        return None, ""
    if len(ids) > MAX_MATRIX_CONCEPTS:
        return None, f"The confusion matrix has {len(ids)} concepts, too many to draw."
    index = {concept_id: i for i, concept_id in enumerate(ids)}
    counts = [[0.0] * len(ids) for _ in ids]
    for entry in matrix.get("matrix") or []:
        actual, predicted = index.get(entry.get("actual")), index.get(entry.get("predicted"))
        if actual is not None and predicted is not None:
            counts[actual][predicted] += float(entry.get("value", 0.0))
    chart = heatmap(
        [names.get(i, i) for i in ids],
        counts,
        title="Confusion matrix",
        row_title="Actual concept",
        column_title="Predicted concept",
    )
    return chart, ""


def _samples(test_set: list[dict[str, Any]]) -> tuple[list[Sample], list[Sample]]:
    """Up to SAMPLES_PER_KIND right and wrong predictions, taking each true concept in turn so
    every concept shows up; 'right' means the top concept is one of the input's labels."""
    queues: dict[str, list[tuple[bool, Sample]]] = {}
    for entry in test_set:
        predicted = entry.get("predicted_concepts") or []
        truth = [
            c for c in entry.get("ground_truth_concepts") or [] if float(c.get("value", 0)) > 0
        ]
        if not predicted or not truth:
            continue
        top = max(predicted, key=lambda c: float(c.get("value", 0.0)))
        sample = Sample(
            input_id=str((entry.get("input") or {}).get("id", "")),
            predicted=_name(top),
            score=float(top.get("value", 0.0)),
            truth=[_name(c) for c in truth],
        )
        correct = top.get("id") in {c.get("id") for c in truth}
        queues.setdefault(str(truth[0].get("id")), []).append((correct, sample))
    right: list[Sample] = []
    wrong: list[Sample] = []
    for round_ in range(max((len(q) for q in queues.values()), default=0)):
        for queue in queues.values():
            if round_ < len(queue):
                correct, sample = queue[round_]
                bucket = right if correct else wrong
                if len(bucket) < SAMPLES_PER_KIND:
                    bucket.append(sample)
    return right, wrong


def evaluation_view(metrics: dict[str, Any]) -> EvaluationView | None:
    """What the page shows of `metrics`; None when the version has no evaluation."""
    if not metrics or not metrics.get("summary"):
        return None
    view = EvaluationView()
    summary = metrics["summary"]
    view.summary = [(label, float(summary[key])) for key, label in SUMMARY_FIELDS if key in summary]
    extended = (metrics.get("extended_metrics") or {}).get("user_metrics") or {}
    per_concept = {item.get("concept_id"): item for item in extended.get("per_concept") or []}
    view.notes = list(extended.get("notes") or [])
    names: dict[str, str] = {}
    roc, pr = [], []
    for binary in metrics.get("binary_metrics") or []:
        concept = binary.get("concept") or {}
        concept_id = str(concept.get("id", ""))
        names[concept_id] = _name(concept)
        extra = per_concept.get(concept_id, {})
        view.concepts.append(
            ConceptRow(
                id=concept_id,
                name=_name(concept),
                positives=int(binary.get("num_pos", 0)),
                negatives=int(binary.get("num_neg", 0)),
                roc_auc=binary.get("roc_auc"),
                f1=binary.get("f1", 0.0),
                precision=extra.get("precision"),
                recall=extra.get("recall"),
                avg_precision=binary.get("avg_precision"),
            )
        )
        curve = binary.get("roc_curve") or {}
        if curve.get("fpr"):
            roc.append(Series(_name(concept), curve["fpr"], curve.get("tpr", [])))
        curve = binary.get("precision_recall_curve") or {}
        if curve.get("recall"):
            pr.append(Series(_name(concept), curve["recall"], curve.get("precision", [])))
    if roc:
        view.roc = line_chart(
            roc,
            title="ROC curve",
            x_label="False positive rate",
            y_label="True positive rate",
            diagonal=True,
        )
    if pr:
        view.precision_recall = line_chart(
            pr, title="Precision-recall curve", x_label="Recall", y_label="Precision"
        )
    view.confusion, view.confusion_note = _confusion(metrics, names)
    test_set = metrics.get("test_set") or []
    view.test_count = len(test_set)
    view.right, view.wrong = _samples(test_set)
    return view
