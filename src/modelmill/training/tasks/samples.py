"""Sample inputs generated here, for the tasks' sample data (contract tests, calibration trials):
noisy colour images encoded as JPEG once and decoded on every load (as a blob read would be),
and texts about a topic. Deterministic for a given seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

JPEG_QUALITY = 90
IMAGE_ASPECT = 0.75  # generated images are 4:3
NOISE = 25  # ± per channel
COARSE_GRID = (6, 8)  # the low-frequency pattern under the colour, so images are not flat
COLOUR_WEIGHT = 0.7  # how much of each pixel is the concept's colour, the rest the pattern
DISTINCT = 32  # distinct inputs per sample set; larger sets cycle through them

FILLER = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "it",
    "with",
    "for",
    "on",
    "as",
    "was",
    "by",
    "this",
    "from",
    "at",
]


def image_height(width: int) -> int:
    return max(1, round(width * IMAGE_ASPECT))


def encode_jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def decoder(data: bytes) -> Callable[[], Image.Image]:
    """A loader that decodes `data` on every call, as loading an input from the blob store."""
    return lambda: Image.open(io.BytesIO(data)).convert("RGB")


def colour_pixels(rgb: Sequence[int], width: int, seed: int) -> np.ndarray:
    """A (height, width, 3) uint8 image mostly of colour `rgb`, with a coarse pattern and noise."""
    rng = np.random.default_rng(seed)
    height = image_height(width)
    coarse = Image.fromarray(rng.integers(0, 256, (*COARSE_GRID, 3), dtype=np.uint8))
    pattern = np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    mixed = COLOUR_WEIGHT * np.asarray(rgb, np.float32) + (1 - COLOUR_WEIGHT) * pattern
    noise = rng.integers(-NOISE, NOISE + 1, (height, width, 3))
    return np.clip(mixed + noise, 0, 255).astype(np.uint8)


def topic_text(words: Sequence[str], chars: int, seed: int) -> str:
    """About `chars` characters mixing a topic's words (two in five) with filler words."""
    rng = np.random.default_rng(seed)
    picked: list[str] = []
    while sum(len(w) + 1 for w in picked) < chars:
        pool = words if rng.random() < 0.4 else FILLER
        picked.append(str(pool[int(rng.integers(len(pool)))]))
    return " ".join(picked).capitalize() + "."


def colour_pixels_jpeg(rgb: Sequence[int], width: int, seed: int) -> bytes:
    return encode_jpeg(colour_pixels(rgb, width, seed))
