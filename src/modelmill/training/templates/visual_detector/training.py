"""Training a visual detector: the split, letterboxed batches with random resize and flips,
the shared loop (validation mAP picks the best epoch and stops early), exact resume,
incremental starts with the class rows carried over, and the version's artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from modelmill.training.contract import Example, TrainContext, TrainingData, TrainResult
from modelmill.training.data import (
    Targets,
    batched,
    epoch_order,
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
from modelmill.training.tasks.detection import DETECTION, true_boxes
from modelmill.training.templates.visual_classifier.backbones import Backbone
from modelmill.training.templates.visual_classifier.model import normalisation
from modelmill.training.templates.visual_detector.data import (
    PlacedImages,
    detection_batch,
    flip,
    random_resize,
)
from modelmill.training.templates.visual_detector.layouts import Layout
from modelmill.training.templates.visual_detector.model import (
    Detector,
    build_detector,
    carry_over_classes,
    class_row_layouts,
    freeze_stages,
    lite0_features,
    train_keeping_backbone_statistics,
)
from modelmill.training.templates.visual_detector.params import VisualDetectorParams
from modelmill.training.weights import WeightsLocation

KEEP_STATISTICS = "keep_batchnorm_statistics"  # in the checkpoint's config


def forward(model: Detector, images: Any, targets: Any) -> Any:
    """The objective's forward: losses with targets (training), detections without."""
    return model(images, targets)


def box_targets(examples: list[Example], concepts: list[str]) -> Targets:
    """Per image and concept: 1 where it has a box of the concept. Every image counts (one
    with no boxes is a negative), which the split stratifies as such."""
    index = {concept: k for k, concept in enumerate(concepts)}
    values = np.zeros((len(examples), len(concepts)), np.float32)
    for row, example in enumerate(examples):
        for box in true_boxes(example, concepts):
            values[row, index[box.concept]] = 1.0
    return Targets(values, np.ones_like(values))


def epoch_rows(rows: list[int], repeats: int, generator: torch.Generator) -> list[int]:
    """The training rows of one epoch: `repeats` shuffled passes (min_samples_per_epoch)."""
    order: list[int] = []
    for _ in range(repeats):
        order += epoch_order(rows, generator)
    return order


def train_detector(
    name: str,
    layout: Layout,
    backbone: Backbone,
    ctx: TrainContext,
    data: TrainingData,
    p: VisualDetectorParams,
    find_pretrained: Callable[[], WeightsLocation | None],
) -> TrainResult:
    """VisualDetector.train: the artifacts folder of the best epoch."""
    concepts = list(data.concepts)
    examples = [e for e in data.examples if e.kind == "image"]
    targets = box_targets(examples, concepts)
    start = start_training(ctx, name, examples, concepts, targets, p, "No images to train on.")
    train_rows, val_rows, plan = start.train_rows, start.validation_rows, start.plan
    pretrained = None if plan else find_pretrained()
    mean, std = normalisation(backbone)
    model = initial_model(layout, backbone, ctx, concepts, p, mean, std, pretrained, plan)
    model.to(ctx.device)
    # trained backbone weights (ImageNet, or an earlier version's) keep their statistics
    keep_statistics = start.decided(KEEP_STATISTICS, plan is not None or pretrained is not None)
    freeze_stages(model, p.frozen_stages if keep_statistics else -1)
    config = {**config_of(layout, backbone, p, mean, std), KEEP_STATISTICS: keep_statistics}
    meta = start.checkpoint_meta(config, p.model_dump())
    save = checkpoint_saver(model, meta)
    images = PlacedImages(examples, concepts, p.image_size, p.keep_aspect_ratio)
    repeats = max(1, math.ceil(p.min_samples_per_epoch / len(train_rows)))

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        for rows in training_batches(epoch_rows(train_rows, repeats, generator), p.batch_size):
            items = []
            for row in rows:
                item = random_resize(
                    images[row], p.random_resize_lower, p.random_resize_upper, generator
                )
                if float(torch.rand(1, generator=generator)) < p.flip_probability:
                    item = flip(item)
                items.append(item)
            yield detection_batch(items, ctx.device)

    def validation_batches() -> Iterator[Any]:
        for rows in batched(val_rows, p.batch_size):
            yield detection_batch([images[row] for row in rows], ctx.device)

    loop_data = LoopData(
        train_batches,
        len(training_batches(train_rows * repeats, p.batch_size)),
        validation_batches if val_rows else None,
    )
    return fit_to_artifacts(
        ctx,
        start,
        model,
        DETECTION.objective(forward, concepts),
        loop_data,
        LoopSettings.of(p, exclusive=False),
        save,
        train_keeping_backbone_statistics if keep_statistics else nn.Module.train,
    )


def config_of(
    layout: Layout,
    backbone: Backbone,
    p: VisualDetectorParams,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, Any]:
    """What a predictor needs to rebuild the model and place images as in training."""
    return {
        "architecture": backbone.architecture,
        "head": layout.head,
        "neck": layout.neck,
        "image_size": p.image_size,
        "keep_aspect_ratio": p.keep_aspect_ratio,
        "mean": list(mean),
        "std": list(std),
        "detection_threshold": p.detection_threshold,
        "max_detections": p.max_detections,
        "nms_iou": p.nms_iou,
    }


def initial_model(
    layout: Layout,
    backbone: Backbone,
    ctx: TrainContext,
    concepts: list[str],
    p: VisualDetectorParams,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    pretrained: WeightsLocation | None,
    plan: ResumePlan | None,
) -> Detector:
    """ImageNet (or random) backbone with fresh heads; a continued training's own weights; or
    an earlier version's weights with the class rows of kept concepts carried over."""
    torch.manual_seed(p.seed)  # the fresh layers' initialisation
    features = lite0_features(backbone.weights, pretrained)
    model = build_detector(layout, len(concepts), p.image_size, mean, std, features)
    carry_over = partial(carry_over_classes, new_concepts=concepts, rows=class_row_layouts(model))
    return start_weights(ctx, model, plan, carry_over)
