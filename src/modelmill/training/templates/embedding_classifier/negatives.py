"""Generic negative embeddings per base embedder, added as all-negative rows when a training
enriches its dataset; built into small float16 .npz files next to this module.

Build: python -m modelmill.training.templates.embedding_classifier.negatives
The corpora are what installed packages carry. Text: about 1,700 English sentences of the Python
documentation (the stdlib's `pydoc_data.topics`). Images: 1,000 random crops, scales, flips and
colour changes of scikit-learn's two sample photos (`load_sample_images`: a temple, a flower).
"""

from __future__ import annotations

import argparse
import logging
import re
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from modelmill.training.embedders import Embedder, default_embedder, get_embedder

log = logging.getLogger("modelmill")

NEGATIVES_DIR = Path(__file__).resolve().parent
SEED = 0
TEXT_NEGATIVES = 2000
IMAGE_NEGATIVES = 1000
MIN_SENTENCE_CHARS = 40
MAX_SENTENCE_CHARS = 300
MIN_LETTER_SHARE = 0.8  # sentences mostly of letters and spaces, not code
MIN_CROP_AREA = 0.05
MAX_ASPECT = 4 / 3
MIN_ENHANCE, MAX_ENHANCE = 0.6, 1.4
GRAYSCALE_SHARE = 0.15
IMAGE_SIDE = 256


def negatives_path(embedder_id: str) -> Path:
    return NEGATIVES_DIR / f"{embedder_id}.npz"


@cache
def load_negatives(embedder_id: str, version: str) -> np.ndarray | None:
    """The generic negatives of an embedder as float32 (n, dim), or None when there are none or
    they were built with another version of the embedder (their vectors would not match)."""
    path = negatives_path(embedder_id)
    if not path.exists():
        log.info("no generic negatives for embedder %s; training without them", embedder_id)
        return None
    with np.load(path) as data:
        built_for = str(data["version"])
        if built_for != version:
            log.warning(
                "generic negatives of %s were built for version %s, not %s; not using them",
                embedder_id,
                built_for,
                version,
            )
            return None
        return data["embeddings"].astype(np.float32)


def text_corpus(count: int, seed: int = SEED) -> list[str]:
    """Up to `count` distinct English prose sentences from the stdlib's Python documentation."""
    from pydoc_data.topics import topics

    sentences = set()
    for text in topics.values():
        for candidate in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            letters = sum(ch.isalpha() or ch.isspace() for ch in candidate)
            if (
                MIN_SENTENCE_CHARS <= len(candidate) <= MAX_SENTENCE_CHARS
                and letters >= MIN_LETTER_SHARE * len(candidate)
                and candidate[0].isupper()
            ):
                sentences.add(candidate)
    ordered = sorted(sentences)
    rng = np.random.default_rng(seed)
    return [ordered[i] for i in rng.permutation(len(ordered))[:count]]


def _random_view(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    width, height = photo.size
    area = width * height * rng.uniform(MIN_CROP_AREA, 1.0)
    aspect = np.exp(rng.uniform(-np.log(MAX_ASPECT), np.log(MAX_ASPECT)))
    crop_w = int(min(width, max(16, np.sqrt(area * aspect))))
    crop_h = int(min(height, max(16, np.sqrt(area / aspect))))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    view = photo.crop((left, top, left + crop_w, top + crop_h)).resize((IMAGE_SIDE, IMAGE_SIDE))
    if rng.random() < 0.5:
        view = ImageOps.mirror(view)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        view = enhancer(view).enhance(rng.uniform(MIN_ENHANCE, MAX_ENHANCE))
    if rng.random() < GRAYSCALE_SHARE:
        view = ImageOps.grayscale(view).convert("RGB")
    return view


def image_corpus(count: int, seed: int = SEED) -> list[Image.Image]:
    """`count` random views (crop, scale, flip, colour) of scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(array) for array in load_sample_images().images]
    rng = np.random.default_rng(seed)
    return [_random_view(photos[i % len(photos)], rng) for i in range(count)]


def build_negatives(embedder: Embedder, count: int | None = None) -> Path:
    """Embeds the generic corpus of the embedder's input kind and writes its .npz file."""
    if embedder.input_kind == "text":
        items: list = text_corpus(count or TEXT_NEGATIVES)
    else:
        items = image_corpus(count or IMAGE_NEGATIVES)
    embeddings = embedder.embed(items).astype(np.float16)
    path = negatives_path(embedder.id)
    np.savez_compressed(path, embeddings=embeddings, version=np.array(embedder.version))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedder", action="append", help="embedder id (default: built-ins)")
    parser.add_argument("--count", type=int, help="rows per embedder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    embedders = (
        [get_embedder(i) for i in args.embedder]
        if args.embedder
        else [
            default_embedder("text"),
            default_embedder("image"),
        ]
    )
    for embedder in embedders:
        path = build_negatives(embedder, args.count)
        print(f"{embedder.id}: {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
