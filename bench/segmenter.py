"""The visual-segmenter templates' training step against a bare segmentation_models_pytorch /
PyTorch loop on the same model, data and batch size; mIoU after N epochs; peak memory. Prints
a table; asserts nothing.

Run: .venv/bin/python bench/segmenter.py [--repeats 2] [--threads 1] [--image-size 128]

Each run is its own child process (so its peak RSS is its own), template and bare alternating.
The template's time covers everything its loop does per epoch (progress, cancel checks, a
checkpoint written every epoch); the bare loop does the same forward, loss, backward and fused
AdamW step on the same cached batches with the same flips. The first epoch is warm-up: seconds
per step are over the remaining epochs. The fastest run of each side is shown (the least
disturbed on a shared machine) with the ratio of medians beside it.

The data are the segmentation task's drawn shapes (synthetic): no labelled segmentation set
ships in a package on the index that we found, so no real-data mIoU is measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCHS = 3  # the first is warm-up; the other two are timed
IMAGES, BATCH = 32, 4
EVAL_EPOCHS = 8  # the mIoU row: a training of this many epochs, then its held-out evaluation
KIB = 1024


def _context(work: Path, epoch_ends: list[float]):
    from modelmill.training.contract import TrainContext

    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        "cpu", work, work / "checkpoints", lambda progress, **metrics: None, lambda: False,
        None, save_checkpoint=lambda: epoch_ends.append(time.perf_counter()),
    )  # fmt: skip


def _template(name: str):
    from modelmill.training.registry import find_template

    template = find_template("visual-segmenter", name)
    assert template is not None, name
    return template


def template_run(name: str, size: int) -> dict[str, float]:
    from modelmill.training.tasks.segmentation import SEGMENTATION

    template = _template(name)
    data = SEGMENTATION.sample_data("image", IMAGES, size)
    params = template.Params(
        image_size=size, batch_size=BATCH, num_epochs=EPOCHS, validation_fraction=0.0
    )
    epoch_ends: list[float] = []
    template.train(_context(Path(tempfile.mkdtemp()), epoch_ends), data, params)
    steps = IMAGES // BATCH
    return {"step_s": (epoch_ends[-1] - epoch_ends[0]) / ((EPOCHS - 1) * steps)}


def bare_run(name: str, size: int) -> dict[str, float]:
    import torch

    from modelmill.training.data import normalise_images
    from modelmill.training.tasks.segmentation import SEGMENTATION
    from modelmill.training.templates.visual_segmenter.model import (
        create_model,
        normalisation,
        train_keeping_encoder_statistics,
    )
    from modelmill.training.templates.visual_segmenter.training import (
        SegmentationBatches,
        flip_pairs,
    )
    from modelmill.training.weights import find_timm_weights

    template = _template(name)
    architecture = template.architecture
    data = SEGMENTATION.sample_data("image", IMAGES, size)
    pairs = SegmentationBatches(data.examples, data.concepts, size)
    assert pairs.cache is not None
    images, labels = pairs.cache[0], pairs.cache[1].long()
    location = find_timm_weights(architecture.encoder, None).found if architecture.encoder else None
    torch.manual_seed(0)
    model = create_model(architecture, len(data.concepts) + 1, location)
    mean, std = normalisation(architecture)
    learning_rate = BATCH * template.Params().per_item_lrate
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, fused=True)
    generator = torch.Generator().manual_seed(0)
    keep = architecture.encoder is not None

    def epoch() -> None:
        (train_keeping_encoder_statistics if keep else torch.nn.Module.train)(model)
        order = torch.randperm(IMAGES, generator=generator)
        for start in range(0, IMAGES, BATCH):
            rows = order[start : start + BATCH]
            batch, target = flip_pairs(images[rows], labels[rows], 0.5, "horizontal", generator)
            logits = model(normalise_images(batch, mean, std))
            loss = torch.nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    epoch()  # warm-up
    started = time.perf_counter()
    for _ in range(EPOCHS - 1):
        epoch()
    return {"step_s": (time.perf_counter() - started) / ((EPOCHS - 1) * (IMAGES // BATCH))}


def miou_run(name: str, size: int) -> dict[str, float]:
    from modelmill.training.tasks.segmentation import SEGMENTATION

    template = _template(name)
    data = SEGMENTATION.sample_data("image", IMAGES + IMAGES // 4, size)
    params = template.Params(
        image_size=size, batch_size=BATCH, num_epochs=EVAL_EPOCHS, validation_fraction=0.2
    )
    ctx = _context(Path(tempfile.mkdtemp()), [])
    started = time.perf_counter()
    artifacts = template.train(ctx, data, params).artifacts
    seconds = time.perf_counter() - started
    user = template.evaluate(ctx, data, params, artifacts)["extended_metrics"]["user_metrics"]
    return {"miou": user["mean_iou"], "pixel_accuracy": user["pixel_accuracy"], "train_s": seconds}


RUNS = {"template": template_run, "bare": bare_run, "miou": miou_run}


def child(kind: str, name: str, size: int, threads: int) -> dict[str, float]:
    """One run in a fresh process: its result and its own peak RSS."""
    command = [sys.executable, __file__, "--child", kind, "--template", name,
               "--image-size", str(size), "--threads", str(threads)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--template", action="append")
    parser.add_argument("--child", choices=sorted(RUNS))
    parser.add_argument("--no-miou", action="store_true")
    parser.add_argument("--no-steps", action="store_true")
    args = parser.parse_args()
    names = args.template or ["Unet_EfficientNet_Lite0", "FPN_EfficientNet_Lite0", "SegFormer_B0"]
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        from modelmill.training import weights

        weights.hub_online = lambda: False  # offline, as the tests: only packaged weights
        result = RUNS[args.child](names[0], args.image_size)
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({**result, "peak_mb": peak_kib / KIB}))
        return
    print(f"{args.threads} thread(s), {args.image_size} px, batch {BATCH}, {IMAGES} images, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"{'template':<24} {'bare s/step':>11} {'template s/step':>15} {'ratio':>6} "
          f"{'median ratio':>12} {'bare MB':>8} {'template MB':>11}")  # fmt: skip
    for name in [] if args.no_steps else names:
        bare, template = [], []
        for _ in range(args.repeats):  # alternate, so that load changes hit both alike
            bare.append(child("bare", name, args.image_size, args.threads))
            template.append(child("template", name, args.image_size, args.threads))
        bare_s = min(r["step_s"] for r in bare)
        template_s = min(r["step_s"] for r in template)
        median_ratio = statistics.median(r["step_s"] for r in template) / statistics.median(
            r["step_s"] for r in bare
        )
        print(f"{name:<24} {bare_s:>11.3f} {template_s:>15.3f} {template_s / bare_s:>6.3f} "
              f"{median_ratio:>12.3f} {max(r['peak_mb'] for r in bare):>8.0f} "
              f"{max(r['peak_mb'] for r in template):>11.0f}")  # fmt: skip
    if not args.no_miou:
        print(f"\nmIoU on held-out drawn shapes after {EVAL_EPOCHS} epochs "
              f"({IMAGES + IMAGES // 4} images, 20% held out):")  # fmt: skip
        for name in names:
            result = child("miou", name, args.image_size, args.threads)
            print(f"{name:<24} mIoU {result['miou']:.3f}  pixel accuracy "
                  f"{result['pixel_accuracy']:.3f}  train {result['train_s']:.0f} s  "
                  f"peak {result['peak_mb']:.0f} MB")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
