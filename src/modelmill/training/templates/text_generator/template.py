"""The text-to-text template: fine-tunes a Hugging Face language model (LoRA through peft, or in
full) on prompt/completion pairs and plain texts, and generates text. This module is the light
face the registry lists (no torch at import); training.py and predictor.py do the work.
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
from modelmill.training.tasks.generation import conversation
from modelmill.training.templates.faces import params_as, save_pretrained_remedy
from modelmill.training.templates.text_generator.config import (
    GenerationSettings,
    generation_settings,
)
from modelmill.training.templates.text_generator.params import SMOLLM2_135M, InferenceParams
from modelmill.training.templates.text_generator.weights import find_generator_weights
from modelmill.training.weights import WeightsLocation

if TYPE_CHECKING:
    from modelmill.training.templates.text_generator.predictor import GeneratorPredictor

REFERENCE_TOKENS = 128  # estimate coefficients are per text of this many tokens


def text_problem(example: Example) -> str | None:
    """Why an input gives no training sample: not a text, unreadable, or empty (no text and
    no target)."""
    if example.kind != "text":
        return f"is {example.kind} input; a text generator trains on texts"
    try:
        content = example.load()
    except Exception as error:  # any loader failure makes the input unusable, whatever it was
        return f"could not be read: {error}"
    if not isinstance(content, str):
        return f"did not load as text (got {type(content).__name__})"
    if example.messages:
        chat = conversation(example)
        if chat is None:
            return "has chat messages whose last turn is not the assistant's answer"
        if not chat[1].strip():
            return "has an empty answer as its last chat message"
        return None
    if not content.strip() and not (example.target_text or "").strip():
        return "is an empty text with no target text"
    if example.target_text is not None and not example.target_text.strip():
        return "has an empty target text"
    return None


# Tokens a prompt format adds to each prompt/completion pair, which training reads with the pair
# (the estimate counts them): SmolLM2's chat template (its system turn, the turn markers and the
# answer's end of turn) 32, as many as 120 characters of text; the separator layout a newline
# and the end token. Both measured with SmolLM2's tokenizer (tests/training/test_text_generator).
# Another base model's chat template is counted as a separator: the least it adds.
CHAT_TEMPLATE_TOKENS = {SMOLLM2_135M: 32}
SEPARATOR_TOKENS = 2


@dataclass(frozen=True, eq=False)
class TextGenerator:
    """One text-to-text template: a Params shape and its defaults (see __init__.py); `remedy`
    replaces the usual advice when its base model's weights are nowhere."""

    model_type_id: ClassVar[str] = "text-to-text"
    input_kind: ClassVar[InputKind] = "text"

    name: str
    Params: type[BaseModel]
    description: str
    estimate_coefficients: Mapping[str, tuple[float, float]]
    aliases: tuple[str, ...] = ()
    recommended: bool = False
    remedy: str = ""

    def settings_of(self, params: BaseModel | Mapping[str, Any]) -> GenerationSettings:
        return generation_settings(params_as(self.Params, params))

    def base_weights(
        self, settings: GenerationSettings, weights_dir: Path | None
    ) -> WeightsLocation:
        """Where the base model's weights are; DataError naming where we looked if nowhere."""
        return find_generator_weights(settings.base_model, weights_dir).require(
            self.name,
            f"the weights of {settings.base_model}",
            self.remedy
            or save_pretrained_remedy(
                settings.base_model, weights_dir, "the model and its tokenizer"
            ),
        )

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self.base_weights(self.settings_of(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return [
            InvalidInput(e.input_id, reason)
            for e in examples
            if (reason := text_problem(e)) is not None
        ]

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        settings = self.settings_of(params)
        return linear_estimate(
            self.estimate_coefficients,
            hardware.device,
            num_inputs,
            settings.loop.num_epochs,
            settings.max_length / REFERENCE_TOKENS,
        )

    def prompt_tokens(self, params: BaseModel | Mapping[str, Any]) -> int:
        """Tokens the prompt format adds to a prompt/completion pair; the estimate counts them
        for every input (a plain text gets only the end token: an over-count of 1–31)."""
        settings = self.settings_of(params)
        if settings.chat_template:
            return CHAT_TEMPLATE_TOKENS.get(settings.tokenizer, SEPARATOR_TOKENS)
        return SEPARATOR_TOKENS

    # ---- the torch side, imported when used -------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> TrainResult:
        """Fine-tunes and returns the artifacts folder (best epoch, LoRA merged, the adapter
        alone, the tokenizer).

        Incremental training (ctx.warm_start): the model starts from the earlier version's
        weights (LoRA merged in) and, with LoRA, trains new adapters on top of them.
        """
        from modelmill.training.templates.text_generator.training import train_generator

        settings = self.settings_of(params)
        return train_generator(
            self.name,
            ctx,
            data,
            params,
            settings,
            lambda: self.base_weights(settings, ctx.weights_dir),
        )

    def load(self, artifacts: Path) -> GeneratorPredictor:
        from modelmill.training.checkpoints import find_checkpoint
        from modelmill.training.templates.text_generator.predictor import GeneratorPredictor

        return GeneratorPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics on the inputs the training held out: loss and perplexity over all of
        them, exact match, chrF and BLEU of greedy generations for its pairs."""
        max_tokens = getattr(params, "max_tokens", InferenceParams().max_tokens)
        return self.load(artifacts).evaluate(data, max_tokens)

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        from modelmill.training.templates.text_generator.predictor import export_generator

        return export_generator(self.name, self.model_type_id, artifacts, out_dir)
