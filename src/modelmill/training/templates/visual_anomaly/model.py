"""The torch side of the anomaly templates: fitting (normal images → patch features → the
method's state), threshold calibration on the held-out inputs, the version's artifacts, the
predictor (scores and heatmaps) and the export (ONNX feature extractor + the fitted state).

Templates without epochs: `train` fits in one pass and returns the artifacts; a resumed or
incremental training fits again (deterministic for a seed), on the data it is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2 as codes
from PIL import Image
from safetensors.torch import save_file

from modelmill.training.checkpoint_keys import (
    CONCEPTS_KEY,
    CONFIG_KEY,
    PARAMS_KEY,
    TEMPLATE_KEY,
    VALIDATION_IDS_KEY,
)
from modelmill.training.checkpoints import Checkpoint, find_checkpoint, save_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Output,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.finetune.onnx_export import export_zip, random_images
from modelmill.training.finetune.outputs import ranked_concepts
from modelmill.training.finetune.resume import ARTIFACTS_DIR
from modelmill.training.tasks.anomaly import (
    ANOMALY,
    ANOMALY_CONCEPT,
    DECISION_SCORE,
    heatmap_png,
    is_anomalous,
    is_normal,
    normal_concept,
)
from modelmill.training.templates.visual_anomaly import padim, patchcore
from modelmill.training.templates.visual_anomaly.features import (
    GRID_STRIDE,
    PatchFeatures,
    build_extractor,
    extract,
)
from modelmill.training.weights import WeightsLocation

BATCH_SIZE = 16
HEATMAP_SIGMA = 4.0  # PatchCore's Gaussian smoothing of the upsampled map, in model pixels
NORMAL_MARGIN = 1.1  # without anomalous inputs: the threshold sits 10 % above the top normal score
MIN_THRESHOLD = 1e-6  # a distance; keeps the calibration finite when every score is zero
EXTRACTOR_PREFIX = "extractor."
STATE_PREFIX = "state."
FIT_PROGRESS = 0.5  # progress once features are extracted; the fit takes the rest
STATE_FILE = "state.safetensors"
FEATURE_TOLERANCE = 1e-3  # ONNX vs PyTorch features, absolute; features are O(1)


@dataclass(frozen=True)
class Method:
    """PatchCore or PaDiM: the feature stages it takes, how it fits normal features into a
    state (tensors), and the scorer a state makes ((N, C, h, w) features → (N, h, w))."""

    name: str
    stages: tuple[str, ...]
    fit: Callable[[torch.Tensor, Any, Callable[[float], bool]], dict[str, torch.Tensor]]
    scorer: Callable[[dict[str, torch.Tensor]], Callable[[torch.Tensor], torch.Tensor]]


PATCHCORE = Method(
    "patchcore",
    patchcore.STAGES,
    lambda features, p, check: patchcore.fit_bank(
        features, p.coreset_fraction, p.max_bank_size, p.seed, check
    ),
    patchcore.BankSearch,
)
PADIM = Method(
    "padim",
    padim.STAGES,
    lambda features, p, check: padim.fit_gaussians(
        features, p.feature_dims, p.covariance_regularisation, p.seed
    ),
    padim.GaussianScores,
)
METHODS = {m.name: m for m in (PATCHCORE, PADIM)}


def split_normals(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list, list]:
    """(fitted, held out) normal examples; the split depends on ids and the seed only. At least
    one normal image is always fitted."""
    ordered = sorted(
        examples, key=lambda e: hashlib.sha256(f"{seed}:{e.input_id}".encode()).digest()
    )
    held = min(len(ordered) - 1, round(fraction * len(ordered)))
    return ordered[held:], ordered[:held]


def calibrated(raw: np.ndarray, threshold: float) -> np.ndarray:
    """Raw distances → scores in [0, 1): 0 at 0, 0.5 at `threshold`, rising towards 1."""
    return 1.0 - np.exp2(-np.maximum(raw, 0.0) / threshold)


def with_threshold(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Rescales calibrated scores so that `threshold` (an inference setting) reads 0.5."""
    if threshold == DECISION_SCORE:
        return scores
    low = scores * DECISION_SCORE / threshold
    high = DECISION_SCORE + (scores - threshold) * (1 - DECISION_SCORE) / (1 - threshold)
    return np.clip(np.where(scores <= threshold, low, high), 0.0, 1.0)


