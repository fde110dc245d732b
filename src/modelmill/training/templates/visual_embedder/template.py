"""The visual-embedder templates: metric learning on EfficientNet-Lite0 (its ImageNet weights
ship with modelmill) with an angular margin (ArcFace) or a multi-similarity loss on mined pairs.
This module is the light face the registry lists (no torch at import); model.py does the work.
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
from modelmill.training.templates.visual_classifier.backbones import (
    EFFICIENTNET_LITE0,
    REFERENCE_IMAGE_SIZE,
)
from modelmill.training.weights import WeightsLocation, imagenet_weights


class VisualEmbedder:
    """One metric-learning template: its loss ("arcface" or "multi_similarity") and Params."""

    model_type_id = "visual-embedder"
    input_kind: InputKind = "image"

    def __init__(
        self,
        name: str,
        loss: str,
        params: type[BaseModel],
        description: str,
        aliases: tuple[str, ...] = (),
        recommended: bool = False,
    ) -> None:
        self.name = name
        self.loss = loss
        self.Params = params
        self.description = description
        self.aliases = aliases
        self.recommended = recommended

    def params_of(self, params: BaseModel) -> Any:
        return params if isinstance(params, self.Params) else self.Params.model_validate(params)

    def pretrained_weights(self, params: Any, weights_dir: Path | None) -> WeightsLocation | None:
        """Where the backbone's ImageNet weights are (None for random); DataError if nowhere."""
        if params.pretrained_weights == "None":
            return None
        return imagenet_weights(EFFICIENTNET_LITE0.weights, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(self.params_of(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        from modelmill.training.data import validate_examples

        return validate_examples(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = self.params_of(params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        return linear_estimate(
            EFFICIENTNET_LITE0.estimate, hardware.device, num_inputs, p.num_epochs, scale
        )

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        from modelmill.training.templates.visual_embedder.model import train_embedder

        p = self.params_of(params)
        return train_embedder(
            self.name, self.loss, ctx, data, p, lambda: self.pretrained_weights(p, ctx.weights_dir)
        )

    def load(self, artifacts: Path) -> Predictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_embedder.model import EmbedderPredictor

        return EmbedderPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_embedder.model import EmbedderPredictor

        return EmbedderPredictor(find_checkpoint(artifacts)).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_embedder.model import export_embedder

        return export_embedder(self.name, self.model_type_id, artifacts, out_dir)
