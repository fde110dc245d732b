"""Anomaly templates: fit time and peak memory vs image count and memory-bank size, and image /
pixel AUROC of PatchCore vs PaDiM vs a plain nearest neighbour on pooled features, on
scikit-image textures with pasted defects and on a one-class split of scikit-learn's digits
(one digit normal, the others anomalous).

    PYTHONPATH=src MODELMILL_JOB_THREADS=1 .venv/bin/python bench/anomaly.py

Each fit runs in its own process so that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FIT_CONFIGS = [  # (template, normal images, coreset fraction)
    ("PatchCore", 10, 0.01),
    ("PatchCore", 10, 0.1),
    ("PatchCore", 30, 0.01),
    ("PatchCore", 30, 0.1),
    ("PaDiM", 10, 0.0),
    ("PaDiM", 30, 0.0),
]
TEXTURE_WIDTH, IMAGE_SIZE = 256, 224
DIGIT_SIZE = 64


def texture_data(normal: int, anomalous: int):
    from modelmill.training.contract import Example, Region, TrainingData
    from modelmill.training.tasks.anomaly import ANOMALY_CONCEPT, textured_image
    from modelmill.training.tasks.samples import decoder, encode_jpeg

    examples = []
    for i in range(normal + anomalous):
        bad = i >= normal
        pixels, mask = textured_image("brick", TEXTURE_WIDTH, 1000 + i, bad)
        load = decoder(encode_jpeg(pixels))
        if bad:
            region = Region({ANOMALY_CONCEPT: 1.0}, mask_png=mask)
            examples.append(Example(f"a{i}", "image", load, {ANOMALY_CONCEPT: 1.0}, (region,)))
        else:
            examples.append(Example(f"n{i}", "image", load, {"normal": 1.0}))
    return TrainingData(examples, ["normal", ANOMALY_CONCEPT])


def digits_data(normal_digit: int, normal: int, others: int):
    """scikit-learn's digits (BSD): `normal` images of one digit labelled normal, `others`
    images of the other digits labelled anomaly."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from modelmill.training.contract import Example, TrainingData
    from modelmill.training.tasks.samples import decoder, encode_jpeg

    digits = load_digits()
    examples = []
    normal_rows = np.nonzero(digits.target == normal_digit)[0][:normal]
    other_rows = np.nonzero(digits.target != normal_digit)[0][:others]
    for row in [*normal_rows, *other_rows]:
        pixels = (digits.images[row] * (255 / 16)).astype(np.uint8)
        big = np.asarray(Image.fromarray(pixels).resize((DIGIT_SIZE, DIGIT_SIZE)))
        load = decoder(encode_jpeg(np.repeat(big[..., None], 3, axis=2)))
        labels = {"normal": 1.0} if row in normal_rows else {"anomaly": 1.0}
        examples.append(Example(f"d{row}", "image", load, labels))
    return TrainingData(examples, ["normal", "anomaly"])


def context(work: Path):
    from modelmill.training.contract import TrainContext

    (work / "checkpoints").mkdir(parents=True, exist_ok=True)
    return TrainContext(
        device="cpu",
        work_dir=work,
        checkpoint_dir=work / "checkpoints",
        report=lambda progress, **metrics: None,
        cancelled=lambda: False,
        embeddings=lambda examples, model_id: np.zeros((len(examples), 1)),
    )


def one_fit(template_name: str, normal: int, fraction: float) -> dict:
    """Fit one template on `normal` texture images (in this process): seconds, bank, peak MB."""
    from modelmill.training.registry import find_template

    template = find_template("visual-anomaly-heatmap", template_name)
    assert template is not None
    values = {"image_size": IMAGE_SIZE, "holdout_fraction": 0.0}
    if template_name == "PatchCore":
        values["coreset_fraction"] = fraction
    data = texture_data(normal, 0)
    data.examples[0].load()  # decode once: the fit's clock measures the fit
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        artifacts = template.train(context(Path(work)), data, template.Params(**values)).artifacts
        seconds = time.perf_counter() - started
        shapes = template.load(artifacts).meta["config"]["state_shapes"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "state": shapes, "peak_mb": peak_mb}


