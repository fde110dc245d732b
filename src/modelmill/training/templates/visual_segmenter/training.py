"""Training a visual segmenter: label maps at the training size, the split, batches with flips
that move masks with pixels, the shared loop (checkpoints every epoch, exact resume, early
stopping on validation mIoU), incremental starts and the version's artifacts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from modelmill.training.checkpoints import carry_over_head
from modelmill.training.contract import (
    Example,
    TrainContext,
    TrainingData,
    TrainResult,
)
from modelmill.training.data import (
    MAX_CACHED_IMAGE_BYTES,
    RGB_CHANNELS,
    Targets,
    batched,
    epoch_order,
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
from modelmill.training.tasks.segmentation import SEGMENTATION, label_map, shape_regions
from modelmill.training.templates.visual_segmenter.architectures import Architecture
from modelmill.training.templates.visual_segmenter.model import (
    create_model,
    head_keys,
    normalisation,
    train_keeping_encoder_statistics,
)
from modelmill.training.templates.visual_segmenter.params import VisualSegmenterParams
from modelmill.training.weights import WeightsLocation

KEEP_STATISTICS = "keep_encoder_statistics"  # in the checkpoint's config
NO_IMAGES = "No labelled images to train on."
BACKGROUND_ROW = ""  # the last layer's row 0 as carry_over_head sees it: no concept has this id


def classes_of(concepts: Sequence[str]) -> list[str]:
    """The last layer's rows: background, then the concepts."""
    return [BACKGROUND_ROW, *concepts]


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model(images)


def resized_pixels(image: Image.Image, size: int) -> np.ndarray:
    """RGB (size, size, 3) uint8: the whole image stretched to the square, nothing cropped."""
    resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, np.uint8)


def resized_labels(classes: np.ndarray, size: int) -> np.ndarray:
    """A label map stretched to (size, size), each pixel the class at its centre (nearest)."""
    height, width = classes.shape
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return classes[rows[:, None], cols[None, :]]


