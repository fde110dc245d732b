"""The text-classifier template: fine-tunes a Hugging Face encoder (fully, or LoRA through peft) on
labelled texts with the shared loop: checkpoints, exact resume, incremental training, held-out
evaluation, prediction and ONNX export (tokenizer files included).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from pydantic import BaseModel
from torch import nn

from modelmill.training.checkpoints import BEST_DIR, Checkpoint, carry_over_head, find_checkpoint
from modelmill.training.checkpoints import save_checkpoint as write_checkpoint
from modelmill.training.contract import (
    DataError,
    Example,
    Hardware,
    InputKind,
    InvalidInput,
    Output,
    TrainContext,
    TrainingData,
)
from modelmill.training.data import (
    batched,
    epoch_order,
    label_targets,
    pad_token_batch,
    split_train_validation,
    token_ids,
    training_batches,
    validate_examples,
)
from modelmill.training.finetune.loop import LoopData, LoopState, fit
from modelmill.training.finetune.onnx_export import export_zip
from modelmill.training.finetune.outputs import (
    evaluation,
    evaluation_examples,
    linear_estimate,
    ranked_concepts,
    scores_from_logits,
)
from modelmill.training.finetune.resume import (
    ARTIFACTS_DIR,
    ResumePlan,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.templates.text_classifier.config import TextSettings, text_settings
from modelmill.training.templates.text_classifier.model import (
    TOKENIZER_DIR,
    TextScores,
    head_keys,
    load_tokenizer,
    merged,
    model_from_config,
    pretrained_model,
    restore_model,
    with_lora,
)
from modelmill.training.weights import WeightsLocation, find_hf_model, hf_model_source

PREDICT_BATCH_SIZE = 32
REFERENCE_TOKENS = 128  # estimate coefficients are per text of this many tokens
EXPORT_TRACE_SHAPE, EXPORT_CHECK_SHAPES = (2, 16), ((3, 9), (1, 20))  # (batch, tokens)


def _forward(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs).logits


def _hf_config(model: nn.Module) -> Any:
    """The transformers config of a (possibly LoRA-wrapped) model."""
    return model.config


def _copy_tokenizer(source: Path) -> Callable[[Path], None]:
    def copy(folder: Path) -> None:
        shutil.copytree(source / TOKENIZER_DIR, folder / TOKENIZER_DIR)

    return copy


class TextPredictor:
    """A trained text classifier (LoRA merged in), loaded once, scoring texts."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        config = checkpoint.meta["config"]
        self.meta = checkpoint.meta
        self.concepts: list[str] = checkpoint.meta["concepts"]
        self.max_length: int = config["max_length"]
        self.exclusive: bool = config["exclusive"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
        self.model = merged(restore_model(checkpoint)).to(self.device).eval()

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        input_ids, attention = pad_token_batch(
            token_ids(self.tokenizer, texts, self.max_length), self.tokenizer.pad_token_id
        )
        return {"input_ids": input_ids, "attention_mask": attention}

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        parts = [np.zeros((0, len(self.concepts)), np.float32)]
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            inputs = self.encode([examples[r].load() for r in rows])
            with torch.inference_mode():
                logits = _forward(self.model, {k: v.to(self.device) for k, v in inputs.items()})
                parts.append(scores_from_logits(logits, self.exclusive).float().cpu().numpy())
        return np.concatenate(parts)

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        return [
            Output(concepts=ranked_concepts(row, self.concepts, params))
            for row in self.scores(examples)
        ]


class TextClassifier:
    """One text-classifier template: a Params shape and its defaults (see __init__.py)."""

    model_type_id = "text-classifier"
    input_kind: InputKind = "text"

    def __init__(
        self,
        name: str,
        params: type[BaseModel],
        description: str,
        estimate_coefficients: Mapping[str, tuple[float, float]],
        aliases: tuple[str, ...] = (),
        recommended: bool = False,
    ) -> None:
        self.name = name
        self.Params = params
        self.description = description
        self.estimate_coefficients = estimate_coefficients
        self.aliases = aliases
        self.recommended = recommended

    def _settings(self, params: BaseModel, data_exclusive: bool = False) -> TextSettings:
        if not isinstance(params, self.Params):
            params = self.Params.model_validate(params)
        return text_settings(params, data_exclusive)

    def _base_weights(self, settings: TextSettings, weights_dir: Path | None) -> WeightsLocation:
        lookup = find_hf_model(settings.base_model, weights_dir)
        if lookup.found is None:
            folder = weights_dir if weights_dir is not None else "the weights folder"
            raise DataError(
                status_code_pb2.MODEL_TRAINING_INVALID_PARAMS,
                f"Template {self.name} needs the weights of {settings.base_model}, and this "
                f"server has none. Looked in: {lookup.explain()}. Save the model "
                f"(save_pretrained) into {folder}/{settings.base_model.replace('/', '--')}, "
                "put it in the Hugging Face cache, give the server internet access, or choose "
                "a base model that is available.",
            )
        return lookup.found

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self._base_weights(self._settings(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return validate_examples(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        settings = self._settings(params)
        scale = settings.max_length / REFERENCE_TOKENS
        return linear_estimate(
            self.estimate_coefficients,
            hardware.device,
            num_inputs,
            settings.loop.num_epochs,
            scale,
        )

    # ---- training ----------------------------------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> Path:
        """Fine-tunes and returns the artifacts folder (best epoch, LoRA merged, tokenizer).

        Incremental training (ctx.warm_start): the model starts from the earlier version's
        weights (LoRA merged); in the classification layer concepts kept copy their rows, new
        concepts get freshly initialised rows, dropped concepts' rows go away. New LoRA
        adapters are added when this training's peft_config asks for them.
        """
        settings = self._settings(params, data.concepts_mutually_exclusive)
        concepts = list(data.concepts)
        examples = [e for e in data.examples if e.kind == self.input_kind]
        targets = label_targets(examples, concepts)
        input_ids = [e.input_id for e in examples]
        seed = settings.loop.seed
        train_rows, val_rows = split_train_validation(
            input_ids, targets, settings.validation_fraction, seed
        )
        if not train_rows:
            raise DataError(
                status_code_pb2.MODEL_TRAINING_NO_DATA, "No labelled texts to train on."
            )
        fingerprint = training_fingerprint(
            self.name, params.model_dump(by_alias=True), concepts, input_ids
        )
        plan = plan_resume(ctx.resume_from, ctx.warm_start, self.name, fingerprint)
        torch.manual_seed(seed)  # the new classification layer's initialisation
        model, tokenizer, base = self._initial_model(ctx, settings, concepts, plan)
        model.to(ctx.device)
        plain_config = json.loads(_hf_config(model).to_json_string())
        meta = {
            "template": self.name,
            "config": {
                "base_model": base,
                "hf_config": plain_config,
                "lora": dict(settings.lora) if settings.lora else None,
                "max_length": settings.max_length,
                "exclusive": settings.loop.exclusive,
            },
            "concepts": concepts,
            "params": params.model_dump(by_alias=True),
            "fingerprint": fingerprint,
            "validation_ids": [input_ids[r] for r in val_rows],
        }

        def save_tokenizer(folder: Path) -> None:
            tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

        def save(
            directory: Path,
            state: LoopState,
            optimizer: torch.optim.Optimizer | None,
            same_model_as: Path | None = None,
        ) -> None:
            meta_now = {**meta, "loop": state.to_json()}
            write_checkpoint(
                directory, model.state_dict(), meta_now, optimizer, save_tokenizer, same_model_as
            )

        sequences = token_ids(tokenizer, [e.load() for e in examples], settings.max_length)
        values = torch.from_numpy(targets.values).to(ctx.device)
        mask = torch.from_numpy(targets.mask).to(ctx.device)

        def batch(rows: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
            ids, attention = pad_token_batch([sequences[r] for r in rows], tokenizer.pad_token_id)
            inputs = {"input_ids": ids.to(ctx.device), "attention_mask": attention.to(ctx.device)}
            return inputs, values[rows], mask[rows]

        def train_batches(generator: torch.Generator) -> Iterator[Any]:
            for rows in training_batches(epoch_order(train_rows, generator), settings.batch_size):
                yield batch(rows)

        def validation_batches() -> Iterator[Any]:
            for rows in batched(val_rows, settings.batch_size):
                yield batch(rows)

        steps_per_epoch = len(training_batches(train_rows, settings.batch_size))
        loop = settings.loop
        if settings.warmup_steps is not None:
            loop = dataclasses.replace(loop, warmup_epochs=settings.warmup_steps / steps_per_epoch)
        loop_data = LoopData(
            train_batches, steps_per_epoch, validation_batches if val_rows else None
        )
        state, optimizer_state = continued_state(ctx, plan)
        fit(ctx, model, _forward, loop_data, loop, save, state, optimizer_state)
        return self._artifacts(ctx)

    def _initial_model(
        self,
        ctx: TrainContext,
        settings: TextSettings,
        concepts: list[str],
        plan: ResumePlan | None,
    ) -> tuple[nn.Module, Any, str]:
        """(model to train, tokenizer, base model name) for a fresh start, a continuation
        (the checkpoint's model as it was) or an incremental start (see `train`)."""
        if plan is None:
            location = self._base_weights(settings, ctx.weights_dir)
            tokenizer_source = (
                hf_model_source(location)
                if settings.tokenizer == settings.base_model
                else settings.tokenizer
            )
            tokenizer = load_tokenizer(tokenizer_source, settings.revision)
            model = pretrained_model(settings, location, concepts, tokenizer.pad_token_id)
            model = with_lora(model, settings.lora) if settings.lora else model
            return model, tokenizer, settings.base_model
        checkpoint = plan.checkpoint
        tokenizer = load_tokenizer(checkpoint.path / TOKENIZER_DIR)
        base = checkpoint.meta["config"]["base_model"]
        if plan.continues:
            return restore_model(checkpoint), tokenizer, base
        old = merged(restore_model(checkpoint))
        model = model_from_config(checkpoint.meta["config"]["hf_config"], concepts)
        state = model.state_dict()
        counts = carry_over_head(
            old.state_dict(),
            checkpoint.meta["concepts"],
            state,
            concepts,
            head_keys(model, len(concepts)),
        )
        model.load_state_dict(state)
        ctx.log.info("incremental training from %s: %s", checkpoint.path, counts)
        model = with_lora(model, settings.lora) if settings.lora else model
        return model, tokenizer, base

    def _artifacts(self, ctx: TrainContext) -> Path:
        """The best epoch's model with LoRA merged in: the version needs no base weights."""
        best = find_checkpoint(ctx.checkpoint_dir / BEST_DIR)
        model = merged(restore_model(best))
        meta = {
            **best.meta,
            "config": {**best.meta["config"], "lora": None},
            "loop": {**best.meta["loop"], "finished": True},
        }
        meta.pop("optimizer", None)
        target = ctx.work_dir / ARTIFACTS_DIR
        return write_checkpoint(
            target,
            model.state_dict(),
            meta,
            write_extra=_copy_tokenizer(best.path),
        )

    # ---- after training ----------------------------------------------------------------------

    def load(self, artifacts: Path) -> TextPredictor:
        return TextPredictor(find_checkpoint(artifacts))

    def evaluate(
        self, ctx: TrainContext, data: TrainingData, params: BaseModel, artifacts: Path
    ) -> dict[str, Any]:
        """EvalMetrics on the validation split the training held out (never trained on); on
        the training inputs, and saying so in eval_info, when none were held out."""
        predictor = self.load(artifacts)
        examples, split = evaluation_examples(predictor.meta, data)
        targets = label_targets(examples, predictor.concepts)
        info = {
            "template": self.name,
            "split": split,
            "best_epoch": predictor.meta["loop"]["best_epoch"],
        }
        return evaluation(
            predictor.concepts,
            targets,
            predictor.scores(examples),
            [e.input_id for e in examples],
            predictor.exclusive,
            info,
        )

    def export(self, artifacts: Path, out_dir: Path) -> Path:
        checkpoint = find_checkpoint(artifacts)
        predictor = TextPredictor(checkpoint)
        module = TextScores(predictor.model, predictor.exclusive)
        generator = torch.Generator().manual_seed(0)
        vocab = int(_hf_config(predictor.model).vocab_size)

        def tokens(batch: int, length: int) -> dict[str, torch.Tensor]:
            ids = torch.randint(0, vocab, (batch, length), generator=generator)
            attention = torch.ones_like(ids)
            attention[0, length // 2 :] = 0  # one padded row: the mask must matter as in PyTorch
            return {"input_ids": ids, "attention_mask": attention}

        config = {
            "template": self.name,
            "model_type_id": self.model_type_id,
            "base_model": checkpoint.meta["config"]["base_model"],
            "input": "input_ids, attention_mask: int64 (batch, tokens) from the tokenizer in "
            f"tokenizer/, truncated to {predictor.max_length} tokens",
            "output": "scores: " + ("softmax" if predictor.exclusive else "sigmoid per concept"),
            "max_length": predictor.max_length,
            "concepts_mutually_exclusive": predictor.exclusive,
        }
        dynamic = {"batch": 0, "tokens": 1}
        axes = {name: {dynamic["batch"]: "batch", dynamic["tokens"]: "tokens"}
                for name in ("input_ids", "attention_mask")}  # fmt: skip
        return export_zip(
            module,
            tokens(*EXPORT_TRACE_SHAPE),
            [tokens(*shape) for shape in EXPORT_CHECK_SHAPES],
            axes,
            out_dir,
            self.name,
            config,
            predictor.concepts,
            write_extra=_copy_tokenizer(checkpoint.path),
        )
