"""Step time of the fine-tuning templates' training loop against a bare PyTorch loop on the same
model, data and batch size, run alternately in one process (visual: EfficientNet-Lite0 from its
ImageNet weights; text: all-MiniLM-L6-v2). Prints a table; asserts nothing.

Run: .venv/bin/python bench/finetune_step_time.py [--repeats 3] [--threads N]
         [--device cpu|cuda] [--mixed-precision off|auto|bf16|fp16 ...] [--quick] [--markdown F]

On a GPU (`--device cuda`, as bench/gpu.sh runs it) both sides train in the mixed precision
asked for (the bare loop with torch.autocast, and a GradScaler for float16, as the template's
loop does), and the table gives images or tokens per second. `--quick` shrinks the data to
check the script itself (bench/gpu.sh's dry run).

The template's time covers everything its loop does per epoch (progress reports, cancel checks,
checkpoints written each epoch; the last column is the share of its time spent writing them).
Both sides use fused AdamW and skip validation (validation_fraction 0); the first epoch is
warm-up, so each figure is seconds per step over the remaining epochs: the fastest of the
repeats (the least disturbed on a shared machine), with the ratio of medians beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from modelmill.training.contract import Example, TrainContext, TrainingData
from modelmill.training.data import (
    flip_images,
    normalise_images,
    pad_token_batch,
    square_pixels,
    token_ids,
)
from modelmill.training.finetune import loop as loop_module
from modelmill.training.finetune.loop import autocast_dtype
from modelmill.training.templates.text_classifier import BERT_FINE_TUNE
from modelmill.training.templates.text_classifier.config import text_settings
from modelmill.training.templates.text_classifier.model import load_tokenizer, pretrained_model
from modelmill.training.templates.visual_classifier import EFFICIENTNET_LITE0_CLASSIFIER
from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
from modelmill.training.templates.visual_classifier.model import (
    create_model,
    normalisation,
    train_keeping_batchnorm_statistics,
)
from modelmill.training.weights import PACKAGED_HF_MODELS, find_hf_model, find_timm_weights

EPOCHS = 3  # the first is warm-up; steps of the other two are timed
IMAGES, IMAGE_SIZE, IMAGE_BATCH = 256, 128, 32  # the fast template's default size and batch
TEXTS, TEXT_TOKENS, TEXT_BATCH = 256, 32, 16
CONCEPTS = ["a", "b", "c", "d"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LEARNING_RATE = 1e-3
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "river",
    "mountain",
    "market",
    "music",
    "science",
    "garden",
    "football",
    "kitchen",
]


def image_data() -> TrainingData:
    rng = np.random.default_rng(0)

    def image(seed: int) -> Image.Image:
        pixels = np.random.default_rng(seed).integers(0, 256, (160, 160, 3), dtype=np.uint8)
        return Image.fromarray(pixels)

    labels = rng.integers(0, len(CONCEPTS), IMAGES)
    return TrainingData(
        [Example(f"i{n}", "image", partial(image, n), {CONCEPTS[labels[n]]: 1.0})
         for n in range(IMAGES)],
        CONCEPTS, concepts_mutually_exclusive=True,
    )  # fmt: skip


def text_data() -> TrainingData:
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, TEXT_TOKENS)) for _ in range(TEXTS)]
    labels = rng.integers(0, len(CONCEPTS), TEXTS)
    return TrainingData(
        [Example(f"t{n}", "text", partial(str, t), {CONCEPTS[labels[n]]: 1.0})
         for n, t in enumerate(texts)],
        CONCEPTS, concepts_mutually_exclusive=True,
    )  # fmt: skip


DEVICE = "cpu"  # set from --device


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class Precision:
    """The bare loop's side of mixed precision, as finetune/loop.py does it."""

    def __init__(self, setting: str) -> None:
        self.dtype = autocast_dtype(setting, DEVICE)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None

    def forward(self, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.dtype is None:
            return compute()
        with torch.autocast("cuda", dtype=self.dtype):
            return compute()

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def template_step_s(
    template, data: TrainingData, params, steps_per_epoch: int
) -> tuple[float, float]:
    """Seconds per step between the end of the first epoch and the end of the last, and the
    share of it spent writing checkpoints (the shared loop's checkpoint writer is timed)."""
    work = Path(tempfile.mkdtemp())
    (work / "checkpoints").mkdir()
    epoch_ends: list[float] = []  # the loop saves a checkpoint at the end of every epoch
    writes: list[tuple[float, float]] = []
    write = loop_module.save_checkpoint

    def timed_write(*args, **kwargs):
        started = time.perf_counter()
        result = write(*args, **kwargs)
        writes.append((started, time.perf_counter() - started))
        return result

    def epoch_end() -> None:
        synchronize()
        epoch_ends.append(time.perf_counter())

    ctx = TrainContext(
        DEVICE, work, work / "checkpoints", lambda progress, **metrics: None, lambda: False,
        None, save_checkpoint=epoch_end,
    )  # fmt: skip
    loop_module.save_checkpoint = timed_write
    try:
        template.train(ctx, data, params)
    finally:
        loop_module.save_checkpoint = write
    timed = epoch_ends[-1] - epoch_ends[0]
    writing = sum(
        seconds for started, seconds in writes if epoch_ends[0] < started < epoch_ends[-1]
    )
    return timed / ((EPOCHS - 1) * steps_per_epoch), writing / timed


def bare_step_s(model: torch.nn.Module, step: Callable[[int], None], steps_per_epoch: int) -> float:
    for index in range(steps_per_epoch):  # warm-up epoch
        step(index)
    synchronize()
    started = time.perf_counter()
    for _ in range(EPOCHS - 1):
        for index in range(steps_per_epoch):
            step(index)
    synchronize()
    return (time.perf_counter() - started) / ((EPOCHS - 1) * steps_per_epoch)


Pair = tuple[Callable[[], float], Callable[[], tuple[float, float]]]


def visual_pair(precision: str) -> Pair:
    data = image_data()
    steps = IMAGES // IMAGE_BATCH
    params = EFFICIENTNET_LITE0_CLASSIFIER.Params(
        image_size=IMAGE_SIZE, batch_size=IMAGE_BATCH, num_epochs=EPOCHS,
        per_item_lrate=LEARNING_RATE / IMAGE_BATCH, validation_fraction=0.0,
        concepts_mutually_exclusive=True, mixed_precision=precision,
    )  # fmt: skip
    pixels = torch.stack([
        torch.from_numpy(square_pixels(e.load(), IMAGE_SIZE).copy()).permute(2, 0, 1)
        for e in data.examples
    ])  # fmt: skip
    pixels = pixels.to(DEVICE)
    labels = torch.tensor([CONCEPTS.index(next(iter(e.concepts))) for e in data.examples])
    labels = labels.to(DEVICE)
    mean, std = normalisation(EFFICIENTNET_LITE0)
    location = find_timm_weights(EFFICIENTNET_LITE0.weights, None).found

    def bare() -> float:
        torch.manual_seed(0)
        model = create_model(EFFICIENTNET_LITE0, len(CONCEPTS), location).to(DEVICE)
        train_keeping_batchnorm_statistics(model)  # what the template does from ImageNet weights
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=LEARNING_RATE, weight_decay=0.01, fused=True
        )
        generator = torch.Generator().manual_seed(0)
        mixed = Precision(precision)

        def step(index: int) -> None:
            rows = slice(index * IMAGE_BATCH, (index + 1) * IMAGE_BATCH)
            images = flip_images(pixels[rows], 0.5, "horizontal", generator)
            loss = mixed.forward(
                lambda: torch.nn.functional.cross_entropy(
                    model(normalise_images(images, mean, std)), labels[rows]
                )
            )
            mixed.step(loss, optimizer)

        return bare_step_s(model, step, steps)

    def template() -> tuple[float, float]:
        return template_step_s(EFFICIENTNET_LITE0_CLASSIFIER, data, params, steps)

    return bare, template


