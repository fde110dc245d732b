"""Visual embedder: recall@1 / mAP@R of frozen ImageNet EfficientNet-Lite0 features vs the
trained embedders on held-out images of scikit-learn's digits (1,797 8×8 handwritten digits,
BSD-3-Clause, shipped with scikit-learn), on the digits trained on and on digits held out of
training entirely; and the predictor's embedding throughput vs the raw model call.

    PYTHONPATH=src .venv/bin/python bench/embedder.py [--per-digit 60] [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelmill.training.contract import Output, TrainContext
from modelmill.training.data import normalise_images, square_pixels
from modelmill.training.tasks.embedding import EMBEDDING
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_classifier.model import create_model, normalisation
from modelmill.training.templates.visual_embedder import (
    ANGULAR_MARGIN_EMBEDDER,
    MULTI_SIMILARITY_EMBEDDER,
)
from modelmill.training.weights import find_timm_weights

IMAGE_SIZE = 64
THROUGHPUT_IMAGES = 256


def digits_data(per_digit: int):
    from PIL import Image
    from sklearn.datasets import load_digits

    from modelmill.training.contract import Example, TrainingData
    from modelmill.training.tasks.samples import decoder, encode_jpeg

    digits = load_digits()
    examples = []
    for digit in range(10):
        for n, row in enumerate(np.nonzero(digits.target == digit)[0][:per_digit]):
            pixels = (digits.images[row] * (255 / 16)).astype(np.uint8)
            big = np.asarray(Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE)))
            load = decoder(encode_jpeg(np.repeat(big[..., None], 3, axis=2)))
            examples.append(Example(f"d{digit}-{n}", "image", load, {f"digit-{digit}": 1.0}))
    return TrainingData(examples, [f"digit-{d}" for d in range(10)])


def context(work: Path) -> TrainContext:
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda progress, **metrics: None,
        cancelled=lambda: False,
        embeddings=lambda examples, model_id: np.zeros((len(examples), 1)),
    )


def frozen_outputs(examples) -> list[Output]:
    location = find_timm_weights(EFFICIENTNET_LITE0.weights, None).found
    model = create_model(EFFICIENTNET_LITE0, 0, location).eval()
    mean, std = normalisation(EFFICIENTNET_LITE0)
    pixels = np.stack([square_pixels(e.load(), IMAGE_SIZE) for e in examples])
    with torch.no_grad():
        images = normalise_images(torch.from_numpy(pixels).permute(0, 3, 1, 2), mean, std)
        vectors = torch.nn.functional.normalize(model(images), dim=1).numpy()
    return [Output(embedding=v) for v in vectors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-digit", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-item-lrate", type=float, default=3.125e-05)
    parser.add_argument("--only", help="one template name (default: both)")
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load {Path('/proc/loadavg').read_text().split()[:3]}, "
        f"torch threads {torch.get_num_threads()}"
    )
    data = digits_data(args.per_digit)
    settings = {
        "image_size": IMAGE_SIZE,
        "num_epochs": args.epochs,
        "batch_size": 32,
        "per_item_lrate": args.per_item_lrate,
        "validation_fraction": 0.3,
        "unseen_concepts_fraction": 0.3,
        "embedding_size": 128,
        "early_stopping_patience": 0,
    }
    print("\n| embedder | queries | queries / held out | recall@1 | recall@5 | mAP@R | train s |")
    print("|---|---|--:|--:|--:|--:|--:|")
    throughput = ""
    for template in (ANGULAR_MARGIN_EMBEDDER, MULTI_SIMILARITY_EMBEDDER):
        if args.only and template.name != args.only:
            continue
        with tempfile.TemporaryDirectory() as work:
            params = template.Params(**settings)
            started = time.perf_counter()
            artifacts = template.train(context(Path(work)), data, params).artifacts
            seconds = time.perf_counter() - started
            predictor = template.load(artifacts)
            metrics = predictor.evaluate(template.name, data)
        user = metrics["extended_metrics"]["user_metrics"]
        unseen = set(user["unseen_concepts"])
        held = [e for e in data.examples if e.input_id in set(predictor.meta["validation_ids"])]
        # the same queries among the same held-out images, with frozen features
        frozen = EMBEDDING.metrics(
            held, frozen_outputs(held), data.concepts, False, {"unseen_concepts": sorted(unseen)}
        )["extended_metrics"]["user_metrics"]
        for group in ("seen", "unseen"):
            queries = sum((next(iter(e.concepts)) in unseen) == (group == "unseen") for e in held)
            label = "trained on" if group == "seen" else f"never seen ({', '.join(sorted(unseen))})"
            for who, values, took in (
                ("frozen ImageNet Lite0 (1280-d)", frozen[group], "—"),
                (f"{template.name} (128-d)", user[group], f"{seconds:.0f}"),
            ):
                print(
                    f"| {who} | {label} | {queries} of {len(held)} | "
                    f"{values['recall_at_1']:.3f} | {values['recall_at_5']:.3f} | "
                    f"{values['map_at_r']:.3f} | {took} |",
                    flush=True,
                )
        if template is ANGULAR_MARGIN_EMBEDDER:
            examples = [data.examples[i % len(data.examples)] for i in range(THROUGHPUT_IMAGES)]
            predictor.embed(examples[:32])  # warm-up
            started = time.perf_counter()
            predictor.predict(examples, {})
            through_predictor = THROUGHPUT_IMAGES / (time.perf_counter() - started)
            pixels = np.stack([square_pixels(e.load(), IMAGE_SIZE) for e in examples])
            images = normalise_images(
                torch.from_numpy(pixels).permute(0, 3, 1, 2), predictor.mean, predictor.std
            )
            started = time.perf_counter()
            with torch.inference_mode():
                for start in range(0, THROUGHPUT_IMAGES, 32):
                    predictor.net(images[start : start + 32])
            raw = THROUGHPUT_IMAGES / (time.perf_counter() - started)
            throughput = (
                f"\nThroughput ({THROUGHPUT_IMAGES} images, {IMAGE_SIZE} px, batch 32): "
                f"predictor.predict {through_predictor:.0f} img/s (decode + resize + model), "
                f"raw model call on prepared tensors {raw:.0f} img/s, "
                f"ratio {through_predictor / raw:.2f}"
            )
    print(throughput)


if __name__ == "__main__":
    main()
