"""Fine-tuning the fast visual-classifier template (EfficientNet-Lite0) on scikit-learn's digits
(8×8 grey images upscaled to RGB): validation accuracy from ImageNet weights vs from scratch with
the same recipe, and the peak memory (RSS) of one training at the template's default image size
and batch size, each training in its own process. Prints tables; asserts nothing.

Run: .venv/bin/python bench/finetune_digits.py [--image-size 64] [--epochs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

KIB = 1024
DIGIT_LEVELS = 16  # load_digits pixels are 0..16
PIXEL_MAX = 255
MEMORY_EPOCHS = 1


def digit_image(pixels: np.ndarray) -> Image.Image:
    grey = (pixels * (PIXEL_MAX / DIGIT_LEVELS)).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def digits_data(limit: int | None = None):  # -> TrainingData
    from sklearn.datasets import load_digits

    from modelmill.training.contract import Example, TrainingData

    digits = load_digits()
    images, labels = digits.images[:limit], digits.target[:limit]
    examples = [
        Example(f"digit-{n}", "image", partial(digit_image, image), {str(label): 1.0})
        for n, (image, label) in enumerate(zip(images, labels, strict=True))
    ]
    return TrainingData(examples, [str(d) for d in range(10)], concepts_mutually_exclusive=True)


def train_once(overrides: dict[str, Any], threads: int) -> dict[str, Any]:
    """One training and evaluation (in a child process); peak RSS of that process."""
    import torch

    from modelmill.training.contract import TrainContext
    from modelmill.training.templates.visual_classifier import EFFICIENTNET_LITE0_CLASSIFIER as T

    if threads:
        torch.set_num_threads(threads)
    data = digits_data(overrides.pop("limit", None))
    params = T.Params(**overrides, concepts_mutually_exclusive=True)
    work = Path(tempfile.mkdtemp())
    (work / "checkpoints").mkdir()
    ctx = TrainContext("cpu", work, work / "checkpoints", lambda p, **m: None, lambda: False, None)
    started = time.perf_counter()
    artifacts = T.train(ctx, data, params).artifacts
    seconds = time.perf_counter() - started
    summary = T.evaluate(ctx, data, params, artifacts)["summary"]
    return {
        "accuracy": summary["top1_accuracy"],
        "seconds": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB,
        "params": params,
    }


def in_child(overrides: dict[str, Any], threads: int) -> dict[str, Any]:
    # spawn: the child's peak RSS is this training's alone, not the parent's imports
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(train_once, (overrides, threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    recipe = {"image_size": args.image_size, "num_epochs": args.epochs,
              "early_stopping_patience": 0}  # fmt: skip
    print(f"load_digits, 1797 images at {args.image_size}px, {args.epochs} epochs, "
          f"20% held out; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'start':<12} {'val top-1':>9} {'train s':>8} {'peak RSS MiB':>13}")
    for start in ("ImageNet-1k", "None"):
        result = in_child({**recipe, "pretrained_weights": start}, args.threads)
        print(f"{start:<12} {result['accuracy']:>9.3f} {result['seconds']:>8.0f} "
              f"{result['peak_rss_mib']:>13.0f}")  # fmt: skip

    # Peak memory at the template's defaults (image size and batch size), one epoch.
    result = in_child({"num_epochs": MEMORY_EPOCHS, "early_stopping_patience": 0}, args.threads)
    params = result["params"]
    print(f"\ndefault template (image_size {params.image_size}, batch_size {params.batch_size}), "
          f"{MEMORY_EPOCHS} epoch on digits: peak RSS {result['peak_rss_mib']:.0f} MiB, "
          f"{result['seconds']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