def text_pair(precision: str) -> Pair:
    data = text_data()
    steps = TEXTS // TEXT_BATCH
    params = BERT_FINE_TUNE.Params(
        max_length=TEXT_TOKENS, batch_size=TEXT_BATCH, num_epochs=EPOCHS,
        per_item_lrate=LEARNING_RATE / TEXT_BATCH / 10, validation_fraction=0.0,
        concepts_mutually_exclusive=True, mixed_precision=precision,
    )  # fmt: skip
    tokenizer = load_tokenizer(PACKAGED_HF_MODELS[MINILM]())
    sequences = token_ids(tokenizer, [e.load() for e in data.examples], TEXT_TOKENS)
    labels = torch.tensor([CONCEPTS.index(next(iter(e.concepts))) for e in data.examples])
    labels = labels.to(DEVICE)
    location = find_hf_model(MINILM, None).found
    assert location is not None

    def bare() -> float:
        torch.manual_seed(0)
        model = pretrained_model(text_settings(params), location, CONCEPTS, tokenizer.pad_token_id)
        model.to(DEVICE).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE / 10, fused=True)
        mixed = Precision(precision)

        def step(index: int) -> None:
            rows = range(index * TEXT_BATCH, (index + 1) * TEXT_BATCH)
            ids, attention = pad_token_batch([sequences[r] for r in rows], tokenizer.pad_token_id)
            ids, attention = ids.to(DEVICE), attention.to(DEVICE)
            loss = mixed.forward(
                lambda: torch.nn.functional.cross_entropy(
                    model(input_ids=ids, attention_mask=attention).logits, labels[list(rows)]
                )
            )
            mixed.step(loss, optimizer)

        return bare_step_s(model, step, steps)

    def template() -> tuple[float, float]:
        return template_step_s(BERT_FINE_TUNE, data, params, steps)

    return bare, template


