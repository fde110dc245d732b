"""COCO box evaluation shared by the detection task and bench/detector.py: per-image true and
predicted boxes in, COCOeval's accumulated precision out (faster-coco-eval by default,
pycocotools as the reference), at COCO's ten IoU thresholds and per area band.

Area bands are relative to the image, not COCO's absolute 32²/96² pixels (those leave "large"
empty on small images): small < 1 % of the image area, medium 1-10 %, large ≥ 10 %.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Evaluation happens on boxes scaled to this square canvas, so COCO's absolute areas become
# shares of the image area: area / CANVAS² is the fraction of the image a box covers.
CANVAS = 1000.0
AREA_BANDS = (  # name, min and max share of the image area
    ("small", 0.0, 0.01),
    ("medium", 0.01, 0.10),
    ("large", 0.10, 1.0),
)
IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # COCO's 0.5:0.95
MAX_DETECTIONS = 100  # per image, as COCO counts


@dataclass(frozen=True)
class Box:
    """One box of one concept: (top, left, bottom, right) fractions; `score` for predictions."""

    concept: str
    top: float
    left: float
    bottom: float
    right: float
    score: float = 1.0

    @property
    def area(self) -> float:
        return max(0.0, self.bottom - self.top) * max(0.0, self.right - self.left)


@dataclass(frozen=True)
class CocoResult:
    """COCOeval's accumulated precision (T IoUs, R recalls, K classes, A areas, M max dets)
    as numpy, and the number of true boxes per class and per area band."""

    precision: np.ndarray
    true_counts: np.ndarray  # (K, A): ground-truth boxes per class and area band ("all" first)
    seconds: float

    def average_precision(
        self, iou: float | None = None, klass: int | None = None, area: int = 0
    ) -> float:
        """Mean precision over recall (COCO AP) at one IoU (None: the 0.5:0.95 mean), one
        class (None: the mean over classes that have true boxes), one area band; -1 = none."""
        p = self.precision[:, :, :, area, -1]
        if iou is not None:
            p = p[[IOU_THRESHOLDS.index(iou)]]
        if klass is not None:
            p = p[:, :, [klass]]
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else -1.0


def coco_evaluate(
    truth: Sequence[Sequence[Box]],
    predictions: Sequence[Sequence[Box]],
    concepts: Sequence[str],
    backend: str = "faster_coco_eval",
) -> CocoResult:
    """COCO box evaluation of per-image predictions against per-image true boxes, on the
    CANVAS square (so area ranges are shares of the image). `backend` is "faster_coco_eval"
    (measured faster, see bench/RESULTS.md) or "pycocotools"; both give the same numbers."""
    index = {concept: i + 1 for i, concept in enumerate(concepts)}
    images = [{"id": i + 1, "width": CANVAS, "height": CANVAS} for i in range(len(truth))]
    annotations: list[dict[str, Any]] = []
    detections: list[dict[str, Any]] = []
    for image_id, boxes in enumerate(truth, start=1):
        for box in boxes:
            xywh = _xywh(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": index[box.concept],
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    for image_id, boxes in enumerate(predictions, start=1):
        for box in boxes:
            if box.concept in index:
                detections.append(
                    {
                        "id": len(detections) + 1,
                        "image_id": image_id,
                        "category_id": index[box.concept],
                        "bbox": _xywh(box),
                        "score": box.score,
                        "area": box.area * CANVAS * CANVAS,
                    }
                )
    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": c} for c, i in index.items()],
    }
    started = time.perf_counter()
    evaluator = _evaluator(backend, dataset, detections)
    params = evaluator.params
    params.iouThrs = np.array(IOU_THRESHOLDS)
    params.areaRng = [[0.0, CANVAS * CANVAS]] + [
        [low * CANVAS * CANVAS, high * CANVAS * CANVAS] for _, low, high in AREA_BANDS
    ]
    params.areaRngLbl = ["all", *(name for name, _, _ in AREA_BANDS)]
    params.maxDets = [1, 10, MAX_DETECTIONS]
    evaluator.evaluate()
    evaluator.accumulate()
    precision = np.asarray(evaluator.eval["precision"])
    seconds = time.perf_counter() - started
    counts = np.zeros((len(concepts), len(AREA_BANDS) + 1), int)
    for annotation in annotations:
        share = annotation["area"] / (CANVAS * CANVAS)
        row = annotation["category_id"] - 1
        counts[row, 0] += 1
        for column, (_, low, high) in enumerate(AREA_BANDS, start=1):
            counts[row, column] += low <= share <= high
    return CocoResult(precision, counts, seconds)


def _xywh(box: Box) -> list[float]:
    return [
        box.left * CANVAS,
        box.top * CANVAS,
        (box.right - box.left) * CANVAS,
        (box.bottom - box.top) * CANVAS,
    ]


def _evaluator(backend: str, dataset: dict[str, Any], detections: list[dict[str, Any]]) -> Any:
    """A COCOeval for boxes; an empty detection list still evaluates (every AP is 0)."""
    if backend == "pycocotools":
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            truth = COCO()
            truth.dataset = dataset
            truth.createIndex()
            predicted = truth.loadRes(detections) if detections else COCO()
            if not detections:
                predicted.dataset = {**dataset, "annotations": []}
                predicted.createIndex()
            return _Quiet(COCOeval(truth, predicted, "bbox"))
    from faster_coco_eval import COCO as FastCOCO
    from faster_coco_eval import COCOeval_faster

    truth = FastCOCO(dataset)
    predicted = FastCOCO({**dataset, "annotations": detections})
    return COCOeval_faster(truth, predicted, "bbox", print_function=lambda *_: None)


class _Quiet:
    """pycocotools' COCOeval with its printing silenced."""

    def __init__(self, evaluator: Any) -> None:
        self._evaluator = evaluator
        self.params = evaluator.params

    def evaluate(self) -> None:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            self._evaluator.evaluate()

    def accumulate(self) -> None:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            self._evaluator.accumulate()

    @property
    def eval(self) -> dict[str, Any]:
        return self._evaluator.eval
