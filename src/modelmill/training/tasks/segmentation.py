"""The segmentation task (visual-segmenter): per-pixel classes from mask and polygon regions
(polygons rasterised, masks checked against their image's size), the data checks, mIoU /
per-class IoU / pixel accuracy metrics with test-set entries carrying predicted and true masks,
the "scores" export (per-pixel probabilities, background first), sample data of drawn shapes,
and the objective the fine-tuning loop optimises (pixel cross-entropy, validation mIoU).

A label map has one class per pixel: 0 is background, concept i of the training is i + 1.
Overlapping regions: the later region of an input paints over the earlier ones.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image, ImageDraw

from modelmill.training.contract import (
    DataError,
    Example,
    InputKind,
    Output,
    Region,
    TrainingData,
)
from modelmill.training.tasks import samples

if TYPE_CHECKING:  # the registry imports tasks to answer ListModelTypes: no torch at import
    import torch

POSITIVE_AT = 0.5  # a region's concept value above this labels its pixels with the concept
BACKGROUND = 0  # the class of pixels no region covers
MASK_ON = 255  # the value of pixels inside a mask PNG this task writes

# Sample data: shapes of one colour each on a grey, noisy background.
SHAPE_COLOURS = {"circle": (210, 40, 40), "square": (40, 190, 60), "triangle": (40, 60, 210)}
EXTRA_SHAPE = ("diamond", (150, 40, 170))
BACKGROUND_RGB = (128, 128, 128)
SHAPE_MIN, SHAPE_MAX = 0.25, 0.45  # shape side as a fraction of the image height
SECOND_SHAPE_CHANCE = 0.5
POLYGON_EVERY = 3  # every third sample's square is given as a polygon rather than a mask


class MaskError(ValueError):
    """A region's mask cannot label its image (undecodable, or not the image's size)."""


# ---- label maps ------------------------------------------------------------------------------


def positive_concept(region: Region, concepts: Mapping[str, int]) -> str | None:
    """The concept a region labels its pixels with (its highest positive one among `concepts`)."""
    positive = [(v, c) for c, v in region.concepts.items() if c in concepts and v > POSITIVE_AT]
    return max(positive)[1] if positive else None


def has_shape(region: Region) -> bool:
    return bool(region.polygon) or region.mask_png is not None


def shape_regions(example: Example, concepts: Iterable[str]) -> list[tuple[str, Region]]:
    """The regions of `example` that label pixels: a mask or a polygon of a positive concept."""
    index = {c: i for i, c in enumerate(concepts)}
    found = []
    for region in example.regions:
        concept = positive_concept(region, index)
        if concept is not None and has_shape(region):
            found.append((concept, region))
    return found


def decode_mask(png: bytes, size: tuple[int, int]) -> np.ndarray:
    """A mask PNG as booleans (height, width); MaskError unless it decodes at `size` (w, h)."""
    try:
        with Image.open(io.BytesIO(png)) as image:
            image.load()
            if image.size != size:
                raise MaskError(
                    f"has a mask of {image.width}×{image.height} pixels on an image of "
                    f"{size[0]}×{size[1]}; a mask must be its image's size"
                )
            return np.asarray(image.convert("L")) > 0
    except MaskError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt or truncated files
        raise MaskError(f"has a mask that is not a decodable image: {error}") from error


def rasterise_polygon(points: Sequence[tuple[float, float]], size: tuple[int, int]) -> np.ndarray:
    """A polygon of (row, col) fractions filled at `size` (width, height), as booleans."""
    width, height = size
    canvas = Image.new("L", size, 0)
    ImageDraw.Draw(canvas).polygon([(col * width, row * height) for row, col in points], fill=1)
    return np.asarray(canvas) > 0


def label_map(example: Example, concepts: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    """The (height, width) class of every pixel of an image of `size` (width, height): 0 for
    background, i + 1 for concept i. MaskError when a mask does not fit the image."""
    classes = np.zeros((size[1], size[0]), np.uint8 if len(concepts) < MASK_ON else np.int16)
    index = {c: i for i, c in enumerate(concepts)}
    for concept, region in shape_regions(example, concepts):
        if region.mask_png is not None:
            inside = decode_mask(region.mask_png, size)
        else:
            inside = rasterise_polygon(region.polygon, size)
        classes[inside] = index[concept] + 1
    return classes


def is_negative_only(example: Example) -> bool:
    """Labelled with concepts, all of them 0: an image of background only."""
    return bool(example.concepts) and all(v <= POSITIVE_AT for v in example.concepts.values())


def problem(example: Example) -> str | None:
    """Why a segmenter cannot train on this input (None when it can). The runner hands over
    examples holding only the training's concepts, so every region concept counts."""
    if example.kind != "image":
        return f"is {example.kind} input; segmenters train on images"
    concepts = sorted({c for r in example.regions for c in r.concepts})
    if not shape_regions(example, concepts) and not is_negative_only(example):
        return (
            "has no mask or polygon region of the concepts (bounding boxes alone do not say "
            "which pixels are which)"
        )
    try:
        image = example.load()
    except Exception as error:  # any loader failure makes the input unusable, whatever it was
        return f"could not be read or decoded: {error}"
    if not isinstance(image, Image.Image):
        return f"did not decode to an image (got {type(image).__name__})"
    try:
        image.load()
    except Exception as error:  # Pillow raises many types for truncated or corrupt files
        return f"is not a decodable image: {error}"
    try:
        label_map(example, concepts, image.size)
    except MaskError as error:
        return str(error)
    return None


