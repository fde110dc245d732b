"""The visual-embedder templates: metric learning on EfficientNet-Lite0 (its ImageNet weights
ship with modelmill) with an angular margin (ArcFace) or a multi-similarity loss on mined pairs.
This module is the light face the registry lists (no torch at import); model.py does the work.
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
from modelmill.training.templates.visual_classifier.backbones import (
    EFFICIENTNET_LITE0,
    REFERENCE_IMAGE_SIZE,
)
from modelmill.training.templates.visual_embedder.params import EmbedderParams
from modelmill.training.weights import WeightsLocation

if TYPE_CHECKING:
    from modelmill.training.templates.visual_embedder.model import EmbedderPredictor


@dataclass(frozen=True, eq=False)
class VisualEmbedder:
    """One metric-learning template: its loss ("arcface" or "multi_similarity") and Params."""

    model_type_id: ClassVar[str] = "visual-embedder"
    input_kind: ClassVar[InputKind] = "image"

    name: str
    loss: str
    Params: type[EmbedderParams]
    description: str
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def pretrained_weights(
        self, params: EmbedderParams, weights_dir: Path | None
    ) -> WeightsLocation | None:
        """Where the backbone's ImageNet weights are (None for random); DataError if nowhere."""
        return imagenet_start(EFFICIENTNET_LITE0.weights, params, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(params_as(self.Params, params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return invalid_inputs(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = params_as(self.Params, params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        return linear_estimate(
            EFFICIENTNET_LITE0.estimate, hardware.device, num_inputs, p.num_epochs, scale
        )

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        from modelmill.training.templates.visual_embedder.model import train_embedder

        p = params_as(self.Params, params)
        return train_embedder(
            self.name, self.loss, ctx, data, p, lambda: self.pretrained_weights(p, ctx.weights_dir)
        )

    def load(self, artifacts: Path) -> EmbedderPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_embedder.model import EmbedderPredictor

        return EmbedderPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_embedder.model import export_embedder

        return export_embedder(self.name, self.model_type_id, artifacts, out_dir)
