"""Data helpers the fine-tuning templates share: label targets, input validation and the
invalid-data tolerance, a seeded train/validation split, image/text batches (Pillow and torch).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from modelmill.training.contract import Example, InputKind, InvalidInput

POSITIVE_AT = 0.5  # a concept value above this is a positive label, otherwise a negative one
MAX_CACHED_IMAGE_BYTES = (
    2 << 30
)  # decoded images kept in memory up to this; beyond, decode per batch
DECODE_WORKERS = 2
_NEGATIVES_ONLY = -1  # stratum of inputs labelled only with negatives
RGB_CHANNELS = 3


# ---- labels -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Targets:
    """Per input and concept: `values` 1/0, and `mask` 1 where the cell counts (loss, metrics)."""

    values: np.ndarray
    mask: np.ndarray

    def usable_rows(self) -> list[int]:
        return [int(row) for row in np.nonzero(self.mask.any(axis=1))[0]]


def label_targets(examples: Sequence[Example], concepts: Sequence[str]) -> Targets:
    """Targets from labels: a labelled concept is a positive or a negative as labelled (inputs
    labelled 0 are negatives); an unlabelled concept counts as a negative when the input is
    positive for another concept (a photo labelled "cat" is taken to be no "dog"), otherwise it is
    left out, since nobody said either way."""
    index = {concept: column for column, concept in enumerate(concepts)}
    values = np.zeros((len(examples), len(concepts)), np.float32)
    mask = np.zeros_like(values)
    for row, example in enumerate(examples):
        for concept, value in example.concepts.items():
            if concept in index:
                values[row, index[concept]] = 1.0 if value > POSITIVE_AT else 0.0
                mask[row, index[concept]] = 1.0
        if values[row].any():
            mask[row] = 1.0
    return Targets(values, mask)


# ---- validation -------------------------------------------------------------


def _problem(example: Example, kind: InputKind) -> str | None:
    if example.kind != kind:
        return f"is {example.kind} input; this template trains on {kind} inputs"
    if not example.concepts:
        return "has no concept labels"
    try:
        content = example.load()
    except Exception as error:  # any loader failure makes the input unusable, whatever it was
        return f"could not be read or decoded: {error}"
    if kind == "image":
        if not isinstance(content, Image.Image):
            return f"did not decode to an image (got {type(content).__name__})"
        try:
            content.load()
        except Exception as error:  # Pillow raises many types for truncated or corrupt files
            return f"is not a decodable image: {error}"
        if min(content.size) < 1:
            return "is an empty image"
    elif not isinstance(content, str) or not content.strip():
        return "is an empty text"
    return None


def validate_examples(examples: Sequence[Example], kind: InputKind) -> list[InvalidInput]:
    """The inputs a template cannot use and why: wrong kind, no labels, undecodable content."""
    invalid = []
    for example in examples:
        if (reason := _problem(example, kind)) is not None:
            invalid.append(InvalidInput(example.input_id, reason))
    return invalid


# ---- the train/validation split ---------------------------------------------------------------


def _stable_key(input_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{input_id}".encode()).digest()


def split_train_validation(
    input_ids: Sequence[str], targets: Targets, fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Row indexes (train, validation), stratified by each input's first positive concept.

    Depends only on the input ids, labels and seed (not on their order), so a resumed job gets
    the same split. Each stratum of two or more inputs gives `fraction` of them (at least one)
    to validation and keeps at least one for training.
    """
    rows = targets.usable_rows()
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    strata: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        positives = np.nonzero(targets.values[row])[0]
        strata[int(positives[0]) if len(positives) else _NEGATIVES_ONLY].append(row)
    train, validation = [], []
    for stratum in strata.values():
        stratum.sort(key=lambda row: _stable_key(input_ids[row], seed))
        count = min(len(stratum) - 1, max(1, round(fraction * len(stratum))))
        validation += stratum[:count]
        train += stratum[count:]
    if not validation:  # every stratum is a single input: still hold one out
        train.sort(key=lambda row: _stable_key(input_ids[row], seed))
        validation, train = train[:1], train[1:]
    return sorted(train), sorted(validation)


def epoch_order(rows: Sequence[int], generator: torch.Generator) -> list[int]:
    """The rows in this epoch's shuffled order."""
    permutation = torch.randperm(len(rows), generator=generator).tolist()
    return [rows[i] for i in permutation]


def batched(order: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield list(order[start : start + batch_size])


def training_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches for a training step: a lone last input joins the batch before it, since batch
    norm cannot train on a batch of one (at small image sizes the last feature maps are 1×1)."""
    batches = list(batched(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        lone = batches.pop()
        batches[-1] += lone
    return batches


# ---- images -------------------------------------------------------------------------------------


def square_pixels(image: Image.Image, size: int) -> np.ndarray:
    """RGB, shorter side resized to `size`, centre crop: a (size, size, 3) uint8 array."""
    image = image.convert("RGB")
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


class _DecodedImages(torch.utils.data.Dataset):
    def __init__(self, examples: Sequence[Example], size: int) -> None:
        self.examples = examples
        self.size = size

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, row: int) -> torch.Tensor:
        pixels = square_pixels(self.examples[row].load(), self.size)
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()


class ImageBatches:
    """uint8 (N, 3, size, size) image batches: decoded once and kept in memory when they fit in
    `max_cached_bytes`, else decoded per batch by worker processes. With `pin` (training on a
    GPU) they sit in page-locked memory, so copies to the GPU run asynchronously."""

    def __init__(
        self,
        examples: Sequence[Example],
        size: int,
        max_cached_bytes: int = MAX_CACHED_IMAGE_BYTES,
        pin: bool = False,
    ) -> None:
        self.decoded = _DecodedImages(examples, size)
        self.pin = pin
        self.cache: torch.Tensor | None = None
        if len(examples) * RGB_CHANNELS * size * size <= max_cached_bytes:
            self.cache = torch.stack([self.decoded[row] for row in range(len(examples))])
            if pin:
                self.cache = self.cache.pin_memory()

    def batches(self, batches: Sequence[Sequence[int]]) -> Iterator[torch.Tensor]:
        """The images of each batch of rows, in order."""
        if self.cache is not None:
            for rows in batches:
                yield self.cache[list(rows)]
            return
        loader = torch.utils.data.DataLoader(
            self.decoded,
            batch_sampler=[list(rows) for rows in batches],
            num_workers=DECODE_WORKERS,
            pin_memory=self.pin,
        )
        yield from loader


def flip_images(
    images: torch.Tensor, probability: float, direction: str, generator: torch.Generator
) -> torch.Tensor:
    """Flips each image of an (N, C, H, W) batch with `probability`, horizontally or vertically."""
    if probability <= 0:
        return images
    chosen = torch.rand(len(images), generator=generator) < probability
    if not chosen.any():
        return images
    dim = -1 if direction == "horizontal" else -2
    flipped = images.clone()
    flipped[chosen] = images[chosen].flip(dim)
    return flipped


def normalise_images(
    images: torch.Tensor, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float, (pixel / 255 - mean) / std per channel."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


# ---- texts --------------------------------------------------------------------------------------


def token_ids(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text's token ids (special tokens included), truncated to `max_length`."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)
    return [list(ids) for ids in encoded["input_ids"]]


def pad_token_batch(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest sequence of the batch."""
    length = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids, attention
