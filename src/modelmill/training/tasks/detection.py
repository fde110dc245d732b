"""The detection task (visual-detector): boxes of concepts in images. It owns which inputs a
training takes and what labels it needs, input validation of boxes, the evaluation in
Clarifai's EvalMetrics shape (mAP@[.5:.95] and mAP@.5, per concept and per area band, computed
by coco_eval.py), the "boxes"/"scores"/"labels" export outputs, sample images of coloured
shapes with their boxes, and the objective the fine-tuning loop optimises (the detector's own
losses, mAP on validation).

Which inputs count:
- A training without a dataset takes the app's inputs that have a box of one of the concepts
  (`relevant`); an image merely tagged with a concept says nothing about where it is.
- A dataset's inputs are all taken: an image with no boxes is a negative (background only), so
  a dataset can teach "nothing here". An image labelled positive for a training concept at
  input level but with no box of it cannot be used (the concept is there, somewhere) and is
  reported invalid, counted against the invalid-data tolerance, as are boxes outside the image
  or of zero size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image, ImageDraw

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    InvalidInput,
    Output,
    Region,
    TrainingData,
)
from modelmill.training.tasks import samples
from modelmill.training.tasks.coco_eval import (
    AREA_BANDS,
    IOU_THRESHOLDS,
    MAX_DETECTIONS,
    Box,
    coco_evaluate,
)

if TYPE_CHECKING:  # the registry imports tasks to answer ListModelTypes: no torch at import
    import torch

POSITIVE_AT = 0.5  # a label value above this is a positive
MAX_TEST_SET_ENTRIES = 200  # inputs listed with their predicted and true boxes
MAX_TEST_SET_REGIONS = 20  # predicted regions listed per input, highest scores first
MIN_BOX_FRACTION = 1e-4  # a box thinner than this share of the image is degenerate
CLIP_SLACK = 0.01  # coordinates this far outside [0, 1] are rounding; further is a bad box

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}
EXTRA_COLOUR = ("purple", (150, 40, 170))
BACKGROUND_GREY = 128
SHAPES_PER_IMAGE = (1, 3)  # inclusive range of shapes drawn on an image with boxes
SHAPE_SIDE = (0.22, 0.45)  # a shape's side as a share of the image's shorter side
EMPTY_EVERY = 5  # every fifth distinct content has no shapes (a negative image)


# ---- boxes ------------------------------------------------------------------------------------


def box_problem(box: Sequence[float]) -> str | None:
    """Why a (top, left, bottom, right) fraction box is unusable, or None."""
    if len(box) != 4 or not all(np.isfinite(box)):
        return "is not four finite numbers"
    top, left, bottom, right = box
    if min(box) < -CLIP_SLACK or max(box) > 1 + CLIP_SLACK:
        return f"lies outside the image ({', '.join(f'{v:.3g}' for v in box)})"
    if bottom - top < MIN_BOX_FRACTION or right - left < MIN_BOX_FRACTION:
        return f"has no area ({', '.join(f'{v:.3g}' for v in box)})"
    return None


def clip_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    top, left, bottom, right = (min(1.0, max(0.0, float(v))) for v in box)
    return top, left, bottom, right


def true_boxes(example: Example, concepts: Sequence[str]) -> list[Box]:
    """The labelled boxes of `concepts` in an example (one per positive concept of a region)."""
    wanted = set(concepts)
    boxes = []
    for region in example.regions:
        if region.box is None or box_problem(region.box) is not None:
            continue
        for concept, value in region.concepts.items():
            if concept in wanted and value > POSITIVE_AT:
                boxes.append(Box(concept, *clip_box(region.box)))
    return boxes


def predicted_boxes(output: Output) -> list[Box]:
    """A prediction's boxes: each region's best concept, scored by the region's value."""
    boxes = []
    for region in output.regions:
        if region.box is None or not region.concepts:
            continue
        concept, value = max(region.concepts.items(), key=lambda kv: kv[1])
        score = region.value if region.value is not None else value
        boxes.append(Box(concept, *clip_box(region.box), score=float(score)))
    return boxes


