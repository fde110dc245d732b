"""Embedding throughput: modelmill's embedders (batching, preprocessing, pooling, normalising)
against the underlying model called directly with the same batch size, for text and images.

Run: .venv/bin/python bench/embedding_throughput.py
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from modelmill.training.compat import ensure_torchvision
from modelmill.training.embedders import IMAGE_BATCH_SIZE, TEXT_BATCH_SIZE, get_embedder
from modelmill.training.templates.embedding_classifier.negatives import text_corpus

TEXTS = 256
IMAGES = 64
REPEATS = 3
SEED = 0
CROP_SIDE = 300


def interleaved_medians(direct, modelmill) -> tuple[float, float]:
    """Median seconds of each, timed in turns so that other work on a shared machine slows
    both alike."""
    direct(), modelmill()  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(REPEATS):
        for run, bucket in ((direct, times[0]), (modelmill, times[1])):
            started = time.perf_counter()
            run()
            bucket.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def text_rows() -> list[tuple[str, float, int]]:
    embedder = get_embedder("all-minilm-l6-v2")
    texts = text_corpus(TEXTS)
    embedder.embed(texts[:2])  # load
    tokenizer, model, _ = embedder._loaded.get()

    def direct() -> None:
        # The plain loop people write: batches in the given order, mean pooling, normalising.
        for start in range(0, len(texts), TEXT_BATCH_SIZE):
            batch = tokenizer(
                texts[start : start + TEXT_BATCH_SIZE],
                padding=True,
                truncation=True,
                max_length=embedder.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            torch.nn.functional.normalize(pooled, dim=1)

    direct_seconds, modelmill_seconds = interleaved_medians(direct, lambda: embedder.embed(texts))
    return [
        ("text, direct transformers loop", direct_seconds, len(texts)),
        ("text, modelmill embedder.embed", modelmill_seconds, len(texts)),
    ]


def image_rows() -> list[tuple[str, float, int]]:
    embedder = get_embedder("efficientnet-lite0")
    rng = np.random.default_rng(SEED)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    images = []
    for i in range(IMAGES):
        photo = photos[i % len(photos)]
        left, top = (int(rng.integers(0, s - CROP_SIDE)) for s in photo.size)
        images.append(photo.crop((left, top, left + CROP_SIDE, top + CROP_SIDE)))
    embedder.embed(images[:1])  # load
    model, _ = embedder._loaded.get()
    tensors = torch.from_numpy(np.stack([embedder.preprocess(image) for image in images]))

    def direct() -> None:
        # The model alone on tensors made beforehand: no decoding, resizing or cropping.
        for start in range(0, len(tensors), IMAGE_BATCH_SIZE):
            with torch.inference_mode():
                features = model.forward_head(
                    model.forward_features(tensors[start : start + IMAGE_BATCH_SIZE]),
                    pre_logits=True,
                )
            torch.nn.functional.normalize(features, dim=1)

    direct_seconds, modelmill_seconds = interleaved_medians(direct, lambda: embedder.embed(images))
    return [
        ("image, direct timm model (preprocessed tensors)", direct_seconds, len(images)),
        ("image, modelmill embedder.embed (PIL images)", modelmill_seconds, len(images)),
    ]


def main() -> None:
    ensure_torchvision()
    rows = text_rows() + image_rows()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
        f"torch threads {torch.get_num_threads()}, median of {REPEATS}; "
        f"batch sizes text {TEXT_BATCH_SIZE}, image {IMAGE_BATCH_SIZE}"
    )
    print("| path | items | seconds | items/s | modelmill / direct |")
    print("|---|---:|---:|---:|---:|")
    for index, (name, seconds, count) in enumerate(rows):
        ratio = ""
        if index % 2:
            ratio = f"{rows[index - 1][1] / seconds:.2f}x"
        print(f"| {name} | {count} | {seconds:.2f} | {count / seconds:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
