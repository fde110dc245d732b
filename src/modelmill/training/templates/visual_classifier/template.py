"""The visual-classifier template: fine-tunes a timm backbone on labelled images (softmax when
concepts are mutually exclusive, else a sigmoid per concept), with checkpoints, exact resume,
incremental training, held-out evaluation, prediction and ONNX export.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from pydantic import BaseModel
from torch import nn

from modelmill.training.checkpoints import Checkpoint, carry_over_head, find_checkpoint
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
    ImageBatches,
    batched,
    epoch_order,
    flip_images,
    label_targets,
    normalise_images,
    split_train_validation,
    square_pixels,
    training_batches,
    validate_examples,
)
from modelmill.training.finetune.loop import LoopData, LoopSettings, LoopState, fit
from modelmill.training.finetune.onnx_export import export_zip
from modelmill.training.finetune.outputs import (
    evaluation,
    evaluation_examples,
    linear_estimate,
    ranked_concepts,
    scores_from_logits,
)
from modelmill.training.finetune.resume import (
    ResumePlan,
    artifacts_from_best,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.templates.visual_classifier.model import (
    REFERENCE_IMAGE_SIZE,
    Backbone,
    ImageScores,
    create_model,
    head_keys,
    normalisation,
    train_keeping_batchnorm_statistics,
)
from modelmill.training.templates.visual_classifier.params import VisualClassifierParams
from modelmill.training.weights import WeightsLocation, find_timm_weights

PREDICT_BATCH_SIZE = 32
EXPORT_TRACE_BATCH, EXPORT_CHECK_BATCHES = 2, (3, 1)  # other sizes than traced: dynamic batch


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)


class ImagePredictor:
    """A trained visual classifier, loaded once, scoring images."""

    def __init__(self, checkpoint: Checkpoint, backbone: Backbone) -> None:
        config = checkpoint.meta["config"]
        self.meta = checkpoint.meta
        self.concepts: list[str] = checkpoint.meta["concepts"]
        self.image_size: int = config["image_size"]
        self.mean, self.std = config["mean"], config["std"]
        self.exclusive: bool = config["exclusive"]
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = create_model(backbone, len(self.concepts), None)
        self.model.load_state_dict(checkpoint.model_state())
        self.model.to(self.device).eval()

    def scores(self, examples: Sequence[Example]) -> np.ndarray:
        parts = [np.zeros((0, len(self.concepts)), np.float32)]
        for rows in batched(range(len(examples)), PREDICT_BATCH_SIZE):
            pixels = np.stack([square_pixels(examples[r].load(), self.image_size) for r in rows])
            images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode():
                logits = self.model(normalise_images(images, self.mean, self.std))
                parts.append(scores_from_logits(logits, self.exclusive).float().cpu().numpy())
        return np.concatenate(parts)

    def predict(self, examples: Sequence[Example], params: dict[str, Any]) -> list[Output]:
        return [
            Output(concepts=ranked_concepts(row, self.concepts, params))
            for row in self.scores(examples)
        ]


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

    def _params(self, params: BaseModel) -> VisualClassifierParams:
        return params if isinstance(params, self.Params) else self.Params.model_validate(params)

    def _pretrained(self, params: VisualClassifierParams, weights_dir: Path | None):
        if params.pretrained_weights == "None":
            return None
        lookup = find_timm_weights(self.backbone.weights, weights_dir)
        if lookup.found is None:
            name = self.backbone.weights.model_name
            folder = weights_dir if weights_dir is not None else "the weights folder"
            raise DataError(
                status_code_pb2.MODEL_TRAINING_INVALID_PARAMS,
                f"Template {self.name} needs ImageNet-1k weights for {name}, and this server "
                f"has none. Looked in: {lookup.explain()}. Put them at {folder}/{name}"
                f".safetensors (or in the Hugging Face cache as {self.backbone.weights.hub_id}), "
                "give the server internet access, or set pretrained_weights to None to train "
                "from random weights.",
            )
        return lookup.found

    def check_params(self, params: BaseModel, weights_dir: Path | None) -> None:
        self._pretrained(self._params(params), weights_dir)

    def validate(self, examples: Sequence[Example], params: BaseModel) -> list[InvalidInput]:
        return validate_examples(examples, self.input_kind)

    def estimate(self, num_inputs: int, params: BaseModel, hardware: Hardware) -> float:
        p = self._params(params)
        scale = (p.image_size / REFERENCE_IMAGE_SIZE) ** 2
        return linear_estimate(
            self.backbone.estimate, hardware.device, num_inputs, p.num_epochs, scale
        )

    # ---- training ----------------------------------------------------------------------------

    def train(self, ctx: TrainContext, data: TrainingData, params: BaseModel) -> Path:
        """Fine-tunes and returns the artifacts folder (the best epoch's weights + metadata).

        Incremental training (ctx.resume_from is an earlier version of this template): the
        backbone starts from that version's weights; in the output layer, concepts kept copy
        their rows, new concepts get freshly initialised rows, dropped concepts' rows go away;
        the optimizer and schedule start afresh (warmup included).
        """
        p = self._params(params)
        exclusive = p.concepts_mutually_exclusive or data.concepts_mutually_exclusive
        concepts = list(data.concepts)
        examples = [e for e in data.examples if e.kind == self.input_kind]
        targets = label_targets(examples, concepts)
        input_ids = [e.input_id for e in examples]
        train_rows, val_rows = split_train_validation(
            input_ids, targets, p.validation_fraction, p.seed
        )
        if not train_rows:
            raise DataError(
                status_code_pb2.MODEL_TRAINING_NO_DATA, "No labelled images to train on."
            )
        fingerprint = training_fingerprint(self.name, p.model_dump(), concepts, input_ids)
        plan = plan_resume(ctx.resume_from, ctx.warm_start, self.name, fingerprint)
        pretrained = None if plan else self._pretrained(p, ctx.weights_dir)
        model = self._initial_model(ctx, concepts, pretrained, plan, p.seed)
        model.to(ctx.device)
        mean, std = normalisation(self.backbone)
        if plan is not None and plan.continues:  # decided when this training started
            keep_statistics = bool(plan.checkpoint.meta["config"]["keep_batchnorm_statistics"])
        else:  # starting from trained weights: ImageNet ones, or an earlier version's
            keep_statistics = p.freeze_batchnorm and (plan is not None or pretrained is not None)
        meta = {
            "template": self.name,
            "config": {
                "architecture": self.backbone.architecture,
                "image_size": p.image_size,
                "mean": list(mean),
                "std": list(std),
                "exclusive": exclusive,
                "keep_batchnorm_statistics": keep_statistics,
            },
            "concepts": concepts,
            "params": p.model_dump(),
            "fingerprint": fingerprint,
            "validation_ids": [input_ids[r] for r in val_rows],
        }

        def save(
            directory: Path,
            state: LoopState,
            optimizer: torch.optim.Optimizer | None,
            same_model_as: Path | None = None,
        ) -> None:
            meta_now = {**meta, "loop": state.to_json()}
            write_checkpoint(
                directory, model.state_dict(), meta_now, optimizer, same_model_as=same_model_as
            )

        images = ImageBatches(examples, p.image_size)
        values = torch.from_numpy(targets.values).to(ctx.device)
        mask = torch.from_numpy(targets.mask).to(ctx.device)

        def train_batches(generator: torch.Generator) -> Iterator[Any]:
            batches = training_batches(epoch_order(train_rows, generator), p.batch_size)
            for rows, pixels in zip(batches, images.batches(batches), strict=True):
                pixels = flip_images(pixels, p.flip_probability, p.flip_direction, generator)
                batch = normalise_images(pixels.to(ctx.device), mean, std)
                yield batch, values[rows], mask[rows]

        def validation_batches() -> Iterator[Any]:
            batches = list(batched(val_rows, p.batch_size))
            for rows, pixels in zip(batches, images.batches(batches), strict=True):
                batch = normalise_images(pixels.to(ctx.device), mean, std)
                yield batch, values[rows], mask[rows]

        loop_data = LoopData(
            train_batches,
            len(training_batches(train_rows, p.batch_size)),
            validation_batches if val_rows else None,
        )
        settings = LoopSettings(
            num_epochs=p.num_epochs,
            learning_rate=p.batch_size * p.per_item_lrate,
            weight_decay=p.weight_decay,
            beta1=p.momentum,
            warmup_epochs=p.warmup_epochs,
            patience=p.early_stopping_patience,
            seed=p.seed,
            exclusive=exclusive,
        )
        state, optimizer_state = continued_state(ctx, plan)
        fit(
            ctx,
            model,
            _forward,
            loop_data,
            settings,
            save,
            state,
            optimizer_state,
            train_mode=train_keeping_batchnorm_statistics if keep_statistics else nn.Module.train,
        )
        return artifacts_from_best(ctx)

    def _initial_model(
        self,
        ctx: TrainContext,
        concepts: list[str],
        pretrained: WeightsLocation | None,
        plan: ResumePlan | None,
        seed: int,
    ) -> nn.Module:
        torch.manual_seed(seed)  # the new output layer's initialisation
        model = create_model(self.backbone, len(concepts), pretrained)
        if plan is None:
            return model
        old_state = plan.checkpoint.model_state()
        if plan.continues:
            model.load_state_dict(old_state)
            return model
        state = model.state_dict()
        counts = carry_over_head(
            old_state, plan.checkpoint.meta["concepts"], state, concepts, head_keys(model)
        )
        model.load_state_dict(state)
        ctx.log.info("incremental training from %s: %s", plan.checkpoint.path, counts)
        return model

    # ---- after training ----------------------------------------------------------------------

    def load(self, artifacts: Path) -> ImagePredictor:
        return ImagePredictor(find_checkpoint(artifacts), self.backbone)

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
        predictor = self.load(artifacts)
        module = ImageScores(predictor.model, predictor.mean, predictor.std, predictor.exclusive)
        size, generator = predictor.image_size, torch.Generator().manual_seed(0)

        def images(batch: int) -> dict[str, torch.Tensor]:
            pixels = torch.randint(0, 256, (batch, 3, size, size), generator=generator)
            return {"images": pixels.float()}

        config = {
            "template": self.name,
            "model_type_id": self.model_type_id,
            "architecture": self.backbone.architecture,
            "input": f"images: float32 (batch, 3, {size}, {size}) RGB pixels 0-255; resize the "
            "shorter side to the size, then centre-crop",
            "output": "scores: " + ("softmax" if predictor.exclusive else "sigmoid per concept"),
            "image_size": size,
            "concepts_mutually_exclusive": predictor.exclusive,
        }
        return export_zip(
            module,
            images(EXPORT_TRACE_BATCH),
            [images(batch) for batch in EXPORT_CHECK_BATCHES],
            {"images": {0: "batch"}},
            out_dir,
            self.name,
            config,
            predictor.concepts,
        )