def mask_png(inside: np.ndarray) -> bytes:
    """A single-channel PNG, 255 inside and 0 outside."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(inside, MASK_ON, 0).astype(np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def predicted_map(output: Output, concepts: Sequence[str], size: tuple[int, int]) -> np.ndarray:
    """The class of every pixel as a prediction's regions paint it (background elsewhere);
    a predicted region's concept value is its confidence, however low."""
    index = {c: i for i, c in enumerate(concepts)}
    classes = np.zeros((size[1], size[0]), np.int16)
    for region in output.regions:
        known = [(v, c) for c, v in region.concepts.items() if c in index]
        if known and region.mask_png is not None:
            classes[decode_mask(region.mask_png, size)] = index[max(known)[1]] + 1
    return classes


# ---- metrics -------------------------------------------------------------------------------


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) pixel counts, rows the true class, columns the predicted one."""
    pairs = truth.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """Intersection over union of each class; NaN where neither truth nor prediction has it."""
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / np.maximum(union, 1), np.nan)


def mean_iou(matrix: np.ndarray) -> float:
    """The mean IoU over the concepts (background left out) that truth or prediction has; 0.0
    when none has any."""
    ious = iou_per_class(matrix)[1:]
    defined = ious[~np.isnan(ious)]
    return float(defined.mean()) if len(defined) else 0.0


def _concept(concept_id: str, value: float | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"id": concept_id, "name": concept_id}
    if value is not None:
        concept["value"] = float(value)
    return concept


def _regions_json(classes: np.ndarray, concepts: Sequence[str], values: Mapping[str, float]):
    regions = []
    for index, concept in enumerate(concepts):
        inside = classes == index + 1
        if inside.any():
            regions.append(
                {
                    "region_info": {
                        "mask": {"image": {"base64": base64.b64encode(mask_png(inside)).decode()}}
                    },
                    "data": {"concepts": [_concept(concept, values.get(concept, 1.0))]},
                }
            )
    return regions


class SegmentationTask:
    """See the module docstring."""

    name = "segmentation"
    # Per-pixel probabilities (batch, 1 + concepts, size, size), background first: the label
    # map is their argmax. No separate "labels" output: its parity with PyTorch would fail on a
    # near-tie pixel that a 1e-6 difference flips, though the scores agree.
    export_outputs = ("scores",)
    web_partial = "segmentation"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        return bool(shape_regions(example, concepts))

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        if not examples:
            raise DataError(
                codes.MODEL_TRAINING_NO_DATA,
                f"No images have mask or polygon regions of {', '.join(concepts)}; annotate "
                "some (PostAnnotations with region_info.mask or region_info.polygon) or choose "
                "a dataset.",
            )
        positives = dict.fromkeys(concepts, 0)
        for example in examples:
            for concept, _ in shape_regions(example, concepts):
                positives[concept] += 1
        missing = [c for c, n in positives.items() if n == 0]
        if missing:
            raise DataError(
                codes.MODEL_TRAINING_NO_POSITIVES,
                f"No mask or polygon region is labelled {', '.join(missing)} in the training "
                "data; draw some regions of those concepts or leave them out.",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Pixel counts over all inputs at their own size: IoU per concept (metrics_by_class
        rows, and extended_metrics), their mean (mIoU, concepts that truth or prediction has),
        background IoU and pixel accuracy; one test-set entry per input with its predicted and
        true regions (mask PNGs) and concepts (predicted: mean confidence). An input whose
        mask does not fit its image is left out and named in the notes."""
        classes = len(concepts) + 1
        total = np.zeros((classes, classes), np.int64)
        images_with = np.zeros(classes, np.int64)
        test_set, skipped = [], []
        for example, output in zip(examples, outputs, strict=True):
            size = example.load().size
            try:
                truth = label_map(example, concepts, size)
            except MaskError as error:  # a ground-truth dataset's bad mask: say so, go on
                skipped.append(f"{example.input_id} {error}")
                continue
            predicted = predicted_map(output, concepts, size)
            total += confusion(truth, predicted, classes)
            images_with += np.bincount(np.unique(truth).astype(np.int64), minlength=classes) > 0
            values = {c: v for r in output.regions for c, v in r.concepts.items() if c in concepts}
            present = [concepts[i - 1] for i in np.unique(truth) if i != BACKGROUND]
            test_set.append(
                {
                    "input": {"id": example.input_id},
                    "predicted_concepts": [_concept(c, v) for c, v in values.items()],
                    "ground_truth_concepts": [_concept(c, 1.0) for c in present],
                    "predicted_annotation": {
                        "data": {"regions": _regions_json(predicted, concepts, values)}
                    },
                    "ground_truth_annotation": {
                        "data": {"regions": _regions_json(truth, concepts, {})}
                    },
                }
            )
        ious = iou_per_class(total)
        pixels = int(total.sum())
        per_class = {
            concept: None if np.isnan(ious[i + 1]) else float(ious[i + 1])
            for i, concept in enumerate(concepts)
        }
        by_class = [
            {
                "concept": _concept(concept),
                "num_pos": int(images_with[i + 1]),
                "num_neg": len(test_set) - int(images_with[i + 1]),
                "num_tot": len(test_set),
                **({"iou": iou} if iou is not None else {}),
            }
            for i, (concept, iou) in enumerate(per_class.items())
        ]
        notes = [
            f"{c}: neither the labels nor the predictions have it, so its IoU is undefined "
            "and left out of the mean"
            for c, iou in per_class.items()
            if iou is None
        ] + [f"left out: {reason}" for reason in skipped]
        user_metrics = {
            "mean_iou": mean_iou(total),
            "per_class_iou": per_class,
            "background_iou": None if np.isnan(ious[BACKGROUND]) else float(ious[BACKGROUND]),
            "pixel_accuracy": float(np.trace(total)) / pixels if pixels else 0.0,
            "pixels": pixels,
            "notes": notes,
        }
        return {
            "metrics_by_class": by_class,
            "test_set": test_set,
            "eval_info": {"params": dict(info or {})},
            "extended_metrics": {"user_metrics": user_metrics},
        }

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """Coloured shapes (circle, square, triangle; diamond as the extra concept) on a grey
        noisy background, one or two per image, with mask PNG regions; triangles and diamonds
        as polygons, and every third image's square too. At most samples.DISTINCT distinct
        images, the same for the same seed."""
        assert kind == "image", "segmentation samples are images"
        shapes = dict([*SHAPE_COLOURS.items(), *([EXTRA_SHAPE] if extra_concept else [])])
        concepts = list(shapes)
        made: dict[int, tuple[Callable[[], Any], tuple[Region, ...]]] = {}
        examples = []
        for i in range(max(count, len(concepts))):
            seed = i % samples.DISTINCT
            if seed not in made:
                made[seed] = _shapes_image(shapes, size, seed)
            load, regions = made[seed]
            examples.append(Example(f"shapes-{i}", "image", load, {}, regions))
        return TrainingData(examples, concepts)

    def objective(self, forward: Callable[[Any, Any], Any]) -> SegmentationObjective:
        return SegmentationObjective(forward)