def choose_threshold(normal: np.ndarray, anomalous: np.ndarray) -> tuple[float, str]:
    """The raw image score to call anomalous, and how it was chosen: the best F1 between the
    normal and anomalous scores (halfway below the lowest score it flags), else just above the
    highest normal score."""
    if len(anomalous) and len(normal):
        scores = np.concatenate([normal, anomalous])
        truth = np.concatenate([np.zeros(len(normal)), np.ones(len(anomalous))])
        candidates = np.unique(scores)
        best, best_f1 = candidates[-1], -1.0
        for candidate in candidates:
            flagged = scores >= candidate
            hits = float((flagged & (truth == 1)).sum())
            f1 = 2 * hits / (flagged.sum() + truth.sum())
            if f1 > best_f1:
                best, best_f1 = candidate, f1
        below = candidates[candidates < best]
        threshold = (best + below.max()) / 2 if len(below) else best / 2
        return max(float(threshold), MIN_THRESHOLD), f"best F1 ({best_f1:.3f}) on held-out inputs"
    top = float(normal.max()) if len(normal) else 0.0
    return max(top * NORMAL_MARGIN, MIN_THRESHOLD), "above the highest normal score"


def _extractor_state(extractor: PatchFeatures) -> dict[str, torch.Tensor]:
    return {EXTRACTOR_PREFIX + k: v for k, v in extractor.state_dict().items()}


def _features(
    extractor: PatchFeatures, examples: Sequence[Example], size: int, device: str
) -> torch.Tensor:
    parts = [f.cpu() for _, f in extract(extractor, examples, size, BATCH_SIZE, device)]
    return torch.cat(parts)


def train_anomaly(
    name: str,
    method: Method,
    ctx: TrainContext,
    data: TrainingData,
    p: Any,
    find_pretrained: Callable[[], WeightsLocation | None],
) -> TrainResult:
    """Fits `method` on the normal images (less the held-out share) and writes the artifacts:
    the extractor's weights and the fitted state (safetensors), the raw threshold and the
    held-out ids (checkpoint.json). Stopping at the time cap keeps a smaller PatchCore bank."""
    normal = normal_concept(data.concepts)
    if ctx.resume_from is not None:
        previous = find_checkpoint(ctx.resume_from).meta.get(TEMPLATE_KEY)
        if previous != name:
            raise DataError(
                codes.MODEL_TRAINING_INVALID_PARAMS,
                f"The model version to start from was trained with template {previous!r}; "
                f"an anomaly model refits with the same template ({name!r}).",
            )
    images = [e for e in data.examples if e.kind == "image"]
    normals = [e for e in images if is_normal(e, normal)]
    anomalous = [e for e in images if is_anomalous(e, normal)]
    if not normals:
        ANOMALY.check_data(images, data.concepts, False)  # raises, saying what is missing
    fitted, held_normals = split_normals(normals, p.holdout_fraction, p.seed)
    torch.manual_seed(p.seed)
    extractor = build_extractor(method.stages, find_pretrained()).to(ctx.device)
    ctx.report(0.0, stage="extracting features")
    features = _features(extractor, fitted, p.image_size, ctx.device)
    ctx.check_cancelled()
    ctx.report(FIT_PROGRESS, stage=f"fitting {method.name}")
    stopped_at_cap = False

    def check(progress: float) -> bool:
        nonlocal stopped_at_cap
        ctx.check_cancelled()
        ctx.report(FIT_PROGRESS + (1 - FIT_PROGRESS) * progress, stage=f"fitting {method.name}")
        stopped_at_cap = ctx.out_of_time()
        return not stopped_at_cap

    state = method.fit(features.to(ctx.device), p, check)
    state = {k: v.cpu().contiguous() for k, v in state.items()}
    scorer = method.scorer(state)
    calibration = held_normals or fitted
    normal_raw = _raw_scores(extractor, scorer, calibration, p.image_size, ctx.device)
    anomalous_raw = _raw_scores(extractor, scorer, anomalous, p.image_size, ctx.device)
    threshold, how = choose_threshold(normal_raw, anomalous_raw)
    if not held_normals:
        how += " (normal scores of the fitted images: optimistic)"
    meta = {
        TEMPLATE_KEY: name,
        CONFIG_KEY: {
            "method": method.name,
            "stages": list(method.stages),
            "image_size": p.image_size,
            "threshold": threshold,
            "calibration": how,
            "normal_concept": normal,
            "fitted_images": len(fitted),
            "state_shapes": {k: list(v.shape) for k, v in state.items()},
        },
        CONCEPTS_KEY: list(data.concepts),
        PARAMS_KEY: p.model_dump(),
        VALIDATION_IDS_KEY: [e.input_id for e in [*held_normals, *anomalous]],
    }
    tensors = {**_extractor_state(extractor), **{STATE_PREFIX + k: v for k, v in state.items()}}
    artifacts = save_checkpoint(ctx.work_dir / ARTIFACTS_DIR, tensors, meta)
    ctx.report(1.0, stage="fitted")
    return TrainResult(artifacts, stopped_at_cap=stopped_at_cap)