def pooled_baseline(data, held_ids: set[str], image_size: int) -> list[float]:
    """Distance of each held-out image's pooled Lite0 features (1280-d) to the nearest fitted
    normal image's."""
    import torch

    from modelmill.training.templates.visual_classifier.backbones import EFFICIENTNET_LITE0
    from modelmill.training.templates.visual_classifier.model import (
        create_model,
        normalisation,
    )
    from modelmill.training.weights import find_timm_weights

    location = find_timm_weights(EFFICIENTNET_LITE0.weights, None).found
    model = create_model(EFFICIENTNET_LITE0, 0, location).eval()
    mean, std = normalisation(EFFICIENTNET_LITE0)

    def pooled(examples) -> torch.Tensor:
        pixels = np.stack(
            [np.asarray(e.load().resize((image_size, image_size)), np.float32) for e in examples]
        )
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0
        images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            return torch.cat([model(images[i : i + 16]) for i in range(0, len(images), 16)])

    held = [e for e in data.examples if e.input_id in held_ids]
    fitted = [e for e in data.examples if e.input_id not in held_ids and "normal" in e.concepts]
    distances = torch.cdist(pooled(held), pooled(fitted)).min(dim=1).values
    return distances.tolist()


def accuracy(data, image_size: int, label: str) -> list[dict]:
    from sklearn.metrics import roc_auc_score

    from modelmill.training.templates.visual_anomaly import PADIM, PATCHCORE

    rows = []
    held_ids: set[str] = set()
    truth: list[float] = []
    for template in (PATCHCORE, PADIM):
        with tempfile.TemporaryDirectory() as work:
            params = template.Params(image_size=image_size, holdout_fraction=0.3)
            started = time.perf_counter()
            artifacts = template.train(context(Path(work)), data, params).artifacts
            seconds = time.perf_counter() - started
            metrics = template.evaluate(context(Path(work)), data, params, artifacts)
            held_ids = set(template.load(artifacts).meta["validation_ids"])
        extended = metrics["extended_metrics"]["user_metrics"]["anomaly"]
        rows.append(
            {
                "data": label,
                "method": template.name,
                "image_auroc": extended.get("image_auroc"),
                "pixel_auroc": extended.get("pixel_auroc"),
                "f1": extended["f1"],
                "fit_s": seconds,
                "held_out": len(held_ids),
            }
        )
    held = [e for e in data.examples if e.input_id in held_ids]
    truth = [float("anomaly" in e.concepts) for e in held]
    baseline = pooled_baseline(data, held_ids, image_size)
    rows.append(
        {
            "data": label,
            "method": "pooled NN (baseline)",
            "image_auroc": float(roc_auc_score(truth, baseline)),
            "pixel_auroc": None,
            "f1": None,
            "fit_s": None,
            "held_out": len(held),
        }
    )
    return rows


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", help="internal: run one fit config (JSON) and print JSON")
    parser.add_argument("--skip-fits", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_fit(*json.loads(args.one))))
        return
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load {Path('/proc/loadavg').read_text().split()[:3]}, "
        f"torch threads {__import__('torch').get_num_threads()}"
    )
    if not args.skip_fits:
        print("\n| template | normal images | coreset fraction | state | fit s | peak RSS MB |")
        print("|---|--:|--:|---|--:|--:|")
        for config in FIT_CONFIGS:
            out = (
                subprocess.run(
                    [sys.executable, __file__, "--one", json.dumps(config)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            result = json.loads(out)
            state = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in result["state"].items())
            fraction = fmt(config[2], 2) if config[0] == "PatchCore" else "—"
            print(
                f"| {config[0]} | {config[1]} | {fraction} | {state} | "
                f"{result['seconds']:.1f} | {result['peak_mb']:.0f} |",
                flush=True,
            )
    print("\n| data | method | image AUROC | pixel AUROC | F1 @ threshold | fit s | held out |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for data, size, label in (
        (texture_data(30, 15), IMAGE_SIZE, "brick + gravel defects"),
        (digits_data(0, 100, 60), DIGIT_SIZE, "digits: 0 normal, 1-9 anomalous"),
    ):
        for row in accuracy(data, size, label):
            print(
                f"| {row['data']} | {row['method']} | {fmt(row['image_auroc'])} | "
                f"{fmt(row['pixel_auroc'])} | {fmt(row['f1'])} | {fmt(row['fit_s'], 1)} | "
                f"{row['held_out']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