def _shape_points(
    shape: str, centre: tuple[float, float], half: float
) -> list[tuple[float, float]]:
    """The (x, y) outline of a polygonal shape (square, triangle, diamond) in pixels."""
    x, y = centre
    if shape == "square":
        return [
            (x - half, y - half),
            (x + half, y - half),
            (x + half, y + half),
            (x - half, y + half),
        ]
    if shape == "triangle":
        return [(x, y - half), (x + half, y + half), (x - half, y + half)]
    return [(x, y - half), (x + half, y), (x, y + half), (x - half, y)]  # diamond


def _shapes_image(
    shapes: Mapping[str, tuple[int, int, int]], width: int, seed: int
) -> tuple[Callable[[], Any], tuple[Region, ...]]:
    """One sample image (a JPEG decoded per load) and its regions."""
    rng = np.random.default_rng(seed)
    height = samples.image_height(width)
    names = list(shapes)
    chosen = [names[seed % len(names)]]
    if rng.random() < SECOND_SHAPE_CHANCE:
        chosen.append(names[(seed + 1 + int(rng.integers(len(names) - 1))) % len(names)])
    image = Image.fromarray(samples.colour_pixels(BACKGROUND_RGB, width, seed))
    draw = ImageDraw.Draw(image)
    regions = []
    for shape in chosen:
        half = float(rng.uniform(SHAPE_MIN, SHAPE_MAX)) * height / 2
        centre = (float(rng.uniform(half, width - half)), float(rng.uniform(half, height - half)))
        mask = Image.new("L", (width, height), 0)
        if shape == "circle":
            box = [centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half]
            draw.ellipse(box, fill=shapes[shape])
            ImageDraw.Draw(mask).ellipse(box, fill=MASK_ON)
            points: list[tuple[float, float]] = []
        else:
            points = _shape_points(shape, centre, half)
            draw.polygon(points, fill=shapes[shape])
            ImageDraw.Draw(mask).polygon(points, fill=MASK_ON)
        as_polygon = shape in ("triangle", "diamond") or (
            shape == "square" and seed % POLYGON_EVERY == 0
        )
        if as_polygon:
            polygon = tuple((y / height, x / width) for x, y in points)
            regions.append(Region({shape: 1.0}, polygon=polygon))
        else:
            regions.append(Region({shape: 1.0}, mask_png=mask_png(np.asarray(mask) > 0)))
    return samples.decoder(samples.encode_jpeg(np.asarray(image))), tuple(regions)


