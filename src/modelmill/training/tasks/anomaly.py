"""The anomaly task (visual-anomaly-heatmap): one-class training on normal images, scored for
anomalies with a heatmap.

Labels: the model's one concept that is not `anomaly` (e.g. `normal`) marks the normal images
(value 1), which are what a model fits. Inputs labelled 0 for it, or positive for the
`anomaly` concept (list it among the model's concepts so that its labels reach the training),
are anomalous: never fitted, held out for evaluation and threshold calibration, with their
masks (region masks, boxes or polygons labelled `anomaly`) where given.

Predictions: concept `anomaly` with the image score in [0, 1] (calibrated so that 0.5 is the
chosen threshold), the normal concept with 1 - score, and a heatmap PNG the input's size.
Metrics: image AUROC, pixel AUROC where masks exist, F1 at the threshold; the ONNX export
gives patch features (the memory bank travels beside it).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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
from modelmill.training.tasks.classification import POSITIVE_AT, labels_of

ANOMALY_CONCEPT = "anomaly"
DECISION_SCORE = 0.5  # calibrated scores put the chosen threshold here
MIN_NORMAL_IMAGES = 1
HISTOGRAM_BINS = 20
MAX_PIXEL_SIDE = 64  # pixel AUROC compares heatmaps and masks on a grid at most this wide
MAX_HEATMAP_SAMPLES = 8  # held-out inputs the web page shows with their heatmaps
OVERLAY_SIDE = 96  # the sample heatmaps stored in the metrics, as red overlays this wide
OVERLAY_ALPHA = 200  # the overlay's opacity (0-255) where the heatmap is hottest
OVERLAY_RED = (220, 30, 30)
PIXEL_ON = 127  # a mask or heatmap pixel above this is "on"

# Sample data: crops of scikit-image's textures, with defects pasted from another texture.
NORMAL_TEXTURE, DEFECT_TEXTURE, EXTRA_NORMAL_TEXTURE = "brick", "gravel", "grass"
ANOMALOUS_EVERY = 3  # one sample input in three is anomalous
DEFECT_SIDE = (0.12, 0.2)  # a defect's side as a fraction of the image's shorter side
CROP_SIDE = 0.5  # a sample crop's side as a fraction of the texture's (one scale: one camera)
NORMAL_CONCEPT = "normal"


def normal_concept(concepts: Sequence[str]) -> str:
    """The model's normal concept: its one concept other than `anomaly`."""
    normal = [c for c in concepts if c != ANOMALY_CONCEPT]
    if len(normal) != 1:
        raise DataError(
            codes.MODEL_TRAINING_INVALID_PARAMS,
            "An anomaly model has one concept for its normal images (e.g. 'normal'), and may "
            f"list '{ANOMALY_CONCEPT}' beside it for inputs labelled anomalous; this one has "
            f"{', '.join(normal) or 'none'}. Choose exactly one normal concept.",
        )
    return normal[0]


def is_anomalous(example: Example, normal: str) -> bool:
    """Labelled `anomaly`, or labelled a negative of the normal concept."""
    labels = labels_of(example)
    return labels.get(ANOMALY_CONCEPT, 0.0) > POSITIVE_AT or (
        normal in labels and labels[normal] <= POSITIVE_AT
    )


def is_normal(example: Example, normal: str) -> bool:
    return labels_of(example).get(normal, 0.0) > POSITIVE_AT and not is_anomalous(example, normal)


def anomaly_mask(example: Example, size: tuple[int, int]) -> np.ndarray | None:
    """The anomalous pixels of an example as a boolean (height, width) array: all off for a
    normal image, its `anomaly` regions (masks, boxes, polygons) for an anomalous one, None for
    an anomalous image whose regions do not say where the anomaly is."""
    width, height = size
    mask = np.zeros((height, width), bool)
    regions = [r for r in example.regions if r.concepts.get(ANOMALY_CONCEPT, 0.0) > POSITIVE_AT]
    if not regions:
        return None if labels_of(example).get(ANOMALY_CONCEPT, 0.0) > POSITIVE_AT else mask
    for region in regions:
        mask |= _region_pixels(region, width, height)
    return mask


def _region_pixels(region: Region, width: int, height: int) -> np.ndarray:
    if region.mask_png is not None:
        image = Image.open(io.BytesIO(region.mask_png)).convert("L")
        image = image.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(image) > 0
    drawn = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(drawn)
    if region.polygon:
        draw.polygon([(c * width, r * height) for r, c in region.polygon], fill=1)
    elif region.box is not None:
        top, left, bottom, right = region.box
        draw.rectangle((left * width, top * height, right * width, bottom * height), fill=1)
    return np.asarray(drawn) > 0


