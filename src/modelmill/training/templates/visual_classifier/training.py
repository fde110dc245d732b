"""Training a visual classifier: the split, image batches with flips, the shared loop with
checkpoints every epoch, exact resume, incremental starts and the version's artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import nn

from modelmill.training.checkpoints import carry_over_head
from modelmill.training.contract import TrainContext, TrainingData, TrainResult
from modelmill.training.data import (
    ImageBatches,
    batched,
    epoch_order,
    flip_images,
    label_targets,
    normalise_images,
    training_batches,
)
from modelmill.training.finetune.fields import LoopSettings
from modelmill.training.finetune.loop import LoopData, checkpoint_saver
from modelmill.training.finetune.resume import (
    ResumePlan,
    fit_to_artifacts,
    start_training,
    start_weights,
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

KEEP_STATISTICS = "keep_batchnorm_statistics"  # in the checkpoint's config
NO_IMAGES = "No labelled images to train on."


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
    start = start_training(ctx, name, examples, concepts, targets, p, NO_IMAGES)
    train_rows, val_rows, plan = start.train_rows, start.validation_rows, start.plan
    pretrained = None if plan else find_pretrained()
    model = initial_model(backbone, ctx, concepts, pretrained, plan, p.seed)
    model.to(ctx.device)
    mean, std = normalisation(backbone)
    # starting from trained weights (ImageNet ones, or an earlier version's) keeps their statistics
    keep_statistics = start.decided(
        KEEP_STATISTICS, p.freeze_batchnorm and (plan is not None or pretrained is not None)
    )
    config = {
        "architecture": backbone.architecture,
        "image_size": p.image_size,
        "mean": list(mean),
        "std": list(std),
        "exclusive": exclusive,
        KEEP_STATISTICS: keep_statistics,
    }
    meta = start.checkpoint_meta(config, p.model_dump())
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
    return fit_to_artifacts(
        ctx,
        start,
        model,
        CLASSIFICATION.objective(_forward, exclusive),
        loop_data,
        LoopSettings.of(p, exclusive),
        save,
        train_keeping_batchnorm_statistics if keep_statistics else nn.Module.train,
    )


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
    carry_over = partial(carry_over_head, new_concepts=concepts, head_keys=head_keys(model))
    return start_weights(ctx, model, plan, carry_over)