# ---- the loss and validation, torch --------------------------------------------------------


class SegmentationObjective:
    """Batches are (model inputs, label maps (N, H, W) int64); `forward(model, inputs)` gives
    logits (N, 1 + concepts, H, W). The loss is the pixels' mean cross-entropy; the best epoch
    the one with the highest validation mIoU."""

    monitor = "val_miou"
    higher_is_better = True

    def __init__(self, forward: Callable[[Any, Any], Any]) -> None:
        self.forward = forward

    def loss(self, model: Any, batch: Any) -> torch.Tensor:
        from torch import nn

        inputs, labels = batch
        return nn.functional.cross_entropy(self.forward(model, inputs), labels)

    def validate(self, model: Any, batches: Iterable[Any]) -> dict[str, float]:
        """Mean validation loss per pixel, mIoU over the concepts and pixel accuracy."""
        import torch
        from torch import nn

        total_loss, pixels, matrix = 0.0, 0, None
        with torch.inference_mode():
            for inputs, labels in batches:
                logits = self.forward(model, inputs)
                loss = nn.functional.cross_entropy(logits, labels, reduction="sum")
                total_loss += float(loss)
                pixels += labels.numel()
                counts = confusion(
                    labels.cpu().numpy(), logits.argmax(dim=1).cpu().numpy(), logits.shape[1]
                )
                matrix = counts if matrix is None else matrix + counts
        if matrix is None:
            return {"val_loss": 0.0, "val_miou": 0.0, "val_pixel_accuracy": 0.0}
        return {
            "val_loss": total_loss / max(1, pixels),
            "val_miou": mean_iou(matrix),
            "val_pixel_accuracy": float(np.trace(matrix)) / max(1, pixels),
        }


SEGMENTATION = SegmentationTask()
