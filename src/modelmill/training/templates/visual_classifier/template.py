"""The visual-classifier template: fine-tunes a timm backbone on labelled images (softmax when
concepts are mutually exclusive, else a sigmoid per concept). This module is the light face the
registry lists (no torch at import); training.py and predictor.py do the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from modelmill.training.contract import (
    Example,
    Hardware,
    InputKind,
    InvalidInput,
    Predictor,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.finetune.outputs import linear_estimate
from modelmill.training.templates.visual_classifier.backbones import REFERENCE_IMAGE_SIZE, Backbone
from modelmill.training.templates.visual_classifier.params import VisualClassifierParams
from modelmill.training.weights import WeightsLocation, imagenet_weights


class VisualClassifier:
    """One visual-classifier template: a backbone plus its Params defaults (see __init__.py)."""

    model_type_id = "visual-classifier"
    input_kind: InputKind = "image"

    def __init__(
        self,
        name: str,
        backbone: Backbone,
        params: type[VisualClassifierParams],
        description: str,
        aliases: tuple[str, ...] = (),
        recommended: bool = False,
    ) -> None:
        self.name = name
        self.backbone = backbone
        self.Params = params
        self.description = description
        self.aliases = aliases
        self.recommended = recommended

    def params_of(self, params: BaseModel) -> VisualClassifierParams:
        return params if isinstance(params, self.Params) else self.Params.model_validate(params)

    def pretrained_weights(
        self, params: VisualClassifierParams, weights_dir: Path | None
    ) -> WeightsLocation | None:
        """Where the ImageNet weights are (None for random weights); DataError if nowhere."""
        if params.pretrained_weights == "None":
            return None
        return imagenet_weights(self.backbone.weights, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(self.params_of(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        from modelmill.training.data import validate_examples

        return validate_examples(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = self.params_of(params)
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

        p = self.params_of(params)
        return train_classifier(
            self.name,
            self.backbone,
            ctx,
            data,
            p,
            lambda: self.pretrained_weights(p, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> Predictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_classifier.predictor import ImagePredictor

        return ImagePredictor(find_checkpoint(artifacts), self.backbone)

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics on the validation split the training held out (never trained on); on
        the training inputs, and saying so in eval_info, when none were held out."""
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_classifier.predictor import ImagePredictor

        return ImagePredictor(find_checkpoint(artifacts), self.backbone).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_classifier.predictor import export_classifier

        return export_classifier(self.name, self.model_type_id, self.backbone, artifacts, out_dir)