def has_box(example: Example) -> bool:
    return any(region.box is not None for region in example.regions)


def invalid_inputs(examples: Sequence[Example]) -> list[InvalidInput]:
    """Inputs a detector cannot learn from: not images, unreadable, a bad box, or labelled
    positive for a concept at input level with no box of it (the object is somewhere)."""
    invalid = []
    for example in examples:
        reason = _problem(example)
        if reason is not None:
            invalid.append(InvalidInput(example.input_id, reason))
    return invalid


def _problem(example: Example) -> str | None:
    if example.kind != "image":
        return f"is {example.kind} input; detectors train on images"
    for region in example.regions:
        if region.box is not None and (problem := box_problem(region.box)) is not None:
            return f"has a box that {problem}"
    boxed = {c for r in example.regions if r.box is not None for c in r.concepts}
    unboxed = sorted(c for c, v in example.concepts.items() if v > POSITIVE_AT and c not in boxed)
    if unboxed:
        return (
            f"is labelled {', '.join(unboxed)} with no box around it; draw the boxes (a detector "
            "learns where things are) or remove the label"
        )
    try:
        content = example.load()
        if not isinstance(content, Image.Image):
            return f"did not decode to an image (got {type(content).__name__})"
        content.load()
    except Exception as error:  # any loader or Pillow failure makes the input unusable
        return f"could not be read or decoded: {error}"
    if min(content.size) < 1:
        return "is an empty image"
    return None


# ---- evaluation (COCO mAP in coco_eval.py) ----------------------------------------------------


