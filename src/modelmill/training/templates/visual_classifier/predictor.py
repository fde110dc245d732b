"""A trained visual classifier at work: scoring images for predictions, EvalMetrics on the inputs
its training held out, and the ONNX export.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modelmill.training.checkpoint_keys import CONCEPTS_KEY, CONFIG_KEY
from modelmill.training.checkpoints import Checkpoint, find_checkpoint
from modelmill.training.contract import Example
from modelmill.training.data import batched, normalise_images, square_pixels
from modelmill.training.finetune.onnx_export import export_zip, random_images
from modelmill.training.finetune.outputs import ClassifierPredictor, scores_from_logits
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.templates.visual_classifier.model import ImageScores, create_model

PREDICT_BATCH_SIZE = 32


class ImagePredictor(ClassifierPredictor):
    """A trained visual classifier, loaded once, scoring images."""

    def __init__(self, checkpoint: Checkpoint, backbone: Backbone) -> None:
        config = checkpoint.meta[CONFIG_KEY]
        self.meta = checkpoint.meta
        self.concepts: list[str] = checkpoint.meta[CONCEPTS_KEY]
        self.image_size: int = config["image_size"]
        self.mean, self.std = config["mean"], config["std"]
        self.exclusive: bool = config["exclusive"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = create_model(backbone, len(self.concepts), None)
        self.model.load_state_dict(checkpoint.model_state())
        self.model.to(self.device).eval()

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        parts = [np.zeros((0, len(self.concepts)), np.float32)]
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            pixels = np.stack([square_pixels(examples[r].load(), self.image_size) for r in rows])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode():
                logits = self.model(normalise_images(images, self.mean, self.std))
                parts.append(scores_from_logits(logits, self.exclusive).float().cpu().numpy())
        return np.concatenate(parts)


def export_classifier(
    name: str, model_type_id: str, backbone: Backbone, artifacts: Path, out_dir: Path
) -> Path:
    """The version as a zip: model.onnx (pixels in, scores out), config.json, concepts.json and
    a manifest, after checking ONNX against PyTorch (see onnx_export.export_zip)."""
    predictor = ImagePredictor(find_checkpoint(artifacts), backbone)
    module = ImageScores(predictor.model, predictor.mean, predictor.std, predictor.exclusive)
    size = predictor.image_size
    config = {
        "template": name,
        "model_type_id": model_type_id,
        "architecture": backbone.architecture,
        "input": f"images: float32 (batch, 3, {size}, {size}) RGB pixels 0-255; resize the "
        "shorter side to the size, then centre-crop",
        "output": "scores: " + ("softmax" if predictor.exclusive else "sigmoid per concept"),
        "image_size": size,
        "concepts_mutually_exclusive": predictor.exclusive,
    }
    return export_zip(
        module,
        *random_images(size),
        out_dir,
        name,
        config,
        predictor.concepts,
        CLASSIFICATION.export_outputs,
    )
