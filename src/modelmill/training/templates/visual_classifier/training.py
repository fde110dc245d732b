"""Training a visual classifier: the split, image batches with flips, the shared loop with
checkpoints every epoch, exact resume, incremental starts and the version's artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from clarifai_grpc.grpc.api.status import status_code_pb2
from torch import nn

from modelmill.training.checkpoint_keys import (
    CONCEPTS_KEY,
    CONFIG_KEY,
    FINGERPRINT_KEY,
    PARAMS_KEY,
    TEMPLATE_KEY,
    VALIDATION_IDS_KEY,
)
from modelmill.training.checkpoints import carry_over_head
from modelmill.training.contract import DataError, TrainContext, TrainingData, TrainResult
from modelmill.training.data import (
    ImageBatches,
    batched,
    epoch_order,
    flip_images,
    label_targets,
    normalise_images,
    split_train_validation,
    training_batches,
)
from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.finetune.loop import LoopData, checkpoint_saver, fit
from modelmill.training.finetune.resume import (
    ResumePlan,
    artifacts_from_best,
    continued_state,
    plan_resume,
    training_fingerprint,
)
from modelmill.training.tasks.classification import CLASSIFICATION
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.templates.visual_classifier.model import (
    create_model,
    head_keys,
    normalisation,
    train_keeping_batchnorm_statistics,
)
from modelmill.training.templates.visual_classifier.params import VisualClassifierParams
from modelmill.training.weights import WeightsLocation


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)


def train_classifier(
    name: str,
    backbone: Backbone,
    ctx: TrainContext,
    data: TrainingData,
    p: VisualClassifierParams,
    find_pretrained: Callable[[], WeightsLocation | None],
) -> TrainResult:
    """VisualClassifier.train (see there): the artifacts folder of the best epoch.
    `find_pretrained()` locates the starting weights when the training starts afresh."""
    exclusive = p.concepts_mutually_exclusive or data.concepts_mutually_exclusive
    concepts = list(data.concepts)
    examples = [e for e in data.examples if e.kind == "image"]
    targets = label_targets(examples, concepts)
    input_ids = [e.input_id for e in examples]
    train_rows, val_rows = split_train_validation(input_ids, targets, p.validation_fraction, p.seed)
    if not train_rows:
        raise DataError(status_code_pb2.MODEL_TRAINING_NO_DATA, "No labelled images to train on.")
    fingerprint = training_fingerprint(name, p.model_dump(), concepts, input_ids)
    plan = plan_resume(ctx.resume_from, ctx.warm_start, name, fingerprint)
    pretrained = None if plan else find_pretrained()
    model = initial_model(backbone, ctx, concepts, pretrained, plan, p.seed)
    model.to(ctx.device)
    mean, std = normalisation(backbone)
    if plan is not None and plan.continues:  # decided when this training started
        keep_statistics = bool(plan.checkpoint.meta[CONFIG_KEY]["keep_batchnorm_statistics"])
    else:  # starting from trained weights: ImageNet ones, or an earlier version's
        keep_statistics = p.freeze_batchnorm and (plan is not None or pretrained is not None)
    meta = {
        TEMPLATE_KEY: name,
        CONFIG_KEY: {
            "architecture": backbone.architecture,
            "image_size": p.image_size,
            "mean": list(mean),
            "std": list(std),
            "exclusive": exclusive,
            "keep_batchnorm_statistics": keep_statistics,
        },
        CONCEPTS_KEY: concepts,
        PARAMS_KEY: p.model_dump(),
        FINGERPRINT_KEY: fingerprint,
        VALIDATION_IDS_KEY: [input_ids[r] for r in val_rows],
    }

    save = checkpoint_saver(model, meta)

    images = ImageBatches(examples, p.image_size, pin=ctx.device == "cuda")
    values = torch.from_numpy(targets.values).to(ctx.device)
    mask = torch.from_numpy(targets.mask).to(ctx.device)

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        batches = training_batches(epoch_order(train_rows, generator), p.batch_size)
        for rows, pixels in zip(batches, images.batches(batches), strict=True):
            pixels = flip_images(pixels, p.flip_probability, p.flip_direction, generator)
            batch = normalise_images(pixels.to(ctx.device, non_blocking=True), mean, std)
            yield batch, values[rows], mask[rows]

    def validation_batches() -> Iterator[Any]:
        batches = list(batched(val_rows, p.batch_size))
        for rows, pixels in zip(batches, images.batches(batches), strict=True):
            batch = normalise_images(pixels.to(ctx.device, non_blocking=True), mean, std)
            yield batch, values[rows], mask[rows]

    loop_data = LoopData(
        train_batches,
        len(training_batches(train_rows, p.batch_size)),
        validation_batches if val_rows else None,
    )
    settings = LoopSettings.of(p, exclusive)
    state, optimizer_state = continued_state(ctx, plan)
    state = fit(
        ctx,
        model,
        CLASSIFICATION.objective(_forward, exclusive),
        loop_data,
        settings,
        save,
        state,
        optimizer_state,
        train_mode=train_keeping_batchnorm_statistics if keep_statistics else nn.Module.train,
    )
    return TrainResult(artifacts_from_best(ctx), state.stopped_at_cap, state.epochs_done)


def initial_model(
    backbone: Backbone,
    ctx: TrainContext,
    concepts: list[str],
    pretrained: WeightsLocation | None,
    plan: ResumePlan | None,
    seed: int,
) -> nn.Module:
    """The model to train: ImageNet or random weights with a fresh output layer; a continued
    training's own weights; or an earlier version's weights with its head carried over."""
    torch.manual_seed(seed)  # the new output layer's initialisation
    model = create_model(backbone, len(concepts), pretrained)
    if plan is None:
        return model
    old_state = plan.checkpoint.model_state()
    if plan.continues:
        model.load_state_dict(old_state)
        return model
    state = model.state_dict()
    counts = carry_over_head(
        old_state, plan.checkpoint.meta[CONCEPTS_KEY], state, concepts, head_keys(model)
    )
    model.load_state_dict(state)
    ctx.log.info("incremental training from %s: %s", plan.checkpoint.path, counts)
    return model