def detection_metrics(
    examples: Sequence[Example],
    outputs: Sequence[Output],
    concepts: Sequence[str],
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """EvalMetrics (snake_case Clarifai JSON): summary mAP@.5 and mAP@[.5:.95];
    metrics_by_class, one row per concept and IoU threshold (0.5 … 0.95, avg_precision = AP at
    that IoU, num_pos = true boxes); metrics_by_area, one row per concept and area band at IoU
    0.5; extended_metrics with each concept's and band's AP over 0.5:0.95; test_set entries
    with predicted and true regions."""
    truth = [true_boxes(example, concepts) for example in examples]
    predictions = [predicted_boxes(output) for output in outputs]
    result = coco_evaluate(truth, predictions, concepts)
    by_class, by_area, class_range, area_range = [], [], {}, {}
    for k, concept in enumerate(concepts):
        positives = int(result.true_counts[k, 0])
        for iou in IOU_THRESHOLDS:
            by_class.append(_row(concept, positives, result.average_precision(iou, k), iou=iou))
        class_range[concept] = _value(result.average_precision(None, k))
        for a, (name, low, high) in enumerate(AREA_BANDS, start=1):
            row = _row(concept, int(result.true_counts[k, a]), result.average_precision(0.5, k, a))
            by_area.append(
                {**row, "iou": 0.5, "area_name": name, "area_min": low, "area_max": high}
            )
    for a, (name, _, _) in enumerate(AREA_BANDS, start=1):
        area_range[name] = _value(result.average_precision(None, None, a))
    summary = {
        "mean_avg_precision_iou_50": _value(result.average_precision(0.5)),
        "mean_avg_precision_iou_range": _value(result.average_precision(None)),
    }
    return {
        "summary": summary,
        "metrics_by_class": by_class,
        "metrics_by_area": by_area,
        "extended_metrics": {
            "user_metrics": {
                "avg_precision_iou_range_by_class": class_range,
                "avg_precision_iou_range_by_area": area_range,
                "area_bands": {name: [low, high] for name, low, high in AREA_BANDS},
                "area_bands_relative_to": "image area",
                "true_boxes": int(result.true_counts[:, 0].sum()),
                "predicted_boxes": sum(len(p) for p in predictions),
            }
        },
        "test_set": _test_set(examples, truth, predictions),
        "eval_info": {"params": {**(info or {}), "max_detections": MAX_DETECTIONS}},
    }


def _value(ap: float) -> float:
    return max(0.0, ap)  # -1 (no true boxes anywhere) reads as 0 in a summary


def _row(concept: str, positives: int, ap: float, iou: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"concept": {"id": concept, "name": concept}, "num_pos": positives}
    row["num_tot"] = positives
    if ap >= 0:
        row["avg_precision"] = ap
    if iou is not None:
        row["iou"] = iou
    return row


def _regions(boxes: Iterable[Box]) -> list[dict[str, Any]]:
    return [
        {
            "region_info": {
                "bounding_box": {
                    "top_row": b.top,
                    "left_col": b.left,
                    "bottom_row": b.bottom,
                    "right_col": b.right,
                }
            },
            "value": b.score,
            "data": {"concepts": [{"id": b.concept, "name": b.concept, "value": b.score}]},
        }
        for b in boxes
    ]


def _test_set(
    examples: Sequence[Example], truth: Sequence[list[Box]], predictions: Sequence[list[Box]]
) -> list[dict[str, Any]]:
    entries = []
    for example, true, predicted in list(zip(examples, truth, predictions, strict=True))[
        :MAX_TEST_SET_ENTRIES
    ]:
        best = sorted(predicted, key=lambda b: -b.score)[:MAX_TEST_SET_REGIONS]
        entries.append(
            {
                "input": {"id": example.input_id},
                "predicted_annotation": {
                    "input_id": example.input_id,
                    "data": {"regions": _regions(best)},
                },
                "ground_truth_annotation": {
                    "input_id": example.input_id,
                    "data": {"regions": _regions(true)},
                },
            }
        )
    return entries


# ---- sample data --------------------------------------------------------------------------------


def shapes_image(
    colours: Mapping[str, Sequence[int]], width: int, seed: int
) -> tuple[bytes, list[Region]]:
    """A noisy grey image (JPEG) with rectangles and ellipses in the concepts' colours, and
    their boxes; every EMPTY_EVERY-th seed draws none (a negative image)."""
    rng = np.random.default_rng(seed)
    height = samples.image_height(width)
    grey = [BACKGROUND_GREY] * 3
    pixels = samples.colour_pixels(grey, width, seed)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    regions = []
    count = (
        0
        if seed % EMPTY_EVERY == EMPTY_EVERY - 1
        else int(rng.integers(*SHAPES_PER_IMAGE, endpoint=True))
    )
    names = list(colours)
    shorter = min(width, height)
    for _ in range(count):
        concept = names[int(rng.integers(len(names)))]
        side_w = max(2, round(shorter * rng.uniform(*SHAPE_SIDE)))
        side_h = max(2, round(shorter * rng.uniform(*SHAPE_SIDE)))
        left = int(rng.integers(0, width - side_w + 1))
        top = int(rng.integers(0, height - side_h + 1))
        corners = (left, top, left + side_w - 1, top + side_h - 1)
        fill = tuple(int(v) for v in colours[concept])
        if rng.random() < 0.5:
            draw.rectangle(corners, fill=fill)
        else:
            draw.ellipse(corners, fill=fill)
        box = (top / height, left / width, (top + side_h) / height, (left + side_w) / width)
        regions.append(Region({concept: 1.0}, box=box))
    return samples.encode_jpeg(np.asarray(image)), regions


# ---- the task ---------------------------------------------------------------------------------


class DetectionTask:
    """See the module docstring."""

    name = "detection"
    export_outputs = ("boxes", "scores", "labels")
    web_partial = "detection"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        return bool(true_boxes(example, concepts))

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        if not examples:
            raise DataError(
                codes.MODEL_TRAINING_NO_DATA,
                f"No inputs have boxes of the concepts {', '.join(concepts)}; draw boxes "
                "(PostAnnotations with region_info.bounding_box) or choose a dataset.",
            )
        boxed = {box.concept for example in examples for box in true_boxes(example, concepts)}
        missing = [c for c in concepts if c not in boxed]
        if missing:
            raise DataError(
                codes.MODEL_TRAINING_NO_POSITIVES,
                f"No box of {', '.join(missing)} in the training data; draw boxes of those "
                "concepts (region_info.bounding_box with the concept) or leave them out.",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return detection_metrics(examples, outputs, concepts, info)

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """Coloured rectangles and ellipses (red, green, blue; purple with `extra_concept`)
        on noisy grey, with their boxes; one distinct content in EMPTY_EVERY has none."""
        if kind != "image":
            raise ValueError("detection sample data is images")
        colours = dict([*COLOURS.items(), *([EXTRA_COLOUR] if extra_concept else [])])
        contents: dict[int, tuple[Callable[[], Image.Image], list[Region]]] = {}
        examples = []
        for i in range(count):
            seed = i % samples.DISTINCT
            if seed not in contents:
                data, regions = shapes_image(colours, size, seed)
                contents[seed] = (samples.decoder(data), regions)
            load, regions = contents[seed]
            examples.append(Example(f"shapes-{i}", kind, load, regions=tuple(regions)))
        drawn = {c for e in examples for r in e.regions for c in r.concepts}
        concepts = [c for c in colours if c in drawn] or list(colours)
        return TrainingData(examples, concepts)

    def objective(
        self, forward: Callable[[Any, Any, Any], Any], concepts: Sequence[str]
    ) -> DetectionObjective:
        return DetectionObjective(forward, concepts)


# ---- the objective, torch ---------------------------------------------------------------------


class DetectionObjective:
    """Batches are (images, targets, sizes): `forward(model, images, targets)` returns the
    detector's loss dict in training mode and its detections (a list of dicts with "boxes" in
    pixels, "scores", "labels" 1-based) in eval mode; `sizes` are the batch's (height, width).
    The best epoch is the one with the highest validation mAP@[.5:.95]."""

    monitor = "val_map"
    higher_is_better = True

    def __init__(self, forward: Callable[[Any, Any, Any], Any], concepts: Sequence[str]) -> None:
        self.forward, self.concepts = forward, list(concepts)

    def loss(self, model: Any, batch: Any) -> torch.Tensor:
        images, targets, _ = batch
        losses = self.forward(model, images, targets)
        return sum(losses.values())  # type: ignore[return-value]

    def validate(self, model: Any, batches: Iterable[Any]) -> dict[str, float]:
        import torch

        truth: list[list[Box]] = []
        predictions: list[list[Box]] = []
        with torch.inference_mode():
            for images, targets, sizes in batches:
                detections = self.forward(model, images, None)
                for target, found, (height, width) in zip(targets, detections, sizes, strict=True):
                    truth.append(
                        self._boxes(target["boxes"], target["labels"], None, height, width)
                    )
                    predictions.append(
                        self._boxes(found["boxes"], found["labels"], found["scores"], height, width)
                    )
        result = coco_evaluate(truth, predictions, self.concepts)
        return {
            "val_map": _value(result.average_precision(None)),
            "val_map_50": _value(result.average_precision(0.5)),
        }

    def _boxes(
        self,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        scores: torch.Tensor | None,
        height: int,
        width: int,
    ) -> list[Box]:
        rows = boxes.detach().cpu().tolist()
        classes = labels.detach().cpu().tolist()
        values = scores.detach().cpu().tolist() if scores is not None else [1.0] * len(rows)
        return [
            Box(self.concepts[c - 1], y1 / height, x1 / width, y2 / height, x2 / width, s)
            for (x1, y1, x2, y2), c, s in zip(rows, classes, values, strict=True)
        ]


DETECTION = DetectionTask()