class SegmentationBatches:
    """uint8 images (N, 3, size, size) and label maps (N, size, size): decoded once and kept in
    memory (labels as bytes) when they fit in `max_cached_bytes`, else decoded per batch."""

    def __init__(
        self,
        examples: Sequence[Example],
        concepts: Sequence[str],
        size: int,
        max_cached_bytes: int = MAX_CACHED_IMAGE_BYTES,
    ) -> None:
        self.examples, self.concepts, self.size = examples, list(concepts), size
        self.cache: tuple[torch.Tensor, torch.Tensor] | None = None
        if len(examples) * (RGB_CHANNELS + 1) * size * size <= max_cached_bytes:
            self.cache = self._decode(range(len(examples)))

    def _decode(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for row in rows:
            example = self.examples[row]
            image = example.load()
            images.append(resized_pixels(image, self.size))
            labels.append(resized_labels(label_map(example, self.concepts, image.size), self.size))
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return pixels, torch.from_numpy(np.stack(labels))  # uint8 (int16 past 254 concepts)

    def batches(self, batches: Sequence[Sequence[int]]) -> Iterator[tuple[torch.Tensor, ...]]:
        """(images, label maps as int64, what the loss takes) per batch of rows."""
        for rows in batches:
            if self.cache is not None:
                images, labels = self.cache[0][list(rows)], self.cache[1][list(rows)]
            else:
                images, labels = self._decode(rows)
            yield images, labels.long()


def flip_pairs(
    images: torch.Tensor,
    labels: torch.Tensor,
    probability: float,
    direction: str,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips each chosen image with its label map, horizontally or vertically."""
    if probability <= 0:
        return images, labels
    chosen = torch.rand(len(images), generator=generator) < probability
    if not chosen.any():
        return images, labels
    images, labels = images.clone(), labels.clone()
    images[chosen] = images[chosen].flip(-1 if direction == "horizontal" else -2)
    labels[chosen] = labels[chosen].flip(-1 if direction == "horizontal" else -2)
    return images, labels


def presence_targets(examples: Sequence[Example], concepts: Sequence[str]) -> Targets:
    """Which concepts each input has regions of, for the stratified split (every input
    counts: one without regions is background only)."""
    index = {c: i for i, c in enumerate(concepts)}
    values = np.zeros((len(examples), len(concepts)), np.float32)
    for row, example in enumerate(examples):
        for concept, _ in shape_regions(example, concepts):
            values[row, index[concept]] = 1.0
    return Targets(values, np.ones_like(values))


def train_segmenter(
    name: str,
    architecture: Architecture,
    ctx: TrainContext,
    data: TrainingData,
    p: VisualSegmenterParams,
    find_pretrained: Callable[[], WeightsLocation | None],
) -> TrainResult:
    """VisualSegmenter.train (see there): the artifacts folder of the best epoch.
    `find_pretrained()` locates the encoder's weights when the training starts afresh."""
    concepts = list(data.concepts)
    examples = [e for e in data.examples if e.kind == "image"]
    targets = presence_targets(examples, concepts)
    start = start_training(ctx, name, examples, concepts, targets, p, NO_IMAGES)
    train_rows, val_rows, plan = start.train_rows, start.validation_rows, start.plan
    pretrained = None if plan else find_pretrained()
    model = initial_model(architecture, ctx, concepts, pretrained, plan, p.seed)
    model.to(ctx.device)
    mean, std = normalisation(architecture)
    # an encoder with trained weights (ImageNet ones, or an earlier version's) keeps them
    trained_encoder = plan is not None or pretrained is not None
    keep_statistics = start.decided(
        KEEP_STATISTICS,
        p.freeze_batchnorm and trained_encoder and architecture.kind != "segformer",
    )
    config = {
        "architecture": architecture.kind,
        "encoder": architecture.encoder.model_name if architecture.encoder else None,
        "image_size": p.image_size,
        "mean": list(mean),
        "std": list(std),
        KEEP_STATISTICS: keep_statistics,
    }
    meta = start.checkpoint_meta(config, p.model_dump())
    save = checkpoint_saver(model, meta)
    pairs = SegmentationBatches(examples, concepts, p.image_size)

    def train_batches(generator: torch.Generator) -> Iterator[Any]:
        batches = training_batches(epoch_order(train_rows, generator), p.batch_size)
        for images, labels in pairs.batches(batches):
            images, labels = flip_pairs(
                images, labels, p.flip_probability, p.flip_direction, generator
            )
            yield normalise_images(images.to(ctx.device), mean, std), labels.to(ctx.device)

    def validation_batches() -> Iterator[Any]:
        for images, labels in pairs.batches(list(batched(val_rows, p.batch_size))):
            yield normalise_images(images.to(ctx.device), mean, std), labels.to(ctx.device)

    loop_data = LoopData(
        train_batches,
        len(training_batches(train_rows, p.batch_size)),
        validation_batches if val_rows else None,
    )
    return fit_to_artifacts(
        ctx,
        start,
        model,
        SEGMENTATION.objective(_forward),
        loop_data,
        LoopSettings.of(p, exclusive=True),  # one class per pixel: softmax
        save,
        train_keeping_encoder_statistics if keep_statistics else nn.Module.train,
    )


def initial_model(
    architecture: Architecture,
    ctx: TrainContext,
    concepts: list[str],
    pretrained: WeightsLocation | None,
    plan: ResumePlan | None,
    seed: int,
) -> nn.Module:
    """The network to train: ImageNet or random encoder weights with a fresh decoder; a
    continued training's own weights; or an earlier version's weights with its last layer
    carried over (background and kept concepts copied, new concepts fresh)."""
    torch.manual_seed(seed)  # the fresh layers' initialisation
    model = create_model(architecture, len(concepts) + 1, pretrained)
    return start_weights(
        ctx,
        model,
        plan,
        lambda old_state, old_concepts, state: carry_over_head(
            old_state,
            classes_of(old_concepts),
            state,
            classes_of(concepts),
            head_keys(architecture),
        ),
    )
