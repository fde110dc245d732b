"""Head fit speed and accuracy: modelmill's L-BFGS head vs scikit-learn's LogisticRegression on
the same 10,000 x 384 embeddings (synthetic clusters on the unit sphere, like MiniLM's).

Run: .venv/bin/python bench/head_fit.py
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from modelmill.training.templates.embedding_classifier.head import (
    REGULARIZATION_C,
    Head,
    HeadTargets,
    fit_head,
)

TRAIN, TEST, DIM, CLASSES = 10_000, 2_000, 384, 10
CLUSTER_SPREAD = 0.12  # centre scale against the per-dimension noise: overlapping classes
REPEATS = 7
SEED = 0


def synthetic_embeddings() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    centres = rng.normal(size=(CLASSES, DIM))
    labels = rng.integers(0, CLASSES, TRAIN + TEST)
    # Anisotropic noise: a few directions vary much more, as in real embedding spaces.
    scales = np.geomspace(3.0, 0.3, DIM)
    points = centres[labels] * CLUSTER_SPREAD + rng.normal(size=(len(labels), DIM)) * scales
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points.astype(np.float32), labels


def fit_sklearn(x_train: np.ndarray, y_train: np.ndarray, threads: int | None):
    # threads=None: scikit-learn as it comes (BLAS threads on every core); 1: like our head.
    with threadpool_limits(limits=threads):
        classifier = LogisticRegression(C=REGULARIZATION_C, max_iter=1000)
        return make_pipeline(StandardScaler(), classifier).fit(x_train, y_train)


def main() -> None:
    embeddings, labels = synthetic_embeddings()
    x_train, x_test = embeddings[:TRAIN], embeddings[TRAIN:]
    y_train, y_test = labels[:TRAIN], labels[TRAIN:]
    one_hot = np.eye(CLASSES, dtype=np.float32)[y_train]
    targets = HeadTargets(one_hot, np.ones_like(one_hot), np.ones(TRAIN, np.float32))
    methods = {
        "modelmill head, softmax": lambda: fit_head(x_train, targets, exclusive=True),
        "modelmill head, sigmoid per concept": lambda: fit_head(x_train, targets, exclusive=False),
        "sklearn LogisticRegression, all threads": lambda: fit_sklearn(x_train, y_train, None),
        "sklearn LogisticRegression, 1 thread": lambda: fit_sklearn(x_train, y_train, 1),
    }
    for fit in methods.values():
        fit()  # warm-up: first calls pay one-off library initialisation
    # Round robin, so that other work on a shared machine slows every method alike.
    times: dict[str, list[float]] = {name: [] for name in methods}
    models = {}
    for _ in range(REPEATS):
        for name, fit in methods.items():
            started = time.perf_counter()
            models[name] = fit()
            times[name].append(time.perf_counter() - started)

    baseline = statistics.median(times["sklearn LogisticRegression, all threads"])
    print(
        f"train {TRAIN} x {DIM}, {CLASSES} classes, test {TEST}; median of {REPEATS} fits; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print("speed-up = sklearn (all threads) seconds / these seconds; both use the same penalty C")
    print(
        "| method | fit s (median) | fit s (min-max) | speed-up | held-out accuracy | iterations |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, model in models.items():
        if isinstance(model, Head):
            accuracy = float((model.scores(x_test).argmax(1) == y_test).mean())
            iterations = model.iterations
        else:
            accuracy = float((model.predict(x_test) == y_test).mean())
            iterations = int(model[-1].n_iter_[0])
        seconds = statistics.median(times[name])
        print(
            f"| {name} | {seconds:.3f} | {min(times[name]):.3f}-{max(times[name]):.3f} | "
            f"{baseline / seconds:.1f}x | {accuracy:.4f} | {iterations} |"
        )


if __name__ == "__main__":
    main()
