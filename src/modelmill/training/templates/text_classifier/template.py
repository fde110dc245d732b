"""The text-classifier template: fine-tunes a Hugging Face encoder (fully, or LoRA through peft) on
labelled texts. This module is the light face the registry lists (no torch at import);
training.py and predictor.py do the work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from modelmill.training.templates.faces import invalid_inputs, params_as, save_pretrained_remedy
from modelmill.training.templates.text_classifier.config import TextSettings, text_settings
from modelmill.training.weights import WeightsLocation, find_hf_model

if TYPE_CHECKING:
    from modelmill.training.templates.text_classifier.predictor import TextPredictor

REFERENCE_TOKENS = 128  # estimate coefficients are per text of this many tokens


@dataclass(frozen=True, eq=False)
class TextClassifier:
    """One text-classifier template: a Params shape and its defaults (see __init__.py)."""

    model_type_id: ClassVar[str] = "text-classifier"
    input_kind: ClassVar[InputKind] = "text"

    name: str
    Params: type[BaseModel]
    description: str
    estimate_coefficients: Mapping[str, tuple[float, float]]
    aliases: tuple[str, ...] = ()
    recommended: bool = False

    def settings_of(self, params: BaseModel, data_exclusive: bool = False) -> TextSettings:
        return text_settings(params_as(self.Params, params), data_exclusive)

    def base_weights(self, settings: TextSettings, weights_dir: Path | None) -> WeightsLocation:
        """Where the base model's weights are; DataError naming where we looked if nowhere."""
        return find_hf_model(settings.base_model, weights_dir).require(
            self.name,
            f"the weights of {settings.base_model}",
            save_pretrained_remedy(settings.base_model, weights_dir, "the model"),
        )

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.base_weights(self.settings_of(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return invalid_inputs(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        settings = self.settings_of(params)
        scale = settings.max_length / REFERENCE_TOKENS
        return linear_estimate(
            self.estimate_coefficients,
            hardware.device,
            num_inputs,
            settings.loop.num_epochs,
            scale,
        )

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fine-tunes and returns the artifacts folder (best epoch, LoRA merged, tokenizer).

        Incremental training (ctx.warm_start): the model starts from the earlier version's
        weights (LoRA merged); in the classification layer concepts kept copy their rows, new
        concepts get freshly initialised rows, dropped concepts' rows go away. New LoRA
        adapters are added when this training's peft_config asks for them.
        """
        from modelmill.training.templates.text_classifier.training import train_classifier

        settings = self.settings_of(params, data.concepts_mutually_exclusive)
        return train_classifier(
            self.name,
            ctx,
            data,
            params,
            settings,
            lambda: self.base_weights(settings, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> TextPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.text_classifier.predictor import TextPredictor

        return TextPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics on the validation split the training held out (never trained on); on
        the training inputs, and saying so in eval_info, when none were held out."""
        return self.load(artifacts).evaluate(self.name, data)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.text_classifier.predictor import export_classifier

        return export_classifier(self.name, self.model_type_id, artifacts, out_dir)
