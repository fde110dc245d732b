"""Transfer learning on scikit-learn's digits: the 8x8 images upscaled to 64x64 RGB, embedded
with EfficientNet-Lite0, then the embedding-classifier template's own 5-fold cross-validation,
with enrich_dataset Automatic vs Disabled, concepts exclusive (softmax) or not (sigmoid).

Run: .venv/bin/python bench/digits_transfer.py [--cache /tmp/digits-embeddings.npy]
(--cache keeps the embeddings, minutes of CPU, between runs.)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelmill.training.contract import Example, TrainContext, TrainingData
from modelmill.training.embedders import get_embedder
from modelmill.training.templates.embedding_classifier import EMBEDDING_CLASSIFIER, Params

SIDE = 64
MAX_PIXEL = 16.0  # load_digits pixel values run from 0 to 16
FOLDS = 5
SEED = 0


def digit_images() -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    digits = load_digits()
    images = [
        Image.fromarray((image / MAX_PIXEL * 255).astype(np.uint8))
        .resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        .convert("RGB")
        for image in digits.images
    ]
    return images, digits.target, digits.data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, help="a .npy file for the embeddings")
    args = parser.parse_args()
    images, labels, pixels = digit_images()
    concepts = [f"digit-{d}" for d in range(10)]
    examples = [
        Example(f"d{i}", "image", lambda image=image: image, {concepts[label]: 1.0})
        for i, (image, label) in enumerate(zip(images, labels, strict=True))
    ]

    started = time.perf_counter()
    cached = bool(args.cache and args.cache.exists())
    if cached:
        vectors = np.load(args.cache)
    else:
        vectors = get_embedder("efficientnet-lite0").embed(images)
        if args.cache:
            np.save(args.cache, vectors)
    embed_seconds = time.perf_counter() - started
    by_id = {e.input_id: v for e, v in zip(examples, vectors, strict=True)}

    def embeddings(batch, model_id):
        return np.stack([by_id[e.input_id] for e in batch])

    rows = []
    for exclusive in (True, False):
        for enrich in ("Automatic", "Disabled"):
            work = Path(tempfile.mkdtemp())
            ctx = TrainContext(
                "cpu", work, work / "checkpoints", lambda *a, **k: None, lambda: False, embeddings
            )
            params = Params(enrich_dataset=enrich, concepts_mutually_exclusive=exclusive)
            data = TrainingData(examples, concepts, exclusive)
            started = time.perf_counter()
            metrics = EMBEDDING_CLASSIFIER.evaluate(ctx, data, params, work)
            seconds = time.perf_counter() - started
            summary = metrics["summary"]
            mode = "softmax (exclusive)" if exclusive else "sigmoid (not exclusive)"
            rows.append(
                (
                    f"modelmill, {mode}, enrich {enrich}",
                    summary["top1_accuracy"],
                    summary.get("macro_avg_roc_auc", 0.0),
                    summary.get("macro_avg_f1_score", 0.0),
                    seconds,
                )
            )

    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)
    for name, features in (("embeddings", vectors), ("raw 8x8 pixels", pixels)):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        started = time.perf_counter()
        accuracy = cross_val_score(model, features, labels, cv=folds).mean()
        rows.append(
            (
                f"reference: sklearn LogisticRegression on {name}",
                accuracy,
                None,
                None,
                time.perf_counter() - started,
            )
        )

    embedding = (
        "loaded from the cache"
        if cached
        else (f"took {embed_seconds:.1f} s ({len(images) / embed_seconds:.1f} images/s)")
    )
    print(
        f"{len(images)} digits as {SIDE}x{SIDE} RGB; {FOLDS}-fold CV; embedding {embedding}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("| configuration | top-1 accuracy | macro ROC AUC | macro F1 @0.5 | CV seconds |")
    print("|---|---:|---:|---:|---:|")
    for name, accuracy, auc, f1, seconds in rows:
        auc_text = "" if auc is None else f"{auc:.4f}"
        f1_text = "" if f1 is None else f"{f1:.4f}"
        print(f"| {name} | {accuracy:.4f} | {auc_text} | {f1_text} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
