"""The visual-detector template: a torchvision detection head on EfficientNet-Lite0 features,
fine-tuned on images with boxes. This module is the light face the registry lists (no torch at
import); training.py and predictor.py do the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from modelmill.training.contract import (
    Example,
    Hardware,
    InputKind,
    InvalidInput,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.finetune.outputs import linear_estimate
from modelmill.training.tasks.detection import invalid_inputs
from modelmill.training.templates.faces import imagenet_start, params_as
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.templates.visual_detector.layouts import REFERENCE_IMAGE_SIZE, Layout
from modelmill.training.templates.visual_detector.params import VisualDetectorParams
from modelmill.training.weights import WeightsLocation

if TYPE_CHECKING:
    from modelmill.training.templates.visual_detector.predictor import DetectorPredictor


@dataclass(frozen=True, eq=False)
class VisualDetector:
    """One visual-detector template: a layout on a backbone plus its Params defaults."""

    model_type_id: ClassVar[str] = "visual-detector"
    input_kind: ClassVar[InputKind] = "image"

    name: str
    layout: Layout
    backbone: Backbone
    Params: type[VisualDetectorParams]
    description: str
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def pretrained_weights(
        self, params: VisualDetectorParams, weights_dir: Path | None
    ) -> WeightsLocation | None:
        """Where the backbone's ImageNet weights are (None for random); DataError if nowhere."""
        return imagenet_start(self.backbone.weights, params, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(params_as(self.Params, params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return invalid_inputs(examples)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = params_as(self.Params, params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        inputs = max(num_inputs, p.min_samples_per_epoch)
        return linear_estimate(self.layout.estimate, hardware.device, inputs, p.num_epochs, scale)

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fine-tunes and returns the artifacts folder (the best epoch by validation mAP).

        Incremental training (ctx.warm_start from an earlier version of this template): every
        weight starts from that version; in the class outputs, kept concepts keep their rows
        (RetinaNet and SSD: per anchor; Faster R-CNN: the score and the four box rows, the
        background row too), new concepts get fresh rows, dropped ones go away.
        """
        from modelmill.training.templates.visual_detector.training import train_detector

        p = params_as(self.Params, params)
        return train_detector(
            self.name,
            self.layout,
            self.backbone,
            ctx,
            data,
            p,
            lambda: self.pretrained_weights(p, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> DetectorPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_detector.predictor import DetectorPredictor

        return DetectorPredictor(find_checkpoint(artifacts), self.layout, self.backbone)

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics (COCO mAP) on the validation split the training held out; on the
        training inputs, and saying so in eval_info, when none were held out."""
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_detector.predictor import export_detector

        return export_detector(
            self.name, self.model_type_id, self.layout, self.backbone, artifacts, out_dir
        )
