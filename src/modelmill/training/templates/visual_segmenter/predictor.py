"""A trained visual segmenter at work: a mask region per concept present in each image (a PNG
of the input's size, with the concept's mean confidence), EvalMetrics on the inputs its
training held out, and the ONNX export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelmill.training.checkpoint_keys import (
    CONCEPTS_KEY,
    CONFIG_KEY,
)
from modelmill.training.checkpoints import Checkpoint, find_checkpoint
from modelmill.training.contract import Example, Output, Region, TrainingData, predict_all
from modelmill.training.data import batched, normalise_images
from modelmill.training.finetune.onnx_export import export_zip, random_images
from modelmill.training.finetune.outputs import held_out
from modelmill.training.tasks.segmentation import SEGMENTATION, mask_png
from modelmill.training.templates.visual_segmenter.architectures import Architecture
from modelmill.training.templates.visual_segmenter.model import PixelScores, create_model
from modelmill.training.templates.visual_segmenter.training import resized_pixels

PREDICT_BATCH_SIZE = 8


def selected_ids(select: Any) -> set[str]:
    """select_concepts as Clarifai sends it: concept dicts ({"id": ..., "name": ...}) or ids."""
    ids: set[str] = set()
    for concept in select or ():
        if isinstance(concept, Mapping):
            ids.update(str(concept[key]) for key in ("id", "name") if concept.get(key))
        else:
            ids.add(str(concept))
    return ids


class SegmenterPredictor:
    """A trained segmenter, loaded once."""

    def __init__(self, checkpoint: Checkpoint, architecture: Architecture) -> None:
        config = checkpoint.meta[CONFIG_KEY]
        self.meta = checkpoint.meta
        self.concepts: list[str] = checkpoint.meta[CONCEPTS_KEY]
        self.image_size: int = config["image_size"]
        self.mean, self.std = config["mean"], config["std"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model: nn.Module = create_model(architecture, len(self.concepts) + 1, None)
        self.model.load_state_dict(checkpoint.model_state())
        self.model.to(self.device).eval()

    def probabilities(self, images: Sequence[Any]) -> torch.Tensor:
        """Per-pixel class probabilities (N, 1 + concepts, size, size) of PIL images."""
        pixels = np.stack([resized_pixels(image, self.image_size) for image in images])
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            logits = self.model(normalise_images(batch, self.mean, self.std))
            return logits.float().softmax(dim=1).cpu()

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        """One region per concept that some pixel is most likely to be: its mask (a PNG the
        input's size) and the concept's mean probability over those pixels, highest first.
        `select_concepts` keeps only those concepts' regions, `min_value` only regions whose
        mean confidence reaches it (background pixels are never a region)."""
        selected = selected_ids(params.get("select_concepts"))
        min_value = float(params.get("min_value") or 0.0)
        outputs = []
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            images = [examples[row].load() for row in rows]
            probabilities = self.probabilities(images)
            for image, scores in zip(images, probabilities, strict=True):
                outputs.append(self._output(image.size, scores, selected, min_value))
        return outputs

    def _output(
        self, size: tuple[int, int], scores: torch.Tensor, selected: set[str], min_value: float
    ) -> Output:
        width, height = size
        # Scores, not labels, are scaled to the input's size: the mask edges stay smooth.
        full = nn.functional.interpolate(
            scores[None], size=(height, width), mode="bilinear", align_corners=False
        )[0]
        classes = full.argmax(dim=0)
        regions = []
        for index, concept in enumerate(self.concepts):
            if selected and concept not in selected:
                continue
            inside = classes == index + 1
            if not bool(inside.any()):
                continue
            confidence = float(full[index + 1][inside].mean())
            if confidence >= min_value:
                regions.append(Region({concept: confidence}, mask_png=mask_png(inside.numpy())))
        regions.sort(key=lambda region: -max(region.concepts.values()))
        return Output(regions=regions)

    def evaluate(self, template: str, data: TrainingData) -> dict[str, Any]:
        """The segmentation task's EvalMetrics on the validation inputs the training held out;
        on all inputs, and saying so in eval_info, when it kept none."""
        examples, info = held_out(self.meta, template, data)
        outputs = self.predict(examples, predict_all(self.concepts))
        return SEGMENTATION.metrics(examples, outputs, self.concepts, True, info)


def export_segmenter(
    name: str, model_type_id: str, architecture: Architecture, artifacts: Path, out_dir: Path
) -> Path:
    """The version as a zip: model.onnx (pixels in, per-pixel scores out), config.json,
    concepts.json and a manifest, after checking ONNX against PyTorch."""
    predictor = SegmenterPredictor(find_checkpoint(artifacts), architecture)
    module = PixelScores(predictor.model, predictor.mean, predictor.std)
    size = predictor.image_size
    config = {
        "template": name,
        "model_type_id": model_type_id,
        "architecture": architecture.description,
        "input": f"images: float32 (batch, 3, {size}, {size}) RGB pixels 0-255; resize the "
        "whole image to the square (no crop)",
        "output": f"scores: float32 (batch, 1 + concepts, {size}, {size}) per-pixel "
        "probabilities (softmax); channel 0 is background, channel i + 1 the concept "
        "concepts.json[i]. The label map is their argmax; scale the scores back to the "
        "image's size before taking it, as modelmill's predictions do.",
        "image_size": size,
    }
    return export_zip(
        module,
        *random_images(size),
        out_dir,
        name,
        config,
        predictor.concepts,
        SEGMENTATION.export_outputs,
    )
