"""The visual-segmenter template: trains a network that gives every pixel a class (background
or one of the concepts) from mask and polygon regions. This module is the light face the
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
from modelmill.training.tasks.segmentation import problem
from modelmill.training.templates.faces import imagenet_start, params_as
from modelmill.training.templates.visual_segmenter.architectures import (
    REFERENCE_IMAGE_SIZE,
    Architecture,
)
from modelmill.training.templates.visual_segmenter.params import VisualSegmenterParams
from modelmill.training.weights import WeightsLocation

if TYPE_CHECKING:
    from modelmill.training.templates.visual_segmenter.predictor import SegmenterPredictor


@dataclass(frozen=True, eq=False)
class VisualSegmenter:
    """One visual-segmenter template: an architecture plus its Params defaults (see
    __init__.py)."""

    model_type_id: ClassVar[str] = "visual-segmenter"
    input_kind: ClassVar[InputKind] = "image"

    name: str
    architecture: Architecture
    Params: type[VisualSegmenterParams]
    description: str
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def pretrained_weights(
        self, params: VisualSegmenterParams, weights_dir: Path | None
    ) -> WeightsLocation | None:
        """Where the encoder's ImageNet weights are (None for random weights); DataError if
        they are asked for and nowhere."""
        return imagenet_start(self.architecture.encoder, params, weights_dir, self.name)

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.pretrained_weights(params_as(self.Params, params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        """Inputs that cannot train a segmenter: not images, undecodable, without a mask or
        polygon region (and not labelled background-only), or with a mask of another size
        than its image. They count against invalid_data_tolerance_percent."""
        invalid = []
        for example in examples:
            if (reason := problem(example)) is not None:
                invalid.append(InvalidInput(example.input_id, reason))
        return invalid

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = params_as(self.Params, params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        return linear_estimate(
            self.architecture.estimate, hardware.device, num_inputs, p.num_epochs, scale
        )

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fine-tunes and returns the artifacts folder (the best epoch's weights + metadata).

        Incremental training (ctx.warm_start, ctx.resume_from an earlier version of this
        template): the network starts from that version's weights; in the last layer the
        background and kept concepts copy their rows, new concepts get fresh rows and dropped
        concepts' rows go away; the optimizer and schedule start afresh.
        """
        from modelmill.training.templates.visual_segmenter.training import train_segmenter

        p = params_as(self.Params, params)
        return train_segmenter(
            self.name,
            self.architecture,
            ctx,
            data,
            p,
            lambda: self.pretrained_weights(p, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> SegmenterPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.visual_segmenter.predictor import SegmenterPredictor

        return SegmenterPredictor(find_checkpoint(artifacts), self.architecture)

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics (mIoU, IoU per concept) on the validation split the training held out;
        on the training inputs, and saying so in eval_info, when none were held out."""
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.visual_segmenter.predictor import export_segmenter

        return export_segmenter(
            self.name, self.model_type_id, self.architecture, artifacts, out_dir
        )