FAMILIES = {  # (model, batch, inputs per item for throughput, unit, pair)
    "visual": (f"EfficientNet-Lite0 {IMAGE_SIZE}px", IMAGE_BATCH, 1, "images", visual_pair),
    "text": (f"MiniLM-L6 {TEXT_TOKENS} tokens", TEXT_BATCH, TEXT_TOKENS, "tokens", text_pair),
}


def main() -> None:
    global DEVICE, IMAGES, TEXTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--family", choices=sorted(FAMILIES), action="append")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--mixed-precision", choices=["off", "auto", "bf16", "fp16"], action="append"
    )
    parser.add_argument("--quick", action="store_true", help="a few steps: checks the script")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    args = parser.parse_args()
    DEVICE = args.device
    if args.quick:
        IMAGES, TEXTS = 2 * IMAGE_BATCH, 2 * TEXT_BATCH
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"torch {torch.__version__} on {where}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    header = ("| family | model | precision | batch | bare s/step | template s/step | ratio "
              "| median ratio | checkpoints | template items/s |")  # fmt: skip
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    print(header)
    for family in args.family or list(FAMILIES):
        model, batch, per_item, unit, make_pair = FAMILIES[family]
        for precision in args.mixed_precision or ["off"]:
            bare, template = make_pair(precision)
            bare_times, template_times, writing = [], [], []
            for _ in range(args.repeats):  # alternate, so that load changes hit both alike
                bare_times.append(bare())
                step_s, share = template()
                template_times.append(step_s)
                writing.append(share)
            # The fastest run of each is the one least disturbed by other processes (as
            # timeit); the ratio of medians is shown beside it.
            bare_s, template_s = min(bare_times), min(template_times)
            median_ratio = statistics.median(template_times) / statistics.median(bare_times)
            rows.append(
                f"| {family} | {model} | {precision} | {batch} | {bare_s:.4f} | "
                f"{template_s:.4f} | {template_s / bare_s:.3f} | {median_ratio:.3f} | "
                f"{statistics.median(writing):.1%} | "
                f"{batch * per_item / template_s:,.0f} {unit} |"
            )
            print(rows[-1])
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if args.markdown:
        args.markdown.write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
