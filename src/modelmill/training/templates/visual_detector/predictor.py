"""A trained visual detector at work: boxes for predictions (regions with fraction boxes, the
box's score as the region value and its concept), EvalMetrics on the inputs its training held
out, and the ONNX export (boxes, scores, labels) checked against PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from modelmill.training.checkpoint_keys import CONCEPTS_KEY, CONFIG_KEY, VALIDATION_IDS_KEY
from modelmill.training.checkpoints import Checkpoint, find_checkpoint
from modelmill.training.contract import Example, Output, Region, TrainingData, predict_all
from modelmill.training.data import batched
from modelmill.training.finetune.onnx_export import export_zip
from modelmill.training.tasks.detection import DETECTION, shapes_image
from modelmill.training.tasks.samples import decoder
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.templates.visual_detector.data import fit_size, letterbox
from modelmill.training.templates.visual_detector.layouts import Layout
from modelmill.training.templates.visual_detector.model import (
    Detector,
    ExportedDetections,
    build_detector,
    lite0_features,
)

PREDICT_BATCH_SIZE = 8
EXPORT_CHECK_SEEDS = (1, 2, 3)  # sample images of shapes the ONNX model is checked on
EXPORT_COLOURS = ((210, 40, 40), (40, 190, 60), (40, 60, 210))


class DetectorPredictor:
    """A trained visual detector, loaded once."""

    def __init__(self, checkpoint: Checkpoint, layout: Layout, backbone: Backbone) -> None:
        config = checkpoint.meta[CONFIG_KEY]
        self.meta = checkpoint.meta
        self.config = config
        self.concepts: list[str] = checkpoint.meta[CONCEPTS_KEY]
        self.image_size: int = config["image_size"]
        self.keep_aspect_ratio: bool = config["keep_aspect_ratio"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        features = lite0_features(backbone.weights, None)
        self.model: Detector = build_detector(
            layout, len(self.concepts), self.image_size, config["mean"], config["std"], features
        )
        self.model.load_state_dict(checkpoint.model_state())
        self.model.to(self.device).eval()

    def settings(self, params: Mapping[str, Any]) -> tuple[float, float, int, set[str] | None]:
        """(threshold, NMS IoU, max detections, selected concepts or None) of a request: a
        request's min_value, else its detection_threshold, else the version's own."""
        threshold = params.get("min_value", params.get("detection_threshold"))
        if threshold is None:
            threshold = self.config["detection_threshold"]
        nms_iou = float(params.get("nms_iou", self.config["nms_iou"]))
        max_detections = int(params.get("max_detections", self.config["max_detections"]))
        selected = params.get("select_concepts")
        chosen = (
            {c["id"] if isinstance(c, Mapping) else str(c) for c in selected} if selected else None
        )
        return float(threshold), nms_iou, max(1, max_detections), chosen

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        threshold, nms_iou, max_detections, chosen = self.settings(params)
        self.model.set_inference(threshold, nms_iou, max_detections)
        outputs: list[Output] = []
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            images, contents = [], []
            for row in rows:
                image = examples[row].load()
                pixels, content = letterbox(image, self.image_size, self.keep_aspect_ratio)
                images.append(torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0))
                contents.append(content)
            with torch.inference_mode():
                found = self.model([i.to(self.device) for i in images])
            for detections, (height, width) in zip(found, contents, strict=True):
                outputs.append(self._output(detections, height, width, threshold, chosen))
        return outputs

    def _output(
        self,
        detections: Mapping[str, torch.Tensor],
        height: int,
        width: int,
        threshold: float,
        chosen: set[str] | None,
    ) -> Output:
        regions = []
        boxes = detections["boxes"].float().cpu().numpy()
        scores = detections["scores"].float().cpu().numpy()
        labels = detections["labels"].cpu().numpy()
        for (x1, y1, x2, y2), score, label in sorted(
            zip(boxes, scores, labels, strict=True), key=lambda d: -float(d[1])
        ):
            concept = self.concepts[int(label)]
            if score < threshold or (chosen is not None and concept not in chosen):
                continue
            box = tuple(
                float(np.clip(v, 0.0, 1.0))
                for v in (y1 / height, x1 / width, y2 / height, x2 / width)
            )
            regions.append(Region({concept: float(score)}, box=box, value=float(score)))  # type: ignore[arg-type]
        return Output(regions=regions)

    def evaluate(self, name: str, data: TrainingData) -> dict[str, Any]:
        """EvalMetrics on the inputs the training held out; on the training inputs, and saying
        so in eval_info, when none were held out."""
        held_out = set(self.meta.get(VALIDATION_IDS_KEY) or [])
        examples = [e for e in data.examples if e.input_id in held_out]
        on_training_data = not examples
        if on_training_data:
            examples = list(data.examples)
        outputs = self.predict(examples, predict_all(self.concepts))
        info = {
            "template": name,
            "evaluated_on": "training data" if on_training_data else "held-out split",
        }
        return DETECTION.metrics(examples, outputs, self.concepts, False, info)


def export_detector(
    name: str,
    model_type_id: str,
    layout: Layout,
    backbone: Backbone,
    artifacts: Path,
    out_dir: Path,
) -> Path:
    """The version as a zip: model.onnx (one letterboxed image in; boxes, scores, labels out),
    config.json, concepts.json and a manifest, after checking ONNX against PyTorch on images
    of coloured shapes."""
    predictor = DetectorPredictor(find_checkpoint(artifacts), layout, backbone)
    config = predictor.config
    predictor.model.set_inference(
        config["detection_threshold"], config["nms_iou"], config["max_detections"]
    )
    size = predictor.image_size
    module = ExportedDetections(predictor.model, size)

    def image(seed: int) -> dict[str, torch.Tensor]:
        colours = {str(i): rgb for i, rgb in enumerate(EXPORT_COLOURS)}
        data, _ = shapes_image(colours, size, seed)
        loaded: Image.Image = decoder(data)()
        pixels, _ = letterbox(loaded, size, predictor.keep_aspect_ratio)
        return {"images": torch.from_numpy(pixels).permute(2, 0, 1)[None].float()}

    width, height = fit_size(4, 3, size, predictor.keep_aspect_ratio)
    export_config = {
        "template": name,
        "model_type_id": model_type_id,
        "architecture": config["architecture"],
        "head": config["head"],
        "input": f"images: float32 (1, 3, {size}, {size}) RGB pixels 0-255; resize the image "
        + (
            f"to fit the square keeping its aspect ratio (a 4:3 image becomes {width}×{height}), "
            "put it at the top-left and pad the rest with grey 128"
            if predictor.keep_aspect_ratio
            else "to the square"
        ),
        "outputs": "boxes (K, 4): top, left, bottom, right as fractions of the square; "
        "scores (K); labels (K): concept index into concepts.json",
        "image_size": size,
        "detection_threshold": config["detection_threshold"],
        "nms_iou": config["nms_iou"],
        "max_detections": config["max_detections"],
    }
    detections = {output: {0: "detections"} for output in DETECTION.export_outputs}
    return export_zip(
        module,
        image(EXPORT_CHECK_SEEDS[0]),
        [image(seed) for seed in EXPORT_CHECK_SEEDS],
        detections,
        out_dir,
        name,
        export_config,
        predictor.concepts,
        output_names=DETECTION.export_outputs,
    )