def _raw_scores(
    extractor: PatchFeatures,
    scorer: Callable[[torch.Tensor], torch.Tensor],
    examples: Sequence[Example],
    size: int,
    device: str,
) -> np.ndarray:
    scores = [np.zeros(0)]
    for _, features in extract(extractor, examples, size, BATCH_SIZE, device):
        scores.append(scorer(features).flatten(1).amax(dim=1).cpu().numpy())
    return np.concatenate(scores)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def smoothed_map(patch_scores: torch.Tensor, size: int) -> np.ndarray:
    """(h, w) patch distances → (size, size) pixel distances: bilinear, then PatchCore's
    Gaussian smoothing."""
    from scipy.ndimage import gaussian_filter

    upsampled = torch.nn.functional.interpolate(
        patch_scores[None, None].float(), size=(size, size), mode="bilinear", align_corners=False
    )[0, 0]
    return gaussian_filter(upsampled.numpy(), sigma=HEATMAP_SIGMA)


class AnomalyPredictor:
    """A fitted anomaly model, loaded once: per image, the concepts `anomaly` (the score) and
    the normal concept (1 − score), and a heatmap PNG the image's size."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.meta = checkpoint.meta
        config = checkpoint.meta[CONFIG_KEY]
        self.method = METHODS[config["method"]]
        self.image_size: int = config["image_size"]
        self.threshold: float = config["threshold"]
        self.normal: str = config["normal_concept"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        tensors = checkpoint.model_state()
        self.extractor = build_extractor(config["stages"], None)
        self.extractor.load_state_dict(
            {
                k[len(EXTRACTOR_PREFIX) :]: v
                for k, v in tensors.items()
                if k.startswith(EXTRACTOR_PREFIX)
            }
        )
        self.extractor.to(self.device).eval()
        self.state = _prefixed(tensors, STATE_PREFIX)
        self.scorer = self.method.scorer(self.state)

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        value = params.get("threshold")
        try:
            threshold = DECISION_SCORE if value is None else float(value)
        except (TypeError, ValueError):
            threshold = float("nan")
        if not 0.0 < threshold < 1.0:  # NaN too
            raise DataError(
                codes.MODEL_INVALID_ARGUMENT,
                f"threshold is {value!r}; give an anomaly score between 0 and 1 "
                "(exclusive): the score at which an image counts as anomalous.",
            )
        concepts = [ANOMALY_CONCEPT, self.normal]
        outputs = []
        for sizes, features in extract(
            self.extractor, examples, self.image_size, BATCH_SIZE, self.device
        ):
            patch_scores = self.scorer(features).cpu()
            for (width, height), patches in zip(sizes, patch_scores, strict=True):
                raw = float(patches.max())
                score = float(with_threshold(calibrated(np.array(raw), self.threshold), threshold))
                pixels = calibrated(smoothed_map(patches, self.image_size), self.threshold)
                heat = Image.fromarray(with_threshold(pixels, threshold).astype(np.float32))
                heat = heat.resize((width, height), Image.Resampling.BILINEAR)
                outputs.append(
                    Output(
                        concepts=ranked_concepts([score, 1.0 - score], concepts, params),
                        heatmap_png=heatmap_png(np.asarray(heat)),
                    )
                )
        return outputs

    def evaluate(self, template: str, data: TrainingData) -> dict[str, Any]:
        """The task's metrics on the inputs the fit held out (held-out normals and every
        anomalous input); on all inputs, saying so, when none were held out."""
        held_out = set(self.meta[VALIDATION_IDS_KEY])
        examples = [e for e in data.examples if e.input_id in held_out]
        split = "held out of the fit" if examples else "fitted inputs (none were held out)"
        examples = examples or list(data.examples)
        config = self.meta[CONFIG_KEY]
        info = {
            "template": template,
            "split": split,
            "raw_threshold": self.threshold,
            "calibration": config["calibration"],
            "fitted_images": config["fitted_images"],
        }
        concepts = self.meta[CONCEPTS_KEY]
        outputs = self.predict(examples, {"min_value": 0.0, "max_concepts": 2})
        return ANOMALY.metrics(examples, outputs, concepts, False, info)


def export_anomaly(name: str, model_type_id: str, artifacts: Path, out_dir: Path) -> Path:
    """The version as a zip: model.onnx (pixels in, patch features out, checked against
    PyTorch), state.safetensors (the bank or the Gaussians), config.json saying how to score."""
    predictor = AnomalyPredictor(find_checkpoint(artifacts))
    size = predictor.image_size
    scoring = {
        "patchcore": "patch score = L2 distance from the patch's feature to the nearest row of "
        "state 'bank'",
        "padim": "patch score = Mahalanobis distance of the features (channels 'channels') to "
        "the position's 'mean' with 'inverse_covariance' (positions row-major)",
    }[predictor.method.name]
    config = {
        "template": name,
        "model_type_id": model_type_id,
        "input": f"images: float32 (batch, 3, {size}, {size}) RGB pixels 0-255; resize the "
        "whole image to the square",
        "output": f"features: (batch, C, {size // GRID_STRIDE}, {size // GRID_STRIDE})",
        "scoring": f"{scoring}; image score = the largest patch score; calibrated score = "
        "1 - 2^(-raw / threshold), anomalous at 0.5 and above; heatmap = patch scores "
        f"upsampled bilinearly to the image, Gaussian-smoothed (sigma {HEATMAP_SIGMA} px at "
        f"{size} px), calibrated the same way",
        "threshold": predictor.threshold,
        "normal_concept": predictor.normal,
        "image_size": size,
    }

    def write_state(folder: Path) -> None:
        save_file({k: v.contiguous() for k, v in predictor.state.items()}, str(folder / STATE_FILE))

    return export_zip(
        predictor.extractor,
        *random_images(size),
        out_dir,
        name,
        config,
        [ANOMALY_CONCEPT, predictor.normal],
        ANOMALY.export_outputs,
        write_extra=write_state,
        tolerance=FEATURE_TOLERANCE,
    )
