"""Detection batches: images letterboxed (or stretched) onto a square with their boxes moved
along, decoded once and kept in memory when they fit; training-time random resize (crop or
pad back to the square) and left-right flips that move the boxes with the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from modelmill.training.contract import Example
from modelmill.training.data import MAX_CACHED_IMAGE_BYTES, RGB_CHANNELS
from modelmill.training.tasks.detection import true_boxes

PAD_VALUE = 128  # grey padding: mid-range for the [0, 1] → (x - 0.5) / 0.5 normalisation
MIN_BOX_SIDE_PX = 2.0  # boxes cut down below this by a crop are dropped


@dataclass(frozen=True)
class Placed:
    """An image on the square canvas: uint8 pixels (3, S, S), boxes (B, 4) as x1, y1, x2, y2
    canvas pixels, labels (B,) concept indexes, and the (height, width) its content covers
    from the top-left corner."""

    pixels: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    content: tuple[int, int]


def fit_size(width: int, height: int, size: int, keep_aspect_ratio: bool) -> tuple[int, int]:
    """(width, height) of an image resized onto a `size` square."""
    if not keep_aspect_ratio:
        return size, size
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def letterbox(
    image: Image.Image, size: int, keep_aspect_ratio: bool
) -> tuple[np.ndarray, tuple[int, int]]:
    """(S, S, 3) uint8 pixels with the image at the top-left, and its (height, width) there."""
    image = image.convert("RGB")
    width, height = fit_size(image.width, image.height, size, keep_aspect_ratio)
    canvas = np.full((size, size, RGB_CHANNELS), PAD_VALUE, np.uint8)
    canvas[:height, :width] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return canvas, (height, width)


def place(example: Example, concepts: Sequence[str], size: int, keep_aspect_ratio: bool) -> Placed:
    pixels, (height, width) = letterbox(example.load(), size, keep_aspect_ratio)
    index = {concept: k for k, concept in enumerate(concepts)}
    found = true_boxes(example, concepts)
    boxes = torch.tensor(
        [[b.left * width, b.top * height, b.right * width, b.bottom * height] for b in found],
        dtype=torch.float32,
    ).reshape(-1, 4)
    labels = torch.tensor([index[b.concept] for b in found], dtype=torch.int64)
    return Placed(
        torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), boxes, labels, (height, width)
    )


class PlacedImages:
    """Every example placed on the canvas: computed once and kept when they fit in memory
    (`max_cached_bytes`), else placed again whenever a batch needs them."""

    def __init__(
        self,
        examples: Sequence[Example],
        concepts: Sequence[str],
        size: int,
        keep_aspect_ratio: bool,
        max_cached_bytes: int = MAX_CACHED_IMAGE_BYTES,
    ) -> None:
        self.examples, self.concepts = examples, list(concepts)
        self.size, self.keep_aspect_ratio = size, keep_aspect_ratio
        self.cache: list[Placed] | None = None
        if len(examples) * RGB_CHANNELS * size * size <= max_cached_bytes:
            self.cache = [self._place(row) for row in range(len(examples))]

    def _place(self, row: int) -> Placed:
        return place(self.examples[row], self.concepts, self.size, self.keep_aspect_ratio)

    def __getitem__(self, row: int) -> Placed:
        return self.cache[row] if self.cache is not None else self._place(row)


def random_resize(placed: Placed, lower: float, upper: float, generator: torch.Generator) -> Placed:
    """The content scaled by a factor drawn from [lower, upper], put back on the square at a
    random place (cropped where it overflows); boxes scaled, shifted, clipped, and dropped when
    the crop leaves less than MIN_BOX_SIDE_PX of them."""
    draws = torch.rand(3, generator=generator).tolist()
    if upper <= lower or (lower == 1.0 and upper == 1.0):
        return placed
    factor = lower + (upper - lower) * draws[0]
    size = placed.pixels.shape[-1]
    height, width = placed.content
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    content = placed.pixels[:, :height, :width].float()[None]
    scaled = (
        torch.nn.functional.interpolate(
            content, size=(new_h, new_w), mode="bilinear", align_corners=False
        )[0]
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )
    # Where the scaled content's top-left lands: anywhere it fits, or a crop of it.
    shift_y = round(draws[1] * (size - new_h))
    shift_x = round(draws[2] * (size - new_w))
    canvas = torch.full_like(placed.pixels, PAD_VALUE)
    top, left = max(0, shift_y), max(0, shift_x)
    src_top, src_left = max(0, -shift_y), max(0, -shift_x)
    rows, cols = min(size - top, new_h - src_top), min(size - left, new_w - src_left)
    canvas[:, top : top + rows, left : left + cols] = scaled[
        :, src_top : src_top + rows, src_left : src_left + cols
    ]
    boxes = placed.boxes * torch.tensor([new_w / width, new_h / height] * 2)
    boxes = (boxes + torch.tensor([shift_x, shift_y] * 2, dtype=torch.float32)).clamp(0, size)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE_PX) & (
        (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE_PX
    )
    content_h, content_w = min(size, top + rows), min(size, left + cols)
    return Placed(canvas, boxes[keep], placed.labels[keep], (content_h, content_w))


def flip(placed: Placed) -> Placed:
    """Mirrored left to right on the square, boxes with it."""
    size = placed.pixels.shape[-1]
    boxes = placed.boxes.clone()
    boxes[:, 0], boxes[:, 2] = size - placed.boxes[:, 2], size - placed.boxes[:, 0]
    return Placed(placed.pixels.flip(-1), boxes, placed.labels, placed.content)


def detection_batch(
    items: Sequence[Placed], device: str
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[tuple[int, int]]]:
    """(images as [0, 1] floats, targets with boxes and labels, each image's canvas size)."""
    images = [item.pixels.to(device).float() / 255.0 for item in items]
    targets = [{"boxes": item.boxes.to(device), "labels": item.labels.to(device)} for item in items]
    sizes = [(int(item.pixels.shape[-2]), int(item.pixels.shape[-1])) for item in items]
    return images, targets, sizes