def heatmap_png(heat: np.ndarray) -> bytes:
    """A (height, width) array of scores in [0, 1] as a single-channel PNG (0-255)."""
    pixels = np.clip(np.round(heat * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap_values(png: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """A heatmap PNG as scores in [0, 1], resized to `size` (width, height) if given."""
    image = Image.open(io.BytesIO(png)).convert("L")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, np.float32) / 255.0


def overlay_base64(png: bytes | None) -> str:
    """A heatmap as a small red RGBA PNG (opacity = heat), base64, for drawing over the image;
    empty without a heatmap."""
    if png is None:
        return ""
    heat = Image.open(io.BytesIO(png)).convert("L")
    scale = min(1.0, OVERLAY_SIDE / max(heat.size))
    heat = heat.resize(
        (max(1, round(heat.width * scale)), max(1, round(heat.height * scale))),
        Image.Resampling.BILINEAR,
    )
    alpha = (np.asarray(heat, np.float32) * OVERLAY_ALPHA / 255.0).astype(np.uint8)
    rgba = np.empty((*alpha.shape, 4), np.uint8)
    rgba[..., :3] = OVERLAY_RED
    rgba[..., 3] = alpha
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def anomaly_score(output: Output) -> float:
    return dict(output.concepts).get(ANOMALY_CONCEPT, 0.0)


class AnomalyTask:
    """See the module docstring."""

    name = "anomaly"
    export_outputs = ("features",)
    web_partial = "anomaly"

    def relevant(self, example: Example, concepts: Sequence[str]) -> bool:
        return bool(set(labels_of(example)) & {*concepts, ANOMALY_CONCEPT})

    def check_data(
        self, examples: Sequence[Example], concepts: Sequence[str], exclusive: bool
    ) -> None:
        normal = normal_concept(concepts)
        normals = sum(is_normal(e, normal) for e in examples)
        if normals < MIN_NORMAL_IMAGES:
            raise DataError(
                codes.MODEL_TRAINING_NO_POSITIVES,
                f"No input is labelled '{normal}' (value 1): an anomaly model learns what "
                f"normal looks like from them. Label normal images '{normal}'; label anomalous "
                f"ones '{normal}' with value 0 or '{ANOMALY_CONCEPT}' (they are held out for "
                "evaluation and the threshold).",
            )

    def metrics(
        self,
        examples: Sequence[Example],
        outputs: Sequence[Output],
        concepts: Sequence[str],
        exclusive: bool,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The classification metrics of concept `anomaly` at the decision score (image AUROC
        is its roc_auc, F1 its f1), plus pixel AUROC over inputs with masks, the score
        histogram of normal vs anomalous inputs and sample heatmaps in extended_metrics."""
        from sklearn.metrics import roc_auc_score

        from modelmill.training.metrics import classification_metrics

        normal = normal_concept(concepts)
        rows = [
            i for i, e in enumerate(examples) if is_normal(e, normal) or is_anomalous(e, normal)
        ]
        truth = np.array([[float(is_anomalous(examples[i], normal))] for i in rows])
        scores = np.array([[anomaly_score(outputs[i])] for i in rows])
        ids = [examples[i].input_id for i in rows]
        result = classification_metrics(
            [ANOMALY_CONCEPT],
            truth.reshape(-1, 1),
            scores.reshape(-1, 1),
            ids,
            mutually_exclusive=False,
            info=info,
        )
        notes = result["extended_metrics"]["user_metrics"]["notes"]
        pixel_truth: list[np.ndarray] = []
        pixel_scores: list[np.ndarray] = []
        for i in rows:
            output = outputs[i]
            if output.heatmap_png is None:
                continue
            heat = heatmap_values(output.heatmap_png)
            height, width = heat.shape
            scale = min(1.0, MAX_PIXEL_SIDE / max(height, width))
            grid = (max(1, round(width * scale)), max(1, round(height * scale)))
            mask = anomaly_mask(examples[i], grid)
            if mask is None:
                continue
            pixel_truth.append(mask.ravel())
            pixel_scores.append(heatmap_values(output.heatmap_png, grid).ravel())
        extended: dict[str, Any] = {}
        anomalous_masks = sum(int(t.any()) for t in pixel_truth)
        if anomalous_masks and any((~t).any() for t in pixel_truth):
            extended["pixel_auroc"] = float(
                roc_auc_score(np.concatenate(pixel_truth), np.concatenate(pixel_scores))
            )
            extended["pixel_inputs"] = len(pixel_truth)
        else:
            notes.append(
                "pixel AUROC needs held-out anomalous inputs with masks (regions labelled "
                f"'{ANOMALY_CONCEPT}'); none had one"
            )
        flat_truth, flat_scores = truth.ravel(), scores.ravel()
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        extended["histogram"] = {
            "edges": [float(e) for e in edges],
            "normal": np.histogram(flat_scores[flat_truth == 0], edges)[0].tolist(),
            "anomalous": np.histogram(flat_scores[flat_truth == 1], edges)[0].tolist(),
        }
        extended["threshold"] = DECISION_SCORE
        binary = result.get("binary_metrics") or [{}]
        if "roc_auc" in binary[0]:
            extended["image_auroc"] = binary[0]["roc_auc"]
        extended["f1"] = binary[0].get("f1", 0.0)
        order = np.argsort(-flat_scores, kind="stable")
        anomalous_first = [ids[r] for r in order if flat_truth[r] == 1]
        normal_first = [ids[r] for r in order if flat_truth[r] == 0]
        half = MAX_HEATMAP_SAMPLES // 2
        shown = {*anomalous_first[:half], *normal_first[:half]}
        extended["samples"] = [
            {
                "input_id": ids[r],
                "score": float(flat_scores[r]),
                "anomalous": bool(flat_truth[r]),
                "overlay_png_base64": overlay_base64(outputs[rows[r]].heatmap_png),
            }
            for r in order
            if ids[r] in shown
        ]
        result["extended_metrics"]["user_metrics"]["anomaly"] = extended
        return result

    def sample_data(
        self, kind: InputKind, count: int, size: int, extra_concept: bool = False
    ) -> TrainingData:
        """Crops of scikit-image's brick texture (normal) and, one in three, the same with a
        patch of gravel pasted in (labelled `anomaly`, with its mask). An anomaly model has
        one normal concept, so `extra_concept` adds a new kind of normal instead: grass crops
        labelled normal too (what an incremental training of this type learns)."""
        if kind != "image":
            raise ValueError("anomaly models take images")
        examples = []
        loaders: dict[tuple[str, int], tuple[Callable[[], Any], bytes | None]] = {}
        normal_textures = [NORMAL_TEXTURE, *([EXTRA_NORMAL_TEXTURE] if extra_concept else [])]
        for i in range(max(count, ANOMALOUS_EVERY)):
            seed = i % samples.DISTINCT
            anomalous = i % ANOMALOUS_EVERY == ANOMALOUS_EVERY - 1
            texture = NORMAL_TEXTURE if anomalous else normal_textures[i % len(normal_textures)]
            key = (f"{texture}-{anomalous}", seed)
            if key not in loaders:
                pixels, mask = textured_image(texture, size, seed, anomalous)
                loaders[key] = (samples.decoder(samples.encode_jpeg(pixels)), mask)
            load, mask = loaders[key]
            if anomalous:
                region = Region({ANOMALY_CONCEPT: 1.0}, mask_png=mask)
                examples.append(
                    Example(f"anomalous-{i}", kind, load, {ANOMALY_CONCEPT: 1.0}, (region,))
                )
            else:
                examples.append(Example(f"{texture}-{i}", kind, load, {NORMAL_CONCEPT: 1.0}))
        return TrainingData(examples, [NORMAL_CONCEPT, ANOMALY_CONCEPT])


def texture(name: str) -> np.ndarray:
    """A scikit-image texture (grayscale uint8)."""
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), np.uint8)


def textured_image(
    name: str, width: int, seed: int, anomalous: bool
) -> tuple[np.ndarray, bytes | None]:
    """An RGB (height, width, 3) crop of texture `name`, and with `anomalous` a square of
    the defect texture pasted at a random place, with its mask PNG."""
    rng = np.random.default_rng(seed)
    source = texture(name)
    height = samples.image_height(width)
    pixels = _crop(source, width, height, rng)
    mask_png = None
    if anomalous:
        side = max(2, round(min(width, height) * rng.uniform(*DEFECT_SIDE)))
        defect = _crop(texture(DEFECT_TEXTURE), side, side, rng)
        top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        pixels[top : top + side, left : left + side] = defect
        mask = np.zeros((height, width), np.uint8)
        mask[top : top + side, left : left + side] = 255
        buffer = io.BytesIO()
        Image.fromarray(mask, mode="L").save(buffer, format="PNG")
        mask_png = buffer.getvalue()
    return np.repeat(pixels[..., None], 3, axis=2), mask_png


def _crop(source: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of `source` at a random place, resized to (height, width)."""
    side = round(min(source.shape) * CROP_SIDE)
    top = int(rng.integers(0, source.shape[0] - side + 1))
    left = int(rng.integers(0, source.shape[1] - side + 1))
    crop = Image.fromarray(source[top : top + side, left : left + side])
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), np.uint8).copy()


ANOMALY = AnomalyTask()
