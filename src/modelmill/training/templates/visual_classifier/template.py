"""The visual-classifier template: fine-tunes a timm backbone on labelled images (softmax when
concepts are mutually exclusive, else a sigmoid per concept). This module is the light face the
registry lists (no torch at import); training.py and predictor.py do the work.
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
from modelmill.training.templates.faces import imagenet_start, invalid_inputs, params_as
from modelmill.training.templates.visual_classifier.backbones import REFERENCE_IMAGE_SIZE, Backbone
from modelmill.training.templates.visual_classifier.params import VisualClassifierParams
from modelmill.training.weights import WeightsLocation

if TYPE_CHECKING:
    from modelmill.training.templates.visual_classifier.predictor import ImagePredictor


@dataclass(frozen=True, eq=False)
class VisualClassifier:
    """One visual-classifier template: a backbone plus its Params defaults (see __init__.py)."""

    model_type_id: ClassVar[str] = "visual-classifier"
    input_kind: ClassVar[InputKind] = "image"

    name: str
    backbone: Backbone
    Params: type[VisualClassifierParams]
    description: str
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def pretrained_weights(
        self, params: VisualClassifierParams, weights_dir: Path | None
    ) -> WeightsLocation | None:
        """Where the ImageNet weights are (None for random weights); DataError if nowhere."""
        return imagenet_start(self.backbone.weights, params, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(params_as(self.Params, params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return invalid_inputs(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = params_as(self.Params, params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        return linear_estimate(
            self.backbone.estimate, hardware.device, num_inputs, p.num_epochs, scale
        )

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fine-tunes and returns the artifacts folder (the best epoch's weights + metadata).

        Incremental training (ctx.warm_start, ctx.resume_from an earlier version of this
        template): the backbone starts from that version's weights; in the output layer,
        concepts kept copy their rows, new concepts get freshly initialised rows, dropped
        concepts' rows go away; the optimizer and schedule start afresh (warmup included).
        """
        from modelmill.training.templates.visual_classifier.training import train_classifier

        p = params_as(self.Params, params)
        return train_classifier(
            self.name,
            self.backbone,
            ctx,
            data,
            p,
            lambda: self.pretrained_weights(p, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> ImagePredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_classifier.predictor import ImagePredictor

        return ImagePredictor(find_checkpoint(artifacts), self.backbone)

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics on the validation split the training held out (never trained on); on
        the training inputs, and saying so in eval_info, when none were held out."""
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_classifier.predictor import export_classifier

        return export_classifier(self.name, self.model_type_id, self.backbone, artifacts, out_dir)
