"""The visual-anomaly-heatmap templates: PatchCore and PaDiM on EfficientNet-Lite0 patch
features, fitted on normal images only. This module is the light face the registry lists (no
torch at import); model.py does the work.
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
from modelmill.training.templates.faces import invalid_inputs, params_as
from modelmill.training.templates.visual_anomaly.params import PaDiMParams, PatchCoreParams
from modelmill.training.templates.visual_classifier.backbones import (
    EFFICIENTNET_LITE0,
    REFERENCE_IMAGE_SIZE,
)
from modelmill.training.weights import WeightsLocation, imagenet_weights

if TYPE_CHECKING:
    from modelmill.training.templates.visual_anomaly.model import AnomalyPredictor

LITE0_WEIGHTS = EFFICIENTNET_LITE0.weights


@dataclass(frozen=True, eq=False)
class AnomalyTemplate:
    """One anomaly template: its method (see model.METHODS), Params and estimate coefficients
    (seconds ≈ A · images · (image_size / 224)² + B, per device kind)."""

    model_type_id: ClassVar[str] = "visual-anomaly-heatmap"
    input_kind: ClassVar[InputKind] = "image"

    name: str
    method: str
    Params: type[PatchCoreParams | PaDiMParams]
    description: str
    coefficients: dict[str, tuple[float, float]]
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def pretrained_weights(self, weights_dir: Path | None) -> WeightsLocation:
        """The backbone's ImageNet weights (its patch features need them); DataError if nowhere."""
        return imagenet_weights(LITE0_WEIGHTS, weights_dir, self.name, optional=False)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return invalid_inputs(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = params_as(self.Params, params)
        per_image, overhead = self.coefficients.get(hardware.device, self.coefficients["cpu"])
        return per_image * num_inputs * (p.image_size / REFERENCE_IMAGE_SIZE) ** 2 + overhead

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fits on the normal images in one pass (no epochs); a resumed or incremental
        training fits again on the data it is given (deterministic for a seed)."""
        from modelmill.training.templates.visual_anomaly.model import METHODS, train_anomaly

        return train_anomaly(
            self.name,
            METHODS[self.method],
            ctx,
            data,
            params_as(self.Params, params),
            lambda: self.pretrained_weights(ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> AnomalyPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_anomaly.model import AnomalyPredictor

        return AnomalyPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_anomaly.model import export_anomaly

        return export_anomaly(self.name, self.model_type_id, artifacts, out_dir)
