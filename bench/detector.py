"""Visual-detector benchmarks (issue 11), short, one thread:

- `heads`: the fast-template candidates (RetinaNet, SSDLite on Lite0-FPN) trained the same
  number of steps on generated shapes, mAP on other generated images, and mAP per minute;
  also each from random weights (what ImageNet weights buy).
- `step`: seconds per training step through modelmill's loop (finetune/loop.fit with the
  detection objective and batches) against a bare torchvision loop (same model, same batches,
  AdamW, no checkpoints), in one run; the ratio is what the shared loop costs.
- `coco`: pycocotools against faster-coco-eval on the same boxes (same numbers, time).
- peak memory (ru_maxrss) of the process.

Run: MODELMILL_JOB_THREADS=1 PYTHONPATH=src .venv/bin/python bench/detector.py heads|step|coco
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from modelmill.training.contract import Example, TrainContext, predict_all
from modelmill.training.registry import find_template
from modelmill.training.tasks import samples
from modelmill.training.tasks.coco_eval import Box, coco_evaluate
from modelmill.training.tasks.detection import COLOURS, DETECTION, shapes_image

THREADS = int(os.environ.get("MODELMILL_JOB_THREADS", "1"))
TEST_SEED_BASE = 10_000  # test images: seeds the training sample set never uses


def test_examples(count: int, size: int) -> list[Example]:
    examples = []
    for i in range(count):
        data, regions = shapes_image(COLOURS, size, TEST_SEED_BASE + i)
        examples.append(
            Example(f"test-{i}", "image", samples.decoder(data), regions=tuple(regions))
        )
    return examples


def context(work: Path) -> TrainContext:
    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda *a, **k: None,
        cancelled=lambda: False,
        embeddings=None,  # type: ignore[arg-type]
    )


def heads(size: int = 128, epochs: int = 3, count: int = 64) -> None:
    data = DETECTION.sample_data("image", count, size * 4 // 3)
    tests = test_examples(32, size * 4 // 3)
    for name in ("EfficientNet_Lite0_RetinaNet_Fast", "MMDetection_SSD", "MMDetection_YoloF"):
        template = find_template("visual-detector", name)
        for weights in ("ImageNet-1k", "None"):
            params = template.Params(
                image_size=size,
                batch_size=8,
                num_epochs=epochs,
                min_samples_per_epoch=0,
                validation_fraction=0.0,
                pretrained_weights=weights,
                early_stopping_patience=0,
            )
            with tempfile.TemporaryDirectory() as work:
                started = time.perf_counter()
                result = template.train(context(Path(work)), data, params)
                seconds = time.perf_counter() - started
                predictor = template.load(result.artifacts)
                outputs = predictor.predict(tests, predict_all(data.concepts))
                metrics = DETECTION.metrics(tests, outputs, data.concepts, False)
            summary = metrics["summary"]
            print(
                json.dumps(
                    {
                        "template": name,
                        "weights": weights,
                        "image_size": size,
                        "train_images": count,
                        "epochs": epochs,
                        "train_s": round(seconds, 1),
                        "map_50": round(summary["mean_avg_precision_iou_50"], 3),
                        "map": round(summary["mean_avg_precision_iou_range"], 3),
                        "map_per_minute": round(
                            summary["mean_avg_precision_iou_range"] / (seconds / 60), 3
                        ),
                    }
                ),
                flush=True,
            )


def step(name: str = "EfficientNet_Lite0_RetinaNet_Fast", size: int = 320, steps: int = 8) -> None:
    """Mean step time after one warm-up step: modelmill's loop vs a bare loop."""
    from modelmill.training.finetune.fields import LoopSettings
    from modelmill.training.finetune.loop import LoopData, fit
    from modelmill.training.templates.visual_classifier.model import normalisation
    from modelmill.training.templates.visual_detector.data import PlacedImages, detection_batch
    from modelmill.training.templates.visual_detector.model import build_detector, lite0_features
    from modelmill.training.templates.visual_detector.training import forward

    template = find_template("visual-detector", name)
    batch = 2
    data = DETECTION.sample_data("image", batch * (steps + 1), size * 4 // 3)
    images = PlacedImages(list(data.examples), data.concepts, size, True)
    batches = [
        detection_batch([images[r] for r in range(i * batch, (i + 1) * batch)], "cpu")
        for i in range(steps + 1)
    ]
    mean, std = normalisation(template.backbone)

    def fresh():
        torch.manual_seed(0)
        return build_detector(
            template.layout,
            len(data.concepts),
            size,
            mean,
            std,
            lite0_features(template.backbone.weights, None),
        )

    # bare: the model, AdamW, zero_grad/backward/step, nothing else
    model = fresh()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    times = []
    for images_, targets, _ in batches:
        started = time.perf_counter()
        loss = sum(forward(model, images_, targets).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    bare = float(np.mean(times[1:]))

    # modelmill: finetune.loop.fit with the detection objective (one epoch, no validation,
    # checkpoints written at the epoch end, timed per step from the batch generator)
    model = fresh()
    stamps: list[float] = []

    def train_batches(generator):
        for b in batches:
            stamps.append(time.perf_counter())
            yield b
        stamps.append(time.perf_counter())

    settings = LoopSettings(1, 1e-4, 1e-4, 0.9, 0.0, 0, 0, False)
    with tempfile.TemporaryDirectory() as work:
        fit(
            context(Path(work)),
            model,
            DETECTION.objective(forward, data.concepts),
            LoopData(train_batches, len(batches), None),
            settings,
            lambda *a, **k: None,
        )
    loop = float(np.mean(np.diff(stamps)[1:]))
    print(
        json.dumps(
            {
                "template": name,
                "image_size": size,
                "batch": batch,
                "steps": steps,
                "bare_step_s": round(bare, 3),
                "loop_step_s": round(loop, 3),
                "ratio": round(loop / bare, 3),
            }
        ),
        flush=True,
    )


def coco(images: int = 2000) -> None:
    rng = np.random.default_rng(0)
    concepts = ["a", "b", "c"]
    truth, predictions = [], []
    for _ in range(images):
        true = []
        for _ in range(int(rng.integers(1, 5))):
            top, left = rng.random() * 0.7, rng.random() * 0.7
            true.append(
                Box(
                    str(rng.choice(concepts)),
                    top,
                    left,
                    top + 0.05 + rng.random() * 0.25,
                    left + 0.05 + rng.random() * 0.25,
                )
            )
        truth.append(true)
        predictions.append(
            [
                Box(
                    b.concept if rng.random() < 0.8 else str(rng.choice(concepts)),
                    b.top + rng.normal(0, 0.02),
                    b.left + rng.normal(0, 0.02),
                    b.bottom + rng.normal(0, 0.02),
                    b.right + rng.normal(0, 0.02),
                    float(rng.random()),
                )
                for b in true
                for _ in range(10)
            ]
        )
    for backend in ("pycocotools", "faster_coco_eval"):
        started = time.perf_counter()
        result = coco_evaluate(truth, predictions, concepts, backend)
        print(
            json.dumps(
                {
                    "backend": backend,
                    "images": images,
                    "predictions": sum(map(len, predictions)),
                    "seconds": round(time.perf_counter() - started, 3),
                    "map": round(result.average_precision(), 6),
                    "map_50": round(result.average_precision(0.5), 6),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    torch.set_num_threads(THREADS)
    logging.basicConfig(level=logging.WARNING)
    print(
        json.dumps(
            {
                "load": Path("/proc/loadavg").read_text().split()[:3],
                "threads": THREADS,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            }
        ),
        flush=True,
    )
    {"heads": heads, "step": step, "coco": coco}[sys.argv[1]](*map(int, sys.argv[2:]))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_memory_mb": round(peak_mb)}), flush=True)
